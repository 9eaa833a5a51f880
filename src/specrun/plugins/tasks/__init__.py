"""Built-in tasks (``[task] name = ...``), registered through the ``register_tasks`` hook like any plugin:
``classification`` (the default: a spec without ``[task]``) and ``extractive_qa``.

Tasks stand directly above the runner (docs/architecture.md): they shape its inputs, loss and evaluation
with its batching and precision helpers, and the runner reaches them only through the registry
(``specrun.core.tasks.task_of``).
"""

MODULES = ["specrun.plugins.tasks.classification", "specrun.plugins.tasks.extractive_qa"]
