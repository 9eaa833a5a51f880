"""``train.cache_frozen``: the frozen backbone's output computed once per example, cached, and the head
trained and evaluated on it (``specrun.runner.frozen``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from specrun.errors import ConfigError
from specrun.spec.schema import RunSettings, TrainSpec


def _final(cli, experiment: str) -> list[dict]:
    code, out, err = cli(
        "sql",
        f"SELECT r.run_id, r.seed, m.split, m.name, m.value FROM runs r JOIN metrics m USING (run_id) "
        f"WHERE r.experiment = '{experiment}' AND m.final ORDER BY r.seed, m.split, m.name",
        "-f",
        "json",
    )
    assert code == 0, err
    return json.loads(out)


def _value(rows: list[dict], split: str, name: str, seed: int = 0) -> float:
    (value,) = [r["value"] for r in rows if r["split"] == split and r["name"] == name and r["seed"] == seed]
    return value


def test_the_option_is_part_of_the_identity_only_when_set():
    assert "cache_frozen" not in TrainSpec().model_dump(mode="json")  # every existing run keeps its id
    assert "cache_frozen" not in TrainSpec(cache_frozen=False).model_dump(mode="json")
    assert TrainSpec(cache_frozen=True).model_dump(mode="json")["cache_frozen"] is True


@pytest.fixture
def no_dropout_model(tiny_model_dir, tmp_path):
    """The tiny BERT with every dropout off: caching then changes nothing in the computation."""
    folder = tmp_path / "tiny-no-dropout"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_cached_head_training_is_the_same_computation_when_nothing_drops_out(
    write_spec, cli, tiny_model_dir, no_dropout_model
):
    """With no dropout anywhere, a head-only run trains to the same head and the same metrics with and
    without frozen features (same batches, same seed): only the backbone's repetition is gone."""
    for name, cache in (("plain", ""), ("cached", "cache_frozen = true")):
        spec = write_spec(
            name=name,
            method='name = "head_only"\ntrain_pooler = true',
            train=f"epochs = 2\nlearning_rate = 0.05\n{cache}",
        )
        spec.write_text(spec.read_text().replace(str(tiny_model_dir), str(no_dropout_model)))
        code, _, err = cli("apply", str(spec))
        assert code == 0, err
    plain, cached = _final(cli, "plain"), _final(cli, "cached")
    assert plain[0]["run_id"] != cached[0]["run_id"]
    for metric in ("accuracy", "f1", "loss"):
        assert _value(cached, "validation", metric) == pytest.approx(_value(plain, "validation", metric), abs=1e-5)
    assert _value(cached, "cost", "frozen_features_cached") == 0.0  # first run: computed
    assert _value(cached, "cost", "frozen_features_seconds") > 0
    assert ("cost", "frozen_features_seconds") not in {(r["split"], r["name"]) for r in plain}


def test_a_second_run_on_the_same_frozen_weights_loads_the_features(write_spec, cli):
    spec = write_spec(method='name = "head_only"', train="epochs = 1\nlearning_rate = 0.05\ncache_frozen = true")
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    rows = _final(cli, "toy")
    assert _value(rows, "cost", "frozen_features_cached", seed=0) == 0.0
    assert _value(rows, "cost", "frozen_features_cached", seed=1) == 1.0  # another head, the same backbone


def _head_only_model(tiny_model_dir, precision="fp32"):
    from specrun.plugins import get_registry
    from specrun.runner.build import build_model

    config = {
        "model": {"name": str(tiny_model_dir), "max_length": 32},
        "data": {"dataset": "local"},
        "method": {"name": "head_only", "train_pooler": True},
        "train": {"precision": precision, "cache_frozen": True},
        "seed": 0,
    }
    settings = RunSettings.of(config)
    model, _ = build_model(settings, get_registry(), 2, ("neg", "pos"), torch.device("cpu"))
    return model, settings


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_evaluating_on_cached_features_equals_evaluating_the_whole_model(tiny_model_dir, toy_data, precision):
    from specrun.examples import Examples
    from specrun.plugins.api import NoOptions, TaskContext
    from specrun.plugins.tasks.classification import Classification
    from specrun.runner.batching import Encoded, TokenCache
    from specrun.runner.frozen import FrozenPrefix
    from specrun.runner.modeling import load_tokenizer
    from specrun.testing.toy import toy_rows

    model, settings = _head_only_model(tiny_model_dir, precision)
    rows = toy_rows(80, 1)
    examples = Examples.from_columns([str(i) for i in range(len(rows))], [t for t, _ in rows], [y for _, y in rows])
    tokenizer = load_tokenizer(str(tiny_model_dir))
    enc = Encoded.build(examples, TokenCache(tokenizer, 32))
    task, ctx = Classification(), TaskContext(tokenizer, 32, NoOptions(), ("neg", "pos"))
    device = torch.device("cpu")

    whole = task.evaluate(model, enc, ctx, 16, precision, device)
    prefix = FrozenPrefix(model, settings)
    cached = task.evaluate(prefix.head, prefix.features(enc, 16, precision, device), ctx, 16, precision, device)
    tolerance = 1e-5 if precision == "fp32" else 1e-2
    for name in ("accuracy", "f1", "loss"):
        assert cached.metrics[name] == pytest.approx(whole.metrics[name], abs=tolerance), name
    np.testing.assert_allclose(cached.rows["loss"], whole.rows["loss"], atol=tolerance)
    assert cached.rows["prediction"] == whole.rows["prediction"] or precision == "bf16"


