"""Telling plugins about runs: the ``on_run_start`` and ``on_run_end`` hooks.

Each implementation is called on its own, so that one that raises is a warning naming its plugin and
the others are still told; a run never fails because of a hook.
"""

from __future__ import annotations

import logging

from specrun.plugins.registry import Registry, _trace, source_of

log = logging.getLogger("specrun.plugins")


def notify(registry: Registry, hook: str, **kwargs) -> None:
    """Call every implementation of ``hook`` (in pluggy's order) with the arguments it takes from
    ``kwargs``; an exception becomes a warning naming the plugin."""
    pm = registry.manager
    if pm is None:
        return
    caller = getattr(pm.hook, hook)
    for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
        origin = source_of(pm, impl.plugin).origin
        _trace(f"{hook}() -> {origin}")
        try:
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception as exc:  # a logger's failure must not fail the run, nor keep the others from hearing of it
            task = kwargs.get("task")
            run = f" for run {task.run_id}" if task is not None else ""
            log.warning(
                "plugin %s failed in %s%s: %s: %s (the run is not affected; fix or uninstall the plugin)",
                origin,
                hook,
                run,
                type(exc).__name__,
                exc,
            )
