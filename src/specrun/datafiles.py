"""Reading labelled rows from TSV/CSV/JSONL/parquet files into ``Examples`` (shared by the dataset sources and ``predict``).

Every problem names the file and the line (or, for parquet, the row) it is on: a row that does not fit
the header, a quote that never closes, a null or empty text, a label outside the label names.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from specrun.errors import DataError
from specrun.examples import Examples

FORMATS = ("csv", "tsv", "jsonl", "parquet")


@dataclass
class Rows:
    """A file's rows as dicts by column name, with the line each row starts on (0 for parquet)."""

    path: Path
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, index: int) -> str:
        """``file:line`` of row ``index`` (``file: row N`` for formats without lines)."""
        line = self.lines[index] if index < len(self.lines) else 0
        return f"{self.path}:{line}" if line else f"{self.path}: row {index + 1}"


def infer_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("json", "ndjson"):
        return "jsonl"
    if suffix == "txt":
        return "tsv"
    if suffix not in FORMATS:
        raise DataError(f"{path}: cannot tell the format from the extension; set format to one of {', '.join(FORMATS)}")
    return suffix


def read_rows(path: Path, fmt: str | None = None, header: bool = True, columns: Sequence[str] | None = None) -> Rows:
    """All rows of a file. TSV is read with quoting disabled (GLUE files contain bare quotes); CSV with
    the standard dialect (double quotes around fields that hold commas, quotes or newlines)."""
    if path.is_dir():
        raise DataError(f"data file {path} is a folder; give the path of a file in it")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    fmt = fmt or infer_format(path)
    if fmt == "parquet":
        return _read_parquet(path)
    text = _decode(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    return _read_delimited(path, text, fmt, header, columns)


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:  # no permission to read it, an I/O error
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark at the start is not part of the first column's name
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        ) from None


#: The csv module refuses fields over 128 KiB by default; a long document is a valid text (the tokenizer truncates it).
_FIELD_LIMIT = 2**31 - 1


