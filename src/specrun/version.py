"""specrun's version, in one place: pyproject.toml reads it at build time (``dynamic = ["version"]``),
``specrun.__version__`` and ``specrun --version`` read it here, and so do the layers below the package's
face (the runner, reports, plugin templates), which must not import it."""

__version__ = "0.2.0"
