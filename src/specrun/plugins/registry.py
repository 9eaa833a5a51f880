"""The plugin host: a pluggy manager over built-in and entry-point plugins, and a registry by kind and name."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
from dataclasses import dataclass, field
from types import ModuleType

import pluggy

from specrun import hookspecs
from specrun.errors import PluginError, did_you_mean
from specrun.plugins.api import KIND_BASES, Plugin

ENTRY_POINT_GROUP = "specrun"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_./-]*$")

def builtin_modules() -> list[str]:
    """Built-in plugin modules (each package lists its own), registered through the same hooks third parties use."""
    from specrun.plugins import analyses, datasets, methods, models, transforms

    return [m for package in (models, datasets, methods, transforms, analyses) for m in package.MODULES]

HOOK_FOR_KIND = {
    "method": "register_methods",
    "dataset": "register_datasets",
    "model_source": "register_model_sources",
    "transform": "register_transforms",
    "analysis": "register_analyses",
}


@dataclass
class Entry:
    """A registered plugin object and where it came from."""

    kind: str
    plugin: Plugin
    origin: str


@dataclass(eq=False)
class Registry:
    """Every registered plugin, by kind then name."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in HOOK_FOR_KIND})
    load_errors: list[str] = field(default_factory=list)

    def get(self, kind: str, name: str) -> Plugin:
        """The plugin of ``kind`` called ``name``; a PluginError with a suggestion if there is none."""
        found = self.entries[kind].get(name)
        if found is None:
            known = sorted(self.entries[kind])
            # the plugin the spec means may be one that failed to load: say so next to the name
            failed = "".join(f"; {problem}" for problem in self.load_errors)
            raise PluginError(
                f"unknown {kind.replace('_', ' ')} {name!r}{did_you_mean(name, known)}; "
                f"known: {', '.join(known) or 'none'}{failed}"
            )
        return found.plugin

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def all(self) -> list[Entry]:
        return [e for kind in self.entries.values() for e in kind.values()]

    def model_sources(self) -> list[Plugin]:
        return sorted((e.plugin for e in self.entries["model_source"].values()), key=lambda p: p.priority)