def _read_delimited(path: Path, text: str, fmt: str, header: bool, columns: Sequence[str] | None) -> Rows:
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
        hint = "a text holding a tab breaks a TSV row"
    else:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        hint = 'a text holding a comma must be in double quotes ("like, this")'
    records: list[tuple[int, list[str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "end of data" in str(exc):
                raise DataError(
                    f"{path}:{start}: a quoted field opens in the row starting here and never closes; "
                    "close the quote or double the quote characters inside the text"
                ) from None
            raise DataError(f"{path}:{start}: cannot read as {fmt}: {exc}") from None
        if record:  # blank lines
            records.append((start, record))
    names = list(records[0][1]) if header else list(columns or [])
    if header:
        records = records[1:]
    _check_names(path, names)
    rows = Rows(path, names)
    for line, record in records:
        if len(record) != len(names):
            raise DataError(
                f"{path}:{line}: {len(record)} field(s), but the header has {len(names)} ({', '.join(names)}); {hint}"
            )
        rows.rows.append(dict(zip(names, record)))
        rows.lines.append(line)
    return rows


def _check_names(path: Path, names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}:1: the header names column {name!r} twice")
        seen.add(name)


def _read_jsonl(path: Path, text: str) -> Rows:
    rows = Rows(path, [])
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(value, dict):
            raise DataError(f"{path}:{number}: expected one JSON object per line, found {type(value).__name__}")
        rows.rows.append(value)
        rows.lines.append(number)
        for name in value:
            if name not in rows.columns:
                rows.columns.append(name)
    return rows


def _read_parquet(path: Path) -> Rows:
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for a file that is not parquet
        raise DataError(f"{path}: could not read as parquet: {type(exc).__name__}: {exc}") from None
    return Rows(path, list(frame.columns), frame.to_dicts())


def rows_to_examples(
    rows: Rows,
    *,
    text_column: str,
    label_column: str,
    label_names: Sequence[str],
    text_pair_column: str | None = None,
    id_column: str | None = None,
) -> Examples:
    """Pick the named columns out of ``rows``; labels may be names or integer ids. Refuses rows a
    classifier cannot learn from honestly: a null or empty text, a missing label or one outside
    ``label_names``."""
    require_columns(rows, text_column, label_column, text_pair_column, id_column)
    index = {name: i for i, name in enumerate(label_names)}
    labels, texts, pairs = [], [], []
    for n, row in enumerate(rows.rows):
        texts.append(_text(rows, n, row, text_column))
        if text_pair_column:
            pairs.append(_text(rows, n, row, text_pair_column))
        labels.append(_label(rows, n, row.get(label_column), label_column, index, label_names))
    ids = [row.get(id_column) for row in rows.rows] if id_column else range(len(rows.rows))
    return Examples.from_columns(ids, texts, labels, pairs if text_pair_column else None)


def require_columns(rows: Rows, *columns: str | None) -> None:
    """Refuse a file without rows or without one of ``columns`` (None entries are skipped)."""
    if not rows.rows:
        raise DataError(f"{rows.path}: no rows")
    for col in columns:
        if col is not None and col not in rows.columns:
            raise DataError(f"{rows.path}: no column {col!r}; columns are {rows.columns}")


def _text(rows: Rows, n: int, row: dict, column: str) -> str:
    value = row.get(column)
    if value is None:
        raise DataError(f"{rows.where(n)}: {column!r} is null (or missing); every example needs a text")
    if isinstance(value, (list, dict, bool)):  # str() would make "['a', 'b']" or "True" the text
        raise DataError(f"{rows.where(n)}: {column!r} is {json_kind(value)}, not a text")
    text = str(value)
    if not text.strip():
        raise DataError(f"{rows.where(n)}: {column!r} is empty; every example needs a text")
    return text


def json_kind(value) -> str:
    return {list: "a JSON list", dict: "a JSON object", bool: f"the JSON {str(value).lower()}"}.get(
        type(value), type(value).__name__
    )


def check_label_value(rows: Rows, n: int, raw, column: str) -> None:
    """A label is a name or an id: a JSON list or object is neither (its str() would become a class of its
    own), nor is a JSON true/false or a fractional number (``1.5`` next to ``0`` and ``1`` would make a
    third class)."""
    if isinstance(raw, (list, dict)):
        raise DataError(
            f"{rows.where(n)}: the label in column {column!r} is {json_kind(raw)}; a label is a name or an integer id"
        )
    if isinstance(raw, bool):
        raise DataError(
            f"{rows.where(n)}: the label in column {column!r} is the JSON {str(raw).lower()}; a label is a name or an "
            f'integer id (write "{str(raw).lower()}" in quotes to use it as a name)'
        )
    if isinstance(raw, float) and not (math.isfinite(raw) and raw.is_integer()):
        raise DataError(
            f"{rows.where(n)}: the label in column {column!r} is the number {raw!r}; a label is a name or an integer id"
        )


def label_key(raw) -> str:
    """A label as text: ``1.0`` (a whole number read as a float) is the id ``1``."""
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return str(int(raw))
    return "" if raw is None else str(raw).strip()


def check_label_kinds(rows: Rows, column: str, kinds: dict[str, tuple[Rows, int]]) -> None:
    """Typed labels (JSON, parquet) of one column are all integer ids or all names: ``0``/``1`` next to
    ``"pos"`` would become three classes. ``kinds`` collects the first row of each kind across splits."""
    for n, row in enumerate(rows.rows):
        raw = row.get(column)
        if raw is None or isinstance(raw, (list, dict, bool)):
            continue
        kind = (
            "integer id"
            if isinstance(raw, (int, float))
            else ("name" if not label_key(raw).lstrip("-").isdigit() else None)
        )
        if kind is None or kind in kinds:
            continue
        kinds[kind] = (rows, n)
        if len(kinds) > 1:
            first_rows, first = kinds["integer id" if kind == "name" else "name"]
            raise DataError(
                f"{rows.where(n)}: the label in column {column!r} is {'the name' if kind == 'name' else 'the integer id'} {raw!r}, but "
                f"{first_rows.where(first)} has {'an integer id' if kind == 'name' else 'a name'}: labels of one column are all "
                "integer ids or all names (mixing them makes extra classes)"
            )


def _label(rows: Rows, n: int, raw, column: str, index: dict[str, int], label_names: Sequence[str]) -> int:
    check_label_value(rows, n, raw, column)
    key = label_key(raw)
    if key in index:
        return index[key]
    if key.lstrip("-").isdigit() and 0 <= int(key) < len(label_names):
        return int(key)
    what = "no label" if raw is None or not key else f"label {raw!r}"
    raise DataError(f"{rows.where(n)}: {what} in column {column!r}, not one of {list(label_names)}")
