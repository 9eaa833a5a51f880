"""Recording runs: claim before training, write all results in one transaction after.

A run's rows (metrics, predictions, artifacts, train_examples) always belong to its latest attempt and
are replaced all at once, so a store never holds half a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from specrun.errors import StoreError, UsageError, did_you_mean
from specrun.store.db import Store, now

if TYPE_CHECKING:  # the run boundary's types; the store reads their fields only
    from specrun.core.task import RunRecord, ScoreRow

HOST = socket.gethostname()
RESULT_TABLES = ("metrics", "predictions", "qa_predictions", "artifacts", "train_examples", "evaluations", "transfers")


def _alive(pid: int | None, host: str | None, started_at) -> bool:
    """Whether the process that claimed a run is still running (only knowable on this host)."""
    if pid is None or host != HOST:
        return host != HOST  # another host's claim: assume alive
    try:
        proc = psutil.Process(pid)
        return proc.create_time() <= started_at.timestamp() + 1 if started_at else True
    except psutil.Error:
        return False


def reap_interrupted(store: Store) -> list[str]:
    """Mark runs left 'running' by a dead process as 'interrupted'; returns their ids."""
    with store.write() as db:
        rows = db.execute("SELECT run_id, pid, host, started_at FROM runs WHERE status = 'running'").fetchall()
        dead = [r[0] for r in rows if not _alive(r[1], r[2], _utc(r[3]))]
        for run_id in dead:
            db.execute(
                "UPDATE runs SET status = 'interrupted', error = 'the process running it stopped', finished_at = ? WHERE run_id = ?",
                [now(), run_id],
            )
    return dead


def held_elsewhere(store: Store, run_ids: list[str]) -> dict[str, str]:
    """Of ``run_ids``, those another live process has claimed (status 'running'), each with who holds it
    ('PID 123 on host')."""
    if not run_ids:
        return {}
    with store.read() as db:
        rows = db.execute(
            "SELECT run_id, pid, host, started_at FROM runs WHERE status = 'running' AND run_id IN "
            f"({', '.join('?' * len(run_ids))})",
            list(run_ids),
        ).fetchall()
    return {
        run_id: f"PID {pid} on {host}"
        for run_id, pid, host, started in rows
        if _alive(pid, host, _utc(started)) and not (pid == os.getpid() and host == HOST)
    }


def _utc(ts):

    return ts.replace(tzinfo=UTC) if ts is not None else None


def stale_inputs(recorded: dict | None, planned: dict) -> list[str]:
    """The inputs that differ between a completed run's recorded fingerprint and the planned one (empty:
    still valid). A run recorded without a fingerprint (before migration m013) is taken as made from
    today's inputs; so is an input the run did not record (it could not be known then)."""
    if not recorded:
        return []
    return sorted(k for k, v in planned.items() if k in recorded and recorded[k] != v)


#: How ``plan`` names each input that made a run stale.
INPUT_NAMES = {
    "model_files": "the model folder's files",
    "model_revision": "the hub model's revision",
    "bitsandbytes": "the bitsandbytes version",
}


def recorded_inputs(store: Store, run_ids: list[str]) -> dict[str, dict]:
    """{run_id: inputs fingerprint} of the runs that recorded one (``runs.inputs_fingerprint``)."""
    if not store.path.exists() or not run_ids:
        return {}
    with store.read() as db:
        rows = db.execute(
            "SELECT run_id, inputs_fingerprint FROM runs WHERE run_id IN (SELECT unnest(?)) AND inputs_fingerprint IS NOT NULL",
            [run_ids],
        ).fetchall()
    return {run_id: json.loads(value) for run_id, value in rows}


def statuses(store: Store, run_ids: list[str]) -> dict[str, str]:
    if not store.path.exists() or not run_ids:
        return {}
    with store.read() as db:
        rows = db.execute("SELECT run_id, status FROM runs WHERE run_id IN (SELECT unnest(?))", [run_ids]).fetchall()
    return dict(rows)


def spec_sha256(spec_text: str) -> str:
    return hashlib.sha256(spec_text.encode()).hexdigest()


