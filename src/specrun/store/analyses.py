"""The store's side of analyses: the runs an analysis covers, the metrics and predictions it reads,
and its result tables.

Result tables follow one convention (docs/analyses.md): an analysis plugin declares them
(``AnalysisPlugin.tables``); specrun creates each on first write with two leading columns,
``experiment`` and ``analysis``, and keeps one set of rows per experiment and analysis entry. They
hold derived data only: a table whose declared columns changed (a new plugin version) is dropped and
rebuilt, and the analyses that wrote it are recomputed on their next run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from specrun.core.results import ResultTable, RunInfo
from specrun.errors import AnalysisError, StoreError, did_you_mean
from specrun.metrics import MetricRef
from specrun.store.db import Store, now
from specrun.store.runs import artifact_path

if TYPE_CHECKING:
    import duckdb
    import polars as pl


@dataclass(frozen=True)
class ApplyInfo:
    """An experiment's latest apply: the spec it came from."""

    experiment: str
    spec_path: str
    spec_sha256: str
    spec_text: str | None
    started_at: datetime
    profile: str | None = None
    #: The effective spec tree (bases merged, profile applied), as JSON; None before migration m008.
    spec_tree: str | None = None


@dataclass(frozen=True)
class AnalysisRecord:
    """A row of ``analyses``: the last computation of one analysis entry for one experiment."""

    experiment: str
    analysis: str
    name: str
    options: dict
    run_ids: list[str]
    inputs_sha256: str
    status: str
    error: str | None
    result_tables: list[str]
    computed_at: datetime
    seconds: float


def query_frame(db: duckdb.DuckDBPyConnection, query: str, params: Any = None) -> pl.DataFrame:
    """A query's result as a polars DataFrame."""
    import polars as pl

    relation = db.sql(query, params=params)
    return relation.pl() if relation is not None else pl.DataFrame()


def experiments(store: Store) -> list[str]:
    """Every experiment any apply recorded, or any run belongs to."""
    if not store.path.exists():
        return []
    with store.read() as db:
        rows = db.execute(
            "SELECT experiment FROM applies UNION SELECT experiment FROM experiment_runs ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


#: The apply ``current_runs`` come from: the experiment's latest without ``--set`` overrides (if any).
LATEST_APPLY = "FROM applies WHERE experiment = ? ORDER BY variant, started_at DESC, apply_id DESC LIMIT 1"


def latest_apply(store: Store, experiment: str) -> ApplyInfo | None:
    if not store.path.exists():
        return None
    with store.read() as db:
        row = db.execute(
            f"SELECT experiment, spec_path, spec_sha256, spec_text, started_at, profile, spec_tree {LATEST_APPLY}",
            [experiment],
        ).fetchone()
    return ApplyInfo(*row) if row else None


def require_experiment(store: Store, experiment: str) -> ApplyInfo:
    """The experiment's latest apply; a StoreError naming the known experiments if it has none."""
    found = latest_apply(store, experiment)
    if found is None:
        known = experiments(store)
        hint = (
            f"{did_you_mean(experiment, known)}; experiments in it: {', '.join(known)}"
            if known
            else " (it holds no experiments)"
        )
        raise StoreError(f"no apply of experiment {experiment!r} in {store.path}{hint}; run `specrun apply SPEC` first")
    return found


_RUN_COLUMNS = """
    r.run_id, r.experiment, r.status, r.seed, r.method, r.config, r.sweep, r.eval_set, r.error,
    (SELECT a.path FROM artifacts a WHERE a.run_id = r.run_id AND a.kind = 'weights' LIMIT 1) AS weights
"""


def _run_info(store: Store, row: tuple, role: str = "run") -> RunInfo:
    from specrun.spec.labels import describe_sweep

    run_id, experiment, status, seed, method, config, sweep, eval_set, error, weights = row
    weights = artifact_path(store, weights)
    config = json.loads(config) if config else {}
    sweep = json.loads(sweep) if sweep else {}
    label = describe_sweep(method or "?", sweep)
    return RunInfo(run_id, experiment, status, seed, method, config, sweep, eval_set, label, role, error, weights)


def run_infos(db: duckdb.DuckDBPyConnection, run_ids: list[str]) -> list[RunInfo]:
    """The runs ``run_ids`` as ``RunInfo``, read on an open connection to a store file, in the order
    given (ids the store lacks are left out). For the 0.1 form of ``AnalysisContext`` (run ids only)."""
    from pathlib import Path

    row = db.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    store = Store(Path(row[0])) if row and row[0] else Store(Path("store.duckdb"))
    rows = db.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.run_id IN (SELECT unnest(?))", [list(run_ids)]
    ).fetchall()
    found = {r[0]: _run_info(store, r) for r in rows}
    labelled = {r.run_id: r for r in label_runs([found[i] for i in run_ids if i in found])[0]}
    return [labelled[i] for i in run_ids if i in labelled]


