"""Preparing a run's data: load the dataset, apply transforms, tokenize once, batch by length.

Loaded datasets and tokenized texts are cached for the life of the process, so the runs of a sweep
share that work.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass

from specrun import cache
from specrun.errors import DataError, did_you_mean
from specrun.examples import Dataset, Examples
from specrun.plugins.api import DataContext, TransformContext
from specrun.plugins.registry import Registry
from specrun.spec.schema import DataSpec, PluginRef, RunSettings
from specrun.version import __version__


@dataclass
class RunData:
    """A run's examples after transforms: the training set and the named evaluation sets."""

    dataset: Dataset
    train: Examples
    eval_sets: dict[str, Examples]
    primary_eval: str
    #: What early stopping evaluates (None: the run does not select): the name its metrics are stored
    #: under — ``SELECTION_SET`` for a set of its own, the primary evaluation split's name when the spec
    #: allows selecting on the reported split — and, for a set of its own, its examples.
    selection_name: str | None = None
    selection: Examples | None = None
    #: How the selection set was made, for the run's record: {"source", "split", "examples", ...}.
    selection_info: dict | None = None


#: The name a run's selection set (early stopping's) is evaluated and stored under (``metrics.split``).
SELECTION_SET = "selection"

#: The carved selection set is drawn with this seed whatever the run's seed, so that runs that train on
#: the same split hold out the same examples.
SELECTION_SEED = 2_022


def data_dir() -> str | None:
    return os.environ.get("SPECRUN_DATA_DIR") or None


@functools.lru_cache(maxsize=8)
def _load_cached(
    name: str, options_json: str, data_dir_: str | None, spec_dir: str | None, registry: Registry
) -> Dataset:
    """Loaded once per process; parsed once per set of files for sources that name them (``specrun.cache``)."""
    source = registry.get("dataset", name)
    options = source.Options.model_validate(json.loads(options_json))
    ctx = DataContext(data_dir=data_dir_, spec_dir=spec_dir)
    files = source.files(options, ctx)
    signature = cache.file_signature(files) if files else None
    key = {
        "dataset": name,
        "version": registry.code_version("dataset", name),
        "specrun": __version__,
        "options": options_json,
        "files": signature,
    }
    if signature is not None:
        dataset = cache.get("datasets", key)
        if isinstance(dataset, Dataset):
            return dataset
    dataset = source.load(options, ctx)
    if not dataset.splits:
        raise DataError(f"dataset {name!r} has no splits")
    if signature is not None and signature == cache.file_signature(files):  # unchanged while it was read
        for examples in dataset.splits.values():
            _ = examples.fingerprint  # computed once, kept with the entry
        cache.put("datasets", key, dataset)
    return dataset


def load_dataset(data: dict | DataSpec, registry: Registry, spec_dir: str | None = None) -> Dataset:
    """The dataset ``data`` (a run's ``data`` section, typed or as a tree) names, loaded once per process."""
    name, options = (data["dataset"], data["options"]) if isinstance(data, dict) else (data.dataset, data.options)
    try:
        return _load_cached(name, json.dumps(options, sort_keys=True), data_dir(), spec_dir, registry)
    except DataError as exc:
        raise DataError(exc.message, key=option_key(exc.key, exc.message, options)) from None


def option_key(key: str | None, message: str, options: dict) -> str:
    """The spec key a dataset plugin's error is about, so that it is reported at that option's line: the
    plugin's own ``key`` (an option, ``files.train``, or a whole spec key, ``data.options.files``); else
    the option whose value (a path, a column name) the message names; else ``data.options`` (or
    ``data.dataset`` for a dataset without options)."""
    if key:
        return key if key.split(".")[0] == "data" else f"data.options.{key}"
    best = None
    for path, value in _leaves(options, ()):
        if not isinstance(value, str) or len(value) < 2 or value not in message:
            continue
        # "train.jsonl:8: the label ...": a problem in one row of a file is about the file; "no column
        # 'texte'; columns are ['text', 'label']": otherwise the first value quoted is the one at fault
        in_row = re.match(rf"{re.escape(value)}:\d+:", message) is not None
        quoted = [i for i in (message.find(f"'{value}'"), message.find(f'"{value}"')) if i >= 0]
        score = (in_row, bool(quoted), -min(quoted, default=0), len(value))
        if best is None or score > best[1]:
            best = (path, score)
    if best is not None:
        return ".".join(("data", "options", *best[0]))
    return "data.options" if options else "data.dataset"


def _leaves(node, path: tuple):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, str(i)))
    else:
        yield path, node


def eval_split_name(data: dict | DataSpec, registry: Registry) -> str:
    """The run's primary evaluation split: ``data.eval_split``, else its dataset's evaluation split."""
    name, chosen = (
        (data["dataset"], data.get("eval_split")) if isinstance(data, dict) else (data.dataset, data.eval_split)
    )
    return chosen or registry.get("dataset", name).eval_split


