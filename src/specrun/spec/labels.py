"""Labels for sweep points: what one sweep value sets, and short human descriptions of configurations
(``lora(rank=8) learning_rate=0.001``, ``lora quantize=8bit``) for plans, the store's analysis inputs,
reports and the app."""

from __future__ import annotations

import json
from typing import Any


def sweep_assignments(key: str, value: Any) -> list[tuple[str, Any]]:
    """What one sweep value sets: ``[(key, value)]``; for a key naming several dotted keys separated by
    commas (``"method, train.learning_rate"``, keys that move together) each value is a list with one
    item per key, zipped with them."""
    keys = [k.strip() for k in key.split(",")]
    if len(keys) == 1:
        return [(key, value)]
    if not isinstance(value, list) or len(value) != len(keys):
        raise TypeError(f"each value must be a list of {len(keys)} items, one per key ({', '.join(keys)}), not {value!r}")
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