def scope(store: Store, experiment: str, include_sources: bool = False) -> tuple[list[RunInfo], list[RunInfo]]:
    """The experiment's runs as its latest apply defined them: (completed, left out). Runs the apply
    planned but never started are left out with status ``not run``. With ``include_sources``, the
    completed runs that the experiment's runs start from (``model.init_from``) join the first list.
    Runs come in the order of their configurations (sweep order), then seed; each is labelled by the
    keys that vary across the experiment (``specrun.spec.labels``), a stage run by its stage and the
    keys that vary among its stage's runs."""
    with store.read() as db:
        planned = [
            r[0]
            for r in db.execute(
                "SELECT run_id FROM current_runs WHERE experiment = ? ORDER BY run_id", [experiment]
            ).fetchall()
        ]
        rows = db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.run_id IN (SELECT unnest(?)) ORDER BY r.created_at, r.run_id",
            [planned],
        ).fetchall()
        runs = [_run_info(store, row) for row in rows]
        sources: list[RunInfo] = []
        if include_sources:
            wanted = sorted(
                {s for r in runs if r.status == "completed" and (s := r.config.get("model", {}).get("init_from"))}
            )
            rows = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.run_id IN (SELECT unnest(?)) ORDER BY r.created_at, r.run_id",
                [wanted],
            ).fetchall()
            sources = [_run_info(store, row, role="source") for row in rows if row[2] == "completed"]
    runs, sources = label_runs(runs, sources)
    found = {r.run_id for r in runs}
    never = [
        RunInfo(run_id, experiment, "not run", 0, "", {}, {}, "", "", "run")
        for run_id in planned
        if run_id not in found
    ]
    completed = [r for r in runs if r.status == "completed"]
    return completed + sources, [r for r in runs if r.status != "completed"] + never


def label_runs(runs: list[RunInfo], sources: list[RunInfo] = ()) -> tuple[list[RunInfo], list[RunInfo]]:
    """The runs (and the stage runs they start from) with their factors and configuration labels, in
    configuration order (sweep order), then seed."""
    from specrun.spec.labels import design, label, stage_factors

    dims, factors, orders = design([(r.method or "?", r.sweep) for r in runs])
    labelled = []
    for run, mine, order in zip(runs, factors, orders):
        text = label(mine) or run.method or "?"
        labelled.append((order, run.seed, dataclasses.replace(run, config_label=text, factors=mine)))
    labelled.sort(key=lambda item: (item[0], item[1]))
    out_sources = []
    by_stage: dict[str, list[RunInfo]] = {}
    for source in sources:
        by_stage.setdefault(source.experiment, []).append(source)
    experiments = {r.experiment for r in runs}
    for name, group in by_stage.items():
        stage = next((name.removeprefix(e + ".") for e in experiments if name.startswith(e + ".")), name)
        for source, mine in zip(group, stage_factors(dims, [s.config for s in group])):
            text = f"{stage}: {label(mine)}" if mine else stage
            out_sources.append(dataclasses.replace(source, config_label=text, factors={"stage": stage, **mine}))
    return [r for _, _, r in labelled], out_sources


def input_stamps(store: Store, run_ids: list[str]) -> list[tuple]:
    """What an analysis result depends on per run: status, when it finished, when it was last evaluated
    on an added evaluation set. A change in any of them makes cached results stale."""
    with store.read() as db:
        rows = db.execute(
            """
            SELECT r.run_id, r.status, CAST(r.finished_at AS VARCHAR),
                   (SELECT CAST(max(e.evaluated_at) AS VARCHAR) FROM evaluations e WHERE e.run_id = r.run_id)
            FROM runs r WHERE r.run_id IN (SELECT unnest(?)) ORDER BY r.run_id
            """,
            [run_ids],
        ).fetchall()
    return [tuple(r) for r in rows]


def _run_splits(runs: list[RunInfo], split_of) -> tuple[list[str], list[str]]:
    return [r.run_id for r in runs], [split_of(r) for r in runs]


