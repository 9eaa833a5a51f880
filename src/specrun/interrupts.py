"""Ctrl-C and SIGTERM: both stop an apply the same way (a KeyboardInterrupt), so the run in progress is
recorded as interrupted and its checkpoint stays for the next apply to resume from."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is. A subclass on purpose: CPython (3.11) remembers a KeyboardInterrupt
    raised while C code runs Python (``PyRun_String``) as unhandled, even once caught, and then exits by
    re-raising SIGINT instead of with the exit code specrun chose; it checks for that exact type only."""


#: Set by SIGTERM. The handler raises at once, but an exception raised inside a finalizer or a library's
#: catch-all can be swallowed; training checks this at every step, so the run stops all the same.
_terminated = threading.Event()


def stop_if_terminated() -> None:
    if _terminated.is_set():
        raise Terminated("signal 15")


def _in_finalizer(frame) -> bool:
    """Whether the signal arrived inside a ``__del__``: Python prints and drops an exception raised there,
    so the handler only sets the flag and the next training step stops the run."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt so a killed apply records its runs as interrupted."""
    def handler(signum, frame):
        _terminated.set()
        if not _in_finalizer(frame):
            raise Terminated(f"signal {signum}")

    _terminated.clear()
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _terminated.clear()
