"""Reports at the size of a real study: a 24-configuration transfer experiment (6 placements × 2 ranks ×
transferred-or-from-pretrained, 2 seeds, 12 LoRA sources), fabricated as tiny runs in a real DuckDB
store, analysed and reported by the real code. The paired comparison follows the design (one test per
placement and rank), labels name only what varies, stage runs are configurations of their own, the
transfer analysis matches runs and says why a correlation has no interval, and every chart draws its
SQL's rows."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import numpy as np
import pytest
from test_report import figures, inline_data, same

from specrun.analysis.engine import AnalysisEntry, run_analyses
from specrun.analysis.targets import Target
from specrun.plugins.registry import get_registry
from specrun.report.build import build_report
from specrun.spec.schema import ReportSpec
from specrun.store.db import Store

PLACEMENTS = ["attn-q", "attn-v", "attn-qkv", "attn-full", "ffn-only", "full-model"]
RANKS = [4, 8]
SEEDS = [0, 1]
ARMS = [["stage:source", "head", 1e-2], ["", "all", 2e-3]]
ARM_KEY = "model.init_from, method.train, train.learning_rate"
N_EXAMPLES = 60


def _lora_weights(path, rng, rank: int, spread: float) -> None:
    """A LoRA adapter file with two modules; ``spread`` sets how evenly the update's energy spreads."""
    from safetensors.numpy import save_file

    tensors = {}
    for layer in range(2):
        for module in ("query", "value"):
            stem = f"base_model.model.bert.encoder.layer.{layer}.attention.self.{module}"
            a = rng.normal(size=(rank, 16)).astype(np.float32)
            b = (rng.normal(size=(16, rank)) * (spread ** np.arange(rank))).astype(np.float32)
            tensors[f"{stem}.lora_A.weight"], tensors[f"{stem}.lora_B.weight"] = a, b
    save_file(tensors, str(path))


def _config(placement: str, rank: int, init_from: str | None, train: str, lr: float, dataset: str) -> dict:
    return {
        "model": {"name": "tiny", "init_from": init_from},
        "data": {"dataset": dataset},
        "method": {"name": "lora", "rank": rank, "alpha": 2 * rank, "placement": placement, "train": train},
        "train": {"learning_rate": lr},
    }


@pytest.fixture(scope="module")
def study_store(tmp_path_factory):
    """(store, experiment): 48 runs of 24 configurations and the 12 source runs they start from."""
    folder = tmp_path_factory.mktemp("design")
    store = Store(folder / "store.duckdb")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, N_EXAMPLES)
    t0 = datetime(2026, 1, 1)
    runs, metrics, predictions, artifacts, current = [], [], [], [], []

    def add(run_id, experiment, config, sweep, seed, eval_set, accuracy, created):
        runs.append(
            [
                run_id,
                experiment,
                "completed",
                "lora",
                config["data"]["dataset"],
                "tiny",
                seed,
                eval_set,
                json.dumps(config),
                json.dumps(sweep),
                created,
                created,
                created + timedelta(minutes=1),
            ]
        )
        correct = rng.random(N_EXAMPLES) < accuracy
        predictions.extend(
            [run_id, eval_set, f"ex{i}", int(labels[i]), int(labels[i] if c else 1 - labels[i]), 0.9, 0.1]
            for i, c in enumerate(correct)
        )
        metrics.extend(
            [
                [run_id, 100, 3.0, eval_set, "accuracy", float(correct.mean()), True],
                [run_id, 100, 3.0, eval_set, "f1", float(correct.mean()), True],
                [run_id, 50, 1.5, eval_set, "accuracy", float(correct.mean()) - 0.05, False],
                [run_id, 50, 1.5, "train", "accuracy", 0.6, False],
            ]
        )

    n = 0
    for p, placement in enumerate(PLACEMENTS):
        for rank in RANKS:
            source = f"src-{placement}-{rank}"
            add(
                source,
                "design.source",
                _config(placement, rank, None, "all", 2e-3, "glue/sst2"),
                {},
                0,
                "validation",
                0.8 + 0.01 * p,
                t0,
            )
            weights = folder / f"{source}.safetensors"
            _lora_weights(weights, rng, rank, spread=0.3 + 0.1 * p)
            artifacts.append([source, "weights", str(weights), "x", 1, t0])
            for arm in ARMS:
                for seed in SEEDS:
                    n += 1
                    run_id = f"run-{placement}-{rank}-{'t' if arm[0] else 's'}-{seed}"
                    config = _config(placement, rank, source if arm[0] else None, arm[1], arm[2], "glue/mrpc")
                    sweep = {"method.placement": placement, "method.rank": rank, ARM_KEY: arm}
                    add(
                        run_id,
                        "design",
                        config,
                        sweep,
                        seed,
                        "validation",
                        0.55 + (0.05 * p if arm[0] else 0.1),
                        t0 + timedelta(seconds=n),
                    )
                    current.append(run_id)
    with store.write() as db:
        db.executemany(
            "INSERT INTO runs (run_id, experiment, status, method, dataset, model, seed, eval_set, config, sweep, created_at, "
            "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            runs,
        )
        db.executemany(
            "INSERT INTO metrics (run_id, step, epoch, split, name, value, final) VALUES (?, ?, ?, ?, ?, ?, ?)", metrics
        )
        db.executemany(
            "INSERT INTO predictions (run_id, split, example_id, label, prediction, confidence, loss) VALUES (?, ?, ?, ?, ?, ?, ?)",
            predictions,
        )
        db.executemany(
            "INSERT INTO artifacts (run_id, kind, path, sha256, bytes, created_at) VALUES (?, ?, ?, ?, ?, ?)", artifacts
        )
        db.execute(
            "INSERT INTO applies (apply_id, experiment, spec_path, spec_sha256, overrides, started_at, spec_text) "
            "VALUES ('a1', 'design', 'design.toml', 'x', '[]', ?, '# fabricated')",
            [t0],
        )
        db.executemany("INSERT INTO apply_runs VALUES ('a1', ?)", [[r] for r in current])
    return store, folder


