"""Built-in ``local`` dataset: your own CSV, TSV, JSONL or parquet files with named columns."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from specrun.errors import DataError
from specrun.examples import Dataset
from specrun.hookspecs import hookimpl
from specrun.plugins.api import DataContext, DatasetSource, PluginOptions
from specrun.plugins.datasets.files import read_rows, rows_to_examples


class LocalOptions(PluginOptions):
    files: dict[str, str] = Field(description="split name -> file path (relative paths are relative to the spec)")
    format: Literal["csv", "tsv", "jsonl", "parquet"] | None = Field(None, description="default: from the extension")
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    id_column: str | None = Field(None, description="default: the row number")
    label_names: list[str] | None = Field(None, description="default: the sorted distinct labels of all splits")


class LocalFiles(DatasetSource):
    name = "local"
    description = "your own labelled CSV/TSV/JSONL/parquet files (data.options: files, columns)"
    Options = LocalOptions

    def load(self, options: LocalOptions, ctx: DataContext) -> Dataset:
        base = Path(ctx.spec_dir) if ctx.spec_dir else Path.cwd()
        paths = {split: (base / p).resolve() if not Path(p).is_absolute() else Path(p) for split, p in options.files.items()}
        rows = {split: read_rows(path, options.format) for split, path in paths.items()}
        label_names = options.label_names
        if label_names is None:
            for split, split_rows in rows.items():
                if split_rows and options.label_column not in split_rows[0]:
                    raise DataError(f"{paths[split]}: no column {options.label_column!r}; columns are {list(split_rows[0])}")
            distinct = {str(r[options.label_column]).strip() for split_rows in rows.values() for r in split_rows}
            label_names = sorted(distinct, key=lambda x: (not x.lstrip("-").isdigit(), int(x) if x.lstrip("-").isdigit() else 0, x))
        splits = {
            split: rows_to_examples(
                split_rows, path=paths[split], text_column=options.text_column, label_column=options.label_column,
                label_names=label_names, text_pair_column=options.text_pair_column, id_column=options.id_column,
            )
            for split, split_rows in rows.items()
        }
        return Dataset("local", tuple(label_names), splits)


@hookimpl
def register_datasets(register):
    register(LocalFiles())
