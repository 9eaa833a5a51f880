"""Transfer that cannot lie (what init_from loads is recorded; a source whose tensors find no place fails
before training), head-only transfer over frozen adapters, and stages declared in the spec itself."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from specrun import hookimpl
from specrun.plugins import api, set_registry
from specrun.plugins.registry import build_registry, make_plugin_manager


def sql(cli, query):
    code, out, err = cli("sql", query, "-f", "json")
    assert code == 0, err
    return json.loads(out)


def with_init(spec, init_from: str, extra_model: str = ""):
    spec.write_text(
        spec.read_text().replace("max_length = 32", f'max_length = 32\ninit_from = "{init_from}"{extra_model}')
    )
    return spec


@pytest.mark.parametrize(
    "source_method,target_method,loaded",
    [
        ('name = "lora"\nrank = 4', 'name = "head_only"', "0 of 8"),
        ('name = "full"', 'name = "lora"\nrank = 4', "0 of"),
    ],
)
def test_a_transfer_whose_tensors_find_no_place_fails_before_training(
    write_spec, cli, source_method, target_method, loaded
):
    source = write_spec(name="source", method=source_method, train="max_steps = 2")
    target = with_init(write_spec(name="target", method=target_method, train="max_steps = 2"), source.name)
    code, _, err = cli("apply", str(target))
    assert code == 1
    source_name = source_method.split('"')[1]
    target_name = target_method.split('"')[1]
    assert (
        "model.init_from: the source run" in err
        and f"(method {source_name!r})" in err
        and f"(method {target_name!r})" in err
    ), err
    assert loaded.split(" of")[0] + " of them found a place" in err and "model.init_partial = true" in err
    rows = sql(
        cli,
        "SELECT r.status, (SELECT count(*) FROM metrics m WHERE m.run_id = r.run_id) AS metrics FROM runs r WHERE experiment = 'target'",
    )
    assert rows == [
        {"status": "failed", "metrics": 0}
    ]  # failed before its first step: nothing trained, nothing recorded


def test_init_partial_accepts_it_and_the_store_says_what_was_loaded(write_spec, cli):
    source = write_spec(name="source", method='name = "lora"\nrank = 4', train="max_steps = 2")
    target = with_init(
        write_spec(name="target", method='name = "head_only"', train="max_steps = 2"),
        source.name,
        "\ninit_partial = true",
    )
    code, _, err = cli("apply", str(target))
    assert code == 0, err
    row = sql(
        cli,
        "SELECT t.source_method, t.source_tensors, t.loaded, t.no_place, t.head FROM transfers t JOIN runs r USING (run_id) WHERE r.experiment = 'target'",
    )
    assert row == [{"source_method": "lora", "source_tensors": 8, "loaded": 0, "no_place": 8, "head": 2}]


def test_head_only_transfer_keeps_the_source_adapters_and_trains_a_fresh_head(write_spec, cli, tmp_path):
    source = write_spec(name="source", method='name = "lora"\nrank = 4', train="max_steps = 4\nlearning_rate = 0.01")
    target = with_init(
        write_spec(
            name="target", method='name = "lora"\nrank = 4\ntrain = "head"', train="max_steps = 6\nlearning_rate = 0.05"
        ),
        source.name,
    )
    code, _, err = cli("apply", str(target))
    assert code == 0, err
    paths = {
        r["experiment"]: r["path"]
        for r in sql(cli, "SELECT r.experiment, a.path FROM runs r JOIN artifacts a USING (run_id)")
    }
    a, b = (
        load_file(tmp_path / paths["source"]),
        load_file(tmp_path / paths["target"]),
    )  # relative to the store's folder
    adapters = [k for k in a if "lora_" in k]
    assert adapters and all(torch.equal(a[k], b[k]) for k in adapters)  # frozen: saved with the run, unchanged
    head = [k for k in b if "classifier" in k]
    assert head and any(not torch.allclose(a[k], b[k]) for k in head if k in a)
    row = sql(
        cli,
        "SELECT t.loaded, t.frozen, s.trainable_params FROM transfers t JOIN run_summary s USING (run_id) WHERE s.experiment = 'target'",
    )[0]
    assert row["loaded"] == row["frozen"] == len(adapters)
    head_params = sum(b[k].numel() for k in head)
    assert row["trainable_params"] == head_params
    target_id = sql(cli, "SELECT run_id FROM runs WHERE experiment = 'target'")[0]["run_id"]
    code, out, err = cli(
        "predict", target_id, "the movie was great", "-f", "json"
    )  # reload: build, then the saved adapters and head
    assert code == 0, err
    assert json.loads(out)[0]["label"] in ("0", "1")


def test_head_training_needs_a_source(write_spec, cli):
    spec = write_spec(method='name = "lora"\nrank = 4\ntrain = "head"', train="max_steps = 2")
    code, _, err = cli("plan", str(spec))
    assert (
        code == 2
        and "method.train: 'head' trains the head over frozen adapters, which must come from model.init_from" in err
    )


STAGED = """
[stages.source]
train = {{ learning_rate = 0.01, max_steps = 4 }}
method = {{ train = "all" }}
{source_extra}

