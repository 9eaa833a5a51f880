"""Read a TOML spec, apply ``--set`` overrides, validate it (plugin sections against the plugins' own
models) and expand the sweep into run configurations. Every problem is reported with file, line and key."""

from __future__ import annotations

import copy
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from specrun.errors import PluginError, SpecError, did_you_mean
from specrun.plugins.api import SpecFacts
from specrun.plugins.registry import Registry, get_registry
from specrun.spec.locate import locate, split_key
from specrun.spec.schema import RUN_SECTIONS, Spec

Problem = tuple[str, "int | None", str]


@dataclass
class RunConfig:
    """One run of an experiment: the fully resolved configuration that trains it."""

    config: dict[str, Any]
    seed: int
    sweep_values: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedSpec:
    path: Path
    text: str
    raw: dict[str, Any]
    spec: Spec
    runs: list[RunConfig]
    #: The spec's analyses, resolved: ``{"id", "name", "options"}`` each.
    analyses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return self.spec.experiment.name


# --- dotted keys ---------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[str, Any]:
    """``key.path=value`` -> (key, value); the value is read as TOML, else taken as a string."""
    if "=" not in item:
        raise SpecError("--set", [(item, None, "expected KEY=VALUE, e.g. train.epochs=1")])
    key, text = (s.strip() for s in item.split("=", 1))
    if not key:
        raise SpecError("--set", [(item, None, "empty key")])
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key, value


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested dicts and lists, creating missing tables."""
    parts = split_key(key)
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, parts[: i + 1])
            continue
        if part not in node or not isinstance(node[part], (dict, list)):
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        index = _index(node, last, parts)
        node[index] = value
    else:
        node[last] = value


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
        return value if len(value) <= 40 else value[:37] + "..."
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _index(items: list, part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise KeyError(f"{'.'.join(path)}: no item {part} (the list has {len(items)})")
    return int(part)


def _list_item(items: list, part: str, path: list[str]) -> Any:
    return items[_index(items, part, path)]


# --- validation ----------------------------------------------------------------------------------


def _pydantic_problems(exc: ValidationError, prefix: tuple = (), model: type[BaseModel] | None = None) -> list[tuple[tuple, str]]:
    out = []
    for err in exc.errors():
        loc = tuple(str(p) for p in (*prefix, *err["loc"]))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown key {err['loc'][-1]!r}"
            fields = _fields_at(model, err["loc"][:-1]) if model else []
            message += did_you_mean(str(err["loc"][-1]), fields)
            if fields:
                message += f"; allowed: {', '.join(fields)}"
        elif err["type"] == "missing":
            message = "required key is missing"
        out.append((loc, message))
    return out


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model at ``loc``, for 'did you mean' suggestions."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = _inner_model(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _plugin_options(registry: Registry, kind: str, name: str, options: dict, loc: tuple) -> tuple[dict | None, list]:
    """Validate ``options`` against plugin ``name``'s model: (dumped options, problems)."""
    try:
        plugin = registry.get(kind, name)
    except PluginError as exc:
        return None, [((*loc, "name") if kind != "dataset" else loc, str(exc))]
    try:
        validated = plugin.Options.model_validate(options)
    except ValidationError as exc:
        return None, _pydantic_problems(exc, loc, plugin.Options)
    return validated.model_dump(mode="json"), []