ENTRIES = [
    AnalysisEntry("transfer", "transfer", {}),
    AnalysisEntry("paired_comparison", "paired_comparison", {"vary": "init_from"}),
    AnalysisEntry("bootstrap_ci", "bootstrap_ci", {"vary": "init_from", "n_resamples": 500}),
    AnalysisEntry("learning_curves", "learning_curves", {}),
    AnalysisEntry("lora_svd", "lora_svd", {}),
]


@pytest.fixture(scope="module")
def report(study_store):
    store, folder = study_store
    registry = get_registry()
    entries = [
        AnalysisEntry(
            e.id, e.name, registry.get("analysis", e.name).Options.model_validate(e.options).model_dump(mode="json")
        )
        for e in ENTRIES
    ]
    outcomes = run_analyses(store, registry, "design", entries)
    assert [o.status for o in outcomes] == ["computed"] * len(entries), [o.error for o in outcomes]
    target = Target(
        "design", entries, "design.toml", "# fabricated", report=ReportSpec(headline="transfer"), applied_at="now"
    )
    out = folder / "report.html"
    summary = build_report(store, registry, [target], out)
    assert summary.problems == []
    return store, out.read_text()


def rows(store, query):
    with store.read() as db:
        relation = db.sql(query)
        return [dict(zip(relation.columns, r)) for r in relation.fetchall()]


def test_paired_comparison_tests_only_the_pairs_the_design_names(report):
    store, _ = report
    pairs = rows(
        store, "SELECT a, b, grp, pair, n_tests, correction, design FROM paired_comparison WHERE experiment = 'design'"
    )
    assert len(pairs) == 12  # init_from within each of 6 placements × 2 ranks, not 276 pairs of 24
    assert {(r["n_tests"], r["correction"], r["design"]) for r in pairs} == {
        (12, "holm", "init_from within each placement, rank")
    }
    assert all(r["a"].endswith("from source") and r["b"].endswith("from pretrained") for r in pairs)
    assert {r["grp"] for r in pairs} == {f"placement={p}, rank={k}" for p in PLACEMENTS for k in RANKS}
    assert rows(store, "SELECT pair FROM paired_comparison WHERE grp = 'placement=attn-q, rank=4'") == [
        {"pair": "placement=attn-q, rank=4: from source − from pretrained"}
    ]


def test_labels_name_only_what_varies_and_stage_runs_are_configurations_of_their_own(report):
    store, _ = report
    configs = [r["config"] for r in rows(store, "SELECT DISTINCT config FROM bootstrap_ci WHERE experiment = 'design'")]
    assert len(configs) == 24
    assert set(configs) == {
        f"placement={p}, rank={k}, {a}" for p in PLACEMENTS for k in RANKS for a in ("from source", "from pretrained")
    }
    sources = rows(store, "SELECT DISTINCT config FROM lora_svd_runs WHERE experiment = 'design' AND role = 'source'")
    assert {r["config"] for r in sources} == {f"source: placement={p}, rank={k}" for p in PLACEMENTS for k in RANKS}
    # one consistent order: sweep order (placement, then rank, then the initialisation), not the run ids' order
    ordered = [
        r["config"] for r in rows(store, "SELECT config FROM bootstrap_ci WHERE experiment = 'design' ORDER BY rowid")
    ]
    assert ordered[:3] == [
        "placement=attn-q, rank=4, from source",
        "placement=attn-q, rank=4, from pretrained",
        "placement=attn-q, rank=8, from source",
    ]