def test_a_model_that_trains_inside_the_backbone_is_refused_before_training(tiny_model_dir):
    from specrun.runner.frozen import FrozenPrefix

    model, settings = _head_only_model(tiny_model_dir)
    model.bert.encoder.layer[0].output.dense.weight.requires_grad_(True)  # a method that says head-only but is not
    with pytest.raises(ConfigError, match="inside the backbone") as caught:
        FrozenPrefix(model, settings)
    assert caught.value.key == "train.cache_frozen"


def test_the_features_key_follows_the_frozen_weights(tiny_model_dir):
    from specrun.runner.frozen import FrozenPrefix

    model, settings = _head_only_model(tiny_model_dir)
    before = FrozenPrefix(model, settings).weights
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # the head: not part of the key (every seed starts another head)
    assert FrozenPrefix(model, settings).weights == before
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.self.query.weight.add_(1e-3)
    assert FrozenPrefix(model, settings).weights != before


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ('name = "full"', "full fine-tuning trains every parameter"),
        ('name = "bitfit"', "BitFit trains bias terms inside every layer"),
        ('name = "lora"\nrank = 4', 'lora with train = "all" trains the adapters inside'),
        ('name = "freeze"\nfraction = 0.25', "fraction = 0.25 leaves the upper layers training"),
    ],
)
def test_methods_that_train_inside_the_backbone_refuse_it_at_validate(write_spec, cli, method, message):
    spec = write_spec(method=method, train="epochs = 1\ncache_frozen = true")
    line = spec.read_text().splitlines().index("cache_frozen = true") + 1
    code, _, err = cli("validate", str(spec))
    assert code == 2
    assert f"{spec}:{line}: train.cache_frozen: {message}" in err
    assert "Traceback" not in err


def test_freezing_some_layers_is_refused_at_plan_with_the_model(write_spec, cli, tmp_path):
    spec = write_spec(method='name = "freeze"\nlayers = 1', train="epochs = 1\ncache_frozen = true")
    code, _, err = cli("apply", str(spec))
    assert code == 2, err
    assert "train.cache_frozen: layers = 1 freezes 1 of the 2 layers" in err
    assert not (tmp_path / "store.duckdb").exists() or "completed" not in err


def test_freezing_every_layer_uses_it(write_spec, cli):
    spec = write_spec(method='name = "freeze"\nlayers = 2', train="epochs = 1\ncache_frozen = true")
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    assert _value(_final(cli, "toy"), "cost", "frozen_features_cached") == 0.0


def test_decoders_are_served_and_other_architectures_refused_with_the_reason():
    from transformers import GPT2Config, LlamaConfig

    from specrun.runner.frozen import architecture_problem

    assert architecture_problem(GPT2Config()) is None  # tests/test_frozen_decoders.py
    assert architecture_problem(LlamaConfig()) is None
    assert architecture_problem(type("C", (), {"model_type": "bert"})()) is None
    why = architecture_problem(type("C", (), {"model_type": "t5"})())
    assert "'t5' is not one of them" in why and "the decoders gpt2" in why


def test_extractive_qa_refuses_it(write_spec, cli, tmp_path):
    spec = write_spec(method='name = "head_only"', train="epochs = 1\ncache_frozen = true")
    spec.write_text(spec.read_text().replace("[method]", '[task]\nname = "extractive_qa"\n\n[method]'))
    code, _, err = cli("validate", str(spec))
    assert code == 2
    assert "train.cache_frozen: frozen features serve classification heads" in err


def test_transferred_frozen_adapters_are_part_of_the_prefix(write_spec, cli):
    """lora with train = "head" from a source run: the adapters the source trained are in the frozen
    part (its features differ from the pretrained backbone's), and the run trains its head on them."""
    source = write_spec(name="source", train="max_steps = 5\nlearning_rate = 0.05")
    target = write_spec(
        name="target",
        method='name = "lora"\nrank = 4\ntrain = "head"',
        train="epochs = 1\nlearning_rate = 0.05\ncache_frozen = true",
    )
    target.write_text(target.read_text().replace("max_length = 32", f'max_length = 32\ninit_from = "{source.name}"'))
    code, _, err = cli("apply", str(target))
    assert code == 0, err
    rows = _final(cli, "target")
    assert _value(rows, "cost", "frozen_features_cached") == 0.0
    assert _value(rows, "validation", "n_examples") == 80


def test_the_benchmark_runs(tiny_model_dir, tmp_path):
    """A smoke run of benchmarks/bench_frozen.py (tiny BERT, 64 MRPC pairs, one epoch): the three
    peers complete and the figures it reports are there (not their values: those are the benchmark's)."""
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_frozen
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    args = bench_frozen.parse_args(
        [
            "--rounds",
            "1",
            "--train-examples",
            "64",
            "--epochs",
            "1",
            "--max-eval-examples",
            "32",
            "--model",
            str(tiny_model_dir),
        ]
    )
    results = bench_frozen.run(tmp_path, args, log=lambda message: None)
    (round_,) = results["rounds"]
    assert round_["cold"]["features_cached"] == 0.0 and round_["warm"]["features_cached"] == 1.0
    assert round_["plain"]["features_cached"] is None
    assert set(results["summary"]["accuracy"]) == {"plain", "cold", "warm"}
