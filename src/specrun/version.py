"""specrun's version, in one place: pyproject.toml reads it at build time (``dynamic = ["version"]``),
``specrun.__version__`` and ``specrun --version`` read it here, and so do the layers below the package's
face (the runner, reports, plugin templates), which must not import it."""

__version__ = "0.2.0"

#: The release whose results run ids are keyed by (it enters every run's identity, and every built-in
#: plugin's code version). It moves only with a release that changes the results of unchanged specs for
#: all methods; a release that keeps them (0.2.0 did: what changed results, changed those runs' ids itself)
#: keeps it, so the runs a store holds stay cached across the upgrade.
RESULTS_VERSION = "0.1.0"
