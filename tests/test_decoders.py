"""Decoder-only backbones as classifiers: padded with their pad (else end-of-sequence) token on the right,
that token written into the model config, recorded on the run; LoRA and QLoRA train on GPT-Neo and
Llama tiny models, and their exports load in ``pipeline(...)`` with the labels ``predict`` gives."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from specrun.errors import DataError
from specrun.testing.toy import toy_spec

TEXTS = ["a really good film", "the acting was awful", "quite a nice story", "a dreadful plot"]


def test_batches_pad_with_the_end_of_sequence_token_not_id_0(arch_model):
    from specrun.examples import Examples
    from specrun.runner.batching import Encoded, TokenCache
    from specrun.runner.modeling import load_classifier, load_tokenizer

    folder = str(arch_model("gpt_neo"))
    tokenizer = load_tokenizer(folder)
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>" and tokenizer.pad_token_id != 0
    assert tokenizer.padding_side == "right"
    enc = Encoded.build(
        Examples.from_columns(["a", "b"], ["good", "the movie was really good"], [1, 1]), TokenCache(tokenizer, 16)
    )
    batch = enc.collate(np.array([0, 1]), __import__("torch").device("cpu"))
    short = batch["input_ids"][0].tolist()
    assert short[1:] == [tokenizer.eos_token_id] * (len(short) - 1) and 0 not in short[1:]
    assert load_classifier(folder, 2).config.pad_token_id == tokenizer.eos_token_id


def test_a_tokenizer_without_pad_or_eos_is_a_clear_error():
    from specrun.core.roles import ensure_pad_token

    class Bare:
        pad_token_id = None
        eos_token = None
        name_or_path = "bare"

    with pytest.raises(DataError, match="neither a pad token nor an end-of-sequence token"):
        ensure_pad_token(Bare())


def _runs(store: Path) -> list[tuple]:
    with duckdb.connect(str(store), read_only=True) as db:
        return db.execute("SELECT run_id, status, environment FROM runs").fetchall()


@pytest.mark.parametrize("arch", ["gpt_neo", "llama"])
@pytest.mark.parametrize(
    "method", ['name = "lora"\nrank = 4', 'name = "qlora"\nrank = 4\ncompute_dtype = "fp32"'], ids=["lora", "qlora"]
)
def test_decoders_train_predict_and_export_to_a_pipeline(arch, method, arch_model, run_spec, specrun_cli, tmp_path):
    from transformers import AutoTokenizer, pipeline

    model = arch_model(arch)
    result = run_spec(
        toy_spec(method=method, model=str(model), train="max_steps = 30").replace(
            "learning_rate = 1e-3", "learning_rate = 0.02"
        )
    )
    [(run_id, status, environment)] = _runs(result.store)
    assert status == "completed", result.stderr
    padding = json.loads(environment)["padding"]
    assert padding == {
        "pad_token": "<eos>",
        "pad_token_id": padding["pad_token_id"],
        "padding_side": "right",
        "pad_from": "eos",
    }

    code, out, err = specrun_cli("predict", run_id, *TEXTS, "-f", "json", "--store", str(result.store))
    assert code == 0, err
    expected = [p["label"] for p in json.loads(out)]
    assert len(set(expected)) == 2, "the run should tell the texts apart"

    folder = tmp_path / "exported"
    code, out, err = specrun_cli("export", run_id, "-o", str(folder), "--store", str(result.store))
    assert code == 0, err
    kind = json.loads((folder / "run.json").read_text())["export"]
    if "qlora" in method:  # an adapter over the 4-bit base it names: peft loads it (in full precision here)
        from peft import AutoPeftModelForSequenceClassification

        assert kind == "adapter" and "pad_token_id=" in out
        labels = json.loads((folder / "run.json").read_text())["label_names"]
        loaded = AutoPeftModelForSequenceClassification.from_pretrained(
            str(folder),
            num_labels=2,
            id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)},
            pad_token_id=padding["pad_token_id"],
        )
        classify = pipeline(
            "text-classification", model=loaded, tokenizer=AutoTokenizer.from_pretrained(str(model)), device="cpu"
        )
    else:
        assert kind == "model+adapter"
        classify = pipeline("text-classification", model=str(folder), device="cpu")
    assert [p["label"] for p in classify(TEXTS)] == expected


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo", "llama"])
def test_built_decoders_skip_the_key_value_cache_and_fuse_the_tanh_gelu(arch, arch_model):
    """No task generates text: the model a run builds keeps no key/value cache, and GPT-2's seven-op tanh
    GELU runs as one fused kernel, with the logits of the stock model up to float rounding."""
    import torch
    from transformers.activations import FastGELUActivation, NewGELUActivation

    from specrun.plugins import get_registry
    from specrun.runner.build import build_model
    from specrun.runner.modeling import load_classifier, skip_needless_work

    folder = str(arch_model(arch))
    config = {
        "model": {"name": folder, "max_length": 32},
        "data": {"dataset": "local"},
        "method": {"name": "lora", "rank": 4},
        "train": {},
        "seed": 0,
    }
    model, _ = build_model(config, get_registry(), 2, ("negative", "positive"), torch.device("cpu"))
    configs = [m.config for m in model.modules() if hasattr(m, "config")]
    assert configs and all(getattr(c, "use_cache", False) is False for c in configs)
    assert not any(type(m) in (NewGELUActivation, FastGELUActivation) for m in model.modules())

    stock = load_classifier(folder, 2).eval()
    had_tanh_gelu = any(type(m) in (NewGELUActivation, FastGELUActivation) for m in stock.modules())
    assert had_tanh_gelu == (arch in ("gpt2", "gpt_neo"))
    assert stock.config.use_cache is True
    fused = load_classifier(folder, 2).eval()
    fused.load_state_dict(stock.state_dict())
    changed = skip_needless_work(fused)
    assert changed["use_cache"] >= 1 and (changed["gelu_tanh"] > 0) == had_tanh_gelu
    ids = torch.randint(3, stock.config.vocab_size, (4, 12))
    mask = torch.ones_like(ids)
    mask[:, 9:] = 0
    with torch.inference_mode():
        a = stock(input_ids=ids, attention_mask=mask)
        b = fused(input_ids=ids, attention_mask=mask)
    assert getattr(a, "past_key_values", None) is not None  # the stock model builds a cache nobody reads
    assert getattr(b, "past_key_values", None) is None
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-4, atol=1e-5)
