"""Reading labelled rows from TSV/CSV/JSONL/parquet files into ``Examples`` (shared by dataset sources)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from specrun.errors import DataError
from specrun.examples import Examples

FORMATS = ("csv", "tsv", "jsonl", "parquet")


def infer_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("json", "ndjson"):
        return "jsonl"
    if suffix == "txt":
        return "tsv"
    if suffix not in FORMATS:
        raise DataError(f"{path}: cannot tell the format from the extension; set format to one of {', '.join(FORMATS)}")
    return suffix


def read_rows(path: Path, fmt: str | None = None, header: bool = True, columns: Sequence[str] | None = None) -> list[dict]:
    """All rows of a file as dicts. TSV is read with quoting disabled (GLUE files contain bare quotes)."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    fmt = fmt or infer_format(path)
    try:
        if fmt in ("csv", "tsv"):
            with path.open(encoding="utf-8-sig", newline="") as f:
                if fmt == "tsv":
                    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                else:
                    reader = csv.reader(f)
                rows = list(reader)
            if header:
                names, rows = rows[0], rows[1:]
            else:
                names = list(columns or [])
            return [dict(zip(names, r)) for r in rows if r]
        import polars as pl

        frame = pl.read_ndjson(path) if fmt == "jsonl" else pl.read_parquet(path)
        return frame.to_dicts()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: could not read as {fmt}: {exc}") from exc


def rows_to_examples(
    rows: list[dict],
    *,
    path: Path,
    text_column: str,
    label_column: str,
    label_names: Sequence[str],
    text_pair_column: str | None = None,
    id_column: str | None = None,
) -> Examples:
    """Pick the named columns out of ``rows``; labels may be names or integer ids."""
    if not rows:
        raise DataError(f"{path}: no rows")
    present = list(rows[0])
    for col in (text_column, label_column, text_pair_column, id_column):
        if col is not None and col not in rows[0]:
            raise DataError(f"{path}: no column {col!r}; columns are {present}")
    index = {name: i for i, name in enumerate(label_names)}
    labels = []
    for n, row in enumerate(rows):
        raw = row[label_column]
        key = str(raw).strip()
        if key in index:
            labels.append(index[key])
        elif key.lstrip("-").isdigit() and 0 <= int(key) < len(label_names):
            labels.append(int(key))
        else:
            raise DataError(f"{path}: row {n + 1} has label {raw!r}, not one of {list(label_names)}")
    ids = [row[id_column] for row in rows] if id_column else range(len(rows))
    pairs = [str(row[text_pair_column]) for row in rows] if text_pair_column else None
    return Examples.from_columns(ids, [str(row[text_column]) for row in rows], labels, pairs)
