"""Executors: where runs execute. The driver (``specrun.driver``) hands an executor tasks whose
dependencies are complete and takes records back as runs finish; an executor never sees the store.

- ``local``: one run at a time, in this process (the default).
- ``ray``: each run a Ray task on a local Ray instance or an existing cluster (``specrun[ray]``).

An executor implements ``Executor``: ``submit`` a ``RunTask`` while ``free_slots()`` says there is room,
``next_finished()`` blocks until a run finishes and returns its ``RunRecord`` (status 'interrupted' for a
run whose worker died), ``cancel()`` stops what is in flight (Ctrl-C), ``close()`` releases resources.
A task with ``track_every`` reports its training live: the executor calls its ``on_event(run_id, event,
step, rows)`` (set by the driver) in the driver's process, whichever process the run trains in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from specrun.core.task import MetricRow, RunRecord, RunTask
from specrun.errors import UsageError

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    name: str
    #: Whether workers write artifact files where the driver reads them (else records carry the bytes).
    shares_artifacts: bool
    #: Live reports of runs in flight, ``(run_id, event, step, rows)`` (``runner.train.train_model``); None: none.
    on_event: Callable[[str, str, int, list[MetricRow]], None] | None

    def free_slots(self) -> int: ...

    def submit(self, task: RunTask) -> None: ...

    def next_finished(self) -> RunRecord: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


def executor_name(given: str | None) -> str:
    """``--executor``, else ``SPECRUN_EXECUTOR``, else 'local'; a UsageError for an unknown name."""
    name = given or os.environ.get("SPECRUN_EXECUTOR") or "local"
    if name not in EXECUTORS:
        source = "--executor" if given else "SPECRUN_EXECUTOR"
        raise UsageError(f"{source} must be one of {', '.join(EXECUTORS)}, not {name!r}")
    return name