def record_apply(store: Store, loaded: Any, overrides: list[str], run_ids: list[str]) -> str:
    """Record an apply of the loaded spec and the runs it planned; returns its id. Without overrides the
    experiment's ``current_runs`` are then these runs; with ``--set`` overrides it is a variant, and
    ``current_runs`` keep the spec's own runs. The spec's text, profile and effective tree are kept, so
    that its analyses can be rerun without the file."""
    apply_id = uuid.uuid4().hex[:12]
    with store.write() as db:
        db.execute(
            "INSERT INTO applies (apply_id, experiment, spec_path, spec_sha256, overrides, started_at, spec_text, variant, profile, spec_tree) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                apply_id,
                loaded.experiment,
                str(loaded.path),
                spec_sha256(loaded.text),
                json.dumps(list(overrides)),
                now(),
                loaded.text,
                bool(overrides),
                loaded.profile,
                json.dumps(loaded.tree),
            ],
        )
        if run_ids:
            db.executemany(
                "INSERT INTO apply_runs VALUES (?, ?) ON CONFLICT DO NOTHING", [[apply_id, r] for r in run_ids]
            )
    return apply_id


def claim(store: Store, run: Any, spec_path: str, environment: dict, force: bool, keep_pruned: bool = False) -> str:
    """Mark ``run`` as running in this process. Returns 'claimed', 'cached' (completed, not forced),
    'pruned' (stopped by a search's pruner, with ``keep_pruned``: a search's own trial) or 'busy'
    (another live process is running it)."""
    with store.write() as db:
        db.execute(
            "INSERT INTO experiment_runs VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [run.experiment, run.run_id, spec_path, now()],
        )
        row = db.execute(
            "SELECT status, pid, host, started_at, inputs_fingerprint FROM runs WHERE run_id = ?", [run.run_id]
        ).fetchone()
        inputs = getattr(run, "inputs", None) or {}
        if row is not None:
            status, pid, host, started, recorded = row
            recorded = json.loads(recorded) if recorded else None
            if status == "completed" and not force and not stale_inputs(recorded, inputs):  # stale: trains again
                if recorded is None and inputs:  # a run from before fingerprints: today's inputs from now on
                    db.execute(
                        "UPDATE runs SET inputs_fingerprint = ? WHERE run_id = ?", [json.dumps(inputs), run.run_id]
                    )
                return "cached"
            if status == "pruned" and keep_pruned and not force:
                return "pruned"
            if status == "running" and _alive(pid, host, _utc(started)) and pid != os.getpid():
                return "busy"
        values = {
            "experiment": run.experiment,
            "status": "running",
            "method": run.method,
            "dataset": run.dataset,
            "model": run.config["model"]["name"],
            "seed": run.seed,
            "eval_set": run.eval_set,
            "config": json.dumps(run.config),
            "sweep": json.dumps(run.sweep_values),
            "started_at": now(),
            "finished_at": None,
            "train_seconds": None,
            "error": None,
            "pruned_step": None,
            "environment": json.dumps(environment),
            "host": HOST,
            "pid": os.getpid(),
            "inputs_fingerprint": json.dumps(inputs),
        }
        if row is None:
            db.execute(
                f"INSERT INTO runs (run_id, created_at, attempts, {', '.join(values)}) VALUES (?, ?, 1, {', '.join('?' * len(values))})",
                [run.run_id, now(), *values.values()],
            )
        else:
            sets = ", ".join(f"{k} = ?" for k in values)
            db.execute(
                f"UPDATE runs SET {sets}, attempts = attempts + 1 WHERE run_id = ?", [*values.values(), run.run_id]
            )
    return "claimed"


def _clear_results(db, run_id: str) -> None:
    for table in RESULT_TABLES:
        db.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])


def _columns_select(columns: dict[str, tuple[str, list]]) -> tuple[str, list]:
    """``SELECT unnest(?::T[]) AS name, ...`` over equal-length Python lists, and its parameters: rows go in
    as a few list parameters, without Arrow (which makes DuckDB import pandas: 0.4 s per process)."""
    select = ", ".join(f"unnest(?::{sql_type}[]) AS {name}" for name, (sql_type, _) in columns.items())
    return f"SELECT {select}", [values for _, values in columns.values()]


def _insert_columns(db, table: str, columns: dict[str, tuple[str, list]]) -> None:
    """Insert the rows given column by column ({name: (DuckDB type, values)}) into ``table``."""
    if not next(iter(columns.values()))[1]:
        return
    select, params = _columns_select(columns)
    db.execute(f"INSERT INTO {table} ({', '.join(columns)}) {select}", params)


