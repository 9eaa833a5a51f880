"""A store with two tiny trained runs for the app's tests: LoRA and full fine-tuning of the tiny random
BERT on the toy sentiment task (label 1: the sentence holds a positive word), one seed each. Full
fine-tuning learns the task (dev accuracy 1.0); LoRA on a random 2-layer model stays near chance:
a contrast for comparing and for the efficiency view."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED_DATA

from specrun.testing import run_cli, write_toy_data

SPEC = """
[experiment]
name = "duo"
seeds = [0]

[model]
name = "{model}"
max_length = 32

[data]
dataset = "local"
eval_split = "validation"
[data.options]
files = {{ train = "{data}/train.tsv", validation = "{data}/dev.tsv" }}

[method]
name = "lora"

[train]
batch_size = 16
precision = "fp32"
epochs = {epochs}

[sweep]
"method, train.learning_rate" = [
    [{{ name = "lora", rank = 4 }}, {lora_lr}],
    [{{ name = "full" }}, {full_lr}],
]
"""


EPOCHS, LORA_LR, FULL_LR = 8, 5e-2, 3e-3


def build_two_runs(folder: Path, model_dir: Path) -> Path:
    """Train the two runs into ``folder``/store.duckdb (weights in ``folder``/artifacts); returns the store."""
    data = write_toy_data(folder / "toy")
    spec = folder / "duo.toml"
    spec.write_text(SPEC.format(model=model_dir, data=data, epochs=EPOCHS, lora_lr=LORA_LR, full_lr=FULL_LR))
    store = folder / "store.duckdb"
    with pytest.MonkeyPatch.context() as env:  # before the per-test `isolated` fixture: set what it would
        env.setenv("SPECRUN_ARTIFACTS", str(folder / "artifacts"))
        env.setenv("SPECRUN_DATA_DIR", str(SHARED_DATA))
        env.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        code, _, err = run_cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    return store


def build_qa_run(folder: Path, model_dir: Path, steps: int = 80) -> Path:
    """Full fine-tuning of the tiny BERT on the toy extractive-QA task ("what color is the car ?" over
    "the car is red . the boat is blue ..."), one run, into ``folder``/store.duckdb; returns the store."""
    from specrun.testing.qa import qa_spec, write_toy_squad

    data = write_toy_squad(folder / "squad")
    spec = folder / "toyqa.toml"
    spec.write_text(qa_spec(model_dir, data, train=f"max_steps = {steps}", name="toyqa"))
    store = folder / "store.duckdb"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPECRUN_ARTIFACTS", str(folder / "artifacts"))
        env.setenv("SPECRUN_DATA_DIR", str(SHARED_DATA))
        env.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        code, _, err = run_cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    return store
