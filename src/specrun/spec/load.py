"""Read a TOML spec, apply ``--set`` overrides, validate it (plugin sections against the plugins' own
models) and expand the sweep into run configurations. Every problem is reported with file, line and key."""

from __future__ import annotations

import copy
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from specrun.errors import PluginError, SpecError, did_you_mean
from specrun.plugins.api import SpecFacts
from specrun.plugins.registry import Registry, get_registry
from specrun.spec.compose import Composed, Source, compose, toml_problem  # noqa: F401  (toml_problem: re-exported)
from specrun.spec.labels import _short, describe_configs, describe_sweep, sweep_assignments  # noqa: F401  (re-exported)
from specrun.spec.locate import split_key
from specrun.spec.schema import (
    EVAL_METRICS,
    NAME_PATTERN,
    RUN_SECTIONS,
    SELECTION_KEYS,
    SearchParam,
    Spec,
    TrainSpec,
)
from specrun.spec.stages import dependency_refs, fixed_seed, sets_key, stage_name, stage_tree

Problem = tuple[str, "int | None", str]


@dataclass
class RunConfig:
    """One run of an experiment: the fully resolved configuration that trains it."""

    config: dict[str, Any]
    seed: int
    sweep_values: dict[str, Any] = field(default_factory=dict)
    #: The stage runs its config refers to (``stage:NAME``), by stage name.
    stages: dict[str, RunConfig] = field(default_factory=dict)
    #: The experiment a stage run belongs to (``<experiment>.<stage>``); None for the spec's own runs.
    experiment: str | None = None
    #: The stage a stage run is of (its name in ``[stages.NAME]``); None for the spec's own runs.
    stage: str | None = None


@dataclass
class LoadedSpec:
    path: Path
    text: str
    raw: dict[str, Any]
    spec: Spec
    runs: list[RunConfig]
    #: The spec's analyses, resolved: ``{"id", "name", "options"}`` each.
    analyses: list[dict[str, Any]] = field(default_factory=list)
    #: Its files (the spec and its bases) and profile; the effective tree before ``--set`` overrides.
    composed: Composed | None = None
    tree: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        return self.spec.experiment.name

    @property
    def profile(self) -> str | None:
        return self.composed.profile if self.composed else None

    #: ``--set`` items applied on top of ``tree``, by the key each sets (as given, ``key=value``).
    overrides: dict[str, str] = field(default_factory=dict)

    def locate(
        self, key: str, message: str, sweep_values: dict[str, Any] | None = None, stage: str | None = None
    ) -> tuple:
        """A problem about dotted ``key`` as SpecError takes it, located where its value comes from: the
        sweep entry (for a run's ``sweep_values``), the ``--set`` item, the stage's table (for a run of
        ``stage``), or the file (spec, base, profile) that sets the key."""
        return self.origin().locate(key, message, sweep_values, stage)

    def origin(self) -> Origin:
        composed = self.composed or Composed(self.raw, [Source(Path(self.path), self.text)])
        return Origin(composed, dict(self.overrides), self.tree if self.composed else self.raw)


@dataclass
class Origin:
    """Where the values of a spec's runs come from (its files, its ``--set`` items, its sweep), to
    locate a problem found after validation (planning, the checks before training) at the line that set
    the value: planned runs carry it (plain data, so it travels with them)."""

    composed: Composed
    #: ``--set`` items by the key each sets, as given (``train.epochs=1``).
    overrides: dict[str, str] = field(default_factory=dict)
    #: The spec's tree before ``--set`` (which keys the files set).
    tree: dict[str, Any] = field(default_factory=dict)

    def locate(
        self,
        key: str | tuple | list,
        message: str,
        sweep_values: dict[str, Any] | None = None,
        stage: str | None = None,
    ) -> tuple:
        loc = tuple(split_key(key)) if isinstance(key, str) else tuple(str(p) for p in key)
        name = dotted(loc)
        stages = self.tree.get("stages") if isinstance(self.tree.get("stages"), dict) else {}
        if stage in stages and isinstance(stages[stage], dict) and sets_key(self.tree, stage, loc):
            located = self.locate(("stages", stage, *loc), message, sweep_values)
            return (name, *located[1:])
        for sweep_key, value in (sweep_values or {}).items():
            for target, item in _assignments(sweep_key, value):
                parts = tuple(split_key(target))
                if _covers(parts, loc) or _covers(loc, parts):
                    located = self.locate(("sweep", sweep_key), message)
                    return (name, located[1], f"(from sweep {target} = {_short(item)}) {message}", *located[3:])
        for set_key, item in self.overrides.items():
            parts = tuple(split_key(set_key))
            if _covers(parts, loc) or _covers(loc, parts):
                line, file = None, None
                if _holds(self.tree, _typed(self.tree, loc)):
                    # the line whose value --set replaces
                    file, line = self.composed.where(loc)
                note = f"(from --set {item}) {message}"
                return (name, line, note) if file in (None, self.composed.path) else (name, line, note, str(file))
        file, line = self.composed.where(loc)
        return (name, line, message) if file == self.composed.path else (name, line, message, str(file))


