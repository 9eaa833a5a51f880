"""What tells an experiment's configurations apart, and labels that say it.

A sweep sets dotted keys; keys swept together (``"model.init_from, method.train, train.learning_rate"``)
or that happen to change together make one *dimension* of the experiment. A configuration is labelled
by its value on each dimension that varies, in the sweep's order, with readable values
(``placement=attn-q, from source``, ``from pretrained`` rather than ``init_from=""``); what does not vary
is left out. A run of a stage (``model.init_from = "stage:NAME"``) is labelled by its stage and the
dimensions that vary among that stage's runs (``source: placement=attn-q``), so stage runs that differ
are different configurations.

Also what one sweep value sets (``sweep_assignments``) and the older one-line descriptions of sweep points
(``lora(rank=8) learning_rate=0.001``) that plans and the app show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


def sweep_assignments(key: str, value: Any) -> list[tuple[str, Any]]:
    """What one sweep value sets: ``[(key, value)]``; for a key naming several dotted keys separated by
    commas (``"method, train.learning_rate"``, keys that move together) each value is a list with one
    item per key, zipped with them."""
    keys = [k.strip() for k in key.split(",")]
    if len(keys) == 1:
        return [(key, value)]
    if not isinstance(value, list) or len(value) != len(keys):
        raise TypeError(
            f"each value must be a list of {len(keys)} items, one per key ({', '.join(keys)}), not {value!r}"
        )
    return list(zip(keys, value))


def describe_sweep(method: str, sweep_values: dict[str, Any]) -> str:
    """A short human description of a sweep point: the method (with swept method options) and the other
    sweep values, e.g. ``lora(rank=8,quantize=8bit) learning_rate=0.001``; the method alone without a sweep."""
    parts = []
    for key, value in sweep_values.items():
        for dotted, item in sweep_assignments(key, value):
            if dotted == "method" and isinstance(item, dict):
                options = ",".join(f"{k}={_short(v)}" for k, v in item.items() if k != "name")
                method = f"{item.get('name', method)}({options})" if options else str(item.get("name", method))
            elif dotted.endswith("init_from"):
                parts.append(readable(dotted, item))  # `from pretrained`, not `init_from=""`
            else:
                parts.append(f"{dotted.split('.')[-1]}={_short(item)}")
    return " ".join([method, *parts])


def describe_configs(points: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Short labels for the configurations (method, sweep values) of one experiment: the method, plus
    only the sweep values that differ among the configurations with that method (``lora``,
    ``lora quantize=8bit``, ``full``); the full description where short ones would coincide."""
    flat = [(method, _flatten(method, sweep)) for method, sweep in points]
    labels = []
    for method, values in flat:
        peers = [v for m, v in flat if m == method]
        keys = [k for k in values if any(p.get(k) != values[k] for p in peers)]
        keys += [k for p in peers for k in p if k not in values and k not in keys]
        parts = [f"{k.split('.')[-1]}={_short(values[k])}" for k in keys if k in values and k != "method.name"]
        labels.append(" ".join([values.get("method.name", method), *parts]))
    if len(set(labels)) < len(set(map(str, points))):
        return [describe_sweep(method, sweep) for method, sweep in points]
    return labels


def _flatten(method: str, sweep: dict[str, Any]) -> dict[str, Any]:
    """A sweep point as dotted keys, a swept method table spread into ``method.<option>``."""
    out: dict[str, Any] = {"method.name": method}
    for key, value in sweep.items():
        for dotted, item in sweep_assignments(key, value):
            if dotted == "method" and isinstance(item, dict):
                out.update({f"method.{k}": v for k, v in item.items()})
            else:
                out[dotted] = item
    return out


def _short(value: Any) -> str:
    if isinstance(value, str):
        return (value or '""') if len(value) <= 40 else value[:37] + "..."
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


INIT_FROM = "model.init_from"


@dataclass(frozen=True)
class Dimension:
    """A way an experiment's configurations differ: its name (``placement``, ``init_from``, ``method``)
    and the dotted keys that change together along it (the first one gives its values)."""

    name: str
    keys: tuple[str, ...]

    def matches(self, text: str) -> bool:
        """Whether ``text`` names this dimension: its name, one of its dotted keys or a key's last part."""
        return text == self.name or any(text in (k, k.split(".")[-1]) for k in self.keys)


