"""The plugin host: a pluggy manager over built-in and entry-point plugins, and a registry by kind and name."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from types import ModuleType

import pluggy

from specrun import hookspecs
from specrun.errors import PluginError, SpecrunDeprecationWarning, did_you_mean
from specrun.hookspecs import AUTOLOAD_ENV, ENTRY_POINT_GROUP
from specrun.plugins.api import (
    CHANGES_DOC,
    KIND_BASES,
    LEGACY_RESULT_COLUMNS,
    AnalysisPlugin,
    Plugin,
    ResultTable,
    table_prefix,
)

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_./-]*$")

#: The built-in plugin packages; each lists its plugin modules in ``MODULES``. The host loads them by name,
#: as it loads entry-point plugins: nothing below the built-ins imports one (docs/architecture.md).
BUILTIN_PACKAGES = (
    "specrun.plugins.models",
    "specrun.plugins.datasets",
    "specrun.plugins.methods",
    "specrun.plugins.transforms",
    "specrun.plugins.analyses",
    "specrun.plugins.tasks",
)


def builtin_modules() -> list[str]:
    """Built-in plugin modules (each package lists its own), registered through the same hooks third parties use."""
    return [m for package in BUILTIN_PACKAGES for m in importlib.import_module(package).MODULES]


HOOK_FOR_KIND = {
    "method": "register_methods",
    "dataset": "register_datasets",
    "model_source": "register_model_sources",
    "transform": "register_transforms",
    "analysis": "register_analyses",
    "task": "register_tasks",
}


@dataclass
class Entry:
    """A registered plugin object and where it came from."""

    kind: str
    plugin: Plugin
    origin: str
    #: The distribution that ships it and its version (None for built-ins and plugins registered in-process).
    package: str | None = None
    package_version: str | None = None


@dataclass(frozen=True)
class LoadProblem:
    """A plugin (or a whole plugin module) skipped while loading, and why; shown as a warning."""

    message: str
    #: What a spec or a user may call the skipped code: plugin names, the entry point, the package, the
    #: module. An unknown plugin name that matches one of them is reported with this problem.
    names: frozenset[str] = frozenset()
    #: False for an entry point left out on purpose (``SPECRUN_DISABLE_PLUGINS``): not a failure.
    failed: bool = True
    #: The one plugin skipped, when the problem is known to concern only it (a name taken, a malformed
    #: plugin); None when what the code would have registered is unknown (an import or a hook failed).
    plugin: str | None = None

    def __str__(self) -> str:
        return self.message

    def concerns(self, name: str) -> bool:
        """Whether ``name`` (a plugin name in a spec) belongs to the skipped code: the skipped plugin's name,
        or, when that is unknown, equal to one of its names or a word of one (``loha`` in ``specrun-loha``),
        ignoring case and ``- _ . /``."""
        if self.plugin is not None:
            return name == self.plugin
        wanted = _words(name)
        return any(wanted == _words(n) or f"_{wanted}_" in f"_{_words(n)}_" for n in self.names)


def _words(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(eq=False)
class Registry:
    """Every registered plugin, by kind then name, and the plugins that were skipped while loading."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in HOOK_FOR_KIND})
    #: Plugins skipped because they failed (import, register hook, malformed, name taken): ``LoadProblem``s.
    load_errors: list[LoadProblem] = field(default_factory=list)
    #: Plugin names left out by ``SPECRUN_DISABLE_PLUGINS``, by kind, and the entry points it left out.
    disabled: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in HOOK_FOR_KIND})
    disabled_entry_points: list[LoadProblem] = field(default_factory=list)
    #: Notes that are not failures (a ``SPECRUN_DISABLE_PLUGINS`` name that matches nothing).
    notes: list[str] = field(default_factory=list)
    #: Plugins that use a deprecated form of the plugin API: one ``SpecrunDeprecationWarning`` per plugin,
    #: saying what to write instead. They work; ``get_registry`` shows each once as a warning.
    deprecations: list[SpecrunDeprecationWarning] = field(default_factory=list)
    #: The plugin manager it was built from (its ``register_commands`` hooks add CLI commands).
    manager: pluggy.PluginManager | None = field(default=None, repr=False)

    def get(self, kind: str, name: str) -> Plugin:
        """The plugin of ``kind`` called ``name``; a PluginError saying why there is none."""
        return self.entry(kind, name).plugin

    def entry(self, kind: str, name: str) -> Entry:
        """The registry entry of ``kind`` called ``name``; a PluginError saying why there is none: disabled,
        from a plugin that failed to load, or a likely typo."""
        found = self.entries[kind].get(name)
        if found is not None:
            return found
        family = self.entries[kind].get(name.split(":", 1)[0]) if ":" in name else None
        if family is not None and hasattr(family.plugin, "bound"):  # e.g. dataset "hub:OWNER/NAME"
            return dataclasses.replace(family, plugin=family.plugin.bound(name))
        what = f"{kind.replace('_', ' ')} {name!r}"
        if name in self.disabled[kind]:
            raise PluginError(f"{what} is disabled by {DISABLE_ENV}; remove it from that variable to use it")
        known = sorted(self.entries[kind])
        listing = f"known: {', '.join(known) or 'none'}"
        left_out = [p for p in self.disabled_entry_points if p.concerns(name)]
        if left_out:
            raise PluginError(f"{what} is not available: it may come from {'; '.join(map(str, left_out))}")
        related = [p for p in self.load_errors if p.concerns(name)]
        if related:
            raise PluginError(
                f"{what} is not available: it comes from a plugin that failed to load: " + "; ".join(map(str, related))
            )
        unknown_names = [p for p in self.load_errors if p.plugin is None]
        if unknown_names:  # the plugin the spec means may be one that failed to load: say so first
            raise PluginError(
                f"unknown {what}; it may come from a plugin that failed to load: "
                + "; ".join(map(str, unknown_names))
                + f"; otherwise {listing}{did_you_mean(name, known)}"
            )
        raise PluginError(f"unknown {what}{did_you_mean(name, known)}; {listing}")

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def names_everywhere(self) -> set[str]:
        """Every plugin name of every kind, registered or disabled."""
        return {n for kind in HOOK_FOR_KIND for n in (*self.entries[kind], *self.disabled[kind])}

    def all(self) -> list[Entry]:
        return [e for kind in self.entries.values() for e in kind.values()]

    def model_sources(self) -> list[Plugin]:
        return sorted((e.plugin for e in self.entries["model_source"].values()), key=lambda p: p.priority)

    def code_version(self, kind: str, name: str) -> str:
        """The version of a plugin that enters the ids of the runs using it.

        A built-in keeps ``<specrun results version>/<plugin version>`` (``specrun.version.RESULTS_VERSION``); any other plugin gives its own ``version``
        attribute when it sets one, else the version of the package that ships it. So a release of a
        package changes the runs of the plugins whose ``version`` it bumps, and of those that set none."""
        entry = self.entry(kind, name)
        if entry.origin == BUILTIN:
            return f"{module_version(entry.plugin)}/{entry.plugin.version}"
        own = declared_version(entry.plugin)
        if own is not None:
            return own
        return entry.package_version or module_version(entry.plugin)


