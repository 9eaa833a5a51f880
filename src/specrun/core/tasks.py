"""Which task a run is for: ``[task]`` in its config, classification when it has none.

A run's config holds ``task`` only for a task other than classification, so the configs (and ids) of runs
planned before tasks existed stay as they were. ``task_of`` looks the task plugin up in a registry (any
object with ``get(kind, name)``: the plugin host stands above this module).
"""

from __future__ import annotations

from typing import Any

DEFAULT_TASK = "classification"


def _entry(config: Any) -> Any:
    return config.get("task") if isinstance(config, dict) else getattr(config, "task", None)


def task_name(config: Any) -> str:
    """The task a run's config tree (or typed ``RunSettings``) names; classification when none."""
    entry = _entry(config)
    if entry is None:
        return DEFAULT_TASK
    return entry["name"] if isinstance(entry, dict) else entry.name


def task_of(config: Any, registry: Any) -> tuple[Any, Any]:
    """(task plugin, its validated options) of a run's config tree or typed settings."""
    entry = _entry(config)
    if entry is None:
        name, options = DEFAULT_TASK, {}
    elif isinstance(entry, dict):
        name, options = entry["name"], {k: v for k, v in entry.items() if k != "name"}
    else:
        name, options = entry.name, entry.options()
    plugin = registry.get("task", name)
    return plugin, plugin.Options.model_validate(options)


def headline_metric(task: Any) -> str:
    """A task plugin's headline metric: the first of its ``metrics`` (``TaskPlugin.metrics``). Training
    picks its best evaluation on it (without early stopping); the app's efficiency view draws it first."""
    return task.metrics[0]
