"""Built-in ``local`` dataset: your own CSV, TSV, JSONL or parquet files with named columns; or, with
``format = "squad"`` (or ``.json`` files), SQuAD v1.1-format JSON files for the ``extractive_qa`` task."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from specrun.datafiles import (
    Rows,
    check_label_kinds,
    check_label_value,
    label_key,
    read_rows,
    require_columns,
    rows_to_examples,
)
from specrun.errors import DataError
from specrun.examples import Dataset
from specrun.hookspecs import hookimpl
from specrun.plugins.api import DataContext, DatasetSource, PluginOptions


class LocalOptions(PluginOptions):
    files: dict[str, str] = Field(description="split name -> file path (relative paths are relative to the spec)")
    format: Literal["csv", "tsv", "jsonl", "parquet", "squad"] | None = Field(
        None, description="default: from the extension ('.json': squad, SQuAD v1.1-format question answering)"
    )
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    id_column: str | None = Field(None, description="default: the row number")
    label_names: list[str] | None = Field(
        None, min_length=2, description="default: the sorted distinct labels of all splits (at least two)"
    )

    @field_validator("label_names")
    @classmethod
    def _distinct(cls, names: list[str] | None) -> list[str] | None:
        # two names for one label id would make a label ambiguous
        repeated = sorted({n for n in names or [] if names.count(n) > 1})
        if repeated:
            raise ValueError(f"label names must be distinct; repeated: {', '.join(repeated)}")
        return names


def _sort_key(label: str):
    """Numeric labels in numeric order, then names alphabetically."""
    numeric = label.lstrip("-").isdigit()
    return (not numeric, int(label) if numeric else 0, label)


def _infer_label_names(rows: dict[str, Rows], column: str) -> list[str]:
    kinds: dict = {}
    for split_rows in rows.values():
        for n, row in enumerate(split_rows.rows):
            check_label_value(split_rows, n, row.get(column), column)
        check_label_kinds(split_rows, column, kinds)
    distinct = {
        label_key(r[column]) for split_rows in rows.values() for r in split_rows.rows if r.get(column) is not None
    }
    distinct.discard("")  # a missing label is reported with its line by rows_to_examples
    if len(distinct) < 2:
        files = ", ".join(str(r.path) for r in rows.values())
        found = f"only the label {next(iter(distinct))!r}" if distinct else "no labels"
        raise DataError(
            f"{files}: column {column!r} holds {found}; a classifier needs two classes or more (or set label_names)"
        )
    return sorted(distinct, key=_sort_key)


class LocalFiles(DatasetSource):
    name = "local"
    description = "your own labelled CSV/TSV/JSONL/parquet files (data.options: files, columns)"
    Options = LocalOptions

    def files(self, options: LocalOptions, ctx: DataContext) -> list[Path]:
        return list(self._paths(options, ctx).values())

    def _paths(self, options: LocalOptions, ctx: DataContext) -> dict[str, Path]:
        base = Path(ctx.spec_dir) if ctx.spec_dir else Path.cwd()
        return {
            split: (base / p).resolve() if not Path(p).is_absolute() else Path(p) for split, p in options.files.items()
        }

    def load(self, options: LocalOptions, ctx: DataContext) -> Dataset:
        paths = self._paths(options, ctx)
        if options.format == "squad" or (
            options.format is None and paths and all(p.suffix == ".json" for p in paths.values())
        ):
            from specrun.core.qa import read_squad, to_examples

            splits = {split: to_examples(read_squad(path)) for split, path in paths.items()}
            return Dataset(
                "local",
                (),
                splits,
                description="SQuAD-format files: " + ", ".join(f"{s}={p.name}" for s, p in paths.items()),
            )
        rows = {split: read_rows(path, options.format) for split, path in paths.items()}
        columns = (options.text_column, options.label_column, options.text_pair_column, options.id_column)
        for split_rows in rows.values():
            require_columns(split_rows, *columns)
        label_names = options.label_names or _infer_label_names(rows, options.label_column)
        splits = {
            split: rows_to_examples(
                split_rows,
                text_column=options.text_column,
                label_column=options.label_column,
                label_names=label_names,
                text_pair_column=options.text_pair_column,
                id_column=options.id_column,
            )
            for split, split_rows in rows.items()
        }
        return Dataset("local", tuple(label_names), splits)


@hookimpl
def register_datasets(register):
    register(LocalFiles())
