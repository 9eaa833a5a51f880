"""specrun: declarative experiment runner for fine-tuning pretrained transformers on text tasks.

The Python API (``specrun.apply``, ``specrun.runs``, ``specrun.sql``, ``specrun.load_run``) lives in
``specrun.api`` and is imported on first use, so ``import specrun`` stays light.
"""

from specrun.hookspecs import hookimpl  # the decorator plugin authors import
from specrun.version import __version__

_API = ("apply", "runs", "sql", "load_run", "ApplyResult")

__all__ = ["hookimpl", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from specrun import api

        return getattr(api, name)
    raise AttributeError(f"module 'specrun' has no attribute {name!r}")