def final_metric(db: duckdb.DuckDBPyConnection, runs: list[RunInfo], ref: str | MetricRef) -> dict[str, float]:
    """{run id: final value} of ``ref`` for ``runs``; AnalysisError naming the recorded metrics if none has it."""
    ref = MetricRef.parse(ref) if isinstance(ref, str) else ref
    ids, splits = _run_splits(runs, lambda r: ref.split_for(r.eval_set))
    rows = db.execute(
        """
        SELECT m.run_id, max(m.value) FROM metrics m
        JOIN (SELECT unnest(?) AS run_id, unnest(?) AS split) w ON m.run_id = w.run_id AND m.split = w.split
        WHERE m.final AND m.name = ? GROUP BY m.run_id
        """,
        [ids, splits, ref.name],
    ).fetchall()
    if runs and not rows:
        recorded = [
            r[0]
            for r in db.execute(
                "SELECT DISTINCT CASE WHEN split = 'cost' THEN 'cost.' || name ELSE split || '.' || name END FROM metrics "
                "WHERE final AND run_id IN (SELECT unnest(?)) ORDER BY 1",
                [ids],
            ).fetchall()
        ]
        raise AnalysisError(
            f"no run recorded metric {str(ref)!r}{did_you_mean(str(ref), recorded)}; recorded: {', '.join(recorded)}"
        )
    return dict(rows)


def predictions(db: duckdb.DuckDBPyConnection, runs: list[RunInfo], split: str | None = None) -> pl.DataFrame:
    ids, splits = _run_splits(runs, lambda r: split or r.eval_set)
    return query_frame(
        db,
        """
        SELECT p.run_id, p.split, p.example_id, p.label, p.prediction, p.confidence, p.loss FROM predictions p
        JOIN (SELECT unnest(?) AS run_id, unnest(?) AS split) w ON p.run_id = w.run_id AND p.split = w.split
        ORDER BY p.run_id, p.example_id
        """,
        [ids, splits],
    )


def qa_predictions(db: duckdb.DuckDBPyConnection, runs: list[RunInfo], split: str | None = None) -> pl.DataFrame:
    """Per-question rows of extractive-QA runs (``qa_predictions``) on ``split`` (default: each run's primary set)."""
    ids, splits = _run_splits(runs, lambda r: split or r.eval_set)
    return query_frame(
        db,
        """
        SELECT p.run_id, p.split, p.question_id, p.prediction_text, p.score, p.exact_match, p.f1 FROM qa_predictions p
        JOIN (SELECT unnest(?) AS run_id, unnest(?) AS split) w ON p.run_id = w.run_id AND p.split = w.split
        ORDER BY p.run_id, p.question_id
        """,
        [ids, splits],
    )


_RECORD_COLUMNS = (
    "experiment, analysis, name, options, run_ids, inputs_sha256, status, error, result_tables, computed_at, seconds"
)


def record_from_row(row: tuple) -> AnalysisRecord:
    return AnalysisRecord(
        *row[:3], json.loads(row[3]), json.loads(row[4]), *row[5:8], json.loads(row[8] or "[]"), *row[9:]
    )


def records_in(db: duckdb.DuckDBPyConnection, experiment: str) -> dict[str, AnalysisRecord]:
    """{analysis id: its last computation} for ``experiment``, on an open connection."""
    rows = db.execute(f"SELECT {_RECORD_COLUMNS} FROM analyses WHERE experiment = ?", [experiment]).fetchall()
    return {row[1]: record_from_row(row) for row in rows}


def records(store: Store, experiment: str) -> dict[str, AnalysisRecord]:
    """{analysis id: its last computation} for ``experiment``."""
    if not store.path.exists():
        return {}
    with store.read() as db:
        return records_in(db, experiment)


def status_counts(db: duckdb.DuckDBPyConnection, experiment: str) -> list[tuple[str, int]]:
    """[(status, runs)] of the experiment's current runs; runs never started count as ``not run``."""
    return db.execute(
        "SELECT coalesce(r.status, 'not run'), count(*) FROM current_runs c LEFT JOIN runs r USING (run_id) "
        "WHERE c.experiment = ? GROUP BY 1 ORDER BY 1",
        [experiment],
    ).fetchall()


#: How the report names a search trial's state (``search_trials.state`` keeps Optuna's words).
TRIAL_STATES = {"complete": "completed", "pruned": "pruned", "failed": "failed"}