def test_transfer_matches_each_run_with_its_run_from_the_pretrained_model(report):
    store, _ = report
    table = rows(store, "SELECT * FROM transfer WHERE experiment = 'design' ORDER BY configuration")
    assert len(table) == 12 and all(r["n_seeds"] == 2 and r["n_tests"] == 12 for r in table)
    direct = {
        (r["placement"], r["rank"]): r
        for r in rows(
            store,
            """
        SELECT t.config->'method'->>'placement' AS placement, CAST(t.config->'method'->>'rank' AS INT) AS rank,
               avg(mt.value) AS transfer, avg(ms.value) AS scratch
        FROM runs t JOIN runs s ON s.config->'method'->>'placement' = t.config->'method'->>'placement'
             AND s.config->'method'->>'rank' = t.config->'method'->>'rank' AND s.seed = t.seed AND s.experiment = 'design' AND s.config->'model'->>'init_from' IS NULL
        JOIN metrics mt ON mt.run_id = t.run_id AND mt.final AND mt.name = 'accuracy'
        JOIN metrics ms ON ms.run_id = s.run_id AND ms.final AND ms.name = 'accuracy'
        WHERE t.experiment = 'design' AND t.config->'model'->>'init_from' IS NOT NULL GROUP BY ALL""",
        )
    }
    for row in table:
        placement, rank = re.fullmatch(r"placement=(.+), rank=(\d+)", row["configuration"]).groups()
        want = direct[(placement, int(rank))]
        assert row["transfer"] == pytest.approx(want["transfer"]) and row["scratch"] == pytest.approx(want["scratch"])
        assert row["gain"] == pytest.approx(want["transfer"] - want["scratch"])
        assert row["ci_low"] <= row["gain"] <= row["ci_high"]
        assert row["source_score"] == pytest.approx(0.8 + 0.01 * PLACEMENTS.index(placement), abs=0.1)
        assert 1 <= row["source_stable_rank"] <= int(rank)
    spectral = rows(
        store,
        "SELECT avg(mean_stable_rank) AS r FROM lora_svd_runs WHERE experiment = 'design' AND role = 'source' "
        "AND config = 'source: placement=attn-q, rank=4'",
    )[0]["r"]
    attn_q = next(r for r in table if r["configuration"] == "placement=attn-q, rank=4")
    assert attn_q["source_stable_rank"] == pytest.approx(spectral)
    correlation = rows(
        store,
        "SELECT n, distinct_x, pearson_r, pearson_low, spearman_rho, spearman_low, note FROM transfer_correlation",
    )[0]
    assert correlation["n"] == 12 and correlation["pearson_low"] is not None and correlation["spearman_rho"] is not None


def test_bootstrap_ci_differences_follow_the_design_and_pair_seeds(report):
    store, _ = report
    diffs = rows(store, "SELECT a, b, grp, design, n, diff FROM bootstrap_ci_diffs WHERE experiment = 'design'")
    assert len(diffs) == 12 and {(r["design"], r["n"]) for r in diffs} == {("init_from within each placement, rank", 2)}
    runs = {
        r["config"]: r
        for r in rows(
            store,
            "SELECT config, list(value ORDER BY seed) AS v FROM bootstrap_ci_runs "
            "WHERE experiment = 'design' AND metric = 'accuracy' GROUP BY config",
        )
    }
    for d in diffs:
        assert d["a"] == f"{d['grp']}, from source" and d["b"] == f"{d['grp']}, from pretrained"
        assert d["diff"] == pytest.approx(np.mean(np.array(runs[d["a"]]["v"]) - np.array(runs[d["b"]]["v"])))


def test_a_correlation_over_too_few_distinct_values_says_so():
    from specrun.analysis.correlate import correlate

    row = correlate([1, 1, 2, 2, 3, 3], [0.1, 0.2, 0.3, 0.2, 0.5, 0.4])
    assert row["spearman_rho"] is not None and row["spearman_low"] is None
    assert "no Spearman interval: 3 distinct x values" in row["note"]
    row = correlate([1, 1, 1], [1, 2, 3])
    assert row["pearson_r"] is None and row["note"].startswith("no correlation: 1 distinct x values")


