"""Issue 22, "no optimistic numbers": selection never touches the reported split, schedules do what
their names say, conflicting settings are errors, statistics respect seeds, memory figures carry their
kind, and ``few_shot k = 0`` is named for what it is."""

from __future__ import annotations

import math

import pytest
import torch

from specrun.spec.schema import TrainSpec
from specrun.testing import toy_spec
from specrun.testing.toy import run_spec

# --- schedules ---------------------------------------------------------------------------------------


def _rates(train: TrainSpec, steps: int) -> list[float]:
    """The learning rate each optimizer step uses (base rate 1.0)."""
    from specrun.runner.train import _scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = _scheduler(optimizer, train, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


STEPS, WARMUP = 20, 4  # warmup_ratio 0.2 of 20 steps


def _after_warmup(step: int, decay) -> float:
    if step < WARMUP:
        return step / WARMUP
    return decay((step - WARMUP) / (STEPS - WARMUP))


EXPECTED = {
    "linear": lambda s: _after_warmup(s, lambda p: 1 - p),
    "cosine": lambda s: _after_warmup(s, lambda p: 0.5 * (1 + math.cos(math.pi * p))),
    "constant": lambda s: _after_warmup(s, lambda p: 1.0),
    "polynomial": lambda s: _after_warmup(s, lambda p: (1 - p) ** 2),
}


@pytest.mark.parametrize("scheduler", sorted(EXPECTED))
def test_every_schedule_warms_up_then_follows_its_name(scheduler):
    train = TrainSpec(scheduler=scheduler, warmup_ratio=0.2, power=2.0 if scheduler == "polynomial" else None)
    rates = _rates(train, STEPS)
    expected = [EXPECTED[scheduler](s) for s in range(STEPS)]
    assert rates == pytest.approx(expected, abs=1e-9), scheduler
    assert rates[0] == 0.0  # the warm-up starts from zero, whatever the schedule (constant used to skip it)


def test_constant_without_warmup_is_constant_and_polynomial_defaults_to_power_one():
    assert _rates(TrainSpec(scheduler="constant"), 10) == [1.0] * 10
    linear = _rates(TrainSpec(scheduler="linear", warmup_ratio=0.1), 30)
    assert _rates(TrainSpec(scheduler="polynomial", warmup_ratio=0.1), 30) == pytest.approx(linear, abs=1e-9)


def test_a_constant_schedule_that_now_warms_up_gets_a_new_identity(write_spec, registry):
    """Runs trained with scheduler = "constant" and a warm-up before it was honoured computed something
    else: the store must not serve them for the same spec now. Other schedules keep their ids."""
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec

    def identity(train: str) -> dict:
        return plan_runs(load_spec(write_spec(train=train), registry=registry), registry)[0].identity

    assert identity('max_steps = 4\nscheduler = "constant"\nwarmup_ratio = 0.25')["schedule"] == "constant_with_warmup"
    assert "schedule" not in identity('max_steps = 4\nscheduler = "constant"')
    assert "schedule" not in identity("max_steps = 4\nwarmup_ratio = 0.25")


def test_keys_added_for_this_issue_stay_out_of_configs_that_do_not_use_them():
    """Run ids hash the config tree: a spec that neither early-stops nor sets a power keeps its ids."""
    dumped = TrainSpec(warmup_ratio=0.06).model_dump(mode="json")
    assert not {"power", "select_on", "select_fraction", "select_max_examples", "allow_selection_on_reported"} & set(
        dumped
    )
    selecting = TrainSpec(early_stopping={"metric": "accuracy"}).model_dump(mode="json")
    assert selecting["select_on"] is None and selecting["select_fraction"] == 0.1


# --- selection ---------------------------------------------------------------------------------------


def test_the_carved_selection_set_is_stratified_and_deterministic():
    from specrun.runner.data import SELECTION_SEED, stratified_indices

    labels = [0] * 80 + [1] * 20
    chosen = stratified_indices(labels, 10, SELECTION_SEED)
    assert chosen == stratified_indices(labels, 10, SELECTION_SEED) and chosen == sorted(set(chosen))
    assert sum(labels[i] for i in chosen) == 2 and len(chosen) == 10  # 8 of class 0, 2 of class 1


EARLY = 'eval_every = 2\nmax_steps = 12\nearly_stopping = { metric = "accuracy", patience = 50 }'


def _history(result, split: str) -> dict[int, float]:
    rows = result.sql(
        "SELECT step, value FROM metrics WHERE split = ? AND name = 'accuracy' AND NOT final ORDER BY step", [split]
    )
    return {r["step"]: r["value"] for r in rows}


def test_early_stopping_selects_on_a_set_carved_from_training_not_on_the_reported_split(
    tmp_path, tiny_model_dir, toy_data
):
    spec = toy_spec(method='name = "lora"\nrank = 4', train=EARLY, data_options=None)
    result = run_spec(spec, tmp_path, model_dir=tiny_model_dir, toy_data=toy_data)
    final = {
        (r["split"], r["name"]): r["value"] for r in result.sql("SELECT split, name, value FROM metrics WHERE final")
    }
    # 10% of the 240 training examples, held out of training (stratified), recorded on the run
    assert final[("selection", "examples")] == 24 and final[("selection", "on_reported_split")] == 0
    assert final[("cost", "train_examples")] == 216
    held = result.sql("SELECT count(*) AS n FROM train_examples")[0]["n"]
    assert held == 216
    selection, reported = _history(result, "selection"), _history(result, "validation")
    assert sorted(selection) == sorted(reported) == list(range(2, 13, 2))
    # the weights kept are those of the best selection-set evaluation (the first, on ties)
    best = max(selection, key=lambda step: (selection[step], -step))
    assert final[("validation", "accuracy")] == pytest.approx(reported[best])
    assert "Selected-on numbers" not in _report(result, tmp_path)


def test_selecting_on_the_reported_split_is_explicit_and_marked(tmp_path, tiny_model_dir, toy_data):
    spec = toy_spec(method='name = "lora"\nrank = 4', train=EARLY + "\nallow_selection_on_reported = true")
    result = run_spec(spec, tmp_path, model_dir=tiny_model_dir, toy_data=toy_data)
    final = {
        (r["split"], r["name"]): r["value"] for r in result.sql("SELECT split, name, value FROM metrics WHERE final")
    }
    assert final[("selection", "on_reported_split")] == 1 and final[("selection", "examples")] == 80
    assert final[("cost", "train_examples")] == 240  # nothing held out
    assert not _history(result, "selection")
    page = _report(result, tmp_path)
    assert (
        "Selected-on numbers: 1 run(s) picked their weights (early stopping) on the evaluation split they report"
        in page
    )


def _report(result, tmp_path) -> str:
    from specrun.testing.toy import run_cli

    out = tmp_path / "report.html"
    code, _, err = run_cli("report", result.experiment, "--store", str(result.store), "-o", str(out), "--no-analyze")
    assert code == 0, err
    return out.read_text()


# --- paired tests that respect seeds ---------------------------------------------------------------


def _outcomes(per_seed: list[tuple[list[int], list[int]]], n: int = 100):
    """(a, b) correctness, seeds × examples: for each seed, the examples only a gets right and only b does."""
    import numpy as np

    a, b = np.zeros((len(per_seed), n)), np.zeros((len(per_seed), n))
    for s, (only_a, only_b) in enumerate(per_seed):
        a[s, only_a] = 1
        b[s, only_b] = 1
    return a, b


def test_the_paired_test_counts_an_example_once_however_many_seeds_agree_on_it():
    from specrun.analysis.stats import mcnemar_p, paired_seeds_p, pooled_mcnemar_p

    one = _outcomes([(list(range(6)), [6])])
    assert paired_seeds_p(*one) == pooled_mcnemar_p(*one) == mcnemar_p(6, 1) == pytest.approx(0.125)
    # three seeds that make the same mistakes: no more evidence about the examples than one seed
    three = _outcomes([(list(range(6)), [6])] * 3)
    assert paired_seeds_p(*three) == pytest.approx(0.125)
    assert pooled_mcnemar_p(*three) < 0.002 < 0.05  # the old pooling: "significant" from the same 7 examples
    # seeds that disagree: an example counts for the configuration that is right on it more often
    mixed = _outcomes([([0, 1, 2], [3]), ([0, 1], [3, 4]), ([0, 5], [3])])
    # mean differences: examples 0, 1, 2, 5 favour a; 3 and 4 favour b
    assert paired_seeds_p(*mixed) == pytest.approx(mcnemar_p(4, 2))
    assert paired_seeds_p(*mixed) >= pooled_mcnemar_p(*mixed)


def test_paired_comparison_uses_the_seed_respecting_test(monkeypatch):
    import numpy as np

    from specrun.plugins.analyses.paired_comparison import PairedComparison, PairedOptions

    a, b = _outcomes([(list(range(6)), [6])] * 3, n=20)

    def arm(m):
        return {
            "config": "x",
            "eval_set": "validation",
            "dataset": "d",
            "seeds": {s: dict(enumerate(map(bool, m[s]))) for s in range(3)},
        }

    row = PairedComparison()._pair(PairedOptions(), "a", arm(a), "b", arm(b))
    assert row["n_seeds"] == 3 and row["only_a_right"] == 18 and row["only_b_right"] == 3
    assert row["p_value"] == pytest.approx(0.125)
    assert np.isclose(row["diff"], 0.25)


# --- memory figures carry their kind -----------------------------------------------------------------


def test_runs_record_their_memory_kind_and_the_pareto_front_never_mixes_kinds(study, cli):
    import json

    import duckdb

    _, store = study
    with duckdb.connect(str(store)) as db:
        kinds = db.execute("SELECT DISTINCT memory_kind FROM runs WHERE status = 'completed'").fetchall()
        assert kinds == [("cpu_rss_growth",)]
        # two configurations: the more accurate one also uses less memory, so on one axis it alone is on the front
        acc = db.execute("""SELECT json_extract_string(r.sweep, '$."data.max_train_examples"') AS config, avg(m.value) AS a
                            FROM runs r JOIN metrics m USING (run_id) WHERE m.final AND m.split = 'validation' AND m.name = 'accuracy'
                            GROUP BY 1 ORDER BY a DESC, config""").fetchall()
        best, other = acc[0][0], acc[-1][0]
        assert best != other
        for config, mb in ((best, 10.0), (other, 500.0)):
            db.execute(
                """UPDATE metrics SET value = ? WHERE split = 'cost' AND name = 'peak_memory_mb' AND run_id IN
                          (SELECT run_id FROM runs WHERE json_extract_string(sweep, '$."data.max_train_examples"') = ?)""",
                [mb, config],
            )
        # the other configuration's runs measured on a GPU: an allocator peak, not comparable with RSS growth
        db.execute(
            """UPDATE runs SET memory_kind = 'cuda_allocated_peak'
                      WHERE json_extract_string(sweep, '$."data.max_train_examples"') = ?""",
            [other],
        )
    code, _, err = cli("analyze", "study", "--store", str(store), "--only", "efficiency", "--force")
    assert code == 0, err
    code, out, err = cli(
        "sql",
        "SELECT config, on_front, memory_kind FROM efficiency_pareto WHERE cost_metric = 'peak_memory_mb' ORDER BY config",
        "--store",
        str(store),
        "-f",
        "json",
    )
    rows = json.loads(out)
    assert len(rows) == 2 and all(r["on_front"] for r in rows)  # each alone among its kind
    assert {r["memory_kind"] for r in rows} == {"cpu_rss_growth", "cuda_allocated_peak"}


def test_m011_gives_earlier_runs_the_memory_kind_of_their_device(tmp_path):
    import duckdb
    from test_migrate import _old_store

    from specrun.store import Store

    path = tmp_path / "old.duckdb"
    _old_store(path, "m010_relative_artifact_paths")
    with duckdb.connect(str(path)) as db:
        db.execute("""INSERT INTO runs (run_id, status, environment) VALUES
            ('cpu', 'completed', '{"device": "cpu"}'), ('gpu', 'completed', '{"device": "cuda:0"}'), ('none', 'failed', NULL)""")
        db.execute(
            "INSERT INTO metrics VALUES ('cpu', 1, NULL, 'cost', 'peak_memory_mb', 1.0, true), ('gpu', 1, NULL, 'cost', 'peak_memory_mb', 2.0, true)"
        )
    with Store(path).read() as db:
        kinds = dict(db.execute("SELECT run_id, memory_kind FROM runs").fetchall())
    assert kinds == {"cpu": "cpu_rss_growth", "gpu": "cuda_allocated_peak", "none": None}


# --- few_shot k = 0 ----------------------------------------------------------------------------------


def test_few_shot_k_zero_is_named_a_random_head_not_a_zero_shot_baseline(registry):
    plugin = registry.get("transform", "few_shot")
    for text in (plugin.description, plugin.Options.model_fields["k"].description):
        assert "randomly initialised head" in text and "not a zero-shot" in text