def declared_version(plugin: object) -> str | None:
    """The ``version`` a plugin sets itself (on its class or instance), or None when it inherits the base's."""
    if "version" in vars(plugin):
        return str(plugin.version)
    for cls in type(plugin).__mro__:
        if cls.__module__ == Plugin.__module__:  # reached specrun's own bases
            return None
        if "version" in vars(cls):
            return str(cls.version)
    return None


def plugin_packages(registry: Registry, config: dict | None = None) -> dict[str, str]:
    """{package: version} of the installed plugin packages (not specrun itself) a run config uses: its
    method, dataset, transforms, and the model source that resolves its model. Without a config: every
    plugin package the registry loaded. For ``runs.environment``."""
    if config is None:
        entries = registry.all()
    else:
        from specrun.spec.stages import transform_entries

        wanted = [("method", config["method"]["name"]), ("dataset", config["data"]["dataset"])]
        wanted += [("transform", ref["name"]) for _, ref in transform_entries(config)]
        entries = [registry.entries[k][n] for k, n in wanted if n in registry.entries[k]]
        for entry in sorted(registry.entries["model_source"].values(), key=lambda e: e.plugin.priority):
            try:
                resolved = entry.plugin.resolve(config["model"]["name"])
            except Exception:  # the runner reports a failing source; the record only asks which one answers
                continue
            if resolved is not None:
                entries.append(entry)
                break
    return {e.package: e.package_version for e in sorted(entries, key=lambda e: e.package or "") if e.package}


