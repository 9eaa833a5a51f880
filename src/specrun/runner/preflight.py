"""Checks that run before anything trains: every planned run's data, transforms applied, fits the spec.

``specrun plan`` and ``specrun apply`` prepare each run's data once up front (dataset, splits, every
transform under the run's seed) so that a request the data cannot meet (k larger than a class, a budget
larger than the split, a missing synonyms file, an unknown teacher run) fails the whole apply at once,
naming the spec file, line and key, before the first run spends any time training.

Transforms that need a teacher's scores are checked up to the point where the scores are needed: a
teacher that is itself planned has no scores yet; one named by run id must be completed in the store.
"""

from __future__ import annotations

from pathlib import Path

from specrun.errors import DataError
from specrun.plugins.registry import Registry
from specrun.runner.data import prepare_run_data
from specrun.runner.plan import PlannedRun
from specrun.spec.locate import locate
from specrun.store.db import Store
from specrun.store.runs import different_definition, evaluations, statuses


class _ScoresPending(Exception):
    """Raised by the preflight's stand-in for teacher scores: the rest of the run's data waits for them."""


def _with_dependencies(planned: list[PlannedRun]) -> list[PlannedRun]:
    ordered: dict[str, PlannedRun] = {}

    def visit(run: PlannedRun) -> None:
        for dep in run.dependencies:
            visit(dep)
        ordered.setdefault(run.run_id, run)

    for run in planned:
        visit(run)
    return list(ordered.values())


def check_runs(planned: list[PlannedRun], registry: Registry, store: Store, force: bool = False) -> None:
    """Raise one ``DataError`` listing every run whose data the spec cannot get (grouped by problem)."""
    runs = _with_dependencies(planned)
    known = statuses(store, [r.run_id for r in runs])
    evaluated = evaluations(store, [r.run_id for r in runs if known.get(r.run_id) == "completed"])
    problems: dict[tuple[str, str | None, str], list[PlannedRun]] = {}
    for run in runs:
        if known.get(run.run_id) == "completed" and not force:
            new, changed = run.eval_sets_to_add(evaluated.get(run.run_id, {}))
            for name in changed:
                message = f"these runs were {different_definition([name])}"
                problems.setdefault((run.spec_path, f"data.eval_sets.{name}", message), []).append(run)
            if not new:
                continue  # nothing to do for this run
        try:
            _check_one(run, registry, store)
        except DataError as exc:
            problems.setdefault((run.spec_path, exc.key, exc.message), []).append(run)
    if problems:
        raise DataError("\n".join(_render(path, key, message, failing) for (path, key, message), failing in problems.items()))


def _check_one(run: PlannedRun, registry: Registry, store: Store) -> None:
    pending = {d.run_id for d in run.dependencies}

    def require_completed(run_id: str, what: str, key: str | None = None) -> None:
        """A run named by id (not planned in this apply) must be completed in the store."""
        if run_id in pending:
            return
        status = statuses(store, [run_id]).get(run_id)
        if status != "completed":
            state = f"is {status}" if status else "is not"
            raise DataError(f"{what} {run_id!r} {state} a completed run in {store.path}", key=key)

    def scores(teacher: str, examples):
        require_completed(teacher, "teacher")
        raise _ScoresPending

    if run.config["model"].get("init_from"):
        require_completed(run.config["model"]["init_from"], "run", key="model.init_from")
    try:
        prepare_run_data(run.config, registry, run.spec_dir, scores=scores)
    except _ScoresPending:
        pass


def _render(path: str, key: str | None, message: str, failing: list[PlannedRun]) -> str:
    line = None
    if key and path:
        try:
            line = locate(Path(path).read_text(encoding="utf-8"), key.split("."))
        except OSError:
            pass
    where = f"{path}:{line}" if line else path or "<spec>"
    which = ", ".join(f"{r.run_id} ({r.label()})" for r in failing[:3])
    if len(failing) > 3:
        which += f" and {len(failing) - 3} more"
    runs = f"{len(failing)} run{'s' if len(failing) > 1 else ''}: {which}"
    return f"{where}: {key}: {message} [{runs}]" if key else f"{where}: {message} [{runs}]"