def search_summary(db: duckdb.DuckDBPyConnection, experiment: str) -> str | None:
    """``8 trials: 4 completed, 4 pruned`` for an experiment whose current apply ran a ``[search]`` (the
    trials its store holds, by state; ``, 2 left`` when fewer than ``search.n_trials`` are recorded);
    None for any other experiment."""
    row = db.execute(
        f"SELECT json_extract(spec_tree, '$.search.n_trials') {LATEST_APPLY}",
        [experiment],
    ).fetchone()
    if row is None or row[0] is None:
        return None
    n_trials = int(json.loads(row[0]))
    found = dict(
        db.execute(
            "SELECT state, count(DISTINCT trial) FROM search_trials WHERE experiment = ? AND trial < ? GROUP BY 1",
            [experiment, n_trials],
        ).fetchall()
    )
    left = n_trials - sum(found.values())
    parts = [f"{found.pop(state)} {word}" for state, word in TRIAL_STATES.items() if state in found]
    parts += [f"{n} {state}" for state, n in sorted(found.items())]
    if left > 0:
        parts.append(f"{left} left")
    return f"{n_trials} trial{'s' if n_trials != 1 else ''}: " + ", ".join(parts)


def selected_on_reported(db: duckdb.DuckDBPyConnection, experiment: str) -> int:
    """How many of the experiment's completed runs picked their weights (early stopping) on a split they
    report: those that said so (``train.allow_selection_on_reported``: final metric
    ``selection.on_reported_split`` = 1), and those that early-stopped before specrun carved a selection set
    (their config has early stopping but no ``select_fraction``)."""
    return db.execute(
        "SELECT count(*) FROM runs r WHERE r.status = 'completed' "
        "AND r.run_id IN (SELECT run_id FROM current_runs WHERE experiment = ?) AND ("
        "  EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = r.run_id AND m.final AND m.split = 'selection' "
        "          AND m.name = 'on_reported_split' AND m.value = 1)"
        "  OR (coalesce(json_type(json_extract(r.config, '$.train.early_stopping')), 'NULL') <> 'NULL'"
        "      AND json_extract(r.config, '$.train.select_fraction') IS NULL))",
        [experiment],
    ).fetchall()[0][0]  # fetched whole: a connection with an unfinished result serves no other query


def latest_environment(db: duckdb.DuckDBPyConnection, experiment: str) -> dict | None:
    """The environment of the experiment's most recently finished completed run."""
    row = db.execute(
        "SELECT environment FROM runs WHERE status = 'completed' AND run_id IN (SELECT run_id FROM current_runs WHERE experiment = ?) "
        "ORDER BY finished_at DESC LIMIT 1",
        [experiment],
    ).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def table_exists(db: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        db.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?", [name]
        ).fetchone()[0]
    )


def _columns(db: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    return [
        r[0]
        for r in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            [name],
        ).fetchall()
    ]


def _declared(table: ResultTable) -> list[str]:
    return ["experiment", "analysis", *table.columns]


def tables_current(store: Store, tables: list[ResultTable]) -> bool:
    """Whether every table exists with the columns its analysis declares now."""
    with store.read() as db:
        return all(_columns(db, t.name) == _declared(t) for t in tables)


def ensure_table(db: duckdb.DuckDBPyConnection, table: ResultTable, plugin: str) -> None:
    """Create ``table`` as declared; a table whose columns differ from the declaration is rebuilt, and
    the analyses that wrote it are forgotten so that they are recomputed."""
    wanted = _declared(table)
    have = _columns(db, table.name)
    if have == wanted:
        return
    if have:
        db.execute(f'DROP TABLE "{table.name}"')
        db.execute("DELETE FROM analyses WHERE name = ?", [plugin])
    columns = ", ".join(f'"{name}" {kind}' for name, kind in table.columns.items())
    db.execute(f'CREATE TABLE "{table.name}" (experiment VARCHAR, analysis VARCHAR, {columns})')


def write_results(
    store: Store, record: AnalysisRecord, tables: list[ResultTable], frames: dict[str, pl.DataFrame]
) -> None:
    """Replace the results of one analysis entry and record its computation, in one transaction."""
    with store.write() as db:
        for table in tables:
            ensure_table(db, table, record.name)
            db.execute(
                f'DELETE FROM "{table.name}" WHERE experiment = ? AND analysis = ?',
                [record.experiment, record.analysis],
            )
            frame = frames.get(table.name)
            if frame is None or frame.height == 0:
                continue
            db.register("_analysis_rows", frame.to_arrow())
            try:
                casts = ", ".join(f'CAST("{c}" AS {kind})' for c, kind in table.columns.items())
                db.execute(
                    f'INSERT INTO "{table.name}" SELECT ?, ?, {casts} FROM _analysis_rows',
                    [record.experiment, record.analysis],
                )
            finally:
                db.unregister("_analysis_rows")
        _upsert_record(db, record)