[sweep]
"method.placement" = ["attn-q", "attn-v"]
"""


def staged(write_spec, source_extra: str = "", seeds: str = "[0, 1]"):
    spec = write_spec(
        method='name = "lora"\nrank = 4\ntrain = "head"',
        train="max_steps = 3\nlearning_rate = 0.05",
        extra=STAGED.format(source_extra=source_extra),
    )
    text = (
        spec.read_text()
        .replace("max_length = 32", 'max_length = 32\ninit_from = "stage:source"')
        .replace("seeds = [0]", f"seeds = {seeds}")
    )
    spec.write_text(text)
    return spec


def test_stages_train_one_source_per_sweep_point_and_seed_first_then_cache(write_spec, cli):
    spec = staged(write_spec)
    code, out, err = cli("plan", str(spec), "-f", "json")
    assert code == 0, err
    rows = json.loads(out)
    sources = [r for r in rows if r["sweep"].startswith("required first (toy.source")]
    assert len(sources) == 4 and len(rows) == 8
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    assert len([line for line in err.splitlines() if line.startswith("[required first]") and ": done" in line]) == 4
    runs = sql(
        cli,
        "SELECT experiment, count(*) AS n, count(DISTINCT config->'method'->>'placement') AS placements FROM runs GROUP BY 1 ORDER BY 1",
    )
    assert runs == [
        {"experiment": "toy", "n": 4, "placements": 2},
        {"experiment": "toy.source", "n": 4, "placements": 2},
    ]
    pairs = sql(
        cli,
        """SELECT t.config->'method'->>'placement' AS target, s.config->'method'->>'placement' AS source, t.seed, s.seed AS source_seed
                        FROM runs t JOIN runs s ON s.run_id = (t.config->'model'->>'init_from') ORDER BY 1, 3""",
    )
    assert all(p["target"] == p["source"] and p["seed"] == p["source_seed"] for p in pairs) and len(pairs) == 4
    code, _, err = cli("apply", str(spec))
    assert code == 0 and "4 cached" in err and "training" not in err


def test_a_stage_with_its_own_seed_is_shared_across_seeds(write_spec, cli):
    spec = staged(write_spec, source_extra="experiment = { seeds = [7] }")
    code, out, err = cli("plan", str(spec), "-f", "json")
    assert code == 0, err
    sources = [r for r in json.loads(out) if r["sweep"].startswith("required first")]
    assert len(sources) == 2 and {r["seed"] for r in sources} == {7}


def test_stage_problems_are_located_in_the_stage(write_spec, cli):
    spec = staged(write_spec, source_extra="data = { max_train_exmples = 5 }")
    code, _, err = cli("validate", str(spec))
    line = spec.read_text().splitlines().index("data = { max_train_exmples = 5 }") + 1
    assert code == 2 and f"{spec}:{line}: stages.source.data.max_train_exmples: stage 'source': unknown key" in err, err
    spec = staged(write_spec)
    spec.write_text(spec.read_text().replace('init_from = "stage:source"', 'init_from = "stage:sorce"'))
    code, _, err = cli("validate", str(spec))
    assert code == 2 and "model.init_from: no stage 'sorce' (did you mean 'source'?)" in err


class Broken(api.MethodPlugin):
    name = "test-broken"

    def build(self, options, ctx):
        raise RuntimeError("the source cannot be built")


class Module:
    @hookimpl
    def register_methods(self, register):
        register(Broken())


def test_a_failed_source_skips_its_dependants_with_the_reason(write_spec, cli):
    set_registry(build_registry(*make_plugin_manager([Module()], entry_points=False)))
    spec = staged(write_spec, seeds="[0]")
    spec.write_text(spec.read_text().replace('method = { train = "all" }', 'method = { name = "test-broken" }'))
    code, _, err = cli("apply", str(spec))
    assert code == 1, err
    rows = sql(cli, "SELECT experiment, status, error FROM runs ORDER BY experiment, run_id")
    assert [r["status"] for r in rows if r["experiment"] == "toy"] == ["skipped", "skipped"]
    assert all(
        "is failed: RuntimeError: the source cannot be built" in r["error"] for r in rows if r["experiment"] == "toy"
    )
    assert [r["status"] for r in rows if r["experiment"] == "toy.source"] == [
        "failed"
    ]  # its method table replaced: one source for both
    code, out, _ = cli("runs", "--status", "skipped", "-f", "json")
    assert code == 0 and len(json.loads(out)) == 2


def test_a_transfer_leaves_every_architecture_s_task_head_behind():
    from specrun.runner.artifacts import is_head

    heads = [
        "classifier.weight",
        "classifier.out_proj.weight",  # RoBERTa
        "pre_classifier.weight",  # DistilBERT
        "score.weight",  # decoders (GPT-2, GPT-Neo, Llama)
        "base_model.model.score.modules_to_save.default.weight",
        "qa_outputs.bias",
    ]
    bodies = [
        "bert.encoder.layer.0.attention.self.query.lora_A.default.weight",
        "transformer.h.0.attn.c_attn.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "bert.pooler.dense.weight",
    ]
    assert all(is_head(n) for n in heads) and not any(is_head(n) for n in bodies)
