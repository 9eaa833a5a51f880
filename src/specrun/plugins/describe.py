"""What ``specrun plugins`` says about a plugin: its options with types, defaults and descriptions."""

from __future__ import annotations

import json
import re
from typing import Any

from specrun.errors import PluginError, did_you_mean
from specrun.plugins.registry import HOOK_FOR_KIND, Entry, Registry


def default_text(field) -> str:
    """A plugin option's default as the spec would write it, or '(required)'."""
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return json.dumps(value, default=str)


def type_text(annotation: Any) -> str:
    """An option's type as a reader knows it: ``int``, ``Literal['a', 'b']``, ``list[str] | None``."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return re.sub(r"\b(typing|collections\.abc|pathlib)\.", "", str(annotation)).replace("NoneType", "None")


def option_rows(entry: Entry) -> list[tuple[str, str, str, str]]:
    """(option, type, default, description) for each option of a plugin."""
    return [
        (name, type_text(field.annotation), default_text(field), field.description or "")
        for name, field in entry.plugin.Options.model_fields.items()
    ]


def options_summary(entry: Entry) -> str:
    """``rank=8, alpha=16, ...``: the one-line form of the plugin listing."""
    return ", ".join(f"{name}={default}" for name, _, default, _ in option_rows(entry))


def find(registry: Registry, name: str, kind: str | None = None) -> list[Entry]:
    """The plugins called ``name`` (of ``kind``, or of any kind); a PluginError saying why there is none."""
    if kind is not None:
        return [registry.entry(kind, name)]
    found = [registry.entries[k][name] for k in HOOK_FOR_KIND if name in registry.entries[k]]
    if found:
        return found
    for k in HOOK_FOR_KIND:  # disabled, or from a plugin that failed to load: say so
        if name in registry.disabled[k]:
            registry.entry(k, name)
    left_out = [str(p) for p in registry.disabled_entry_points if p.concerns(name)]
    if left_out:
        raise PluginError(f"no plugin {name!r} is available: it may come from {'; '.join(left_out)}")
    related = [str(p) for p in registry.load_errors if p.concerns(name)]
    if related:
        raise PluginError(
            f"no plugin {name!r} is available: it comes from a plugin that failed to load: {'; '.join(related)}"
        )
    known = sorted({n for k in HOOK_FOR_KIND for n in registry.entries[k]})
    raise PluginError(f"no plugin is called {name!r}{did_you_mean(name, known)} (specrun plugins lists them)")
