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


from specrun.version import __version__
from specrun import cache
from specrun.errors import DataError, did_you_mean
from specrun.examples import Dataset, Examples
from specrun.plugins.api import DataContext, TransformContext
from specrun.plugins.registry import Registry
from specrun.spec.schema import DataSpec, PluginRef, RunSettings



@dataclass
class RunData:
    """A run's examples after transforms: the training set and the named evaluation sets."""

    dataset: Dataset
    train: Examples
    eval_sets: dict[str, Examples]
    primary_eval: str


def data_dir() -> str | None:
    return os.environ.get("SPECRUN_DATA_DIR") or None


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, options_json: str, data_dir_: str | None, spec_dir: str | None, registry: Registry) -> Dataset:
    """Loaded once per process; parsed once per set of files for sources that name them (``specrun.cache``)."""
    source = registry.get("dataset", name)
    options = source.Options.model_validate(json.loads(options_json))
    ctx = DataContext(data_dir=data_dir_, spec_dir=spec_dir)
    files = source.files(options, ctx)
    signature = cache.file_signature(files) if files else None
    key = {"dataset": name, "version": registry.code_version("dataset", name), "specrun": __version__,
           "options": options_json, "files": signature}
    if signature is not None:
        dataset = cache.get("datasets", key)
        if isinstance(dataset, Dataset):
            return dataset
    dataset = source.load(options, ctx)
    if not dataset.splits:
        raise DataError(f"dataset {name!r} has no splits")
    if signature is not None and signature == cache.file_signature(files):  # unchanged while it was read
        for examples in dataset.splits.values():
            examples.fingerprint  # computed once, kept with the entry
        cache.put("datasets", key, dataset)
    return dataset


def load_dataset(data: dict | DataSpec, registry: Registry, spec_dir: str | None = None) -> Dataset:
    """The dataset ``data`` (a run's ``data`` section, typed or as a tree) names, loaded once per process."""
    name, options = (data["dataset"], data["options"]) if isinstance(data, dict) else (data.dataset, data.options)
    return _load_cached(name, json.dumps(options, sort_keys=True), data_dir(), spec_dir, registry)


def eval_split_name(data: dict | DataSpec, registry: Registry) -> str:
    """The run's primary evaluation split: ``data.eval_split``, else its dataset's evaluation split."""
    name, chosen = (data["dataset"], data.get("eval_split")) if isinstance(data, dict) else (data.dataset, data.eval_split)
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
        raise DataError(f"dataset {dataset.name!r} has no split {base!r}{did_you_mean(base, known)}; splits: {', '.join(known)}", key=f"data.{key}")
    examples = dataset.splits[base]
    if not sliced:
        return examples
    bounds = [_slice_bound(sliced.group(part), len(examples), name, key) for part in ("start", "stop")]
    chosen = range(len(examples))[slice(*bounds)]
    if not chosen:
        raise DataError(f"{name!r} selects no examples (split {base!r} has {len(examples)})", key=f"data.{key}")
    return examples.select(chosen)


def _slice_bound(text: str, size: int, name: str, key: str) -> int | None:
    if not text.strip():
        return None
    bound = _BOUND.match(text)
    if bound is None:
        raise DataError(f"cannot read the slice in {name!r}: bounds are whole numbers or percentages, e.g. 'train[:5000]' or 'train[90%:]'", key=f"data.{key}")
    value = int(bound.group(1))
    return round(size * value / 100) if bound.group(2) else value


def apply_transforms(
    examples: Examples, transforms: list[PluginRef], registry: Registry, ctx: TransformContext, kind: str | None, where: str
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


def prepare_run_data(settings: RunSettings | dict, registry: Registry, spec_dir: str | None = None, scores=None) -> RunData:
    """The training and evaluation examples of one run (its settings, or its config tree), transforms
    applied under the run's seed.

    ``data.transforms`` apply to the training split (``on = "train"``), to every evaluation set
    (``on = "eval"``) or both; an eval set's own ``transforms`` apply to it alone, after those.
    """
    if isinstance(settings, dict):
        settings = RunSettings.of(settings)
    data, seed = settings.data, settings.seed
    dataset = load_dataset(data, registry, spec_dir)
    train = split_examples(dataset, data.train_split, "train_split")
    _require_classes(train, dataset, "data.train_split", f"split {data.train_split!r}")
    if data.max_train_examples and data.max_train_examples < len(train):
        import numpy as np  # here: planning reads data without numpy

        rng = np.random.default_rng(seed)
        train = train.select(sorted(rng.choice(len(train), data.max_train_examples, replace=False).tolist()))
        _require_classes(train, dataset, "data.max_train_examples", f"the subsample of {len(train)} (seed {seed})")
    ctx = TransformContext(seed=seed, split="train", label_names=dataset.label_names, scores=scores, spec_dir=spec_dir)
    train = apply_transforms(train, data.transforms, registry, ctx, "train", "data.transforms")
    _require_classes(train, dataset, "data.transforms", f"the training set after its transforms (seed {seed})")

    primary = eval_split_name(data, registry)
    sets = {primary: (primary, data.max_eval_examples, [])}
    for name, spec in data.eval_sets.items():
        sets[name] = (spec.split or primary, spec.max_examples or data.max_eval_examples, spec.transforms)
    eval_sets = {}
    for name, (split_name, limit, own) in sets.items():
        key = "eval_split" if name == primary else f"eval_sets.{name}.split"
        examples = _limit(split_examples(dataset, split_name, key), limit)
        ectx = TransformContext(seed=seed, split=name, label_names=dataset.label_names, scores=scores, spec_dir=spec_dir)
        examples = apply_transforms(examples, data.transforms, registry, ectx, "eval", "data.transforms")
        eval_sets[name] = apply_transforms(examples, own, registry, ectx, None, f"data.eval_sets.{name}.transforms")
        if len(eval_sets[name]) == 0:
            raise DataError(f"evaluation set {name!r} is empty after its transforms")
    return RunData(dataset=dataset, train=train, eval_sets=eval_sets, primary_eval=primary)


def _require_classes(train: Examples, dataset: Dataset, key: str, what: str) -> None:
    """A training set with a single class teaches nothing but that class: refuse it (an empty one is
    allowed, see ``TransformPlugin``)."""
    present = set(train.label)
    if len(present) == 1:
        (label,) = present
        raise DataError(
            f"{what} holds only the class {dataset.label_names[label]!r} ({len(train)} examples); "
            "a classifier needs examples of two classes or more",
            key=key,
        )


def _limit(examples: Examples, n: int | None) -> Examples:
    return examples.select(range(n)) if n and n < len(examples) else examples