def _validate_plugin(kind: str, plugin: object, origin: str) -> None:
    base = KIND_BASES[kind]
    if not isinstance(plugin, base):
        raise PluginError(f"{origin} registered {plugin!r} as a {kind}, but it is not a {base.__name__} instance")
    name = getattr(plugin, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PluginError(f"{origin} registered a {kind} with an invalid name {name!r} (use lower-case letters, digits, _ . / -)")
    options = getattr(plugin, "Options", None)
    from pydantic import BaseModel

    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(f"{kind} {name!r} from {origin}: Options must be a pydantic model")
    if options.model_config.get("extra") != "forbid":
        raise PluginError(f"{kind} {name!r} from {origin}: Options must forbid unknown keys (subclass PluginOptions)")
    if kind == "analysis":
        _validate_tables(plugin, origin)


_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


def _validate_tables(plugin: object, origin: str) -> None:
    """An analysis's result tables are named after it, have valid column names, and leave specrun's own
    tables and the two leading columns specrun adds alone."""
    from specrun.plugins.api import RESERVED_TABLES, ResultTable, table_prefix

    prefix = table_prefix(plugin.name)
    for table in plugin.tables:
        where = f"analysis {plugin.name!r} from {origin}"
        if not isinstance(table, ResultTable):
            raise PluginError(f"{where}: tables must be ResultTable instances, not {table!r}")
        if not _IDENTIFIER.match(table.name) or not (table.name == prefix or table.name.startswith(prefix + "_")):
            raise PluginError(f"{where}: result table {table.name!r} must be named {prefix!r} or {prefix + '_<suffix>'!r} (lower-case letters, digits, _)")
        if table.name in RESERVED_TABLES:
            raise PluginError(f"{where}: result table {table.name!r} is one of specrun's own tables")
        bad = [c for c in table.columns if not _IDENTIFIER.match(c) or c in ("experiment", "analysis")]
        if bad or not table.columns:
            raise PluginError(f"{where}: table {table.name!r} needs columns named in lower-case letters, digits and _, "
                              f"other than experiment and analysis (specrun adds those); got {bad or 'none'}")


def _origin(pm: pluggy.PluginManager, module: object) -> str:
    for mod, dist in pm.list_plugin_distinfo():
        if mod is module:
            return f"{dist.metadata['name']} {dist.version}"
    name = pm.get_name(module) or repr(module)
    return "builtin" if name.startswith("specrun.plugins.") else name


def make_plugin_manager(extra_plugins: list[object] = (), entry_points: bool = True) -> tuple[pluggy.PluginManager, list[str]]:
    """A plugin manager with the built-ins, the entry-point plugins and ``extra_plugins`` registered."""
    pm = pluggy.PluginManager("specrun")
    pm.add_hookspecs(hookspecs)
    for module_name in builtin_modules():
        pm.register(importlib.import_module(module_name), name=module_name)
    errors: list[str] = []
    if entry_points and not os.environ.get("SPECRUN_DISABLE_PLUGIN_AUTOLOAD"):
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                module = ep.load()
            except (Exception, SystemExit) as exc:  # a broken third-party plugin (one that exits on import too) must not take down the CLI
                dist = ep.dist.name if ep.dist else "unknown distribution"
                errors.append(f"plugin {ep.name!r} from {dist} failed to load: {type(exc).__name__}: {exc}")
                continue
            if pm.is_registered(module):
                continue
            pm.register(module, name=ep.name)
            if ep.dist is not None:
                pm._plugin_distinfo.append((module, ep.dist))  # same bookkeeping as load_setuptools_entrypoints
    for plugin in extra_plugins:
        pm.register(plugin)
    return pm, errors


def build_registry(pm: pluggy.PluginManager, load_errors: list[str] = ()) -> Registry:
    """Call every register_* hook and collect the plugins, failing loudly on duplicates."""
    registry = Registry(load_errors=list(load_errors))
    for kind, hook_name in HOOK_FOR_KIND.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            origin = _origin(pm, impl.plugin)

            def register(plugin: object, _kind=kind, _origin=origin) -> None:
                _validate_plugin(_kind, plugin, _origin)
                existing = registry.entries[_kind].get(plugin.name)
                if existing is not None:
                    raise PluginError(
                        f"two plugins register the {_kind.replace('_', ' ')} {plugin.name!r}: "
                        f"{existing.origin} and {_origin}"
                    )
                if _kind == "analysis":
                    _check_table_clash(registry, plugin, _origin)
                registry.entries[_kind][plugin.name] = Entry(_kind, plugin, _origin)
                _trace(f"  registered {_kind} {plugin.name!r}")

            _trace(f"{hook_name}() -> {origin}")
            try:
                impl.function(register=register)
            except PluginError:
                raise
            except (Exception, SystemExit) as exc:
                raise PluginError(f"plugin {origin} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
    return registry


def _check_table_clash(registry: Registry, plugin, origin: str) -> None:
    mine = {t.name for t in plugin.tables}
    for entry in registry.entries["analysis"].values():
        clash = mine & {t.name for t in entry.plugin.tables}
        if clash:
            raise PluginError(
                f"analyses {entry.plugin.name!r} ({entry.origin}) and {plugin.name!r} ({origin}) both write table {sorted(clash)[0]!r}"
            )


def _trace(text: str) -> None:
    """With SPECRUN_TRACE_PLUGINS=1, print each hook call and registration to stderr."""
    if os.environ.get("SPECRUN_TRACE_PLUGINS"):
        sys.stderr.write(f"specrun plugin trace: {text}\n")


_DEFAULT: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (built once, on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        pm, errors = make_plugin_manager()
        _DEFAULT = build_registry(pm, errors)
    return _DEFAULT


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests; ``None`` rebuilds it on next use)."""
    global _DEFAULT
    _DEFAULT = registry


def module_version(module: ModuleType | object) -> str:
    """The version of the distribution that ships ``module`` (for run identities), or 'local'."""
    top = type(module).__module__.split(".")[0] if not isinstance(module, ModuleType) else module.__name__.split(".")[0]
    try:
        return importlib.metadata.version(top)
    except importlib.metadata.PackageNotFoundError:
        return "local"
