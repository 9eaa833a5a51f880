"""Commands that plugins add to the ``specrun`` command line (the ``register_commands`` hook)."""

from __future__ import annotations

import logging

from specrun.plugins.registry import LoadProblem, commands_possible, get_plugin_manager, source_of

log = logging.getLogger("specrun.plugins")

#: specrun's own commands and groups, by ``id`` of the app they belong to (taken on first use).
_OWN: dict[int, tuple[list, list]] = {}
#: Commands skipped at the last start-up, and why (``specrun plugins --check`` counts them).
problems: list[LoadProblem] = []


def add_plugin_commands(app) -> None:
    """Reset ``app`` to specrun's own commands, then let every plugin's ``register_commands`` add its own.

    A plugin's command whose name is taken is removed; a hook that raises loses every command it added.
    Both are logged as warnings and kept in ``problems``."""
    own_commands, own_groups = _OWN.setdefault(id(app), (list(app.registered_commands), list(app.registered_groups)))
    app.registered_commands[:] = own_commands
    app.registered_groups[:] = own_groups
    problems.clear()
    taken = {name for info in own_commands for name in _command_names(info)}
    taken |= {name for info in own_groups for name in _group_names(info)}
    if not commands_possible():
        return
    pm, _ = get_plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():
        source = source_of(pm, impl.plugin)
        commands, groups = len(app.registered_commands), len(app.registered_groups)
        try:
            impl.function(app=app)
        except Exception as exc:  # a broken plugin must not take the command line down
            del app.registered_commands[commands:], app.registered_groups[groups:]
            _skip(
                f"plugin {source.origin} failed in register_commands: {type(exc).__name__}: {exc} "
                f"(its commands are skipped: fix or uninstall it, or set {source.how_to_disable()})",
                source,
            )
            continue
        added = [(info, _command_names(info), app.registered_commands) for info in app.registered_commands[commands:]]
        added += [(info, _group_names(info), app.registered_groups) for info in app.registered_groups[groups:]]
        for info, names, where in added:
            clash = sorted(taken & names)
            if clash:
                where.remove(info)
                _skip(
                    f"plugin {source.origin} adds the command {clash[0]!r}, which specrun or another plugin already "
                    f"has; it is skipped (rename it in {source.package or source.origin}, or set {source.how_to_disable()})",
                    source,
                )
            else:
                taken |= names


def restore_own_commands(app) -> None:
    """Take the plugins' commands off ``app`` again (after a command ran in-process, as tests do)."""
    if id(app) in _OWN:
        own_commands, own_groups = _OWN[id(app)]
        app.registered_commands[:] = own_commands
        app.registered_groups[:] = own_groups


def _skip(message: str, source) -> None:
    problems.append(LoadProblem(message, source.names()))
    log.warning("%s", message)


def _command_names(info) -> set[str]:
    from typer.main import get_command_name

    if isinstance(info.name, str):
        return {info.name}
    return {get_command_name(info.callback.__name__)} if info.callback else set()


def _group_names(info) -> set[str]:
    """A group's name; a group added without one merges its commands into the command line."""
    for candidate in (info.name, getattr(info.typer_instance.info, "name", None) if info.typer_instance else None):
        if isinstance(candidate, str):
            return {candidate}
    sub = info.typer_instance
    return {name for command in (sub.registered_commands if sub else []) for name in _command_names(command)}
