"""specrun's version, in one place: ``specrun.__version__`` and ``specrun --version`` read it here, and so do
the layers below the package's face (the runner, reports, plugin templates), which must not import it."""

__version__ = "0.1.0"