def _validate_plugin(kind: str, plugin: object, origin: str) -> None:
    base = KIND_BASES[kind]
    if not isinstance(plugin, base):
        raise PluginError(f"{origin} registered {plugin!r} as a {kind}, but it is not a {base.__name__} instance")
    name = getattr(plugin, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PluginError(
            f"{origin} registered a {kind} with an invalid name {name!r} (use lower-case letters, digits, _ . / -)"
        )
    options = getattr(plugin, "Options", None)
    from pydantic import BaseModel

    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(f"{kind} {name!r} from {origin}: Options must be a pydantic model")
    if options.model_config.get("extra") != "forbid":
        raise PluginError(f"{kind} {name!r} from {origin}: Options must forbid unknown keys (subclass PluginOptions)")
    if kind == "analysis":
        _validate_tables(plugin, origin)


_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


def is_legacy_analysis(plugin: object) -> bool:
    """Whether an analysis is written against plugin API 0.1: it declares no result tables."""
    return isinstance(plugin, AnalysisPlugin) and (getattr(plugin, "_plugin_api", None) == "0.1" or not plugin.tables)


def _adapt_legacy(kind: str, plugin: object, origin: str) -> SpecrunDeprecationWarning | None:
    """Let a plugin written against an older plugin API work, and say what its author should change.

    An analysis of plugin API 0.1 declares no ``tables`` and returns a dict of anything: it gets one
    table named after it (``LEGACY_RESULT_COLUMNS``), where the engine stores what it returns as JSON."""
    if kind != "analysis" or not is_legacy_analysis(plugin) or not isinstance(getattr(plugin, "name", None), str):
        return None
    prefix = table_prefix(plugin.name)
    plugin._plugin_api = "0.1"
    plugin.tables = (ResultTable(prefix, dict(LEGACY_RESULT_COLUMNS), "what run() returned, as JSON (plugin API 0.1)"),)
    return SpecrunDeprecationWarning(
        f"analysis {plugin.name!r} from {origin} is written against plugin API 0.1 (it declares no result tables), deprecated "
        f"since specrun 0.2 and removed in 0.4: it runs, and what its run() returns is stored as JSON in table {prefix!r} "
        f"(columns key, item, value). Declare its tables instead: tables = (ResultTable({prefix!r}, {{column: DuckDB type}}),) "
        f"and return {{{prefix!r}: rows}} from run(); see {CHANGES_DOC}"
    )


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
            raise PluginError(
                f"{where}: result table {table.name!r} must be named {prefix!r} or {prefix + '_<suffix>'!r} (lower-case letters, digits, _)"
            )
        if table.name in RESERVED_TABLES:
            raise PluginError(f"{where}: result table {table.name!r} is one of specrun's own tables")
        bad = [c for c in table.columns if not _IDENTIFIER.match(c) or c in ("experiment", "analysis")]
        if bad or not table.columns:
            raise PluginError(
                f"{where}: table {table.name!r} needs columns named in lower-case letters, digits and _, "
                f"other than experiment and analysis (specrun adds those); got {bad or 'none'}"
            )


BUILTIN = "builtin"
#: Comma-separated entry points, packages or plugin names not to load.
DISABLE_ENV = "SPECRUN_DISABLE_PLUGINS"


def disabled_names() -> set[str]:
    """The names in ``SPECRUN_DISABLE_PLUGINS`` (entry points, packages or plugin names)."""
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


@dataclass(frozen=True)
class _Source:
    """Where a registered plugin module comes from."""

    origin: str
    package: str | None = None
    version: str | None = None
    entry_point: str | None = None

    @property
    def builtin(self) -> bool:
        return self.origin == BUILTIN

    def names(self) -> frozenset[str]:
        return frozenset(n for n in (self.package, self.entry_point, self.origin) if n)

    def how_to_disable(self) -> str:
        return f"{DISABLE_ENV}={self.entry_point or self.package or self.origin}"


def source_of(pm: pluggy.PluginManager, module: object) -> _Source:
    for mod, dist in pm.list_plugin_distinfo():
        if mod is module:
            name = dist.metadata["name"]
            return _Source(f"{name} {dist.version}", name, dist.version, pm.get_name(module))
    name = pm.get_name(module) or repr(module)
    return _Source(BUILTIN if name.startswith("specrun.plugins.") else name)


def make_plugin_manager(
    extra_plugins: list[object] = (), entry_points: bool = True
) -> tuple[pluggy.PluginManager, list[LoadProblem]]:
    """A plugin manager with the built-ins, the entry-point plugins and ``extra_plugins`` registered, and
    the entry-point plugins that failed to import. ``SPECRUN_DISABLE_PLUGINS`` leaves entry points out by
    their name or their package's; ``SPECRUN_DISABLE_PLUGIN_AUTOLOAD`` leaves them all out."""
    pm = pluggy.PluginManager("specrun")
    pm.add_hookspecs(hookspecs)
    for module_name in builtin_modules():
        pm.register(importlib.import_module(module_name), name=module_name)
    problems: list[LoadProblem] = []
    disabled = {_words(n) for n in disabled_names()}
    if entry_points and not os.environ.get(AUTOLOAD_ENV):
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else None
            if _words(ep.name) in disabled or (dist and _words(dist) in disabled):
                _trace(f"entry point {ep.name!r} ({dist}) disabled by {DISABLE_ENV}")
                problems.append(
                    LoadProblem(
                        f"plugin {ep.name!r} from {dist or ep.value}, which {DISABLE_ENV} leaves out",
                        frozenset(n for n in (ep.name, dist, ep.value) if n),
                        failed=False,
                    )
                )
                continue
            try:
                module = ep.load()
            except (
                Exception,
                SystemExit,
            ) as exc:  # a broken third-party plugin (one that exits on import too) must not take down the CLI
                where = f"{dist} {ep.dist.version}" if ep.dist else "an unknown package"
                problems.append(
                    LoadProblem(
                        f"plugin {ep.name!r} from {where} failed to load: {type(exc).__name__}: {exc} "
                        f"(its plugins are skipped: fix or uninstall {dist or ep.value}, or set {DISABLE_ENV}={ep.name})",
                        frozenset(n for n in (ep.name, dist, ep.value) if n),
                    )
                )
                continue
            if pm.is_registered(module):
                continue
            pm.register(module, name=ep.name)
            if ep.dist is not None:
                pm._plugin_distinfo.append((module, ep.dist))  # same bookkeeping as load_setuptools_entrypoints
    for plugin in extra_plugins:
        pm.register(plugin)
    return pm, problems


class _Loader:
    """Calls the register hooks and files what they register. Built-ins, and every plugin when ``strict``,
    fail loudly; any other plugin that is malformed, takes a name already registered, or whose hook
    raises is skipped with a ``LoadProblem``."""

    def __init__(self, registry: Registry, strict: bool):
        self.registry = registry
        self.strict = strict
        self.disabled = disabled_names()

    def call(self, kind: str, hook_name: str, impl, source: _Source) -> None:
        added: list[str] = []
        _trace(f"{hook_name}() -> {source.origin}")
        try:
            impl.function(register=lambda plugin: self.register(kind, plugin, source, added))
        except (Exception, SystemExit) as exc:  # a hook that exits must not take the CLI down either
            message = f"plugin {source.origin} failed in {hook_name}: {type(exc).__name__}: {exc}"
            if source.builtin or self.strict:
                if isinstance(exc, PluginError):  # ours, from register(): it names the plugin already
                    raise
                raise PluginError(message) from exc
            for name in added:  # all or nothing: the hook did not finish
                del self.registry.entries[kind][name]
            self.skip(
                f"{message} (its {kind.replace('_', ' ')}s are skipped: fix or uninstall it, or set {source.how_to_disable()})",
                source,
                added,
            )

    def register(self, kind: str, plugin: object, source: _Source, added: list[str]) -> None:
        deprecated = _adapt_legacy(kind, plugin, source.origin)
        try:
            try:
                _validate_plugin(kind, plugin, source.origin)
                if kind == "analysis":
                    _check_table_clash(self.registry, plugin, source.origin)
            except PluginError as exc:
                if deprecated is None:
                    raise
                raise PluginError(
                    f"{exc}: a plugin API 0.1 analysis (it declares no result tables) cannot be honoured under this "
                    f"name, whose table specrun would write its results to; declare its tables instead "
                    f"(see {CHANGES_DOC})"
                ) from None
        except PluginError as exc:
            if source.builtin or self.strict:
                raise
            name = getattr(plugin, "name", None)
            self.skip(
                f"{exc}; it is skipped (fix or uninstall {source.package or source.origin}, or set {source.how_to_disable()})",
                source,
                [],
                plugin=name if isinstance(name, str) else "",
            )
            return
        what = f"{kind.replace('_', ' ')} {plugin.name!r}"
        if plugin.name in self.disabled:
            self.registry.disabled[kind].add(plugin.name)
            _trace(f"  {what} from {source.origin} disabled by {DISABLE_ENV}")
            return
        existing = self.registry.entries[kind].get(plugin.name)
        if existing is not None:
            clash = f"two plugins register the {what}: {existing.origin} and {source.origin}"
            if source.builtin or self.strict:
                raise PluginError(clash)
            keep = "the built-in" if existing.origin == BUILTIN else f"the one from {existing.origin}"
            self.skip(
                f"{clash}; {keep} is used and the one from {source.origin} is skipped "
                f"(rename the plugin in {source.package or source.origin}, or set {source.how_to_disable()} to leave it out)",
                source,
                [],
                plugin=plugin.name,
            )
            return
        self.registry.entries[kind][plugin.name] = Entry(kind, plugin, source.origin, source.package, source.version)
        added.append(plugin.name)
        if deprecated is not None:
            self.registry.deprecations.append(deprecated)
        _trace(f"  registered {what}")

    def skip(self, message: str, source: _Source, names: list[str], plugin: str | None = None) -> None:
        self.registry.load_errors.append(
            LoadProblem(message, source.names() | {n for n in names if isinstance(n, str) and n}, plugin=plugin)
        )


def build_registry(pm: pluggy.PluginManager, load_errors: list = (), strict: bool = False) -> Registry:
    """Call every register_* hook and collect the plugins. Built-ins come first; a third-party plugin
    that collides with a registered name, is malformed or whose hook raises is skipped and reported in
    ``load_errors`` (with ``strict``, it raises ``PluginError`` instead, as a built-in always does)."""
    problems = [p if isinstance(p, LoadProblem) else LoadProblem(str(p)) for p in load_errors]
    registry = Registry(
        load_errors=[p for p in problems if p.failed],
        manager=pm,
        disabled_entry_points=[p for p in problems if not p.failed],
    )
    loader = _Loader(registry, strict)
    for kind, hook_name in HOOK_FOR_KIND.items():
        impls = [(impl, source_of(pm, impl.plugin)) for impl in getattr(pm.hook, hook_name).get_hookimpls()]
        for impl, source in sorted(impls, key=lambda pair: not pair[1].builtin):  # stable: built-ins first
            loader.call(kind, hook_name, impl, source)
    _note_unmatched_disables(registry, pm)
    return registry


def _note_unmatched_disables(registry: Registry, pm: pluggy.PluginManager) -> None:
    """A ``SPECRUN_DISABLE_PLUGINS`` name that matches no plugin, entry point or package is likely a typo."""
    known = {_words(n) for n in registry.names_everywhere()}
    known |= {_words(ep.name) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    known |= {_words(ep.dist.name) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.dist}
    for name in sorted(disabled_names()):
        if _words(name) not in known:
            registry.notes.append(
                f"{DISABLE_ENV} names {name!r}, which is no installed plugin, entry point or package"
                f"{did_you_mean(name, sorted(registry.names_everywhere()))}"
            )


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


_MANAGER: tuple[pluggy.PluginManager, list[LoadProblem]] | None = None
_DEFAULT: Registry | None = None
log = logging.getLogger("specrun.plugins")


def get_plugin_manager() -> tuple[pluggy.PluginManager, list[LoadProblem]]:
    """The process-wide plugin manager and the entry points that failed to import (loaded once); the
    manager of a registry installed with ``set_registry``, if it has one."""
    global _MANAGER
    if _DEFAULT is not None and _DEFAULT.manager is not None:
        return _DEFAULT.manager, []
    if _MANAGER is None:
        _MANAGER = make_plugin_manager()
    return _MANAGER


def commands_possible() -> bool:
    """Whether any loaded plugin could add commands: built-ins add none, so only a registry installed
    in-process (tests, notebooks) or entry-point plugins can. Asking costs a scan of the installed
    packages' entry points, not the import of every plugin (which the light commands skip)."""
    if _DEFAULT is not None and _DEFAULT.manager is not None:
        return True
    if _MANAGER is not None:
        return True
    return hookspecs.entry_point_plugins_installed()


def get_registry() -> Registry:
    """The process-wide registry, built once on first use; its load problems are logged as warnings then,
    so every command that uses plugins shows them."""
    global _DEFAULT
    if _DEFAULT is None:
        pm, errors = get_plugin_manager()
        _DEFAULT = build_registry(pm, errors)
        for problem in [*_DEFAULT.load_errors, *_DEFAULT.notes, *_DEFAULT.deprecations]:
            log.warning("%s", problem)
    return _DEFAULT


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests; ``None`` reloads the plugins on next use)."""
    global _DEFAULT, _MANAGER
    _DEFAULT = registry
    if registry is None:
        _MANAGER = None


def module_version(module: ModuleType | object) -> str:
    """The version of the distribution that ships ``module`` (for run identities), or 'local'."""
    top = type(module).__module__.split(".")[0] if not isinstance(module, ModuleType) else module.__name__.split(".")[0]
    if top == "specrun":  # its source says (an editable install's metadata may be an older release's): the
        # results version, not the release, so that upgrading keeps the runs a store holds (specrun.version)
        from specrun.version import RESULTS_VERSION

        return RESULTS_VERSION
    try:
        return importlib.metadata.version(top)
    except importlib.metadata.PackageNotFoundError:
        return "local"