def _covers(parent: tuple, loc: tuple) -> bool:
    """Whether key path ``parent`` is ``loc`` or a table above it."""
    return len(parent) <= len(loc) and tuple(loc[: len(parent)]) == tuple(parent)


def _assignments(key: str, value: Any) -> list[tuple[str, Any]]:
    try:
        return sweep_assignments(key, value)
    except TypeError:
        return [(key, value)]


def _typed(tree: Any, loc: tuple) -> tuple:
    """``loc`` (strings) with list indexes as ints where ``tree`` holds lists, for ``_holds``."""
    out: list = []
    for part in loc:
        if isinstance(tree, list) and str(part).isdigit():
            part = int(part)
            tree = tree[part] if part < len(tree) else None
        else:
            tree = tree.get(part) if isinstance(tree, dict) else None
        out.append(part)
    return tuple(out)


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
    except tomllib.TOMLDecodeError as exc:
        if not text:
            raise SpecError(
                "--set", [(key, None, f"(from --set {item}) no value after '=' (an empty string: {key}=\"\")")]
            ) from None
        if text[0] in "[{\"'":  # meant as a list, table or quoted string, not a bare word
            reason = str(exc).split(" (at ")[0]
            raise SpecError(
                "--set", [(key, None, f"(from --set {item}) {text!r} is not a TOML value: {reason}")]
            ) from None
        value = text
    return key, value


def empty_part(key: str) -> bool:
    """Whether dotted ``key`` has an empty part (``train..epochs``, ``.train``, ``train.``); quoted parts
    (``data.eval_sets."a.b"``) may hold dots."""
    bare = re.sub(r'"[^"]*"|\'[^\']*\'', "q", key.strip())
    return any(not part.strip() for part in bare.split("."))


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested dicts and lists, creating missing tables."""
    parts = split_key(key)
    if not parts:
        raise KeyError(f"{key!r} names no key: give a dotted key such as train.epochs")
    if empty_part(key):
        raise KeyError(f"{key!r} has an empty part between dots: give a dotted key such as train.epochs")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, parts[: i + 1])
        elif isinstance(node, dict):
            if parts[i + 1].isdigit() and not isinstance(node.get(part), list):
                raise KeyError(
                    f"{'.'.join(parts[: i + 1])} is not set, so it has no item {parts[i + 1]}; set the whole list instead"
                )
            if part not in node or not isinstance(node[part], (dict, list)):
                node[part] = {}
            node = node[part]
        if not isinstance(node, (dict, list)):
            raise KeyError(f"{'.'.join(parts[: i + 1])} is a value ({node!r}), not a table or list")
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, parts)] = value
    else:
        node[last] = value


def _index(items: list, part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise KeyError(f"{'.'.join(path)}: no item {part} (the list has {len(items)})")
    return int(part)


def _list_item(items: list, part: str, path: list[str]) -> Any:
    return items[_index(items, part, path)]


# --- validation ----------------------------------------------------------------------------------


def _pydantic_problems(
    exc: ValidationError, prefix: tuple = (), model: type[BaseModel] | None = None
) -> list[tuple[tuple, str]]:
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
        elif err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME_PATTERN:
            message = f"{err['input']!r} is not a name: use letters, digits, _ . - (starting with a letter or digit)"
        elif err["type"] == "literal_error" and isinstance(err.get("input"), str):
            message += did_you_mean(err["input"], re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", ""))))
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


def dotted(loc: tuple | list) -> str:
    """A location (keys and list indices) as the dotted key a user writes: ``data.transforms.1.name``."""
    return ".".join(str(part) for part in loc)


def _plugin_options(
    registry: Registry, kind: str, name: str, options: dict, loc: tuple, name_loc: tuple | None = None
) -> tuple[dict | None, list]:
    """Validate ``options`` (at ``loc``) against plugin ``name``'s model (named at ``name_loc``,
    default ``loc.name``): (dumped options, problems)."""
    try:
        plugin = registry.get(kind, name)
    except PluginError as exc:
        return None, [(name_loc or (*loc, "name"), str(exc))]
    try:
        validated = plugin.Options.model_validate(options)
    except ValidationError as exc:
        return None, _pydantic_problems(exc, loc, plugin.Options)
    return validated.model_dump(mode="json"), []


def _ref(value: Any) -> tuple[str, dict] | None:
    """``(name, options)`` of a raw plugin table, or None when the schema check reports it as malformed."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    return value["name"], {k: v for k, v in value.items() if k != "name"}


def _table(raw: dict, *keys: str) -> dict:
    """The raw sub-table at ``keys``, or {} when it is absent or not a table (the schema check reports that)."""
    node: Any = raw
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _items(value: Any) -> list:
    return value if isinstance(value, list) else []


