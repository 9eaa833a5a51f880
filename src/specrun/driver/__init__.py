"""The driver: the one place that reads and writes the store around runs.

It walks the planned runs' dependency graph (transfer sources and teachers first), claims each run in
the store, builds its self-contained ``RunTask`` (``tasks``), hands it to an executor
(``specrun.executors``), and writes each ``RunRecord`` that comes back in one transaction (``apply``).
``preflight`` checks every planned run against the store and this machine before anything trains;
``models`` loads a stored run's model for prediction.
"""
