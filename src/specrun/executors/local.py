"""The local executor: one run at a time, in this process, with step-level progress."""

from __future__ import annotations

from collections import deque

from specrun.core.task import RunRecord, RunTask
from specrun.interrupts import stop_if_terminated
from specrun.plugins.registry import Registry


class LocalExecutor:
    """Runs each submitted task in this process when the driver asks for the next finished one. Training
    reports each step and phase to ``progress`` (an ``ApplyProgress``) and stops at a SIGTERM."""

    name = "local"
    shares_artifacts = True
    on_event = None

    def __init__(self, registry: Registry | None = None, progress=None):
        self.registry = registry
        self.progress = progress
        self.queue: deque[RunTask] = deque()

    def free_slots(self) -> int:
        return 0 if self.queue else 1

    def submit(self, task: RunTask) -> None:
        self.queue.append(task)

    def _on_step(self, report) -> None:
        stop_if_terminated()
        if self.progress:
            self.progress.step(report)

    def _on_phase(self, name: str) -> None:
        stop_if_terminated()
        if self.progress:
            self.progress.phase(name)

    def _live(self, task: RunTask):
        if self.on_event is None or not task.track_every:
            return None
        return lambda event, step, rows: self.on_event(task.run_id, event, step, rows)

    def next_finished(self) -> RunRecord:
        from specrun.runner.execute import execute

        task = self.queue[0]
        try:
            return execute(
                task, self.registry, on_step=self._on_step, on_phase=self._on_phase, on_metrics=self._live(task)
            )
        finally:
            self.queue.popleft()

    def cancel(self) -> None:
        self.queue.clear()

    def close(self) -> None:
        pass