def _resolve_plugins(raw: dict, registry: Registry) -> tuple[dict, list[tuple[tuple, str]]]:
    """Validate every plugin section of the raw spec against its plugin's options model.

    Works on the raw tree, not on a validated ``Spec``, so that plugin problems are reported in the
    same pass as schema problems elsewhere in the spec."""
    problems: list[tuple[tuple, str]] = []
    resolved: dict[str, Any] = {
        "method": {},
        "data_options": {},
        "transforms": [],
        "eval_sets": {},
        "analyses": [],
        "task": None,
    }

    task_ref = _ref(raw.get("task"))
    task = task_options = None
    if task_ref:
        _, p = _plugin_options(registry, "task", task_ref[0], task_ref[1], ("task",))
        problems += p
        if not p:
            task = registry.get("task", task_ref[0])
            task_options = task.Options.model_validate(task_ref[1])  # its fields_set: what the spec sets
            max_length = _table(raw, "model").get("max_length", 128)
            resolve = getattr(task, "resolve_options", None)  # defaults that depend on model.max_length
            if resolve is not None and isinstance(max_length, int):
                task_options = resolve(task_options, max_length)
            resolved["task"] = {"name": task_ref[0], **task_options.model_dump(mode="json")}
            check = getattr(task, "check", None)
            if check is not None and isinstance(max_length, int):
                problems += [(("task", key), message) for key, message in check(task_options, max_length)]
    if task is None:
        from specrun.core.tasks import DEFAULT_TASK

        if registry.entries.get("task", {}).get(DEFAULT_TASK) is not None:
            task = registry.get("task", DEFAULT_TASK)
            task_options = task.Options()

    def refused(kind: str, name: str, loc: tuple) -> None:
        if task is None or name not in registry.entries[kind]:
            return
        reason = task.refuse(kind, registry.get(kind, name), task_options)
        if reason:
            problems.append((loc, f"the task {task.name!r} cannot use the {kind} {name!r}: {reason}"))

    method = _ref(raw.get("method"))
    if method:
        opts, p = _plugin_options(registry, "method", method[0], method[1], ("method",))
        problems += p
        resolved["method"] = {"name": method[0], **(opts or {})}
        refused("method", method[0], ("method", "name"))

    data = _table(raw, "data")
    if isinstance(data.get("dataset"), str):
        options = data.get("options", {})
        options = options if isinstance(options, dict) else {}
        opts, p = _plugin_options(
            registry, "dataset", data["dataset"], options, ("data", "options"), ("data", "dataset")
        )
        problems += p
        resolved["data_options"] = opts or {}

    def transforms(refs: Any, loc: tuple) -> list[dict]:
        out = []
        for i, value in enumerate(_items(refs)):
            ref = _ref(value)
            if ref is None:
                continue
            name, options = ref
            on = options.pop("on", None)
            opts, p = _plugin_options(registry, "transform", name, options, (*loc, i))
            problems.extend(p)
            if on is None and not p:
                on = registry.get("transform", name).applies_to
            if on not in (None, "train", "eval", "both"):
                problems.append(((*loc, i, "on"), f"must be 'train', 'eval' or 'both', not {on!r}"))
            refused("transform", name, (*loc, i, "name"))
            out.append({"name": name, "on": on, **(opts or {})})
        return out

    resolved["transforms"] = transforms(data.get("transforms"), ("data", "transforms"))
    for name, es in _table(data, "eval_sets").items():
        es_transforms = es.get("transforms") if isinstance(es, dict) else None
        resolved["eval_sets"][name] = transforms(es_transforms, ("data", "eval_sets", name, "transforms"))
    ids: dict[str, int] = {}
    for i, value in enumerate(_items(raw.get("analyses"))):
        ref = _ref(value)
        if ref is None:
            continue
        name, options = ref
        entry_id = options.pop("id", None) or name
        if not isinstance(entry_id, str) or not re.match(NAME_PATTERN, entry_id):
            problems.append((("analyses", i, "id"), f"must be a name of letters, digits, _ . - (not {entry_id!r})"))
        elif entry_id in ids:
            problems.append(
                (
                    ("analyses", i, "id" if "id" in value else "name"),
                    f"analyses {ids[entry_id]} and {i} are both {entry_id!r}: give one an `id` of its own",
                )
            )
        ids.setdefault(str(entry_id), i)
        opts, p = _plugin_options(registry, "analysis", name, options, ("analyses", i))
        problems += p
        refused("analysis", name, ("analyses", i, "name"))
        resolved["analyses"].append({"id": entry_id, "name": name, "options": opts or {}})
    return resolved, problems


def _sweep_key_problems(sweep: Any) -> list[tuple[tuple, str]]:
    problems = []
    for key in sweep if isinstance(sweep, dict) else {}:
        for part in key.split(","):
            parts = split_key(part)
            if not parts:
                problems.append(
                    (("sweep", key), 'a sweep key names a dotted spec key, e.g. "method.rank"; this one is empty')
                )
            elif empty_part(part):
                problems.append(
                    (
                        ("sweep", key),
                        f'{part.strip()!r} has an empty part between dots: give a dotted spec key, e.g. "method.rank"',
                    )
                )
            elif parts[0] not in (*RUN_SECTIONS, "stages"):
                problems.append(
                    (
                        ("sweep", key),
                        f"can only sweep keys under {', '.join(RUN_SECTIONS)} and stages{did_you_mean(parts[0], RUN_SECTIONS)}",
                    )
                )
    return problems


