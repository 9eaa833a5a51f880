"""Every run counts its compute: useful FLOPs from the model's own shapes and the real tokens it saw,
as benchmarks/bench_flops.py counts the W1 workload."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO


def built(registry, model_dir, toy_config, method: str, options: dict):
    import torch

    from specrun.runner.build import build_model

    config = {
        **toy_config,
        "model": {**toy_config["model"], "name": str(model_dir), "max_length": 32},
        "method": {"name": method, **options},
    }
    model, _ = build_model(config, registry, 2, ("neg", "pos"), torch.device("cpu"))
    return model


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory):
    from specrun.testing import registry_with
    from specrun.testing.contracts import _toy_config

    config, _ = _toy_config(registry_with(), tmp_path_factory.mktemp("toy"), "unused", "max_steps = 1")
    return config


@pytest.fixture
def bench_flops():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_flops
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return bench_flops


@pytest.mark.parametrize(
    "options", [{"rank": 4}, {"rank": 2, "placement": "ffn-only"}, {"rank": 4, "placement": "full-model"}]
)
def test_training_coefficients_match_bench_flops(options, bench_flops, tiny_model_dir, toy_config, specrun_registry):
    """LoRA (W1's method) on the tiny BERT: the run's per-token, per-sequence and attention coefficients
    are bench_flops.py's, which counts from one training-mode pass of its own."""
    from specrun.runner.flops import flop_model

    model = built(specrun_registry, tiny_model_dir, toy_config, "lora", options)
    ours = flop_model(model)
    theirs = bench_flops.flop_model(model)
    assert ours.train.per_token == pytest.approx(theirs.per_token)
    assert ours.train.per_sequence == pytest.approx(theirs.per_sequence)
    if options.get("placement") == "ffn-only":
        # bench_flops counts attention's backward in every layer; no gradient flows through the lowest
        # layer's attention when only FFNs are adapted (nothing below it trains): one layer less
        assert ours.train.per_token_sq == pytest.approx(theirs.per_token_sq - 2 * 4 * theirs.attention_width)
    else:
        assert ours.train.per_token_sq == pytest.approx(theirs.per_token_sq)
    # forward only: one pass per linear layer and attention
    forward = sum(2 * r["in"] * r["out"] for r in theirs.linears if r["per"] == "token")
    assert ours.forward.per_token == pytest.approx(forward)
    assert ours.forward.per_token_sq == pytest.approx(theirs.per_token_sq / 3)


def test_forward_coefficients_match_torchs_flop_counter(tiny_model_dir, toy_config, specrun_registry):
    """An independent count: torch's FlopCounterMode over a forward pass of the real model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from specrun.runner.flops import flop_model

    model = built(specrun_registry, tiny_model_dir, toy_config, "full", {}).eval()
    fm = flop_model(model)
    # torch's counter has no formula for the CPU kernel of scaled_dot_product_attention: count the
    # attention as the plain matrix products it is
    model.set_attn_implementation("eager")
    for n in (7, 19):
        ids = torch.full((1, n), 1000, dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        assert fm.forward.flops(1, n, n * n) == pytest.approx(counter.get_total_flops())


def test_frozen_backbones_and_soft_prompts(tiny_model_dir, toy_config, specrun_registry):
    from specrun.runner.flops import flop_model

    head = flop_model(built(specrun_registry, tiny_model_dir, toy_config, "head_only", {}))
    # nothing below the head trains: no backward through the encoder, attention forward only
    assert head.train.per_token == head.forward.per_token
    assert head.train.per_token_sq == head.forward.per_token_sq
    assert head.train.per_sequence > head.forward.per_sequence  # the head's weight gradients
    full = flop_model(built(specrun_registry, tiny_model_dir, toy_config, "full", {}))
    assert full.train.per_token_sq == 3 * full.forward.per_token_sq
    prompt = flop_model(built(specrun_registry, tiny_model_dir, toy_config, "prompt_tuning", {"num_virtual_tokens": 5}))
    # 5 soft tokens per sequence: the per-sequence forward cost is 5 tokens' worth of linears plus attention
    assert prompt.forward.per_token_sq == full.forward.per_token_sq
    linear_per_token = full.forward.per_token
    assert prompt.forward.per_sequence == pytest.approx(
        5 * linear_per_token + 25 * full.forward.per_token_sq + full.forward.per_sequence
    )


def test_a_run_records_its_flops(run_spec, tiny_model_dir, toy_data):
    """The stored counts are the coefficients times the real tokens the run trained on: 2 epochs over
    every training example."""
    import numpy as np

    from specrun.runner.modeling import load_tokenizer
    from specrun.testing.toy import toy_spec

    result = run_spec(toy_spec(method='name = "lora"\nrank = 4', train="epochs = 2"))
    rows = result.sql(
        "SELECT name, value FROM metrics WHERE split = 'cost' AND (name LIKE '%flops%' OR name LIKE '%real_tokens')"
    )
    got = {r["name"]: r["value"] for r in rows}
    assert set(got) == {
        "train_flops",
        "eval_flops",
        "train_real_tokens",
        "eval_real_tokens",
        "train_flops_per_second",
        "eval_flops_per_second",
    }
    tokenizer = load_tokenizer(str(tiny_model_dir))
    texts = [line.split("\t")[0] for line in (toy_data / "train.tsv").read_text().splitlines()[1:]]
    lengths = np.array([len(tokenizer(t, truncation=True, max_length=32)["input_ids"]) for t in texts], dtype=float)
    assert got["train_real_tokens"] == 2 * lengths.sum()
    dev = [line.split("\t")[0] for line in (toy_data / "dev.tsv").read_text().splitlines()[1:]]
    dev_tokens = sum(len(tokenizer(t, truncation=True, max_length=32)["input_ids"]) for t in dev)
    assert got["eval_real_tokens"] % dev_tokens == 0 and got["eval_real_tokens"] >= dev_tokens
    assert got["train_flops"] > got["eval_flops"] / (got["eval_real_tokens"] / dev_tokens) > 0
    assert got["train_flops_per_second"] > 0 and got["eval_flops_per_second"] > 0
