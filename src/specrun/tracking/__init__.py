"""Built-in live trackers: each run ``specrun apply`` executes, logged as it trains to MLflow or TensorBoard.

Off unless named: ``[tracking] trackers = ["mlflow"]`` in a spec or ``specrun apply --track mlflow``. Each
is an extra (``pip install 'specrun[mlflow]'``, ``'specrun[tensorboard]'``). A tracker hears what the run
lifecycle hooks hear (``specrun.hookspecs``: start, training windows, evaluations, end), in the driver's
process whichever executor runs the run. A tracker that fails (a server down, a bad URI) warns once and
is off for the rest of the apply; the runs go on. Nothing here enters a run's identity.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path

from specrun.core.task import MetricRow, RunRecord, RunTask
from specrun.errors import UsageError
from specrun.spec.schema import TRACKERS, TrackingSpec

log = logging.getLogger("specrun.tracking")

#: name -> (module, class, the package it needs, the extra that installs it)
BUILTIN = {
    "mlflow": ("specrun.tracking.mlflow_tracker", "MlflowTracker", "mlflow", "mlflow"),
    "tensorboard": ("specrun.tracking.tensorboard_tracker", "TensorBoardTracker", "tensorboard", "tensorboard"),
}
assert tuple(BUILTIN) == TRACKERS


class Tracker:
    """What a built-in tracker implements (each method optional): the run lifecycle, as the hooks see it."""

    name = "tracker"

    def run_start(self, task: RunTask) -> None: ...

    def window(self, task: RunTask, step: int, metrics: list[MetricRow]) -> None: ...

    def evaluation(self, task: RunTask, step: int, metrics: list[MetricRow]) -> None: ...

    def run_end(self, task: RunTask, record: RunRecord) -> None: ...

    def close(self) -> None: ...


def tracker_names(spec: TrackingSpec, track: list[str] | None) -> list[str]:
    """The spec's trackers and ``--track``'s, each once; a UsageError for an unknown name or a missing extra."""
    names = list(dict.fromkeys([*spec.trackers, *(track or [])]))
    for name in names:
        if name not in BUILTIN:
            raise UsageError(f"--track must name a built-in tracker ({', '.join(TRACKERS)}), not {name!r}")
        package, extra = BUILTIN[name][2], BUILTIN[name][3]
        if importlib.util.find_spec(package) is None:
            raise UsageError(f"tracker {name!r} needs {package}: pip install 'specrun[{extra}]'")
    return names


class Trackers:
    """The trackers of one apply. Each call goes to every tracker still on; one that raises warns once,
    naming itself and the run, and is off for the rest of the apply."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = list(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def call(self, method: str, task: RunTask, *args) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(task, *args)
            except Exception as exc:  # tracking never fails a run
                self.trackers.remove(tracker)
                log.warning(
                    "tracker %s failed in %s for run %s: %s: %s (tracking with %s is off for the rest of this apply; "
                    "the runs go on)",
                    tracker.name,
                    method,
                    task.run_id,
                    type(exc).__name__,
                    exc,
                    tracker.name,
                )
                try:
                    tracker.close()
                except Exception:  # already broken; its warning is given
                    pass

    def close(self) -> None:
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as exc:
                log.warning("tracker %s failed to close: %s: %s", tracker.name, type(exc).__name__, exc)
        self.trackers = []


def open_trackers(names: list[str], spec: TrackingSpec, store_path: Path) -> Trackers:
    """The named built-in trackers, configured by ``spec`` (their defaults beside the store)."""
    trackers = []
    for name in names:
        module, cls = BUILTIN[name][:2]
        try:
            trackers.append(getattr(importlib.import_module(module), cls)(spec, Path(store_path)))
        except Exception as exc:  # a bad URI, an unreachable server: the runs go on untracked
            log.warning("tracker %s could not start: %s: %s (the runs go on without it)", name, type(exc).__name__, exc)
    return Trackers(trackers)


def flat_params(tree: dict, prefix: str = "") -> dict[str, str]:
    """A config tree as dotted keys and printable values (for a tracker's parameters)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flat_params(value, f"{name}.")
        else:
            out[name] = str(value)
    return out