def _section(raw: dict, name: str, model: type[BaseModel]) -> BaseModel | None:
    """One section validated on its own (None if it has problems), for checks across its fields."""
    try:
        return model.model_validate(raw.get(name, {}))
    except (ValidationError, TypeError):
        return None


#: Metric splits the store uses besides evaluation sets: an evaluation set of that name would mix with them.
_RESERVED_SET_NAMES = {
    "train": "training metrics",
    "cost": "cost metrics",
    "selection": "selection-set metrics (early stopping)",
}


def _eval_set_name_problems(raw: dict, registry: Registry) -> list[tuple[tuple, str]]:
    """A named evaluation set is stored under its name (metrics.split, predictions.split): one named like
    the primary evaluation split would replace it, one named 'train' or 'cost' would mix with those rows."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    sets = data.get("eval_sets") if isinstance(data.get("eval_sets"), dict) else {}
    if not sets:
        return []
    primary = data.get("eval_split")
    if not isinstance(primary, str) or not primary:
        try:
            primary = registry.get("dataset", data.get("dataset")).eval_split
        except Exception:  # an unknown dataset is reported at data.dataset
            primary = None
    problems = []
    for name in sets:
        if name == primary:
            problems.append(
                (
                    ("data", "eval_sets", name),
                    f"{name!r} is the primary evaluation split (data.eval_split), which every run is "
                    "evaluated on already; results are stored by evaluation set name, so give this set a name of its own",
                )
            )
        elif name in _RESERVED_SET_NAMES:
            problems.append(
                (
                    ("data", "eval_sets", name),
                    f"{name!r} is reserved: the store keeps the {_RESERVED_SET_NAMES[name]} under split "
                    f"{name!r}; give this set another name",
                )
            )
    return problems


def _train_problems(train: TrainSpec) -> list[tuple[tuple, str]]:
    """Train settings that contradict each other or that the chosen schedule cannot honour."""
    problems = []
    if train.max_steps is not None and train.min_steps > train.max_steps:
        problems.append(
            (
                ("train", "min_steps"),
                f"min_steps = {train.min_steps} is more than max_steps = {train.max_steps}: "
                "a run cannot do both; lower min_steps or raise max_steps (or leave one out)",
            )
        )
    if train.power is not None and train.scheduler != "polynomial":
        problems.append(
            (
                ("train", "power"),
                f"only the polynomial schedule takes a power; scheduler = {train.scheduler!r} "
                'would ignore it: set scheduler = "polynomial" or leave power out',
            )
        )
    return problems


def split_base(name: str) -> str:
    """The split a split name or slice reads: ``test`` for ``test[:1000]``."""
    return name.split("[", 1)[0].strip()


def reported_splits(data: dict, registry: Registry) -> dict[str, str]:
    """{spec key: split} for every split whose numbers a run reports: the primary evaluation split and the
    named evaluation sets'."""
    primary = data.get("eval_split")
    if not isinstance(primary, str) or not primary:
        try:
            primary = registry.get("dataset", data.get("dataset")).eval_split
        except Exception:  # an unknown dataset is reported at data.dataset
            return {}
    found = {"data.eval_split": primary}
    sets = data.get("eval_sets") if isinstance(data.get("eval_sets"), dict) else {}
    for name, entry in sets.items():
        split = entry.get("split") if isinstance(entry, dict) else None
        found[f"data.eval_sets.{name}.split"] = split if isinstance(split, str) and split else primary
    return found


def _selection_problems(raw: dict, train: TrainSpec, registry: Registry) -> list[tuple[tuple, str]]:
    """Selection (early stopping and its best-weight restore; a search's objective and pruner) never
    evaluates a reported split unless the spec says so; the selection keys say something only when
    something selects."""
    defaults = {k: TrainSpec.model_fields[k].default for k in SELECTION_KEYS}
    given = [k for k in SELECTION_KEYS if getattr(train, k) != defaults[k]]
    searching = isinstance(raw.get("search"), dict)
    if not (train.selects() or searching):
        return [
            (
                ("train", k),
                "only early stopping selects weights by evaluating (and a [search] configurations); without either "
                "this key does nothing: leave it out",
            )
            for k in given
        ]
    problems = []
    carved = [k for k in ("select_fraction", "select_max_examples") if k in given]
    if train.select_on is not None or train.allow_selection_on_reported:
        problems += [
            (
                ("train", k),
                "applies to the selection set carved from the training split, which a spec with "
                "train.select_on or train.allow_selection_on_reported does not use: leave it out",
            )
            for k in carved
        ]
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    if train.select_on is None or train.allow_selection_on_reported:
        return problems
    what = (
        " and ".join(
            (["the search's objective and pruner (search.metric)"] if searching else [])
            + (["early stopping"] if train.early_stopping is not None else [])
        )
        or "the selection metrics (train.evaluate_selection)"
    )
    for key, split in reported_splits(data, registry).items():
        if split_base(split) == split_base(train.select_on):
            problems.append(
                (
                    ("train", "select_on"),
                    f"{what} would select on {train.select_on!r}, examples of split "
                    f"{split_base(split)!r} whose numbers the run reports ({key} = {split!r}): the reported numbers "
                    "would be optimistic. Leave select_on out (a selection set is carved from the training split), name "
                    "a split the run does not report, or set train.allow_selection_on_reported = true to accept it "
                    "(the report marks those numbers selected-on)",
                )
            )
            break
    return problems


