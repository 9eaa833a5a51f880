"""``python -m specrun`` is the ``specrun`` command."""

from specrun.cli import entry

entry()