def write_failure(store: Store, record: AnalysisRecord, tables: list[ResultTable]) -> None:
    """Record a failed computation; earlier results of the entry are removed, so no stale numbers remain."""
    with store.write() as db:
        for table in tables:
            if table_exists(db, table.name):
                db.execute(
                    f'DELETE FROM "{table.name}" WHERE experiment = ? AND analysis = ?',
                    [record.experiment, record.analysis],
                )
        _upsert_record(db, record)


def _upsert_record(db: duckdb.DuckDBPyConnection, record: AnalysisRecord) -> None:
    db.execute("DELETE FROM analyses WHERE experiment = ? AND analysis = ?", [record.experiment, record.analysis])
    db.execute(
        "INSERT INTO analyses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            record.experiment,
            record.analysis,
            record.name,
            json.dumps(record.options, default=str),
            json.dumps(record.run_ids),
            record.inputs_sha256,
            record.status,
            record.error,
            json.dumps(record.result_tables),
            record.computed_at,
            record.seconds,
        ],
    )


def new_record(
    experiment: str,
    analysis: str,
    name: str,
    options: dict,
    run_ids: list[str],
    inputs_sha256: str,
    status: str,
    error: str | None,
    tables: list[ResultTable],
    seconds: float,
) -> AnalysisRecord:
    return AnalysisRecord(
        experiment,
        analysis,
        name,
        options,
        run_ids,
        inputs_sha256,
        status,
        error,
        [t.name for t in tables],
        now(),
        seconds,
    )


def check_readable(store: Store) -> None:
    if not store.path.exists():
        raise StoreError(f"no store at {store.path} (run `specrun apply` first, or pass --store)")


def sweep_columns(db: duckdb.DuckDBPyConnection, experiment: str) -> list[tuple[str, str]]:
    """(column name, SQL expression over ``runs r``) for each key that varies across the experiment's current
    runs, in sweep order: what the runs table shows instead of the sweep as JSON. Values read as labels
    show them (``from pretrained`` for an empty ``model.init_from``)."""
    from specrun.spec.labels import design, sweep_assignments

    rows = db.execute(
        "SELECT r.method, r.sweep, r.config->'method' FROM runs r "
        "WHERE r.run_id IN (SELECT run_id FROM current_runs WHERE experiment = ?) ORDER BY r.created_at, r.run_id",
        [experiment],
    ).fetchall()
    points = [(method or "?", json.loads(sweep) if sweep else {}) for method, sweep, _ in rows]
    tables = [(method or "?", json.loads(options) if options else {}) for method, _, options in rows]
    dims = design(points)[0]
    columns = []
    for dim in dims:
        key = dim.keys[0]
        expression = None
        for _, sweep in points:
            for entry, value in sweep.items():
                try:
                    together = [dotted for dotted, _ in sweep_assignments(entry, value)]
                except TypeError:
                    continue
                if key in together:
                    path = (
                        '$."'
                        + entry.replace("'", "''").replace('"', '\\"')
                        + '"'
                        + (f"[{together.index(key)}]" if len(together) > 1 else "")
                    )
                    expression = f"json_extract_string(r.sweep, '{path}')"
                    break
            if expression:
                break
        if key == "method":
            expression = _method_column(tables)
        if expression is None:
            continue
        if dim.name == "init_from":
            expression = (
                f"CASE WHEN coalesce({expression}, '') = '' THEN 'from pretrained' "
                f"ELSE 'from ' || regexp_replace({expression}, '^stage:', '') END"
            )
        columns.append((dim.name, expression))
    return columns


def _method_column(tables: list[tuple[str, dict]]) -> str:
    """SQL for the runs table's method column: the method's name, and where two runs of one method differ
    in its options (``lora`` and 8-bit ``lora``), those options as ``key=value`` (``lora quantize=8bit``)."""
    parts = []
    for name in dict.fromkeys(method for method, _ in tables):
        options = [table for method, table in tables if method == name]
        keys = sorted({k for table in options for k in table if k != "name"})
        for key in keys:
            if len({json.dumps(table.get(key), sort_keys=True) for table in options}) < 2:
                continue
            path = "$." + '"' + key.replace('"', '\\"').replace("'", "''") + '"'
            value = f"json_extract_string(r.config, '$.method{path[1:]}')"
            literal = name.replace("'", "''")
            parts.append(f"CASE WHEN r.method = '{literal}' AND {value} IS NOT NULL THEN '{key}=' || {value} END")
    return f"concat_ws(' ', r.method, {', '.join(parts)})" if parts else "r.method"