#: The largest integers the store's columns hold: a step (metrics.step, a signed 32-bit INTEGER) and
#: any other integer (a 64-bit BIGINT, and DuckDB's JSON integers).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
#: Train keys that count steps: the store records steps as 32-bit integers.
STEP_KEYS = ("max_steps", "min_steps", "eval_every", "checkpoint_every")


def _integer_range_problems(raw: dict) -> list[tuple[tuple, str]]:
    """Integers the store cannot hold: refused here rather than when an apply writes them (a DuckDB
    conversion error after the run had started)."""
    problems = []
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    for key in STEP_KEYS:
        value = train.get(key)
        if type(value) is int and value > INT32_MAX:
            problems.append(
                (
                    ("train", key),
                    f"{value} steps is more than the store can record (steps are 32-bit integers, at most {INT32_MAX})",
                )
            )

    def walk(node: Any, loc: tuple) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*loc, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*loc, i))
        elif type(node) is int and abs(node) > INT64_MAX:
            problems.append(
                (loc, f"{node} is beyond a 64-bit integer (at most {INT64_MAX}), the largest the store holds")
            )

    walk(raw, ())
    return problems


def _cross_field_problems(raw: dict, registry: Registry) -> list[tuple[tuple, str]]:
    """Checks across the keys of a section, made on every section that is valid by itself."""
    problems = _eval_set_name_problems(raw, registry) + _integer_range_problems(raw)
    train = _section(raw, "train", TrainSpec)
    task = _task_plugin(raw, registry)
    if (
        train is not None
        and train.early_stopping is not None
        and task is not None
        and train.early_stopping.metric not in task.metrics
    ):
        problems.append(
            (
                ("train", "early_stopping", "metric"),
                f"the task {task.name!r} computes {', '.join(m for m in task.metrics if m != 'n_examples')}; "
                f"not {train.early_stopping.metric!r}",
            )
        )
    elif train is not None and train.early_stopping is not None:
        stopping = train.early_stopping
        if stopping.metric == "loss" and stopping.mode == "max":
            problems.append(
                (
                    ("train", "early_stopping", "mode"),
                    "the loss is minimised: early stopping on 'loss' needs mode = \"min\"",
                )
            )
        elif stopping.metric != "loss" and stopping.mode == "min":
            problems.append(
                (
                    ("train", "early_stopping", "mode"),
                    f'{stopping.metric} is maximised: early stopping on it needs mode = "max"',
                )
            )
    if train is not None:
        problems += _train_problems(train)
        problems += _selection_problems(raw, train, registry)
    for name in raw.get("stages", {}) if isinstance(raw.get("stages"), dict) else {}:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", name):
            problems.append((("stages", name), "a stage is named with letters, digits, _ and -"))
        elif not isinstance(raw["stages"][name], dict):
            problems.append(
                (
                    ("stages", name),
                    "a stage is a table of spec tables to merge over this spec ([stages.<name>.data], ...)",
                )
            )
    return problems


def _task_plugin(raw: dict, registry: Registry):
    """The task plugin a raw spec names (the default when none), or None when it names none that exists."""
    from specrun.core.tasks import DEFAULT_TASK

    ref = _ref(raw.get("task"))
    name = ref[0] if ref else DEFAULT_TASK
    entry = registry.entries.get("task", {}).get(name)
    return entry.plugin if entry is not None else None


def validate_config(raw: dict, registry: Registry) -> tuple[Spec | None, dict, list[tuple[tuple, str]]]:
    """Validate a whole spec tree in one pass: (Spec, plugin sections resolved with defaults, problems
    by location). Schema, plugin names and options, sweep keys and cross-field checks are all reported
    together; the Spec is None when there is any problem."""
    problems: list[tuple[tuple, str]] = []
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        spec = None
        problems += _pydantic_problems(exc, (), Spec)
    resolved, plugin_problems = _resolve_plugins(raw, registry)
    problems += plugin_problems
    problems += _sweep_key_problems(raw.get("sweep"))
    problems += _cross_field_problems(raw, registry)
    problems += _cache_frozen_problems(raw, resolved, registry)
    return (None if problems else spec), resolved, problems


