"""Checks that run before anything trains: every planned run's data, transforms applied, fits the spec;
its model exists, and its settings and method fit the model (``runner.compat``).

``specrun plan`` and ``specrun apply`` prepare each run's data once up front (dataset, splits, every
transform under the run's seed) so that a request the data cannot meet (k larger than a class, a budget
larger than the split, a missing synonyms file, an unknown teacher run) fails the whole apply at once,
naming the spec file, line and key, before the first run spends any time training.

Transforms that need a teacher's scores are checked up to the point where the scores are needed: a
teacher that is itself planned has no scores yet; one named by run id must be completed in the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from specrun.errors import DataError, KeyedError, MethodUnavailable, SpecrunError
from specrun.plugins.registry import Registry
from specrun.runner.compat import check_run_model
from specrun.runner.data import prepare_run_data
from specrun.runner.plan import PlannedRun
from specrun.store.db import Store
from specrun.store.runs import INPUT_NAMES, different_definition, evaluations, recorded_inputs, stale_inputs, statuses


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


@dataclass
class Preflight:
    """What the checks before training found: problems that refuse the apply (grouped by spec file,
    key and message, with the runs they hit), and runs that cannot run on this machine (with why)."""

    #: (where: "file:line", key, message) -> the runs it hits; located where the value comes from.
    problems: dict[tuple[str, str | None, str], list[PlannedRun]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    #: The runs that would train (not completed, or forced), dependencies included.
    to_train: list[str] = field(default_factory=list)
    #: What the store held when checked: each run's status, and the evaluation sets of completed runs.
    statuses: dict[str, str] = field(default_factory=dict)
    evaluated: dict[str, dict] = field(default_factory=dict)
    #: Completed runs whose inputs changed since they trained (``runs.inputs_fingerprint``): {run_id:
    #: what changed}. They train again.
    stale: dict[str, list[str]] = field(default_factory=dict)

    def add(self, run: PlannedRun, key: str | None, message: str) -> None:
        """Record a problem of ``run`` about spec ``key``, located where the run's value of it comes from."""
        where = run.spec_path or "<spec>"
        if key:
            key, line, message, *file = run.locate(key, message)
            where = file[0] if file and file[0] else where
            where = f"{where}:{line}" if line else where
        self.problems.setdefault((where, key, message), []).append(run)

    def reason(self, run_id: str) -> str | None:
        """Why run ``run_id`` will fail, or None."""
        for (_, key, message), runs in self.problems.items():
            if any(r.run_id == run_id for r in runs):
                return f"{key}: {message}" if key else message
        if run_id in self.unavailable:
            return f"not on this machine: {self.unavailable[run_id]}"
        return None

    def error(self) -> SpecrunError | None:
        """One error listing every problem (None when there is none); also when no run that would
        train can run on this machine."""
        if self.problems:
            return DataError(
                "\n".join(
                    _render(where, key, message, failing) for (where, key, message), failing in self.problems.items()
                )
            )
        if self.to_train and all(run_id in self.unavailable for run_id in self.to_train):
            reasons = sorted(set(self.unavailable.values()))
            return MethodUnavailable(f"no run of this apply can run on this machine: {'; '.join(reasons)}")
        return None


def preflight(planned: list[PlannedRun], registry: Registry, store: Store, force: bool = False) -> Preflight:
    """Check every run that would train or evaluate (dependencies included): its data, its model, its
    method against the model, and whether it can run on this machine."""
    runs = _with_dependencies(planned)
    known = statuses(store, [r.run_id for r in runs])
    evaluated = evaluations(store, [r.run_id for r in runs if known.get(r.run_id) == "completed"])
    found = Preflight(statuses=known, evaluated=evaluated)
    recorded = recorded_inputs(store, [r.run_id for r in runs if known.get(r.run_id) == "completed"])
    data_checked: dict[str, KeyedError | None] = {}  # runs differing in their method only share their data
    for run in runs:
        changed_inputs = stale_inputs(recorded.get(run.run_id), run.inputs)
        if changed_inputs:
            found.stale[run.run_id] = [INPUT_NAMES.get(k, k) for k in changed_inputs]
        if known.get(run.run_id) == "completed" and not force and not changed_inputs:
            new, changed = run.eval_sets_to_add(evaluated.get(run.run_id, {}))
            for name in changed:
                message = f"these runs were {different_definition([name])}"
                found.add(run, f"data.eval_sets.{name}", message)
            if not new:
                continue  # nothing to do for this run
            checks = [_check_one]  # evaluated with its stored weights: the model loaded before
        else:
            checks = [_check_one, _check_model]
            found.to_train.append(run.run_id)
        for check in checks:
            try:
                if check is _check_one:
                    _check_data_once(run, registry, store, found, data_checked)
                else:
                    check(run, registry, store, found)
            except KeyedError as exc:
                found.add(run, exc.key, exc.message)
    return found


def check_runs(planned: list[PlannedRun], registry: Registry, store: Store, force: bool = False) -> Preflight:
    """``preflight``, raising one error listing every problem (grouped by problem) if there is any."""
    found = preflight(planned, registry, store, force)
    error = found.error()
    if error is not None:
        raise error
    return found


def _check_model(run: PlannedRun, registry: Registry, store: Store, found: Preflight) -> None:
    why = check_run_model(run.settings, registry)
    if why:
        found.unavailable[run.run_id] = why


def _check_data_once(
    run: PlannedRun, registry: Registry, store: Store, found: Preflight, done: dict[str, KeyedError | None]
) -> None:
    """``_check_one``, once per distinct data preparation: a run's data depends on its whole config but
    its method (``prepare_run_data`` reads the data, seed, task and train sections), so the runs of a
    method sweep share one check, and its error if it fails."""
    key = json.dumps(
        [run.spec_dir, {k: v for k, v in run.config.items() if k != "method"}], sort_keys=True, default=str
    )
    if key not in done:
        try:
            _check_one(run, registry, store, found)
            done[key] = None
        except KeyedError as exc:
            done[key] = exc
    if done[key] is not None:
        raise done[key]


def _check_one(run: PlannedRun, registry: Registry, store: Store, found: Preflight | None = None) -> None:
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
        prepare_run_data(run.settings, registry, run.spec_dir, scores=scores)
    except _ScoresPending:
        pass


def _render(where: str, key: str | None, message: str, failing: list[PlannedRun]) -> str:
    which = ", ".join(f"{r.run_id} ({r.label()})" for r in failing[:3])
    if len(failing) > 3:
        which += f" and {len(failing) - 3} more"
    runs = f"{len(failing)} run{'s' if len(failing) > 1 else ''}: {which}"
    return f"{where}: {key}: {message} [{runs}]" if key else f"{where}: {message} [{runs}]"