def validate_config(raw: dict, registry: Registry) -> tuple[Spec | None, dict, list[tuple[tuple, str]]]:
    """Validate a whole spec tree: (Spec, plugin sections resolved with defaults, problems by loc)."""
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        return None, {}, _pydantic_problems(exc, (), Spec)
    problems: list[tuple[tuple, str]] = []
    resolved: dict[str, Any] = {}

    method, p = _plugin_options(registry, "method", spec.method.name, spec.method.options(), ("method",))
    problems += p
    resolved["method"] = {"name": spec.method.name, **(method or {})}

    data_opts, p = _plugin_options(registry, "dataset", spec.data.dataset, spec.data.options, ("data", "dataset"))
    if p and p[0][0] == ("data", "dataset") and "unknown" not in p[0][1]:
        p = [(("data", "options", *loc[2:]), msg) for loc, msg in p]
    problems += p
    resolved["data_options"] = data_opts or {}

    def transforms(refs, loc):
        out = []
        for i, ref in enumerate(refs):
            options = ref.options()
            on = options.pop("on", None)
            opts, p = _plugin_options(registry, "transform", ref.name, options, (*loc, i))
            problems.extend(p)
            if on is None and not p:
                on = registry.get("transform", ref.name).applies_to
            if on not in (None, "train", "eval", "both"):
                problems.append(((*loc, i, "on"), f"must be 'train', 'eval' or 'both', not {on!r}"))
            out.append({"name": ref.name, "on": on, **(opts or {})})
        return out

    resolved["transforms"] = transforms(spec.data.transforms, ("data", "transforms"))
    resolved["eval_sets"] = {
        name: transforms(es.transforms, ("data", "eval_sets", name, "transforms")) for name, es in spec.data.eval_sets.items()
    }
    resolved["analyses"] = []
    ids: dict[str, int] = {}
    for i, ref in enumerate(spec.analyses):
        options = ref.options()
        entry_id = options.pop("id", None) or ref.name
        if not isinstance(entry_id, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", entry_id):
            problems.append((("analyses", i, "id"), f"must be a name of letters, digits, _ . - (not {entry_id!r})"))
        elif entry_id in ids:
            problems.append((("analyses", i, "id" if "id" in ref.options() else "name"),
                             f"analyses {ids[entry_id]} and {i} are both {entry_id!r}: give one an `id` of its own"))
        ids.setdefault(str(entry_id), i)
        opts, p = _plugin_options(registry, "analysis", ref.name, options, ("analyses", i))
        problems += p
        resolved["analyses"].append({"id": entry_id, "name": ref.name, "options": opts or {}})
    for key in spec.sweep:
        for head in (split_key(part)[0] for part in key.split(",")):
            if head not in RUN_SECTIONS:
                problems.append((("sweep", key), f"can only sweep keys under {', '.join(RUN_SECTIONS)}{did_you_mean(head, RUN_SECTIONS)}"))
    if spec.train.early_stopping and spec.train.eval_every is None:
        problems.append((("train", "early_stopping"), "needs eval_every"))
    if spec.model.init_from and spec.model.init_from.startswith("stage:"):
        problems.append((("model", "init_from"), "multi-stage specs are not supported yet: give a run id or a spec path"))
    return spec, resolved, problems


def run_config(spec: Spec, resolved: dict, seed: int) -> dict[str, Any]:
    """The part of a validated spec that determines one run's result (a tree of its own: runs of
    different seeds share no dicts, so planning may rewrite one run's config without touching another)."""
    resolved = copy.deepcopy(resolved)
    data = spec.data.model_dump(mode="json")
    data["options"] = resolved["data_options"]
    data["transforms"] = resolved["transforms"]
    for name, transforms in resolved["eval_sets"].items():
        data["eval_sets"][name]["transforms"] = transforms
    return {
        "model": spec.model.model_dump(mode="json"),
        "data": data,
        "method": resolved["method"],
        "train": spec.train.model_dump(mode="json"),
        "seed": seed,
    }


# --- loading -------------------------------------------------------------------------------------


def _toml_problem(exc: tomllib.TOMLDecodeError) -> Problem:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    line = int(match.group(1)) if match else None
    message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
    return ("", line, f"TOML syntax error: {message}")


def load_spec(path: str | Path, overrides: list[str] = (), registry: Registry | None = None) -> LoadedSpec:
    """Read, validate and expand the spec at ``path``; raises SpecError listing every problem found."""
    path = Path(path)
    registry = registry or get_registry()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), [("", None, "spec file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [("", None, f"cannot read spec: {exc}")]) from None
    return load_spec_text(text, path, overrides, registry)


def load_spec_text(text: str, path: str | Path, overrides: list[str] = (), registry: Registry | None = None) -> LoadedSpec:
    """Validate and expand spec ``text`` (e.g. as an apply recorded it); ``path`` names it in messages
    and anchors its relative paths."""
    path = Path(path)
    registry = registry or get_registry()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), [_toml_problem(exc)]) from None

    set_keys = []
    for item in overrides:
        key, value = parse_override(item)
        try:
            set_dotted(raw, key, value)
        except (KeyError, TypeError) as exc:
            raise SpecError(str(path), [(key, None, f"--set: {exc}")]) from None
        set_keys.append(key)

    def where(loc: tuple) -> tuple[str, int | None, str]:
        dotted = ".".join(str(part) for part in loc)
        for key in set_keys:
            if dotted == key or dotted.startswith(key + "."):
                return dotted, None, "(from --set) "
        return dotted, locate(text, loc), ""

    spec, resolved, problems = validate_config(raw, registry)
    if problems:
        raise SpecError(str(path), [(k, line, tag + msg) for k, line, tag, msg in ((*where(loc), msg) for loc, msg in problems)])

    runs = expand(spec, raw, registry, text, str(path))
    problems = check_analyses(spec, resolved["analyses"], runs, registry)
    if problems:
        raise SpecError(str(path), [(k, line, tag + msg) for k, line, tag, msg in ((*where(loc), msg) for loc, msg in problems)])
    return LoadedSpec(path=path, text=text, raw=raw, spec=spec, runs=runs, analyses=resolved["analyses"])


