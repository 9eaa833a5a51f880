"""The CPU training speed-ups change no result: bf16 dropout masks equal the float32 masks cast to bf16,
and sharing one bf16 cast of a Linear input gives the same logits, loss, gradients and weights to the bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specrun.runner import cpu_speedups
from specrun.runner.cpu_speedups import SharedInputCast, cpu_dropout, cpu_training_speedups
from specrun.runner.modeling import freeze_frozen_linears_to_bf16


@pytest.mark.parametrize("p", [0.1, 0.3, 1 / 3])
def test_bf16_dropout_mask_equals_the_float32_mask_cast(p):
    x = torch.randn(7, 33, dtype=torch.float32).to(torch.bfloat16)
    got = cpu_dropout(x, p, np.random.Generator(np.random.SFC64(5)))
    draws = np.random.Generator(np.random.SFC64(5)).random(x.numel(), dtype=np.float32)
    mask = torch.from_numpy((draws >= np.float32(p)) * np.float32(1 / (1 - p))).view(x.shape)
    want = x * mask.to(torch.bfloat16)  # what cpu_dropout computed before it built bf16 masks itself
    assert got.dtype == torch.bfloat16
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert 0 < int((got == 0).sum()) < x.numel()


def _lora_model(tiny_model_dir):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value"]
    )
    model = get_peft_model(model, config)
    assert freeze_frozen_linears_to_bf16(model) > 0
    return model


def _train(model, shared: bool, monkeypatch, steps: int = 3):
    if not shared:  # the hook declines every call: autocast casts the input for each Linear, as before
        monkeypatch.setattr(SharedInputCast, "__call__", lambda self, module, args: None)
    calls = []
    real = cpu_speedups._SharedCast.apply
    monkeypatch.setattr(cpu_speedups._SharedCast, "apply", lambda *a: calls.append(1) or real(*a))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    record = []
    with cpu_training_speedups(model, torch.device("cpu"), seed=0):
        model.train()
        for _ in range(steps):
            ids = torch.randint(5, 100, (4, 9), generator=generator)
            mask = torch.ones_like(ids)
            mask[0, 6:] = 0
            labels = torch.tensor([0, 1, 1, 0])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
            record.append((logits.detach().clone(), loss.detach().clone()))
            record.append([p.grad.clone() for p in params])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    monkeypatch.undo()
    return record, [p.detach().clone() for p in params], len(calls)


def test_shared_input_cast_changes_nothing_to_the_bit(tiny_model_dir, monkeypatch):
    before, weights_before, calls_before = _train(_lora_model(tiny_model_dir), False, monkeypatch)
    after, weights_after, calls_after = _train(_lora_model(tiny_model_dir), True, monkeypatch)
    assert calls_before == 0 and calls_after > 0  # the comparison is between two different paths
    for a, b in zip(before, after, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and torch.equal(x, y)
    for x, y in zip(weights_before, weights_after, strict=True):
        assert torch.equal(x, y)


def test_shared_input_cast_only_where_autocast_casts(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    linear = next(m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.bfloat16)
    hook = SharedInputCast()
    x = torch.randn(3, linear.in_features)
    assert hook(linear, (x,)) is None  # no autocast: F.linear would fail on mixed dtypes as it always did
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (first,) = hook(linear, (x,))
        (second,) = hook(linear, (x,))
        assert first.dtype == torch.bfloat16 and torch.equal(first, x.to(torch.bfloat16))
        assert second.data_ptr() == first.data_ptr()  # one cast, shared
        x.mul_(2)  # changed in place: cast again
        (third,) = hook(linear, (x,))
        assert torch.equal(third, x.to(torch.bfloat16))
        assert hook(linear, (x.to(torch.bfloat16),)) is None  # already bf16: nothing to cast
    with torch.autocast("cpu", dtype=torch.float16):
        assert hook(linear, (x,)) is None


def test_speedups_leave_the_model_as_it_was(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    with cpu_training_speedups(model, torch.device("cpu"), seed=0):
        assert any(m._forward_pre_hooks for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert all(type(m) is not cpu_speedups.CpuDropout for m in model.modules())
