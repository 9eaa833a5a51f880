"""Ctrl-C and SIGTERM: both stop an apply the same way (a KeyboardInterrupt), so the run in progress is
recorded as interrupted and its checkpoint stays for the next apply to resume from.

A signal is also remembered, not only raised: Python drops an exception raised inside a finalizer
(``__del__``, which garbage collection runs at any moment, e.g. while a run evaluates or saves) and some
libraries catch everything; a Ctrl-C landing there would otherwise be lost and the apply would finish
with exit code 0. Training checks the flag at every step and phase, and the driver before it records a
run and once the runs are done, so the apply stops all the same.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM or Ctrl-C, handled by specrun. A subclass on purpose: CPython (3.11) remembers a
    KeyboardInterrupt raised while C code runs Python (``PyRun_String``) as unhandled, even once caught,
    and then exits by re-raising SIGINT instead of with the exit code specrun chose; it checks for that
    exact type only."""


#: Set by SIGTERM or SIGINT while an apply runs; see the module's docstring.
_terminated = threading.Event()
_signal_name = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "signal 15"}


def stop_if_terminated() -> None:
    """Raise the interrupt now if a signal arrived that was not acted on (one lost in a finalizer)."""
    if _terminated.is_set():
        raise Terminated("interrupted")


def interrupted() -> bool:
    """Whether Ctrl-C or SIGTERM arrived during this apply."""
    return _terminated.is_set()


def _in_finalizer(frame) -> bool:
    """Whether the signal arrived inside a ``__del__``: Python prints and drops an exception raised there,
    so the handler only sets the flag and the next check stops the run."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM (and Ctrl-C) into a remembered KeyboardInterrupt so a stopped apply records its runs
    as interrupted. Only in the main thread (elsewhere signals cannot be handled)."""

    def handler(signum, frame):
        _terminated.set()
        if not _in_finalizer(frame):
            raise Terminated(_signal_name.get(signum, f"signal {signum}"))

    _terminated.clear()
    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread
        for sig, old in previous.items():
            signal.signal(sig, old)
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _terminated.clear()
