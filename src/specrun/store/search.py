"""A search's rows: runs its pruner stopped (status 'pruned') and its trials (``search_trials``)."""

from __future__ import annotations

import json

from specrun.core.task import RunRecord
from specrun.store.db import Store, now
from specrun.store.runs import _clear_results, _insert_evaluation_results


def prune(store: Store, run_id: str, record: RunRecord) -> None:
    """Mark a run pruned at ``record.pruned_step``, with its learning curve so far, in one transaction."""
    with store.write() as db:
        _clear_results(db, run_id)
        _insert_evaluation_results(db, run_id, record)
        db.execute(
            "UPDATE runs SET status = 'pruned', error = ?, pruned_step = ?, train_seconds = ?, finished_at = ? WHERE run_id = ?",
            [record.message, record.pruned_step, record.train_seconds, now(), run_id],
        )


def run_results(store: Store, run_ids: list[str], split: str, metric: str) -> dict[str, dict]:
    """For each run: its status, its final ``metric`` on ``split`` and that metric's learning curve
    [(step, value)] (a pruned run's curve so far)."""
    if not run_ids:
        return {}
    with store.read() as db:
        status = dict(
            db.execute("SELECT run_id, status FROM runs WHERE run_id IN (SELECT unnest(?))", [run_ids]).fetchall()
        )
        rows = db.execute(
            "SELECT run_id, step, value, final FROM metrics WHERE run_id IN (SELECT unnest(?)) AND split = ? AND name = ? ORDER BY run_id, step",
            [run_ids, split, metric],
        ).fetchall()
    out = {r: {"status": status.get(r), "final": None, "curve": []} for r in run_ids}
    for run_id, step, value, final in rows:
        if final:
            out[run_id]["final"] = value
        else:
            out[run_id]["curve"].append((step, value))
    return out


def record_trial(
    store: Store, experiment: str, trial: int, rows: list[tuple[str, int, dict, str, float | None]]
) -> None:
    """A trial's runs (run_id, seed, params, state, value), replacing what the store held for that trial number."""
    with store.write() as db:
        db.execute("DELETE FROM search_trials WHERE experiment = ? AND trial = ?", [experiment, trial])
        for run_id, seed, params, state, value in rows:
            db.execute(
                "INSERT INTO search_trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [experiment, trial, run_id, seed, json.dumps(params), state, value, now()],
            )


def forget_trials_from(store: Store, experiment: str, first: int) -> None:
    """Drop the trials numbered ``first`` and above (a search that now has fewer trials)."""
    with store.write() as db:
        db.execute("DELETE FROM search_trials WHERE experiment = ? AND trial >= ?", [experiment, first])


def add_apply_runs(store: Store, apply_id: str, run_ids: list[str]) -> None:
    """Runs of a search's trials join its apply as they finish (``current_runs``: every run the search
    trained: completed, pruned or failed; analyses read only the completed ones)."""
    if not run_ids:
        return
    with store.write() as db:
        db.executemany("INSERT INTO apply_runs VALUES (?, ?) ON CONFLICT DO NOTHING", [[apply_id, r] for r in run_ids])