_SLICE = re.compile(r"^(?P<split>[^\[\]]+)\[(?P<start>[^:\]]*):(?P<stop>[^:\]]*)\]$")
_BOUND = re.compile(r"^\s*(-?\d+)\s*(%?)\s*$")


def split_examples(dataset: Dataset, name: str, key: str) -> Examples:
    """The examples of split ``name``; ``name[start:stop]`` takes a slice of it in file order, with
    Python slice bounds as example counts or percentages (``train[:60000]``, ``train[90%:]``)."""
    sliced = _SLICE.match(name)
    base = sliced.group("split").strip() if sliced else name
    if base not in dataset.splits:
        known = list(dataset.splits)
        raise DataError(
            f"dataset {dataset.name!r} has no split {base!r}{did_you_mean(base, known)}; splits: {', '.join(known)}",
            key=_spec_key(key),
        )
    examples = dataset.splits[base]
    if not sliced:
        return examples
    bounds = [_slice_bound(sliced.group(part), len(examples), name, key) for part in ("start", "stop")]
    chosen = range(len(examples))[slice(*bounds)]
    if not chosen:
        raise DataError(f"{name!r} selects no examples (split {base!r} has {len(examples)})", key=_spec_key(key))
    return examples.select(chosen)


def _spec_key(key: str) -> str:
    """The spec key of a split setting: keys under ``data`` are given without it, others (``train.select_on``) whole."""
    return key if key.startswith("train.") else f"data.{key}"


def stratified_indices(labels, size: int, seed: int) -> list[int]:
    """``size`` positions of ``labels``, split over the labels in proportion to their counts (largest
    remainder), drawn at random within each label with ``seed``; in increasing order."""
    import numpy as np

    by_label: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_label.setdefault(label, []).append(position)
    total = len(labels)
    exact = {label: size * len(p) / total for label, p in by_label.items()} if total else {}
    quotas = {label: int(x) for label, x in exact.items()}
    for label in sorted(exact, key=lambda label: (-(exact[label] - quotas[label]), label))[
        : size - sum(quotas.values())
    ]:
        quotas[label] += 1  # largest remainder; ties to the smaller label
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(by_label):
        positions = by_label[label]
        chosen += [positions[i] for i in rng.permutation(len(positions))[: quotas[label]]]
    return sorted(chosen)


def _slice_bound(text: str, size: int, name: str, key: str) -> int | None:
    if not text.strip():
        return None
    bound = _BOUND.match(text)
    if bound is None:
        raise DataError(
            f"cannot read the slice in {name!r}: bounds are whole numbers or percentages, e.g. 'train[:5000]' or 'train[90%:]'",
            key=_spec_key(key),
        )
    value = int(bound.group(1))
    return round(size * value / 100) if bound.group(2) else value


def apply_transforms(
    examples: Examples,
    transforms: list[PluginRef],
    registry: Registry,
    ctx: TransformContext,
    kind: str | None,
    where: str,
) -> Examples:
    """Apply ``transforms`` (the list at spec key ``where``) in order; with ``kind`` ('train' or 'eval'),
    only those whose ``on`` covers it. A transform's DataError is re-raised naming its spec key."""
    for index, ref in enumerate(transforms):
        options = ref.options()
        if kind is not None and options.get("on", "train") not in (kind, "both"):
            continue
        plugin = registry.get("transform", ref.name)
        validated = plugin.Options.model_validate({k: v for k, v in options.items() if k != "on"})
        try:
            examples = plugin.apply(examples, validated, ctx)
        except DataError as exc:
            if exc.key is not None:
                raise
            raise DataError(str(exc), key=f"{where}.{index}") from None
    return examples