def _cache_frozen_problems(raw: dict, resolved: dict, registry: Registry) -> list[tuple[tuple, str]]:
    """``train.cache_frozen`` on a run it cannot serve: another task than classification, or a method
    that trains inside the backbone (what the method's options alone tell; plan and apply ask again
    with the model, ``runner.compat.check_run_model``)."""
    train = _section(raw, "train", TrainSpec)
    if train is None or not train.cache_frozen:
        return []
    loc = ("train", "cache_frozen")
    task = _task_plugin(raw, registry)
    if task is not None and task.name != "classification":
        return [
            (
                loc,
                f"frozen features serve classification heads, which read one token's hidden state; the task "
                f"{task.name!r} reads every token's, which would mean caching whole sequences: leave cache_frozen out",
            )
        ]
    method = resolved.get("method") or {}
    entry = registry.entries.get("method", {}).get(method.get("name"))
    if entry is None:
        return []
    try:
        options = entry.plugin.Options.model_validate({k: v for k, v in method.items() if k != "name"})
    except ValidationError:  # reported at [method]
        return []
    why = entry.plugin.frozen_prefix_problem(options, None)
    return [(loc, f"{why}; leave cache_frozen out for this run")] if why else []


def run_config(spec: Spec, resolved: dict, seed: int) -> dict[str, Any]:
    """The part of a validated spec that determines one run's result (a tree of its own: runs of
    different seeds share no dicts, so planning may rewrite one run's config without touching another)."""
    resolved = copy.deepcopy(resolved)
    data = spec.data.model_dump(mode="json")
    data["options"] = resolved["data_options"]
    data["transforms"] = resolved["transforms"]
    for name, transforms in resolved["eval_sets"].items():
        data["eval_sets"][name]["transforms"] = transforms
    config = {
        "model": spec.model.model_dump(mode="json"),
        "data": data,
        "method": resolved["method"],
        # a search's trials evaluate a selection set at every evaluation: its objective and pruner read it
        "train": (
            spec.train.model_copy(update={"evaluate_selection": True}) if spec.search is not None else spec.train
        ).model_dump(mode="json"),
        "seed": seed,
    }
    from specrun.core.tasks import DEFAULT_TASK

    task = resolved.get("task")
    if (
        task and task["name"] != DEFAULT_TASK
    ):  # classification stays implicit: configs (and run ids) of earlier specs hold
        config["task"] = task
    return config


# --- loading -------------------------------------------------------------------------------------


def load_spec(
    path: str | Path, overrides: list[str] = (), registry: Registry | None = None, profile: str | None = None
) -> LoadedSpec:
    """Read, validate and expand the spec at ``path`` (its bases merged, ``profile`` applied); raises
    SpecError listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), [("", None, "spec file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [("", None, f"cannot read spec: {exc}")]) from None
    return load_spec_text(text, path, overrides, registry, profile)


def load_spec_text(
    text: str, path: str | Path, overrides: list[str] = (), registry: Registry | None = None, profile: str | None = None
) -> LoadedSpec:
    """Validate and expand spec ``text``; ``path`` names it in messages and anchors its relative paths
    (``extends`` included)."""
    return load_composed(compose(path, text, profile), overrides, registry)


def load_tree(
    tree: dict, text: str, path: str | Path, registry: Registry | None = None, profile: str | None = None
) -> LoadedSpec:
    """Validate and expand an effective spec tree as an apply recorded it (bases merged, profile
    applied); ``text`` is the spec file's text, for locating problems."""
    return load_composed(Composed(copy.deepcopy(tree), [Source(Path(path), text)], profile=profile), (), registry)


def load_composed(composed: Composed, overrides: list[str] = (), registry: Registry | None = None) -> LoadedSpec:
    """Validate and expand a composed spec with ``--set`` overrides applied on top."""
    registry = registry or get_registry()
    effective = copy.deepcopy(composed.raw)
    raw = copy.deepcopy(effective)
    set_keys, set_problems = _apply_overrides(raw, overrides)
    origin = Origin(composed, set_keys, effective)

    def where(loc: tuple, message: str) -> tuple:
        return origin.locate(loc, message)

    spec, resolved, problems = validate_config(raw, registry)
    found = set_problems + [where(loc, msg) for loc, msg in problems]
    runs, sweep_problems = expand(raw, registry, where, known={(dotted(loc), msg) for loc, msg in problems})
    found += [p for p in sweep_problems if p not in found]
    found += [
        p
        for p in search_problems(raw, registry, where, known={(dotted(loc), msg) for loc, msg in problems})
        if p not in found
    ]
    if not found and not overrides and "search" not in raw:  # a variant (--set) may leave a stage out
        found = [where(loc, msg) for loc, msg in _unused_stage_problems(raw, runs)]
    if not found:  # the analyses check their options against the runs the spec expands into
        found = [where(loc, msg) for loc, msg in check_analyses(spec, resolved["analyses"], runs, registry)]
    if found:  # by file, in line order; --set problems (no line) first
        raise SpecError(
            str(composed.path), sorted(found, key=lambda p: (p[3] if len(p) > 3 and p[3] else "", p[1] or 0))
        )
    return LoadedSpec(
        path=composed.path,
        text=composed.text,
        raw=raw,
        spec=spec,
        runs=runs,
        analyses=resolved["analyses"],
        composed=composed,
        tree=effective,
        overrides=set_keys,
    )


