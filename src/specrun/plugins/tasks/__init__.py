"""Built-in tasks (``[task] name = ...``), registered through the ``register_tasks`` hook like any plugin.

``classification`` (the default: a spec without ``[task]``) and ``extractive_qa``. ``task_of`` finds a
run's task and its options from the run's config: a config without a ``task`` key is classification,
which keeps the configs, and so the run ids, of specs written before tasks existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from specrun.plugins.api import PluginOptions, TaskPlugin
    from specrun.plugins.registry import Registry

MODULES = ["specrun.plugins.tasks.classification", "specrun.plugins.tasks.extractive_qa"]

DEFAULT_TASK = "classification"


def task_name(config: Any) -> str:
    """The task a run's config tree (or typed ``RunSettings``) names; classification when none."""
    entry = config.get("task") if isinstance(config, dict) else getattr(config, "task", None)
    if entry is None:
        return DEFAULT_TASK
    return entry["name"] if isinstance(entry, dict) else entry.name


def task_of(config: Any, registry: Registry) -> tuple[TaskPlugin, PluginOptions]:
    """(task plugin, validated options) of a run's config tree or typed settings."""
    entry = config.get("task") if isinstance(config, dict) else getattr(config, "task", None)
    if entry is None:
        name, options = DEFAULT_TASK, {}
    elif isinstance(entry, dict):
        name, options = entry["name"], {k: v for k, v in entry.items() if k != "name"}
    else:
        name, options = entry.name, entry.options()
    plugin = registry.get("task", name)
    return plugin, plugin.Options.model_validate(options)