def prepare_run_data(
    settings: RunSettings | dict, registry: Registry, spec_dir: str | None = None, scores=None
) -> RunData:
    """The training and evaluation examples of one run (its settings, or its config tree), transforms
    applied under the run's seed.

    ``data.transforms`` apply to the training split (``on = "train"``), to every evaluation set
    (``on = "eval"``) or both; an eval set's own ``transforms`` apply to it alone, after those.
    """
    if isinstance(settings, dict):
        settings = RunSettings.of(settings)
    from specrun.core.tasks import task_of

    data, seed = settings.data, settings.seed
    task, _ = task_of(settings, registry)
    dataset = load_dataset(data, registry, spec_dir)
    train = split_examples(dataset, data.train_split, "train_split")
    wrong = task.examples_problem(train)
    if wrong:
        raise DataError(f"dataset {data.dataset!r}: {wrong}", key="data.dataset")

    def _require_classes(examples, dataset, key: str, what: str) -> None:
        task.check_examples(examples, dataset.label_names, what, key)

    _require_classes(train, dataset, "data.train_split", f"split {data.train_split!r}")
    unused = None  # the training split's examples a subsample leaves out
    if data.max_train_examples and data.max_train_examples < len(train):
        import numpy as np  # here: planning reads data without numpy

        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(train), data.max_train_examples, replace=False).tolist())
        taken = set(chosen)
        unused = train.select([i for i in range(len(train)) if i not in taken])
        train = train.select(chosen)
        _require_classes(train, dataset, "data.max_train_examples", f"the subsample of {len(train)} (seed {seed})")
    primary = eval_split_name(data, registry)
    selection_name, selection, info, train = _selection(settings, dataset, train, unused, primary)
    ctx = TransformContext(seed=seed, split="train", label_names=dataset.label_names, scores=scores, spec_dir=spec_dir)
    train = apply_transforms(train, data.transforms, registry, ctx, "train", "data.transforms")
    _require_classes(train, dataset, "data.transforms", f"the training set after its transforms (seed {seed})")

    sets = {primary: (primary, data.max_eval_examples, [])}
    for name, spec in data.eval_sets.items():
        sets[name] = (spec.split or primary, spec.max_examples or data.max_eval_examples, spec.transforms)
    eval_sets = {}
    for name, (split_name, limit, own) in sets.items():
        key = "eval_split" if name == primary else f"eval_sets.{name}.split"
        examples = _limit(split_examples(dataset, split_name, key), limit)
        ectx = TransformContext(
            seed=seed, split=name, label_names=dataset.label_names, scores=scores, spec_dir=spec_dir
        )
        examples = apply_transforms(examples, data.transforms, registry, ectx, "eval", "data.transforms")
        eval_sets[name] = apply_transforms(examples, own, registry, ectx, None, f"data.eval_sets.{name}.transforms")
        if len(eval_sets[name]) == 0:
            raise DataError(f"evaluation set {name!r} is empty after its transforms")
    if selection is not None:  # evaluated like an evaluation set: the eval-side transforms apply
        sctx = TransformContext(
            seed=seed, split=SELECTION_SET, label_names=dataset.label_names, scores=scores, spec_dir=spec_dir
        )
        selection = apply_transforms(selection, data.transforms, registry, sctx, "eval", "data.transforms")
        info["examples"] = len(selection)
    return RunData(
        dataset=dataset,
        train=train,
        eval_sets=eval_sets,
        primary_eval=primary,
        selection_name=selection_name,
        selection=selection,
        selection_info=info,
    )


def _selection(settings: RunSettings, dataset: Dataset, train: Examples, unused: Examples | None, primary: str):
    """What early stopping (or a search's objective: ``train.evaluate_selection``) selects on: (name,
    examples or None, description, the training examples left).

    By default a stratified ``select_fraction`` of the run's training examples (at most
    ``select_max_examples``), drawn with a fixed seed: from the examples a subsample
    (``max_train_examples``) leaves out when they are enough, else held out of the training set."""
    t = settings.train
    if not t.selects():
        return None, None, None, train
    if t.select_on is None and t.allow_selection_on_reported:
        return primary, None, {"source": "reported", "split": primary, "reported": True}, train
    if t.select_on is not None:
        examples = split_examples(dataset, t.select_on, "train.select_on")
        reported = {split_base(primary), *(split_base(s.split or primary) for s in settings.data.eval_sets.values())}
        return (
            SELECTION_SET,
            examples,
            {"source": "split", "split": t.select_on, "reported": split_base(t.select_on) in reported},
            train,
        )
    size = min(t.select_max_examples, max(len(dataset.label_names), round(t.select_fraction * len(train))))
    info = {
        "source": "carved",
        "split": settings.data.train_split,
        "seed": SELECTION_SEED,
        "fraction": t.select_fraction,
        "reported": False,
    }
    if unused is not None and len(unused) >= size:
        info["from"] = "examples the training subsample leaves out"
        return SELECTION_SET, unused.select(stratified_indices(unused.label, size, SELECTION_SEED)), info, train
    if size >= len(train):
        raise DataError(
            f"cannot carve a selection set of {size} examples out of {len(train)} training examples; "
            "set train.select_on to a split the run does not report",
            key="train.select_fraction",
        )
    held = stratified_indices(train.label, size, SELECTION_SEED)
    info["from"] = "held out of the training examples"
    taken = set(held)
    return SELECTION_SET, train.select(held), info, train.select([i for i in range(len(train)) if i not in taken])


def split_base(name: str) -> str:
    """The split a split name or slice reads: ``test`` for ``test[:1000]``."""
    return name.split("[", 1)[0].strip()


def _limit(examples: Examples, n: int | None) -> Examples:
    return examples.select(range(n)) if n and n < len(examples) else examples