def readable(key: str, value: Any) -> str:
    """A sweep value as a reader wants it: ``from pretrained`` for an empty ``model.init_from``,
    ``from source`` for ``stage:source``."""
    if key.endswith("init_from"):
        if value in (None, ""):
            return "from pretrained"
        text = str(value)
        return f"from {text.removeprefix('stage:')}" if text.startswith("stage:") else f"from {_short(text)}"
    if isinstance(value, list) and all(isinstance(item, dict) and "name" in item for item in value):
        return "+".join(str(item["name"]) for item in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "unset"
    return _short(value)


def part(dimension: str, text: str) -> str:
    """One dimension's piece of a label: the value alone where it says what it is (a method, an
    initialisation), else ``name=value``."""
    return text if dimension in ("method", "init_from") else f"{dimension}={text}"


def label(factors: dict[str, str]) -> str:
    return ", ".join(part(name, text) for name, text in factors.items())


def _method_labels(flat: list[dict[str, Any]]) -> list[str]:
    """A method and the options that tell it apart from the same method's other configurations."""
    out = []
    for values in flat:
        name = values.get("method.name")
        peers = [v for v in flat if v.get("method.name") == name]
        keys = [
            k
            for k in values
            if k.startswith("method.") and k != "method.name" and any(p.get(k) != values[k] for p in peers)
        ]
        keys += [k for p in peers for k in p if k.startswith("method.") and k not in values and k not in keys]
        parts = [f"{k.split('.')[-1]}={_short(values[k])}" for k in keys if k in values]
        out.append(" ".join([str(name), *parts]))
    return out


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _dimensions(flat: list[dict[str, Any]], entries: dict[str, str]) -> list[Dimension]:
    """The dimensions along which ``flat`` (one dict of dotted key -> value per configuration) varies:
    keys declared in one sweep entry (``entries``: key -> entry) make one, and so do keys that change
    together."""
    keys: list[str] = []
    for values in flat:
        keys += [k for k in values if k not in keys]
    signatures: dict[Any, list[str]] = {}
    for key in keys:
        seen: dict[str, int] = {}
        signature = tuple(seen.setdefault(_key(v.get(key)), len(seen)) for v in flat)
        if len(seen) > 1:
            signatures.setdefault(("entry", entries[key]) if key in entries else signature, []).append(key)
    dims = []
    for group in signatures.values():
        if "method" in group or "method.name" in group:
            name = "method"
        elif any(k.endswith("init_from") for k in group):
            name = "init_from"
        else:
            name = group[0].split(".")[-1]
        dims.append(Dimension(name, tuple(group)))
    names = [d.name for d in dims]
    return [d if names.count(d.name) == 1 else Dimension(d.keys[0], d.keys) for d in dims]


def design(points: list[tuple[str, dict[str, Any]]]) -> tuple[list[Dimension], list[dict[str, str]], list[tuple]]:
    """For the configurations (method, sweep values) of one experiment: its dimensions, each point's
    factors ({dimension: readable value}, dimensions in sweep order) and a sort key per point (values in
    the order they first appear, numbers in numeric order)."""
    table_method = any(
        dotted == "method"
        for _, sweep in points
        for key, value in sweep.items()
        for dotted, _ in _safe_assignments(key, value)
    )
    flat = [_flatten(method, sweep) for method, sweep in points]
    if table_method:
        methods = _method_labels(flat)
        flat = [
            {"method": m, **{k: v for k, v in f.items() if not k.startswith("method.")}} for m, f in zip(methods, flat)
        ]
    entries: dict[str, str] = {}
    for _, sweep in points:
        for key, value in sweep.items():
            together = [dotted for dotted, _ in _safe_assignments(key, value)]
            if len(together) > 1:
                entries.update(dict.fromkeys(together, key))
    dims = _dimensions(flat, entries)
    factors, orders = [], []
    firsts: dict[str, dict[str, int]] = {d.name: {} for d in dims}
    for values in flat:
        for d in dims:
            firsts[d.name].setdefault(_key(values.get(d.keys[0])), len(firsts[d.name]))
    # a dimension whose readable values would coincide (two configurations of one transform) shows them in full
    full = {
        d.name
        for d in dims
        if len({readable(d.keys[0], v.get(d.keys[0])) for v in flat}) < len({_key(v.get(d.keys[0])) for v in flat})
    }
    for values in flat:
        mine, order = {}, []
        for d in dims:
            value = values.get(d.keys[0])
            if d.name == "method" and table_method:
                mine[d.name] = value
            else:
                mine[d.name] = _short(value) if d.name in full else readable(d.keys[0], value)
            order.append(
                (0, float(value), "")
                if isinstance(value, int | float) and not isinstance(value, bool)
                else (1, firsts[d.name][_key(value)], "")
            )
        factors.append(mine)
        orders.append(tuple(order))
    return dims, factors, orders


def _safe_assignments(key: str, value: Any) -> list[tuple[str, Any]]:
    try:
        return sweep_assignments(key, value)
    except TypeError:
        return [(key, value)]


def stage_factors(dims: list[Dimension], configs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Factors of stage runs (their configs): the experiment's dimensions that vary among them."""

    def value(config: dict, key: str) -> Any:
        if key == "method":
            return config.get("method", {}).get("name")
        node: Any = config
        for piece in key.split("."):
            if isinstance(node, dict) and piece in node:
                node = node[piece]
            elif isinstance(node, list) and piece.isdigit() and int(piece) < len(node):
                node = node[int(piece)]
            else:
                return None
        return node

    rows = [{d.name: value(c, d.keys[0]) for d in dims} for c in configs]
    varying = [d for d in dims if len({_key(r[d.name]) for r in rows}) > 1]
    return [{d.name: readable(d.keys[0], r[d.name]) for d in varying} for r in rows]
