"""The GPU path, checked on any machine: fp16 loss scaling (the scaler's skip-and-count logic runs on
the CPU too), the bf16 capability probe, ``cuda:N`` device choice, and the store's ``skipped_steps``.
A GPU is faked where a check only needs torch to say there is one (``fake_gpu``); tests that train on a
real GPU are in tests/test_gpu.py (``pytest -m gpu``)."""

from __future__ import annotations

import types

import pytest
import torch

from specrun.errors import MethodUnavailable
from specrun.runner.batching import Encoded, TokenCache
from specrun.runner.modeling import (
    check_precision,
    load_classifier,
    load_tokenizer,
    pick_device,
)
from specrun.runner.train import gradient_scaler, train_model
from specrun.spec.schema import TrainSpec
from specrun.testing.contracts import sample_examples
from tests.test_runner_store import sql


def fake_gpu(monkeypatch, count: int = 1, major: int = 8, name: str = "Fake GPU"):
    """torch answers as on a machine with ``count`` GPUs of compute capability ``major``.x."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda index=None: types.SimpleNamespace(major=major, minor=0, name=name)
    )
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.version, "hip", None)


def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# --- fp16: loss scaling ---------------------------------------------------------------------------


def test_only_fp16_trains_with_a_gradient_scaler():
    cpu = torch.device("cpu")
    assert gradient_scaler("fp16", cpu).is_enabled()
    assert not gradient_scaler("bf16", cpu).is_enabled()
    assert not gradient_scaler("fp32", cpu).is_enabled()


def _toy(tiny_model_dir):
    cache = TokenCache(load_tokenizer(str(tiny_model_dir)), 32)
    train = Encoded.build(sample_examples(48, num_labels=2), cache)
    dev = Encoded.build(sample_examples(16, seed=1, num_labels=2), cache)
    torch.manual_seed(0)
    model = load_classifier(str(tiny_model_dir), 2)
    return model, train, dev


def test_fp16_skips_and_counts_steps_whose_gradients_are_not_finite(tiny_model_dir):
    """The scaler (torch.amp.GradScaler, here on the CPU) finds an inf gradient at the third step: that
    update is skipped (the weights stay as they were), counted, and training goes on to its last step."""
    model, train, dev = _toy(tiny_model_dir)
    weight = model.classifier.weight
    seen = {"backward": 0, "before": None, "after": None}

    def poison(grad):
        seen["backward"] += 1
        if seen["backward"] == 3:
            seen["before"] = weight.detach().clone()
            return grad * float("inf")
        if seen["backward"] == 4:  # the next backward: the skipped step changed nothing
            seen["after"] = weight.detach().clone()
        return grad

    weight.register_hook(poison)
    settings = TrainSpec(max_steps=6, batch_size=8, precision="fp16", learning_rate=1e-2, device="cpu", eval_every=100)
    outcome = train_model(model, train, dev, "validation", 2, settings, seed=0, device=torch.device("cpu"))
    assert outcome.steps == 6 and outcome.skipped_steps == 1
    assert torch.equal(seen["before"], seen["after"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fp16_scales_the_loss_before_backward(tiny_model_dir):
    """The gradients backward sees are those of the scaled loss (65536 × at the start): what keeps small
    fp16 gradients from underflowing to zero. Without a scaler they would be the loss's own."""
    grads = {}
    for precision in ("fp16", "fp32"):
        model, train, dev = _toy(tiny_model_dir)
        model.classifier.weight.register_hook(lambda g, p=precision: grads.setdefault(p, g.abs().sum().item()) and None)
        settings = TrainSpec(max_steps=1, batch_size=8, precision=precision, device="cpu", eval_every=100)
        train_model(model, train, dev, "validation", 2, settings, seed=0, device=torch.device("cpu"))
    assert grads["fp16"] / grads["fp32"] == pytest.approx(2.0**16, rel=0.05)


def test_bf16_and_fp32_skip_nothing(tiny_model_dir):
    model, train, dev = _toy(tiny_model_dir)
    settings = TrainSpec(max_steps=3, batch_size=8, precision="fp32", device="cpu", eval_every=100)
    outcome = train_model(model, train, dev, "validation", 2, settings, seed=0, device=torch.device("cpu"))
    assert outcome.steps == 3 and outcome.skipped_steps == 0


def test_a_run_records_its_skipped_steps(write_spec, cli):
    spec = write_spec(train="max_steps = 2")
    assert cli("apply", str(spec))[0] == 0
    assert sql(cli, "SELECT skipped_steps FROM runs") == [{"skipped_steps": 0}]


# --- bf16: refused on a GPU that only emulates it -------------------------------------------------


def test_bf16_is_refused_on_a_gpu_before_ampere(monkeypatch):
    fake_gpu(monkeypatch, major=7, name="Tesla V100")
    with pytest.raises(
        MethodUnavailable, match=r"'bf16' is not supported by this GPU \(Tesla V100: bf16 needs compute capability 8.0"
    ):
        check_precision("bf16", torch.device("cuda"))
    check_precision("fp16", torch.device("cuda"))  # fp16 is what such a GPU trains in


def test_bf16_is_accepted_on_an_ampere_gpu(monkeypatch):
    fake_gpu(monkeypatch, major=8)
    check_precision("bf16", torch.device("cuda:0"))


def test_bf16_on_an_old_gpu_refuses_the_apply_before_training(monkeypatch, write_spec, cli):
    fake_gpu(monkeypatch, major=7, name="Tesla T4")
    spec = (
        write_spec(train='max_steps = 2\ndevice = "cuda"')
        .read_text()
        .replace('precision = "fp32"', 'precision = "bf16"')
    )
    path = write_spec(spec, name="old")
    code, _, err = cli("apply", str(path))
    assert code == 2, err
    assert (
        "no run of this apply can run on this machine: precision 'bf16' is not supported by this GPU (Tesla T4" in err
    )
    assert "Traceback" not in err


# --- cuda:N ---------------------------------------------------------------------------------------


def test_cuda_n_picks_that_gpu(monkeypatch):
    fake_gpu(monkeypatch, count=2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cuda") == torch.device("cuda")
    assert pick_device("auto").type == "cuda"


def test_a_gpu_index_beyond_the_machine_is_refused(monkeypatch):
    fake_gpu(monkeypatch, count=2)
    with pytest.raises(
        MethodUnavailable, match=r"train.device = 'cuda:2' but this machine has 2 CUDA devices \(cuda:0 to cuda:1\)"
    ):
        pick_device("cuda:2")
    no_gpu(monkeypatch)
    with pytest.raises(MethodUnavailable, match="no CUDA device is available"):
        pick_device("cuda:0")


def test_cuda_n_beyond_the_machine_refuses_the_apply_before_training(monkeypatch, write_spec, cli):
    fake_gpu(monkeypatch, count=1)
    spec = write_spec(train='max_steps = 2\ndevice = "cuda:3"')
    code, _, err = cli("apply", str(spec))
    assert code == 2, err
    assert (
        "no run of this apply can run on this machine: train.device = 'cuda:3' but this machine has 1 CUDA device (cuda:0)"
        in err
    )


def test_device_values_are_validated(write_spec, cli):
    spec = write_spec(train='max_steps = 2\ndevice = "gpu1"')
    code, _, err = cli("validate", str(spec))
    assert code == 2
    assert "train.device: Input should be 'auto', 'cpu', 'cuda' or 'cuda:N'" in err
