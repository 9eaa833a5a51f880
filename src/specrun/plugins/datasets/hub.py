"""Built-in ``hub`` datasets: any classification dataset ``datasets`` loads, by name.

``dataset = "hub:OWNER/NAME"`` loads ``OWNER/NAME`` from the Hugging Face hub; ``dataset =
"hub:/path/to/folder"`` (or ``hub:./folder``, relative to the spec) a folder written by
``datasets.Dataset(Dict).save_to_disk``. ``[data.options]`` names the ``config``, the ``text``,
``text_pair`` and ``label`` columns and the ``splits`` to use; label names come from the label column's
``ClassLabel`` feature (else its sorted distinct values). Wrong column names, a label column of floats,
a missing split: located errors listing what the dataset has.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from specrun.errors import DataError
from specrun.examples import Dataset, Examples
from specrun.hookspecs import hookimpl
from specrun.plugins.api import DataContext, DatasetSource, PluginOptions

PREFIX = "hub:"


class HubOptions(PluginOptions):
    config: str | None = Field(None, description="the dataset's configuration (e.g. 'sst2' of nyu-mll/glue)")
    text: str = Field("text", description="the column holding the text")
    text_pair: str | None = Field(None, description="the column holding the second text of a pair")
    label: str = Field("label", description="the label column: a ClassLabel, integers or strings (not floats)")
    splits: list[str] = Field(["train", "test"], min_length=1, description="the splits to load (the first trains)")
    revision: str | None = Field(None, description="a hub revision (branch, tag or commit) to pin")


class HubDataset(DatasetSource):
    """``hub:<name>``: one plugin object per dataset name, made by ``bound``."""

    name = "hub"
    description = "any hub classification dataset (dataset = 'hub:OWNER/NAME') or a save_to_disk folder ('hub:/path'), through datasets"
    Options = HubOptions
    eval_split = "test"

    def __init__(self, target: str | None = None):
        self.target = target
        if target is not None:
            self.name = f"{PREFIX}{target}"

    def bound(self, name: str) -> HubDataset:
        return HubDataset(name[len(PREFIX) :])

    def _folder(self, ctx: DataContext) -> Path | None:
        target = self.target or ""
        if target.startswith(("/", "./", "../", "~")):
            path = Path(target).expanduser()
            return path if path.is_absolute() else (Path(ctx.spec_dir or ".") / path).resolve()
        return None

    def files(self, options: HubOptions, ctx: DataContext) -> list[Path] | None:
        folder = self._folder(ctx)
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder and folder.is_dir() else None

    def load(self, options: HubOptions, ctx: DataContext) -> Dataset:
        if not self.target:
            raise DataError(
                "give the dataset as dataset = 'hub:OWNER/NAME' (or 'hub:/path/to/a/save_to_disk/folder')",
                key="data.dataset",
            )
        loaded = self._load(options, ctx)
        available = sorted(loaded)
        missing = [s for s in options.splits if s not in loaded]
        if missing:
            raise DataError(
                f"{self.name} has no split {', '.join(map(repr, missing))}; its splits are {', '.join(available)}",
                key="data.options.splits",
            )
        first = loaded[options.splits[0]]
        columns = list(first.column_names)
        for key, column in (("text", options.text), ("text_pair", options.text_pair), ("label", options.label)):
            if column is not None and column not in columns:
                raise DataError(
                    f"{self.name} has no column {column!r}; its columns are {', '.join(columns)}",
                    key=f"data.options.{key}",
                )
        label_names = _label_names(self.name, loaded, options)
        index = {n: i for i, n in enumerate(label_names)}
        splits = {}
        for split in options.splits:
            part = loaded[split]
            if _has_class_label(part, options.label):
                labels = list(part[options.label])
                unlabelled = [n for n, y in enumerate(labels) if not 0 <= y < len(label_names)]
                if unlabelled:
                    raise DataError(
                        f"{self.name}, split {split!r}: {len(unlabelled)} rows have no label (e.g. row {unlabelled[0]}: "
                        f"{labels[unlabelled[0]]}); it cannot be trained or evaluated on"
                    )
            else:
                labels = [index[str(v)] for v in part[options.label]]
            texts = part[options.text]
            pairs = part[options.text_pair] if options.text_pair else None
            for n, text in enumerate(texts):
                if not isinstance(text, str) or not text.strip():
                    raise DataError(
                        f"{self.name}, split {split!r}, row {n}: the {options.text!r} value is empty or not a string"
                    )
            splits[split] = Examples.from_columns(range(len(part)), texts, labels, pairs)
        return Dataset(self.name, tuple(label_names), splits)

    def _load(self, options: HubOptions, ctx: DataContext):
        try:
            import datasets
        except ImportError as exc:
            raise DataError(f"{self.name} needs the datasets package ({exc})") from None
        folder = self._folder(ctx)
        try:
            if folder is not None:
                if not folder.is_dir():
                    raise DataError(f"{self.name}: no folder {folder}")
                loaded = datasets.load_from_disk(str(folder))
                if isinstance(loaded, datasets.Dataset):
                    loaded = datasets.DatasetDict({"train": loaded})
            else:
                loaded = datasets.load_dataset(self.target, options.config, revision=options.revision)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"could not load {self.name} ({type(exc).__name__}: {exc})") from None
        return loaded


def _has_class_label(part, column: str) -> bool:
    import datasets

    return isinstance(part.features.get(column), datasets.ClassLabel)


def _label_names(name: str, loaded, options: HubOptions) -> list[str]:
    """The ClassLabel's names; else the sorted distinct values (integers or strings, never floats)."""
    first = loaded[options.splits[0]]
    feature = first.features.get(options.label)
    if _has_class_label(first, options.label):
        return list(feature.names)
    dtype = getattr(feature, "dtype", "?")
    if not (dtype.startswith("int") or dtype in ("string", "large_string", "bool")):
        raise DataError(
            f"{name}: the label column {options.label!r} holds {dtype} values, not classes; "
            f"give a column of class labels, integers or strings (its columns are {', '.join(first.column_names)})",
            key="data.options.label",
        )
    values = sorted(
        {str(v) for split in options.splits for v in loaded[split][options.label]},
        key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v),
    )
    if len(values) < 2:
        raise DataError(
            f"{name}: the label column {options.label!r} holds {len(values)} class; a classifier needs two or more"
        )
    return values


@hookimpl
def register_datasets(register):
    register(HubDataset())
