"""Composing one spec tree from files: ``extends`` and named profiles.

``extends = "base.toml"`` (relative to the spec; a base may extend another) deep-merges the spec over its
base: tables merge key by key, any other value — arrays too — replaces the base's. ``[profiles.NAME]``
tables hold overrides of the same shape, applied on top when ``--profile NAME`` is given, so that one
spec runs at paper scale on a GPU and at minutes-long scale on a CPU. A profile names its own
experiment (``<name>-<profile>``, unless it sets ``experiment.name``): its runs and analyses stay apart
from the full-scale ones.

Problems are located in the file that sets the key: the profile's table, the spec, or the base it comes
from.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specrun.errors import SpecError, did_you_mean
from specrun.spec.locate import key_lines, locate

#: Top-level keys that compose a spec rather than describe the experiment.
COMPOSITION_KEYS = ("extends", "profiles")


@dataclass(frozen=True)
class Source:
    path: Path
    text: str


@dataclass
class Composed:
    """A spec's effective tree (bases merged, the profile applied) and where its keys come from."""

    raw: dict[str, Any]
    #: The spec first, then its bases (nearest first): where problems are located.
    sources: list[Source]
    profiles: list[str] = field(default_factory=list)
    profile: str | None = None
    #: The applied profile's own table (its overrides), to tell which keys it sets.
    override: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.sources[0].path

    @property
    def text(self) -> str:
        return self.sources[0].text

    def where(self, loc: tuple | list) -> tuple[Path, int | None]:
        """The file and line that set the key at ``loc`` (the profile's override first, then the spec,
        then its bases), or the spec and the line of its closest parent."""
        path = tuple(str(p) for p in loc)
        if self.profile and _sets(self.override, path):  # the profile's value, even in an inline table
            for source in self.sources:
                if any(key[:2] == ("profiles", self.profile) for key in key_lines(source.text)):
                    return source.path, locate(source.text, ("profiles", self.profile, *path))
        best: tuple[int, Path, int | None] | None = None
        candidates = [("profiles", self.profile, *path)] if self.profile else []
        candidates.append(path)
        for source in self.sources:
            lines = key_lines(source.text)
            for candidate in candidates:
                shift = len(candidate) - len(path)
                depth = next((cut for cut in range(len(candidate), shift, -1) if candidate[:cut] in lines), 0) - shift
                if depth > 0 and (best is None or depth > best[0]):
                    best = (depth, source.path, locate(source.text, candidate))
        if best is None:
            return self.path, locate(self.text, path)
        return best[1], best[2]


def _sets(tree: Any, path: tuple[str, ...]) -> bool:
    """Whether the nested tables and arrays of ``tree`` hold the key at ``path``."""
    for part in path:
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
            tree = tree[int(part)]
        else:
            return False
    return True


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` over ``base``: tables merge key by key; any other value replaces. Options belong to
    their plugin: a plugin table (one with ``name``) naming another plugin replaces the base's table,
    and ``options`` go with ``dataset`` the same way."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if (
            isinstance(value, dict)
            and isinstance(merged.get(key), dict)
            and not _other_plugin(merged[key], value, "name")
        ):
            if _other_plugin(merged[key], value, "dataset"):
                merged[key].pop("options", None)
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _other_plugin(base: dict, override: dict, key: str) -> bool:
    return key in override and key in base and override[key] != base[key]


def _toml(path: Path, text: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), [toml_problem(exc)]) from None


def _read(path: Path, text: str, chain: tuple[Path, ...]) -> tuple[dict, list[Source]]:
    raw = _toml(path, text)
    ref = raw.pop("extends", None)
    sources = [Source(path, text)]
    if ref is None:
        return raw, sources
    line = locate(text, ("extends",))
    if not isinstance(ref, str) or not ref:
        raise SpecError(
            str(path), [("extends", line, f"must be the path of a spec file (relative to this one), not {ref!r}")]
        )
    base = Path(ref) if Path(ref).is_absolute() else path.parent / ref
    if base.resolve() in {p.resolve() for p in (*chain, path)}:
        cycle = " → ".join(p.name for p in (*chain, path, base))
        raise SpecError(str(path), [("extends", line, f"specs extend each other in a cycle: {cycle}")])
    try:
        base_text = base.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), [("extends", line, f"no spec file {ref!r} (looked for {base.resolve()})")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [("extends", line, f"cannot read {ref!r}: {exc}")]) from None
    base_raw, base_sources = _read(base, base_text, (*chain, path))
    return deep_merge(base_raw, raw), sources + base_sources


def compose(path: str | Path, text: str, profile: str | None = None) -> Composed:
    """The effective tree of the spec ``text`` at ``path``: its bases merged under it, then ``profile``'s
    overrides on top. Raises SpecError for a missing or cyclic base and an unknown profile."""
    raw, sources = _read(Path(path), text, ())
    profiles = raw.pop("profiles", None)
    composed = Composed(raw, sources)
    profiles = {} if profiles is None else profiles
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise SpecError(
            str(path),
            [
                (
                    "profiles",
                    locate(text, ("profiles",)),
                    "each profile is a table: [profiles.<name>] with keys to override",
                )
            ],
        )
    composed.profiles = sorted(profiles)
    if profile is None:
        return composed
    if profile not in profiles:
        known = ", ".join(composed.profiles) or "none"
        raise SpecError(
            str(path),
            [
                (
                    "--profile",
                    None,
                    f"no profile {profile!r}{did_you_mean(profile, composed.profiles)}; the spec's profiles: {known}",
                )
            ],
        )
    composed.raw = deep_merge(raw, profiles[profile])
    composed.profile = profile
    composed.override = profiles[profile]
    experiment = composed.raw.get("experiment")
    named = isinstance(profiles[profile].get("experiment"), dict) and "name" in profiles[profile]["experiment"]
    if isinstance(experiment, dict) and isinstance(experiment.get("name"), str) and not named:
        experiment["name"] = f"{experiment['name']}-{profile}"
    return composed


def toml_problem(exc: tomllib.TOMLDecodeError) -> tuple[str, int | None, str]:
    """A TOML syntax error as a located problem (key, line, message)."""
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    line = int(match.group(1)) if match else None
    message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
    return ("", line, f"TOML syntax error: {message}")
