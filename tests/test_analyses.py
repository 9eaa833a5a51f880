"""Analyses over a real store of tiny-model runs: they run after apply and on demand, write tables
that SQL reproduces, recompute only when their runs change, fail by name, and reject bad options
before anything trains."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest


def sql(cli, store, query):
    code, out, err = cli("sql", query, "--store", str(store), "-f", "json")
    assert code == 0, err
    return json.loads(out)


def test_apply_runs_every_declared_analysis_and_writes_the_report(built_study):
    folder, _, _store, err = built_study
    for name in (
        "bootstrap_ci",
        "paired_comparison",
        "efficiency",
        "learning_curves",
        "sensitivity",
        "scaling",
        "lora_svd",
        "correlation",
    ):
        assert f"  {name}: computed over 4 runs" in err, err
    assert f"report: {folder / 'study.html'}" in err
    assert (folder / "study.html").stat().st_size > 500_000  # the Vega libraries are inlined


def test_second_analyze_is_cached_and_force_recomputes(study, cli):
    spec, store = study
    code, _, err = cli("analyze", str(spec), "--store", str(store))
    assert code == 0, err
    assert err.count("cached (its 4 runs have not changed)") == 8
    code, _, err = cli("analyze", "study", "--store", str(store), "--only", "bootstrap_ci", "--force")
    assert code == 0 and "bootstrap_ci: computed over 4 runs" in err and "efficiency" not in err


def test_bootstrap_means_are_the_runs_metric_averaged_over_seeds(study, cli):
    _spec, store = study
    mine = sql(
        cli,
        store,
        "SELECT config, n, mean, ci_low, ci_high FROM bootstrap_ci WHERE experiment = 'study' ORDER BY config",
    )
    direct = sql(
        cli,
        store,
        """
        SELECT c.config, count(*) AS n, avg(s.accuracy) AS mean FROM run_summary s
        JOIN (SELECT DISTINCT run_id, config FROM bootstrap_ci_runs WHERE experiment = 'study') c USING (run_id)
        GROUP BY c.config ORDER BY c.config""",
    )
    assert [(r["config"], r["n"]) for r in mine] == [(r["config"], r["n"]) for r in direct]
    assert [r["mean"] for r in mine] == pytest.approx([r["mean"] for r in direct])
    assert [r["config"] for r in mine] == ["max_train_examples=120", "max_train_examples=240"]
    for r in mine:
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
    runs = sql(
        cli,
        store,
        "SELECT metric, value, ci_low, ci_high, n_examples FROM bootstrap_ci_runs WHERE experiment = 'study' AND ci_low IS NOT NULL",
    )
    assert {r["metric"] for r in runs} == {"accuracy", "f1"} and all(r["n_examples"] == 80 for r in runs)
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in runs)


def test_paired_comparison_counts_disagreements_from_the_predictions(study, cli):
    _spec, store = study
    pairs = sql(cli, store, "SELECT * FROM paired_comparison WHERE experiment = 'study'")
    assert len(pairs) == 6  # 2 configurations × 2 evaluation sets = 4 arms
    assert {(r["n_tests"], r["correction"]) for r in pairs} == {(6, "holm")}
    row = next(
        r
        for r in pairs
        if r["a"].endswith("@ validation")
        and r["b"].endswith("@ noisy")
        and r["a"].split(" @ ")[0] == r["b"].split(" @ ")[0]
    )
    config = row["a"].split(" @ ")[0]
    counts = sql(
        cli,
        store,
        f"""
        SELECT sum(CASE WHEN n.prediction = n.label AND v.prediction <> v.label THEN 1 ELSE 0 END) AS only_a,
               sum(CASE WHEN n.prediction <> n.label AND v.prediction = v.label THEN 1 ELSE 0 END) AS only_b
        FROM predictions v JOIN predictions n ON n.run_id = v.run_id AND n.example_id = v.example_id AND n.split = 'noisy'
        WHERE v.split = 'validation' AND v.run_id IN (SELECT run_id FROM bootstrap_ci_runs WHERE experiment = 'study' AND config = '{config}')""",
    )[0]
    assert (row["only_b_right"], row["only_a_right"]) == (counts["only_a"], counts["only_b"])  # a: validation, b: noisy
    assert row["n_seeds"] == 2 and row["n_examples"] == 80
    assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    ranking = sql(
        cli, store, "SELECT rank, significantly_better_than FROM paired_comparison_ranking WHERE experiment = 'study'"
    )
    assert len(ranking) == 4 and min(r["rank"] for r in ranking) == 1


def test_efficiency_marks_a_pareto_front_and_agrees_with_run_summary(study, cli):
    _spec, store = study
    rows = sql(
        cli,
        store,
        "SELECT config, label, trainable_params, train_seconds FROM efficiency WHERE experiment = 'study' ORDER BY config",
    )
    direct = sql(cli, store, "SELECT max(trainable_params) AS p FROM run_summary")[0]["p"]
    assert [r["trainable_params"] for r in rows] == [direct, direct]
    assert [r["label"] for r in rows] == [r["config"] for r in rows]  # one method: the configuration tells them apart
    front = sql(
        cli,
        store,
        "SELECT cost_metric, count(*) FILTER (WHERE on_front) AS front, count(*) AS n FROM efficiency_pareto WHERE experiment = 'study' GROUP BY 1",
    )
    assert {r["cost_metric"] for r in front} == {
        "trainable_params",
        "train_seconds",
        "peak_memory_mb",
        "latency_ms_mean",
    }
    assert all(1 <= r["front"] <= r["n"] == 2 for r in front)


def test_learning_curves_hold_train_and_eval_at_every_evaluation(study, cli):
    _spec, store = study
    curves = sql(
        cli,
        store,
        "SELECT split, metric, count(*) AS n FROM learning_curves WHERE experiment = 'study' GROUP BY ALL ORDER BY ALL",
    )
    evaluations = sql(
        cli, store, "SELECT count(*) AS n FROM metrics WHERE split = 'validation' AND name = 'accuracy' AND NOT final"
    )[0]["n"]
    assert curves == [
        {"split": s, "metric": m, "n": evaluations} for s in ("train", "validation") for m in ("accuracy", "loss")
    ]
    conv = sql(
        cli,
        store,
        "SELECT step, total_steps, seconds, total_seconds, final_value, target FROM learning_curves_convergence WHERE experiment = 'study'",
    )
    assert len(conv) == 4
    assert all(0 < r["step"] <= r["total_steps"] and 0 <= r["seconds"] <= r["total_seconds"] for r in conv)
    assert all(r["target"] == pytest.approx(0.95 * r["final_value"]) for r in conv)


def test_sensitivity_and_scaling_average_over_seeds(study, cli):
    _spec, store = study
    cells = sql(
        cli, store, "SELECT x, y, n_runs, mean FROM sensitivity WHERE experiment = 'study' ORDER BY x_num, y_num"
    )
    accuracy = sql(
        cli,
        store,
        "SELECT r.config->'data'->>'max_train_examples' AS n, s.seed, s.accuracy FROM run_summary s JOIN runs r USING (run_id) ORDER BY 1, 2",
    )
    assert [(c["x"], c["y"], c["n_runs"]) for c in cells] == [
        ("120", "0", 1),
        ("120", "1", 1),
        ("240", "0", 1),
        ("240", "1", 1),
    ]
    assert [c["mean"] for c in cells] == pytest.approx([a["accuracy"] for a in accuracy])
    scaling = sql(cli, store, "SELECT grp, size, n, mean FROM scaling WHERE experiment = 'study' ORDER BY size")
    assert [(r["grp"], r["size"], r["n"]) for r in scaling] == [("all runs", 120, 2), ("all runs", 240, 2)]
    assert [r["mean"] for r in scaling] == pytest.approx(
        [
            (accuracy[0]["accuracy"] + accuracy[1]["accuracy"]) / 2,
            (accuracy[2]["accuracy"] + accuracy[3]["accuracy"]) / 2,
        ]
    )


def test_lora_svd_is_the_svd_of_the_saved_adapters(study, cli):
    from safetensors.torch import load_file

    _spec, store = study
    rows = sql(
        cli,
        store,
        "SELECT s.run_id, s.module, s.rank, s.stable_rank, s.spectral_norm, a.path FROM lora_svd s "
        "JOIN artifacts a USING (run_id) WHERE s.experiment = 'study' ORDER BY s.run_id, s.module",
    )
    assert len({r["run_id"] for r in rows}) == 4 and all(r["rank"] == 4 for r in rows)
    assert len(rows) == 4 * 2 * 2  # two layers, query and value
    first = rows[0]
    method = sql(cli, store, f"SELECT config->'method' AS m FROM runs WHERE run_id = '{first['run_id']}'")[0]["m"]
    method = json.loads(method) if isinstance(method, str) else method
    tensors = load_file(store.parent / first["path"])  # recorded relative to the store's folder
    a = next(v for k, v in tensors.items() if f"{first['module']}.lora_A" in k).numpy()
    b = next(v for k, v in tensors.items() if f"{first['module']}.lora_B" in k).numpy()
    sigma = np.linalg.svd((method["alpha"] / method["rank"]) * b @ a, compute_uv=False)
    assert first["spectral_norm"] == pytest.approx(sigma[0], rel=1e-5)
    assert first["stable_rank"] == pytest.approx((sigma**2).sum() / sigma[0] ** 2, rel=1e-5)


def test_correlation_over_runs(study, cli):
    _spec, store = study
    row = sql(
        cli,
        store,
        "SELECT n, pearson_r, pearson_low, pearson_high, spearman_rho FROM correlation WHERE experiment = 'study'",
    )[0]
    assert row["n"] == 4 and -1 <= row["pearson_low"] <= row["pearson_r"] <= row["pearson_high"] <= 1
    points = sql(cli, store, "SELECT x FROM correlation_points WHERE experiment = 'study' ORDER BY x")
    assert [p["x"] for p in points] == [120] * 2 + [240] * 2


def test_analyses_recompute_only_when_their_runs_change(write_spec, cli):
    spec = write_spec(method='name = "full"', train="max_steps = 3", extra='[[analyses]]\nname = "bootstrap_ci"\n')
    code, _, err = cli("apply", str(spec))
    assert code == 0 and "bootstrap_ci: computed over 1 runs" in err, err
    code, _, err = cli("apply", str(spec))
    assert code == 0 and "bootstrap_ci: cached (its 1 runs have not changed)" in err, err
    code, _, err = cli("apply", str(spec), "--force")  # the run trains again: new results, the analysis follows
    assert code == 0 and "bootstrap_ci: computed over 1 runs" in err, err
    spec.write_text(
        spec.read_text().replace(
            "[[analyses]]",
            '[data.eval_sets.upper]\ntransforms = [{ name = "clean", lowercase = true }]\n\n[[analyses]]',
        )
    )
    code, _, err = cli("apply", str(spec))  # evaluated on a new set without retraining: its inputs changed too
    assert code == 0 and "1 evaluated" in err and "bootstrap_ci: computed over 1 runs" in err, err


def test_analysis_added_after_training_runs_without_retraining(write_spec, cli, tmp_path):
    spec = write_spec(
        method='name = "full"', train="max_steps = 4", extra='[sweep]\n"train.learning_rate" = [1e-3, 2e-3]'
    )
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    before = sql(cli, os.environ["SPECRUN_STORE"], "SELECT run_id, attempts, finished_at FROM runs ORDER BY run_id")
    spec.write_text(spec.read_text() + '\n[[analyses]]\nname = "sensitivity"\nx = "train.learning_rate"\n')
    code, _, err = cli("analyze", str(spec))
    assert code == 0, err
    assert "sensitivity: computed over 2 runs" in err
    assert (
        sql(cli, os.environ["SPECRUN_STORE"], "SELECT run_id, attempts, finished_at FROM runs ORDER BY run_id")
        == before
    )
    assert len(sql(cli, os.environ["SPECRUN_STORE"], "SELECT * FROM sensitivity")) == 2


def test_analyze_by_experiment_name_needs_no_spec_file(write_spec, cli):
    spec = write_spec(
        method='name = "full"', train="max_steps = 3", extra='[[analyses]]\nname = "bootstrap_ci"\nmetric = "f1"\n'
    )
    assert cli("apply", str(spec))[0] == 0
    spec.unlink()  # the store recorded the spec it was applied with
    code, _, err = cli("analyze", "toy", "--force")
    assert code == 0 and "bootstrap_ci: computed over 1 runs" in err, err
    assert sql(cli, os.environ["SPECRUN_STORE"], "SELECT metric FROM bootstrap_ci") == [{"metric": "f1"}]
    code, _, err = cli("analyze", "tyo")
    assert code == 2 and "no apply of experiment 'tyo'" in err and "did you mean 'toy'" in err


def test_only_runs_an_undeclared_analysis_with_its_defaults(write_spec, cli):
    spec = write_spec(method='name = "full"', train="max_steps = 3")
    assert cli("apply", str(spec))[0] == 0
    code, _, err = cli("analyze", str(spec))
    assert code == 2 and "declares no analyses" in err
    code, _, err = cli("analyze", str(spec), "--only", "bootstrap_ci")
    assert code == 0 and "bootstrap_ci: computed over 1 runs" in err, err
    code, _, err = cli("analyze", str(spec), "--only", "bootstrap")
    assert code == 2 and "did you mean 'bootstrap_ci'" in err


def test_a_failing_analysis_is_reported_by_name_and_the_others_complete(write_spec, cli, tmp_path):
    spec = write_spec(
        method='name = "full"',
        train="max_steps = 3",
        extra='[[analyses]]\nname = "lora_svd"\n\n[[analyses]]\nname = "bootstrap_ci"\n\n[report]\npath = "'
        + str(tmp_path / "r.html")
        + '"\n',
    )
    code, _, err = cli("apply", str(spec))
    assert code == 1
    assert "lora_svd: FAILED: none of the 1 runs has saved LoRA adapters" in err
    assert "bootstrap_ci: computed over 1 runs" in err
    html = (tmp_path / "r.html").read_text()
    assert "This analysis failed: none of the 1 runs has saved LoRA adapters" in html
    assert "bootstrap_ci" in html
    status = sql(cli, os.environ["SPECRUN_STORE"], "SELECT analysis, status FROM analyses ORDER BY analysis")
    assert status == [{"analysis": "bootstrap_ci", "status": "completed"}, {"analysis": "lora_svd", "status": "failed"}]


@pytest.mark.parametrize(
    "entry,where,message",
    [
        ('name = "bootstrap"', "analyses.0.name", "unknown analysis 'bootstrap' (did you mean 'bootstrap_ci'?)"),
        (
            'name = "bootstrap_ci"\nconfidnce = 0.9',
            "analyses.0.confidnce",
            "unknown key 'confidnce' (did you mean 'confidence'?)",
        ),
        (
            'name = "bootstrap_ci"\nmetric = "acuracy"',
            "analyses.0.metric",
            "no metric 'acuracy' (did you mean 'accuracy'?)",
        ),
        ('name = "bootstrap_ci"\nmetric = "noisy.accuracy"', "analyses.0.metric", "no evaluation set 'noisy'"),
        (
            'name = "sensitivity"\nx = "train.learnig_rate"',
            "analyses.0.x",
            "no run's config has key 'train.learnig_rate' (did you mean 'train.learning_rate'?)",
        ),
        (
            'name = "efficiency"\ncosts = ["train_secs"]',
            "analyses.0.costs",
            "'train_secs' is not a cost metric (did you mean 'train_seconds'?)",
        ),
        (
            'name = "correlation"\nx = "accuracy"\ny = "table:lora svd"',
            "analyses.0.y",
            "write table:<result table>.<column>",
        ),
        ('name = "learning_curves"\nmetrics = ["acc"]', "analyses.0.metrics", "no evaluation metric 'acc'"),
    ],
)
def test_bad_analysis_options_are_located_before_anything_runs(write_spec, cli, tmp_path, entry, where, message):
    spec = write_spec(
        train="max_steps = 2", extra='[sweep]\n"train.learning_rate" = [1e-3, 2e-3]\n\n[[analyses]]\n' + entry + "\n"
    )
    line = spec.read_text().splitlines().index("[[analyses]]") + 1
    for command in ("validate", "apply"):
        code, _, err = cli(command, str(spec))
        assert code == 2, err
        assert "Traceback" not in err
        assert where in err and message in err, err
        located = re.search(rf"{re.escape(str(spec))}:(\d+): {re.escape(where)}: ", err)
        assert located and int(located.group(1)) >= line, err
    assert not Path(os.environ["SPECRUN_STORE"]).exists()


def test_duplicate_analysis_ids_and_unknown_report_sections(write_spec, cli):
    spec = write_spec(
        train="max_steps = 2", extra='[[analyses]]\nname = "bootstrap_ci"\n\n[[analyses]]\nname = "bootstrap_ci"\n'
    )
    code, _, err = cli("validate", str(spec))
    assert code == 2 and "analyses.1.name: analyses 0 and 1 are both 'bootstrap_ci': give one an `id` of its own" in err
    spec.write_text(
        spec.read_text().replace(
            '[[analyses]]\nname = "bootstrap_ci"\n\n[[analyses]]\nname = "bootstrap_ci"\n',
            '[[analyses]]\nname = "bootstrap_ci"\n\n[[analyses]]\nname = "bootstrap_ci"\nid = "f1"\nmetric = "f1"\n\n[report]\nsections = ["acc"]\n',
        )
    )
    code, _, err = cli("validate", str(spec))
    assert code == 2 and "report.sections.0: no analysis 'acc'" in err


def test_two_entries_of_one_analysis_keep_their_own_rows(write_spec, cli):
    spec = write_spec(
        method='name = "full"',
        train="max_steps = 3",
        extra='[[analyses]]\nname = "bootstrap_ci"\n\n[[analyses]]\nname = "bootstrap_ci"\nid = "ci_f1"\nmetric = "f1"\n',
    )
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    rows = sql(cli, os.environ["SPECRUN_STORE"], "SELECT analysis, metric FROM bootstrap_ci ORDER BY analysis")
    assert rows == [{"analysis": "bootstrap_ci", "metric": "accuracy"}, {"analysis": "ci_f1", "metric": "f1"}]
