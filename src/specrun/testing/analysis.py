"""Analyses tested without training: a small store made by hand (``analysis_store``), a context over it
(``analysis_context``), and the contract every analysis passes (``check_analysis``).

The store is a real specrun store (every migration applied), holding one apply of an experiment and
the runs given, as ``specrun apply`` would have recorded them: ``runs``, ``experiment_runs``, the
apply (so ``current_runs`` lists them), final metrics, learning-curve points and predictions."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from specrun.plugins.api import AnalysisContext, SpecFacts
from specrun.plugins.registry import Registry
from specrun.store.db import Store


@dataclass
class HandRun:
    """One run of a hand-made store.

    ``metrics`` are its final metrics by reference, as analyses name them: ``"accuracy"`` and ``"f1"`` on
    the primary evaluation set, ``"noisy.accuracy"`` on evaluation set ``noisy``, ``"cost.train_seconds"``
    among the costs. ``sweep`` holds its sweep values by dotted key (``{"method.rank": 8}``), also set in
    its config. ``curve``: learning-curve points ``{"step": 10, "name": "accuracy", "value": 0.7}``
    (``"split"``: the primary evaluation set unless given). ``predictions``: per-example rows
    ``(example_id, label, prediction, confidence, loss)`` on the primary evaluation set, or with a
    ``split`` as ``{"split": ..., "rows": [...]}``. ``config`` is merged over a small default config."""

    method: str = "full"
    seed: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "completed"
    eval_set: str = "validation"
    curve: list[dict[str, Any]] = field(default_factory=list)
    predictions: list | dict = field(default_factory=list)
    error: str | None = None


def _config(run: HandRun) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model": {"name": "hand-made", "max_length": 32},
        "data": {"dataset": "local", "eval_split": run.eval_set},
        "method": {"name": run.method},
        "train": {"batch_size": 16, "learning_rate": 1e-3, "epochs": 1},
        "seed": run.seed,
    }
    _merge(config, copy.deepcopy(run.config))
    for dotted, value in run.sweep.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def _merge(into: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _run_id(experiment: str, index: int, run: HandRun) -> str:
    blob = json.dumps([experiment, index, run.method, run.seed, run.sweep], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _metric_rows(run_id: str, run: HandRun) -> list[tuple]:
    rows = []
    for ref, value in run.metrics.items():
        split, _, name = ref.rpartition(".")
        rows.append((run_id, None, None, split or run.eval_set, name, float(value), True))
    for point in run.curve:
        rows.append(
            (
                run_id,
                int(point["step"]),
                point.get("epoch"),
                point.get("split", run.eval_set),
                point["name"],
                float(point["value"]),
                False,
            )
        )
    return rows


def analysis_store(path: str | Path, runs: list[HandRun], experiment: str = "exp") -> Store:
    """Write a store at ``path`` holding one apply of ``experiment`` whose runs are ``runs`` (in that
    order; run ids are made from the experiment, position, method, seed and sweep). Returns the Store."""
    from specrun.store.db import now

    store = Store(Path(path))
    started = now()
    apply_id = hashlib.sha256(f"{experiment}/{started}".encode()).hexdigest()[:12]
    with store.write() as db:
        db.execute(
            "INSERT INTO applies (apply_id, experiment, spec_path, spec_sha256, overrides, started_at, spec_text, variant) "
            "VALUES (?, ?, ?, ?, '[]', ?, ?, false)",
            [apply_id, experiment, f"{experiment}.toml", "0" * 64, started, f"# hand-made store of {experiment}\n"],
        )
        for index, run in enumerate(runs):
            run_id = _run_id(experiment, index, run)
            config = _config(run)
            finished = started + timedelta(seconds=index + 1) if run.status == "completed" else None
            db.execute(
                "INSERT INTO runs (run_id, experiment, status, method, dataset, model, seed, eval_set, config, sweep, created_at, "
                "started_at, finished_at, error, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                [
                    run_id,
                    experiment,
                    run.status,
                    run.method,
                    config["data"]["dataset"],
                    config["model"]["name"],
                    run.seed,
                    run.eval_set,
                    json.dumps(config),
                    json.dumps(run.sweep),
                    started,
                    started,
                    finished,
                    run.error,
                ],
            )
            db.execute(
                "INSERT INTO experiment_runs VALUES (?, ?, ?, ?)", [experiment, run_id, f"{experiment}.toml", started]
            )
            db.execute("INSERT INTO apply_runs VALUES (?, ?)", [apply_id, run_id])
            metrics = _metric_rows(run_id, run)
            if metrics:
                db.executemany(
                    "INSERT INTO metrics (run_id, step, epoch, split, name, value, final) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    metrics,
                )
            predictions = (
                run.predictions
                if isinstance(run.predictions, dict)
                else {"split": run.eval_set, "rows": run.predictions}
            )
            if predictions["rows"]:
                db.executemany(
                    "INSERT INTO predictions (run_id, split, example_id, label, prediction, confidence, loss) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(run_id, predictions.get("split", run.eval_set), *row) for row in predictions["rows"]],
                )
    return store


@contextlib.contextmanager
def analysis_context(
    store: Store | str | Path, experiment: str = "exp", include_sources: bool = False, analysis: str = ""
) -> Iterator[AnalysisContext]:
    """The context ``specrun analyze`` gives an analysis over ``experiment`` in ``store``: its completed
    runs, the others left out, and a read-only connection (open inside the ``with`` block)."""
    from specrun.store import analyses as store_analyses

    store = store if isinstance(store, Store) else Store(Path(store))
    runs, left_out = store_analyses.scope(store, experiment, include_sources)
    with store.read() as db:
        yield AnalysisContext(db, experiment, runs, left_out, analysis or experiment)


def spec_facts(store: Store | str | Path, experiment: str = "exp") -> SpecFacts:
    """What ``AnalysisPlugin.check`` gets for the spec behind ``experiment``'s runs in ``store``: the
    evaluation sets its runs recorded metrics on (the primary one first), its swept keys, its configs."""
    from specrun.store import analyses as store_analyses

    store = store if isinstance(store, Store) else Store(Path(store))
    runs, left_out = store_analyses.scope(store, experiment)
    everything = [r for r in runs + left_out if r.config]
    with store.read() as db:
        splits = [
            r[0]
            for r in db.execute(
                "SELECT DISTINCT split FROM metrics WHERE final AND split <> 'cost' AND run_id IN (SELECT unnest(?)) ORDER BY 1",
                [[r.run_id for r in everything]],
            ).fetchall()
        ]
    primary = everything[0].eval_set if everything else "validation"
    keys = sorted({k for r in everything for k in r.sweep})
    return SpecFacts((primary, *[s for s in splits if s != primary]), tuple(keys), tuple(r.config for r in everything))


def check_analysis(
    registry: Registry,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    store: Store | str | Path,
    experiment: str = "exp",
) -> dict[str, Any]:
    """Run analysis ``name`` with ``options`` over ``experiment`` in ``store`` (a copy of the store is
    not made: its result tables are written, as ``specrun analyze`` writes them) and check:

    - it declares its result tables (an analysis that declares none is the deprecated plugin API 0.1 form);
    - ``check(options, spec_facts(store))`` returns a list of ``(option, message)`` string pairs, and none for these options;
    - ``run`` returns ``{table: rows}`` for declared tables only, each with exactly the declared columns,
      and the engine stores them (``analyze`` would report it computed, not failed);
    - a second computation gives the same rows (deterministic for its options and runs);
    - every report figure's query runs on the stored results, returns rows, and its chart, if any, draws.

    Returns {table name: polars DataFrame of this entry's stored rows, without ``experiment`` and
    ``analysis``}."""
    from specrun.analysis.engine import AnalysisEntry, run_analyses
    from specrun.plugins.registry import is_legacy_analysis
    from specrun.report.build import _Renderer
    from specrun.store.analyses import query_frame

    store = store if isinstance(store, Store) else Store(Path(store))
    plugin = registry.get("analysis", name)
    assert not is_legacy_analysis(plugin), (
        f"{name}: declares no result tables, the plugin API 0.1 form (deprecated); "
        "declare `tables` and return {table name: rows}: see docs/plugins.md#changes-for-plugin-authors"
    )
    validated = plugin.Options.model_validate(options or {})
    problems = plugin.check(validated, spec_facts(store, experiment))
    assert isinstance(problems, list) and all(
        isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in problems
    ), f"{name}: check must return a list of (option, message) pairs: {problems!r}"
    assert not problems, f"{name}: check found problems with these options: {problems}"
    entry = AnalysisEntry(name, name, validated.model_dump(mode="json"))

    def compute() -> dict[str, Any]:
        [outcome] = run_analyses(store, registry, experiment, [entry], force=True)
        assert outcome.status == "computed", f"{name}: the analysis {outcome.status}: {outcome.error}"
        with store.read() as db:
            return {
                t.name: query_frame(
                    db,
                    f'SELECT * EXCLUDE (experiment, analysis) FROM "{t.name}" '
                    "WHERE experiment = ? AND analysis = ? ORDER BY ALL",
                    [experiment, entry.id],
                )
                for t in plugin.tables
            }

    first = compute()
    again = compute()
    for table, frame in first.items():
        assert frame.equals(again[table]), (
            f"{name}: table {table!r} differs between two computations over the same runs"
        )
    with store.read() as db:
        renderer = _Renderer(db)
        for figure in plugin.figures(validated):
            shown = renderer.figure(figure, {"experiment": experiment, "analysis": entry.id})
            assert shown.kind != "error", f"{name}: figure {figure.title!r}: {shown.error}\n{shown.sql}"
            assert shown.kind != "empty", f"{name}: figure {figure.title!r}: its query returned no rows\n{shown.sql}"
    return first
