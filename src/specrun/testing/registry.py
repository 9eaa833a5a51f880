"""Registries for tests: the built-in plugins plus the modules under test, strict about every plugin."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

from specrun.plugins.registry import Registry, build_registry, make_plugin_manager


def registry_with(*modules: ModuleType | str | object) -> Registry:
    """A registry of the built-in plugins and ``modules`` (module objects, dotted module names, or any
    object with ``@hookimpl`` methods); installed entry points stay out. Strict: a plugin that is
    malformed, takes a name already registered or whose hook raises fails with ``PluginError`` naming
    it, instead of being skipped with a warning as ``specrun`` does at run time. A plugin that uses a
    deprecated form of the plugin API works, and a ``SpecrunDeprecationWarning`` says what to change."""
    plugins = [importlib.import_module(m) if isinstance(m, str) else m for m in modules]
    pm, problems = make_plugin_manager(plugins, entry_points=False)
    registry = build_registry(pm, problems, strict=True)
    for deprecation in registry.deprecations:  # a plugin on a deprecated form of the API: its tests hear of it
        warnings.warn(deprecation, stacklevel=2)
    return registry