def test_the_report_opens_with_the_headline_and_every_chart_draws_its_sql(report):
    store, page = report
    first_section = re.search(r'<section class="(\w+)"', page[page.index('<section class="experiment"') + 10 :])[1]
    assert first_section == "headline"
    headline = page[
        page.index('<section class="headline"') : page.index("</section>", page.index('<section class="headline"'))
    ]
    assert headline.index("Transfer against training from the pretrained model") < headline.index(
        "Gain against the source adapters"
    )
    assert page.index('<section class="headline"') < page.index("<h4>Runs</h4>")
    found = figures(page)
    runs_table = next(f for f in found if f["title"] == "Runs")
    assert runs_table["header"][:4] == [
        "run_id",
        "placement",
        "rank",
        "init_from",
    ]  # swept keys as columns, not a JSON blob
    charts = [f for f in found if f["spec"]]
    assert len(charts) >= 6
    for figure in found:
        got = rows(store, figure["sql"])
        assert got, figure["title"]
        if figure["spec"]:
            datasets = list(inline_data(figure["spec"]))
            drawn = next((d for d in datasets if len(d) == len(got) and set(d[0]) == set(got[0])), None)
            assert drawn is not None, f"{figure['title']}: no dataset matches its SQL"
            for a, b in zip(drawn, got):
                assert all(same(a[k], _jsonable(b[k])) for k in b), (figure["title"], a, b)
        else:
            assert figure["header"] == list(got[0]), figure["title"]
    # 24 configurations: the learning curves are small multiples, one panel per configuration, coloured by curve only
    curves = next(f for f in charts if f["title"].startswith("Learning curves"))["spec"]
    text = json.dumps(curves)
    assert '"facet"' in text and '"field": "curve"' in text and '"field": "config"' in text
    assert not any(enc.get("color", {}).get("field") == "config" for enc in _encodings(curves))


def _jsonable(value):
    return value.isoformat(sep=" ", timespec="seconds") if isinstance(value, datetime) else value


def _encodings(spec):
    if isinstance(spec, dict):
        if isinstance(spec.get("encoding"), dict):
            yield spec["encoding"]
        for value in spec.values():
            yield from _encodings(value)
    elif isinstance(spec, list):
        for item in spec:
            yield from _encodings(item)


def test_a_headline_or_design_key_the_spec_does_not_have_is_a_located_error(cli, tmp_path):
    from pathlib import Path

    text = (Path(__file__).parents[1] / "specs" / "transfer_mrpc.toml").read_text()
    assert 'headline = "transfer"' in text and 'vary = "init_from"' in text
    bad = tmp_path / "bad.toml"
    bad.write_text(
        text.replace('headline = "transfer"', 'headline = "tranfser"').replace(
            'vary = "init_from"', 'vary = "init_frm"'
        )
    )
    code, _, err = cli("validate", str(bad))
    assert code == 2, err
    lines = text.splitlines()
    assert (
        f"bad.toml:{lines.index(next(line for line in lines if line.startswith('vary = '))) + 1}: analyses.1.vary: 'init_frm' is not a swept key"
        in err
    )
    assert (
        f"bad.toml:{lines.index(next(line for line in lines if line.startswith('headline = '))) + 1}: report.headline: no analysis 'tranfser' (did you mean 'transfer'?)"
        in err
    )


def test_a_sweep_over_the_method_shows_it_in_one_runs_column(study_store):
    from specrun.report.build import run_table

    store = study_store[0]
    with store.read() as db:
        for columns in ([("method", "r.method"), ("placement", "'x'")], [("placement", "'x'")]):
            sql = run_table(columns).sql.replace("$experiment", "'none'")
            names = db.sql(sql).columns
            assert names.count("method") == 1 and not any(n.startswith("method_") for n in names), names


def test_progress_lines_name_the_initialisation_readably():
    from specrun.spec.labels import describe_sweep

    key = "model.init_from, method.train"
    assert describe_sweep("lora", {key: ["", "all"]}) == "lora from pretrained train=all"
    assert describe_sweep("lora", {key: ["stage:source", "head"]}) == "lora from source train=head"


def test_the_runs_table_tells_two_configurations_of_one_method_apart():
    import duckdb

    from specrun.store.analyses import _method_column

    tables = [
        ("lora", {"name": "lora", "rank": 8}),
        ("lora", {"name": "lora", "rank": 8, "quantize": "8bit"}),
        ("full", {"name": "full"}),
    ]
    expression = _method_column(tables)
    db = duckdb.connect()
    db.execute("CREATE TABLE runs (method VARCHAR, config JSON)")
    db.executemany("INSERT INTO runs VALUES (?, ?)", [[m, json.dumps({"method": t})] for m, t in tables])
    got = [row[0] for row in db.execute(f"SELECT {expression} FROM runs r").fetchall()]
    assert got == ["lora", "lora quantize=8bit", "full"]
    assert _method_column([("full", {"name": "full"})]) == "r.method"