def spec_facts(spec: Spec, runs: list[RunConfig], registry: Registry) -> SpecFacts:
    """What analyses may check their options against: evaluation sets, swept keys, run configs."""
    primary = spec.data.eval_split or registry.get("dataset", spec.data.dataset).eval_split
    swept = tuple(k.strip() for key in spec.sweep for k in key.split(","))
    return SpecFacts((primary, *spec.data.eval_sets), swept, tuple(r.config for r in runs))


def check_analyses(spec: Spec, entries: list[dict], runs: list[RunConfig], registry: Registry) -> list[tuple[tuple, str]]:
    """Each analysis's own check of its options against the spec (metrics, keys, evaluation sets)."""
    problems: list[tuple[tuple, str]] = []
    facts = spec_facts(spec, runs, registry) if entries else None
    for i, entry in enumerate(entries):
        plugin = registry.get("analysis", entry["name"])
        for key, message in plugin.check(plugin.Options.model_validate(entry["options"]), facts):
            problems.append((("analyses", i, key), message))
    ids = [e["id"] for e in entries]
    for i, wanted in enumerate(spec.report.sections or [] if spec.report else []):
        if wanted not in ids:
            problems.append((("report", "sections", i), f"no analysis {wanted!r}{did_you_mean(wanted, ids)}; the spec's analyses: {', '.join(ids) or 'none'}"))
    return problems


def expand(spec: Spec, raw: dict, registry: Registry, text: str = "", path: str = "<spec>") -> list[RunConfig]:
    """The grid of sweep values × seeds, each validated as a whole spec."""
    keys = list(spec.sweep)
    runs: list[RunConfig] = []
    for values in itertools.product(*(spec.sweep[k] for k in keys)):
        tree = copy.deepcopy(raw)
        tree.pop("sweep", None)
        combo = dict(zip(keys, values))
        try:
            for key, value in combo.items():
                for dotted, item in sweep_assignments(key, value):
                    set_dotted(tree, dotted, item)
        except (KeyError, TypeError) as exc:
            raise SpecError(path, [(f"sweep.{key}", locate(text, ("sweep", key)), str(exc))]) from None
        sub, resolved, problems = validate_config(tree, registry)
        if problems:
            raise SpecError(path, [
                (f"sweep.{k}", locate(text, ("sweep", k)), f"value {v!r}: {'.'.join(loc)}: {msg}")
                for loc, msg in problems
                for k, v in [_sweep_source(combo, loc)]
            ])
        for seed in sub.experiment.seeds:
            runs.append(RunConfig(config=run_config(sub, resolved, seed), seed=seed, sweep_values=combo))
    return runs


def _sweep_source(combo: dict, loc: tuple) -> tuple[str, Any]:
    dotted = ".".join(loc)
    for key, value in combo.items():
        if any(dotted.startswith(".".join(split_key(part))) for part in key.split(",")):
            return key, value
    return next(iter(combo.items()), ("", None))
