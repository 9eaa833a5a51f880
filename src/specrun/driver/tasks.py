"""Building a run's self-contained task from its plan and what the store holds (weights of the runs it
starts from, its teachers' weights and known scores)."""

from __future__ import annotations

from pathlib import Path

from specrun.core.task import RunTask, TeacherSource
from specrun.runner.data import data_dir
from specrun.runner.plan import PlannedRun
from specrun.spec.stages import transform_entries
from specrun.store import runs as store_runs
from specrun.store.db import Store


def teacher_ids(config: dict) -> list[str]:
    """The teacher runs a run's transforms name (by run id, once planned)."""
    found = [entry["teacher"] for _, entry in transform_entries(config) if isinstance(entry.get("teacher"), str)]
    return list(dict.fromkeys(found))


def teachers(store: Store, config: dict) -> dict[str, TeacherSource]:
    sources = {}
    for run_id in teacher_ids(config):
        stored = store_runs.completed_weights(store, run_id, what="teacher")
        sources[run_id] = TeacherSource(run_id, stored.config, stored.path, store_runs.teacher_scores(store, run_id))
    return sources


def base_task(run: PlannedRun, store: Store, spec_dir: str | None, artifacts_dir: Path, **extra) -> RunTask:
    return RunTask(
        run_id=run.run_id,
        experiment=run.experiment,
        label=run.label(),
        settings=run.settings,
        config=run.config,
        spec_dir=spec_dir,
        primary_eval=run.eval_set,
        eval_sets=dict(run.eval_sets),
        artifacts_dir=str(artifacts_dir),
        teachers=teachers(store, run.config),
        data_dir=data_dir(),
        **extra,
    )


def train_task(run: PlannedRun, store: Store, spec_dir: str | None, artifacts_dir: Path, resume: bool) -> RunTask:
    """Train and evaluate ``run``; with ``resume``, from its last checkpoint when it has one."""
    init_from = run.settings.model.init_from
    init_weights = store_runs.completed_weights(store, init_from).path if init_from else None
    return base_task(run, store, spec_dir, artifacts_dir, kind="train", resume=resume, init_weights=init_weights)


def evaluate_task(
    run: PlannedRun, store: Store, spec_dir: str | None, artifacts_dir: Path, names: list[str]
) -> RunTask:
    """Evaluate completed ``run``'s stored weights on the named evaluation sets ``names``."""
    stored = store_runs.completed_weights(store, run.run_id, what="evaluating")
    return base_task(
        run,
        store,
        spec_dir,
        artifacts_dir,
        kind="evaluate",
        weights=stored.path,
        evaluate_sets=list(names),
        step=store_runs.final_step(store, run.run_id),
    )
