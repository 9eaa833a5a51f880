"""The CPU training speed-ups are in place only while a run trains: the model comes back as it was."""

from __future__ import annotations

import torch

from specrun.runner import cpu_speedups
from specrun.runner.cpu_speedups import cpu_training_speedups


def test_speedups_leave_the_model_as_it_was(tiny_model_dir):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value"]
    )
    model = get_peft_model(model, config)
    before = [type(m) for m in model.modules()]
    with cpu_training_speedups(model, torch.device("cpu"), seed=0):
        assert any(type(m) is cpu_speedups.CpuDropout for m in model.modules())
    assert [type(m) for m in model.modules()] == before
    assert model.config._attn_implementation == "sdpa"