def _insert_evaluation_results(db, run_id: str, record: RunRecord) -> None:
    """Metrics, predictions and evaluation-set definitions of ``record``."""
    rows = record.metrics
    _insert_columns(
        db,
        "metrics",
        {
            "run_id": ("VARCHAR", [run_id] * len(rows)),
            "step": ("BIGINT", [m.step for m in rows]),
            "epoch": ("DOUBLE", [m.epoch for m in rows]),
            "split": ("VARCHAR", [m.split for m in rows]),
            "name": ("VARCHAR", [m.name for m in rows]),
            "value": ("DOUBLE", [float(m.value) for m in rows]),
            "final": ("BOOLEAN", [bool(m.final) for m in rows]),
        },
    )
    preds = record.predictions or {}
    table = getattr(record, "prediction_table", "predictions")
    if preds.get("split") and table == "qa_predictions":
        _insert_columns(
            db,
            "qa_predictions",
            {
                "run_id": ("VARCHAR", [run_id] * len(preds["split"])),
                "split": ("VARCHAR", list(preds["split"])),
                "question_id": ("VARCHAR", [str(i) for i in preds["question_id"]]),
                "prediction_text": ("VARCHAR", [str(x) for x in preds["prediction_text"]]),
                "score": ("DOUBLE", [float(x) for x in preds["score"]]),
                "exact_match": ("DOUBLE", [float(x) for x in preds["exact_match"]]),
                "f1": ("DOUBLE", [float(x) for x in preds["f1"]]),
                "answers": ("VARCHAR", [str(x) for x in preds["answers"]]),
            },
        )
    elif preds.get("split") and table != "predictions":
        raise ValueError(f"no prediction table {table!r} in the store (predictions, qa_predictions)")
    elif preds.get("split"):
        _insert_columns(
            db,
            "predictions",
            {
                "run_id": ("VARCHAR", [run_id] * len(preds["split"])),
                "split": ("VARCHAR", list(preds["split"])),
                "example_id": ("VARCHAR", [str(i) for i in preds["example_id"]]),
                "label": ("BIGINT", [int(x) for x in preds["label"]]),
                "prediction": ("BIGINT", [int(x) for x in preds["prediction"]]),
                "confidence": ("DOUBLE", [float(x) for x in preds["confidence"]]),
                "loss": ("DOUBLE", [float(x) for x in preds["loss"]]),
            },
        )
    for name, plan in record.evaluations:
        db.execute(
            "INSERT INTO evaluations VALUES (?, ?, ?, ?, ?)",
            [run_id, name, json.dumps(plan.definition, default=str), plan.fingerprint, now()],
        )


def complete(store: Store, run_id: str, record: RunRecord) -> None:
    """Write every result of a finished run and mark it completed, in one transaction."""
    ids, labels = record.train_examples
    with store.write() as db:
        _clear_results(db, run_id)
        _insert_evaluation_results(db, run_id, record)
        _insert_columns(
            db,
            "train_examples",
            {
                "run_id": ("VARCHAR", [run_id] * len(ids)),
                "position": ("BIGINT", list(range(len(ids)))),
                "example_id": ("VARCHAR", [str(i) for i in ids]),
                "label": ("BIGINT", [None if x is None else int(x) for x in labels]),
            },
        )
        for a in record.artifacts:
            db.execute(
                "INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, a.kind, stored_path(store, a.path), a.sha256, a.bytes, now()],
            )
        _insert_scores(db, record.teacher_scores)
        if record.environment:
            db.execute(
                "UPDATE runs SET environment = json_merge_patch(environment, ?) WHERE run_id = ?",
                [json.dumps(record.environment), run_id],
            )
        if record.transfer is not None:
            _insert_transfer(db, run_id, record.transfer)
        if record.memory_kind is not None:
            db.execute("UPDATE runs SET memory_kind = ? WHERE run_id = ?", [record.memory_kind, run_id])
        if record.resumed_from is not None:
            db.execute(
                "UPDATE runs SET environment = json_merge_patch(environment, ?) WHERE run_id = ?",
                [json.dumps({"resumed_from_step": record.resumed_from}), run_id],
            )
        db.execute(
            "UPDATE runs SET status = 'completed', finished_at = ?, train_seconds = ?, skipped_steps = ?, error = NULL WHERE run_id = ?",
            [now(), record.train_seconds, record.skipped_steps, run_id],
        )


def _insert_scores(db, scores: list[ScoreRow]) -> None:
    """Teacher scores a run computed; one row per (teacher, example, text) however many runs computed it."""
    if not scores:
        return
    select, params = _columns_select(
        {
            "teacher_run_id": ("VARCHAR", [r.teacher_run_id for r in scores]),
            "example_id": ("VARCHAR", [r.example_id for r in scores]),
            "text_hash": ("VARCHAR", [r.text_hash for r in scores]),
            "label": ("INTEGER", [int(r.label) for r in scores]),
            "loss": ("DOUBLE", [float(r.loss) for r in scores]),
        }
    )
    db.execute(
        f"""
        INSERT INTO example_scores
        SELECT DISTINCT ON (s.teacher_run_id, s.example_id, s.text_hash) s.teacher_run_id, s.example_id, s.text_hash, s.label, s.loss, ?
        FROM ({select}) s
        WHERE NOT EXISTS (SELECT 1 FROM example_scores e
                          WHERE e.teacher_run_id = s.teacher_run_id AND e.example_id = s.example_id AND e.text_hash = s.text_hash)
    """,
        [now(), *params],
    )