def spec_facts(spec: Spec, runs: list[RunConfig], registry: Registry) -> SpecFacts:
    """What analyses may check their options against: evaluation sets, swept keys, run configs."""
    primary = spec.data.eval_split or registry.get("dataset", spec.data.dataset).eval_split
    swept = tuple(k.strip() for key in spec.sweep for k in key.split(","))
    return SpecFacts((primary, *spec.data.eval_sets), swept, tuple(r.config for r in runs))


def check_analyses(
    spec: Spec, entries: list[dict], runs: list[RunConfig], registry: Registry
) -> list[tuple[tuple, str]]:
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
            problems.append(
                (
                    ("report", "sections", i),
                    f"no analysis {wanted!r}{did_you_mean(wanted, ids)}; the spec's analyses: {', '.join(ids) or 'none'}",
                )
            )
    headline = spec.report.headline if spec.report else None
    if headline is not None:
        if headline not in ids:
            problems.append(
                (
                    ("report", "headline"),
                    f"no analysis {headline!r}{did_you_mean(headline, ids)}; the spec's analyses: {', '.join(ids) or 'none'}",
                )
            )
        elif spec.report.sections is not None and headline not in spec.report.sections:
            problems.append(
                (
                    ("report", "headline"),
                    f"{headline!r} is not among report.sections ({', '.join(spec.report.sections)}): add it there",
                )
            )
    return problems


def _apply_overrides(raw: dict, overrides: list[str]) -> tuple[dict[str, str], list[Problem]]:
    """Apply ``--set`` items to ``raw``: (the items applied by the key each sets, problems with items
    that could not be applied)."""
    keys: dict[str, str] = {}
    problems: list[Problem] = []
    for item in overrides:
        try:
            key, value = parse_override(item)
            set_dotted(raw, key, value)
        except SpecError as exc:
            problems += exc.problems
            continue
        except (KeyError, TypeError) as exc:
            problems.append((key, None, f"--set: {exc.args[0] if exc.args else exc}"))
            continue
        keys[key] = item.strip()
    return keys, problems


def _holds(tree: Any, loc: tuple) -> bool:
    """Whether ``tree`` has a value at ``loc`` (keys and list indexes)."""
    for part in loc:
        if (isinstance(tree, dict) and part in tree) or (
            isinstance(tree, list) and isinstance(part, int) and 0 <= part < len(tree)
        ):
            tree = tree[part]
        else:
            return False
    return True


def _sweep_grid(raw: dict) -> dict[str, list] | None:
    sweep = raw.get("sweep", {})
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        return None  # the schema check reports it
    return sweep


def expand(raw: dict, registry: Registry, where, known: set = frozenset()) -> tuple[list[RunConfig], list[tuple]]:
    """The grid of sweep values × seeds, each validated as a whole spec, with the stages each run starts
    from: (runs, problems). A sweep point's problems that the spec has without the sweep (``known``:
    (dotted key, message)) are left out; the others are reported at the sweep key's line, once each.
    ``where(loc, message)`` locates a problem."""
    grid = _sweep_grid(raw)
    if grid is None:
        return [], []
    unusable = {loc[1] for loc, _ in _sweep_key_problems(grid)}  # reported by validate_config
    keys = [k for k in grid if k not in unusable]
    runs: list[RunConfig] = []
    problems: list[tuple] = []

    def report(problem: tuple) -> None:
        if problem not in problems:
            problems.append(problem)

    for values in itertools.product(*(grid[k] for k in keys)):
        tree = copy.deepcopy(raw)
        tree.pop("sweep", None)
        combo = dict(zip(keys, values))
        complete = True
        for key, value in combo.items():
            try:
                for target, item in sweep_assignments(key, value):
                    set_dotted(tree, target, item)
            except (KeyError, TypeError) as exc:
                report(where(("sweep", key), str(exc.args[0] if exc.args else exc)))
                complete = False
        sub, resolved, found = validate_config(tree, registry)
        for loc, msg in found:
            if (dotted(loc), msg) in known:
                continue
            k, v = _sweep_source(combo, loc)
            report(where(("sweep", k), f"value {v!r}: {dotted(loc)}: {msg}"))
        if sub is None or not complete or unusable:
            continue
        for seed in sub.experiment.seeds:
            config = run_config(sub, resolved, seed)
            stages, stage_problems = resolve_stages(config, tree, seed, registry, ())
            for loc, msg in stage_problems:
                report(where(loc, msg))
            runs.append(RunConfig(config=config, seed=seed, sweep_values=combo, stages=stages))
    return runs, problems


def _unused_stage_problems(raw: dict, runs: list[RunConfig]) -> list[tuple[tuple, str]]:
    """A declared stage no run starts from (directly or through another stage) would never run, and its
    tables would never be checked: most likely a forgotten ``model.init_from``."""
    declared = raw.get("stages") if isinstance(raw.get("stages"), dict) else {}
    used: set[str] = set()
    pending = [run.stages for run in runs]
    while pending:
        for name, stage_run in pending.pop().items():
            if name not in used:
                used.add(name)
                pending.append(stage_run.stages)
    return [
        (
            ("stages", name),
            f"no run starts from stage {name!r}, so it would never run nor be checked: "
            f'set model.init_from = "stage:{name}" (or a transform\'s teacher), or remove it',
        )
        for name in declared
        if name not in used and runs
    ]