def save_scores(store: Store, scores: list[ScoreRow]) -> None:
    """Store teacher scores on their own (those of an evaluation that then failed, say)."""
    if scores:
        with store.write() as db:
            _insert_scores(db, scores)


def teacher_scores(store: Store, teacher_run_id: str) -> dict[tuple[str, str], float]:
    """{(example_id, text_hash): loss} the store holds for a teacher run."""
    with store.read() as db:
        rows = db.execute(
            "SELECT example_id, text_hash, loss FROM example_scores WHERE teacher_run_id = ?", [teacher_run_id]
        ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def store_folder(store: Store) -> Path:
    """The folder relative artifact paths start from: the store's own."""
    return store.path.resolve().parent


def stored_path(store: Store, path: str) -> str:
    """An artifact's path as the store records it: relative to the store's folder when the file lies
    under it (so a folder moved with its store and ``specrun-artifacts/`` still works), else absolute."""
    absolute = Path(path).resolve()
    folder = store_folder(store)
    return absolute.relative_to(folder).as_posix() if absolute.is_relative_to(folder) else str(absolute)


def artifact_path(store: Store, stored: str | None) -> str | None:
    """The one place a recorded artifact path is resolved: a relative path starts at the store's folder."""
    if stored is None:
        return None
    path = Path(stored)
    return str(path if path.is_absolute() else store_folder(store) / path)


@dataclass
class StoredWeights:
    """A run's saved weights as the store knows them (``path``: the weights file, resolved)."""

    run_id: str
    status: str
    config: dict
    path: str | None


def run_weights(store: Store, run_id: str, prefix: bool = False) -> StoredWeights:
    """The one weight lookup: a run's status, config and weights file. With ``prefix``, a unique run id
    prefix is accepted. StoreError when there is no such run."""
    with store.read() as db:
        row = db.execute("SELECT run_id, status, config FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None and prefix:
            like = [
                r[0] for r in db.execute("SELECT run_id FROM runs WHERE starts_with(run_id, ?)", [run_id]).fetchall()
            ]
            if len(like) == 1:
                row = db.execute("SELECT run_id, status, config FROM runs WHERE run_id = ?", [like[0]]).fetchone()
            elif like:
                shown = ", ".join(sorted(like)[:5]) + (f" and {len(like) - 5} more" if len(like) > 5 else "")
                raise StoreError(
                    f"run id prefix {run_id!r} matches {len(like)} runs in {store.path} ({shown}): give more of the id"
                )
        if row is None:
            raise StoreError(f"no run {run_id!r} in {store.path}")
        weights = db.execute("SELECT path FROM artifacts WHERE run_id = ? AND kind = 'weights'", [row[0]]).fetchone()
    return StoredWeights(row[0], row[1], json.loads(row[2]), artifact_path(store, weights[0]) if weights else None)


def completed_weights(store: Store, run_id: str, what: str = "model.init_from") -> StoredWeights:
    """``run_weights`` of a run that must be completed with saved weights (a transfer source, a teacher)."""
    found = run_weights(store, run_id)
    if found.status != "completed" or found.path is None:
        raise StoreError(
            f"{what}: no completed run {run_id!r} with saved weights in {store.path} (it is {found.status})"
        )
    return found


def final_step(store: Store, run_id: str) -> int:
    """The step a completed run's final metrics were taken at."""
    with store.read() as db:
        return db.execute("SELECT coalesce(max(step), 0) FROM metrics WHERE run_id = ? AND final", [run_id]).fetchone()[
            0
        ]


def _insert_transfer(db, run_id: str, t) -> None:
    details = {
        "loaded": t.loaded,
        "frozen": t.frozen,
        "shape_mismatch": t.shape_mismatch,
        "no_place": t.no_place,
        "head": t.head,
    }
    db.execute(
        "INSERT INTO transfers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            t.source_run_id,
            t.source_method,
            t.transferable,
            len(t.loaded),
            len(t.frozen),
            len(t.shape_mismatch),
            len(t.no_place),
            len(t.head),
            json.dumps(details),
        ],
    )


def add_evaluations(store: Store, run_id: str, record: RunRecord) -> None:
    """Add a completed run's results on evaluation sets it had not been evaluated on, in one transaction."""
    names = [name for name, _ in record.evaluations]
    with store.write() as db:
        status = db.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if status is None or status[0] != "completed":
            raise StoreError(f"run {run_id} is no longer completed; not adding evaluations {names}")
        taken = db.execute(
            "SELECT eval_set FROM evaluations WHERE run_id = ? AND eval_set IN (SELECT unnest(?))", [run_id, names]
        ).fetchall()
        if taken:  # another process added them meanwhile
            return
        _insert_evaluation_results(db, run_id, record)


def evaluations(store: Store, run_ids: list[str]) -> dict[str, dict[str, str]]:
    """{run id: {evaluation set: fingerprint}} for the named evaluation sets recorded for ``run_ids``."""
    if not store.path.exists() or not run_ids:
        return {}
    with store.read() as db:
        rows = db.execute(
            "SELECT run_id, eval_set, fingerprint FROM evaluations WHERE run_id IN (SELECT unnest(?))", [run_ids]
        ).fetchall()
    found: dict[str, dict[str, str]] = {}
    for run_id, name, fingerprint in rows:
        found.setdefault(run_id, {})[name] = fingerprint
    return found


def different_definition(names: list[str]) -> str:
    return (
        f"already evaluated on an evaluation set {', '.join(repr(n) for n in names)} defined differently "
        "(split, limit, transforms or their files); give the changed evaluation set a new name"
    )


def fail(store: Store, run_id: str, error: str, status: str = "failed", scores: list[ScoreRow] = ()) -> None:
    """Mark a run failed (or interrupted) with its error; its earlier results are dropped with it. The
    teacher ``scores`` it computed before failing are kept (they describe the teacher, not this run)."""
    with store.write() as db:
        _insert_scores(db, scores)
        _clear_results(db, run_id)
        db.execute(
            "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE run_id = ?",
            [status, error, now(), run_id],
        )


_RUNS_QUERY = """
    SELECT s.run_id, s.experiment, s.status, s.method, s.seed, s.sweep, s.accuracy, s.f1, s.exact_match,
           coalesce(s.train_seconds, r.train_seconds) AS train_seconds,
           strftime(s.finished_at, '%Y-%m-%d %H:%M:%S') AS finished_at, regexp_extract(r.error, '^[^\n]*') AS error,
           r.pid, r.host, r.started_at
    FROM run_summary s JOIN runs r USING (run_id)
    WHERE ($experiment IS NULL OR s.run_id IN (
            SELECT run_id FROM current_runs WHERE experiment = $experiment
            UNION ALL  -- the whole history when asked, or when no apply was recorded (stores older than m005)
            SELECT run_id FROM experiment_runs WHERE experiment = $experiment
              AND ($history OR NOT EXISTS (SELECT 1 FROM applies WHERE experiment = $experiment))))
    ORDER BY s.finished_at NULLS LAST, s.run_id
"""


def list_runs(store: Store, experiment: str | None, status: str | None, history: bool) -> tuple[list[str], list[tuple]]:
    """The runs table of ``specrun runs``: (columns, rows). A run left 'running' by a process that is
    gone shows as 'interrupted' (the next apply records it so). An unknown experiment is a StoreError
    naming the ones there are."""
    with store.read() as db:
        if experiment is not None:
            known = [r[0] for r in db.execute("SELECT DISTINCT experiment FROM experiment_runs ORDER BY 1").fetchall()]
            if experiment not in known:
                raise UsageError(
                    f"no experiment {experiment!r} in {store.path}{did_you_mean(experiment, known)}; experiments: {', '.join(known) or 'none'}"
                )
        cursor = db.execute(_RUNS_QUERY, {"experiment": experiment, "history": history})
        columns = [d[0] for d in cursor.description][:-3]
        found = cursor.fetchall()
    rows = []
    for *row, pid, host, started in found:
        if row[2] == "running" and not _alive(pid, host, _utc(started)):
            row[2] = "interrupted"
        if status is None or row[2] == status:
            rows.append(tuple(row))
    return columns, rows


def drop_empty(columns: list[str], rows: list[tuple], names: tuple[str, ...]) -> tuple[list[str], list[tuple]]:
    """The table without the columns among ``names`` that hold nothing (``exact_match`` where no
    extractive-QA run is listed)."""
    empty = [i for i, c in enumerate(columns) if c in names and all(row[i] is None for row in rows)]
    keep = [i for i in range(len(columns)) if i not in empty]
    return [columns[i] for i in keep], [tuple(row[i] for i in keep) for row in rows]