def resolve_stages(
    config: dict, tree: dict, seed: int, registry: Registry, chain: tuple[str, ...]
) -> tuple[dict[str, RunConfig], list[tuple[tuple, str]]]:
    """The stage runs ``config`` refers to (``stage:NAME``), resolved for its sweep point and seed, with
    the stages those refer to in turn: ({name: RunConfig}, problems by location)."""
    found: dict[str, RunConfig] = {}
    problems: list[tuple[tuple, str]] = []
    declared = tree.get("stages") if isinstance(tree.get("stages"), dict) else {}
    for holder, key, _, dotted_key in dependency_refs(config):
        name = stage_name(holder.get(key))
        if name is None or name in found:
            continue
        loc = tuple(dotted_key.split("."))
        if name not in declared:
            problems.append(
                (
                    loc,
                    f"no stage {name!r}{did_you_mean(name, declared)}; the spec's stages: {', '.join(declared) or 'none'} (declare [stages.{name}])",
                )
            )
            continue
        if name in chain:
            problems.append(
                (("stages", name), f"stages start from each other in a cycle: {' → '.join((*chain, name))}")
            )
            continue
        branch = stage_tree(tree, name)
        sub, resolved, stage_problems = validate_config(branch, registry)
        for stage_loc, msg in stage_problems:
            mapped = ("stages", name, *stage_loc) if sets_key(tree, name, stage_loc) else stage_loc
            problems.append((mapped, f"stage {name!r}: {msg}"))
        if sub is None:
            continue
        stage_seed = fixed_seed(tree, name)
        stage_seed = seed if stage_seed is None else stage_seed
        stage_config = run_config(sub, resolved, stage_seed)
        nested, nested_problems = resolve_stages(stage_config, tree, stage_seed, registry, (*chain, name))
        problems += nested_problems
        found[name] = RunConfig(stage_config, stage_seed, {}, nested, experiment=sub.experiment.name, stage=name)
    return found, problems


def _sweep_source(combo: dict, loc: tuple) -> tuple[str, Any]:
    key_at = dotted(loc)
    for key, value in combo.items():
        if any(split_key(part) and key_at.startswith(".".join(split_key(part))) for part in key.split(",")):
            return key, value
    return next(iter(combo.items()), ("", None))


# --- [search] ------------------------------------------------------------------------------------


def search_points(param: dict) -> list:
    """The values of a search space entry a spec is checked at: its ends (a categorical: every choice)."""
    if param.get("type") == "categorical":
        return list(param.get("choices") or [])
    low, high = param.get("low"), param.get("high")
    if param.get("type") == "int":
        return [int(low), int(high)]
    return [float(low), float(high)]


def search_problems(raw: dict, registry: Registry, where, known: set = frozenset()) -> list[tuple]:
    """A ``[search]`` space's keys checked as a sweep's are: each under model, data, method or train, and
    the spec valid with the key at each end of its range (each choice of a categorical), reported at the
    space key's line. ``[search]`` and ``[sweep]`` do not go together."""
    search = raw.get("search")
    if not isinstance(search, dict) or not isinstance(search.get("space"), dict):
        return []  # absent, or the schema check reports it
    problems: list[tuple] = []
    if raw.get("sweep"):
        problems.append(
            where(("search",), "a spec has [search] or [sweep], not both: a search chooses its own configurations")
        )
    metric, task = search.get("metric", "accuracy"), _task_plugin(raw, registry)
    if task is not None and metric in EVAL_METRICS and metric not in task.metrics:  # else the schema reports it
        computed = ", ".join(m for m in task.metrics if m != "n_examples")
        problems.append(
            where(
                ("search", "metric"),
                f"the task {task.name!r} computes {computed}; not {metric!r}: no trial would have a value",
            )
        )
    for key, param in search["space"].items():
        loc = ("search", "space", key)
        parts = key.split(".")
        if empty_part(key) or len(parts) < 2 or parts[0] not in RUN_SECTIONS:
            problems.append(
                where(
                    loc, f"can only search keys under {', '.join(RUN_SECTIONS)}{did_you_mean(parts[0], RUN_SECTIONS)}"
                )
            )
            continue
        try:
            SearchParam.model_validate(param)
        except ValidationError:
            continue  # the schema check reports it
        for value in search_points(param):
            tree = copy.deepcopy(raw)  # [search] stays: a trial's run evaluates a selection set
            tree.pop("sweep", None)
            try:
                set_dotted(tree, key, value)
            except (KeyError, TypeError) as exc:
                problems.append(where(loc, str(exc.args[0] if exc.args else exc)))
                break
            _, _, found = validate_config(tree, registry)
            found = [(at, m) for at, m in found if (dotted(at), m) not in known]
            if found:
                at, m = found[0]
                problems.append(where(loc, f"value {value!r}: {dotted(at)}: {m}"))
                break
    return problems
