"""Batch files in the app: an uploaded CSV/TSV/JSONL/parquet file classified row by row, scored against
its labels when it has a label column, and written back as a CSV to download.

Files are read as ``specrun predict --file`` reads them (CSV with real quoting, every problem named by
line), with messages naming the file as the user uploaded it rather than the server's copy.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from specrun.errors import DataError

#: Rows the app classifies per file; ``specrun predict RUN --file`` has no limit.
MAX_ROWS = 2000
#: Rows of predictions shown on the page (the download holds them all).
SHOWN_ROWS = 500
EXTENSIONS = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".ndjson", ".parquet")


@dataclass
class Upload:
    """An uploaded file's texts: (text, pair) items, labels as written (None without a label column),
    and the line each row starts on."""

    name: str
    items: list[tuple[str, str | None]]
    labels: list[str] | None
    lines: list[int]
    #: What ``read_texts`` read (a ``runner.predict.TextFile``): its rows name lines in errors.
    source: Any = None
    expected: list[int] | None = None


@dataclass
class FileResult:
    """What running a model over an uploaded file gives: the result table (all rows), its scores when the
    file had references (labels, answers), the latency per row, and the CSV written for download."""

    name: str
    columns: list[str]
    rows: list[list[Any]]
    latency_ms_mean: float
    latency_ms_p95: float
    scores: dict[str, float] | None
    csv_path: Path

    @classmethod
    def written(
        cls,
        name: str,
        columns: list[str],
        rows: list[list[Any]],
        latencies: list[float],
        scores: dict[str, float] | None,
        csv_path: Path,
        **more: Any,
    ) -> Self:
        """The result of a file (``name``: as the user called it), its CSV written to ``csv_path`` first."""
        measured = np.array(latencies)
        return cls(
            name,
            columns,
            rows,
            float(measured.mean()),
            float(np.percentile(measured, 95)),
            scores,
            write_csv(csv_path, columns, rows),
            **more,
        )

    def latency(self) -> str:
        """The rows' latency for the summary line: mean and p95."""
        return f"mean latency {self.latency_ms_mean:.2f} ms, p95 {self.latency_ms_p95:.2f} ms"


@dataclass
class BatchResult(FileResult):
    """What classifying a file gives: predictions, accuracy and F1 when the file had labels."""

    #: (label names, counts[true label][predicted label]) when the file had labels.
    confusion: tuple[tuple[str, ...], list[list[int]]] | None = None

    def summary(self) -> str:
        """One line for the page: rows, and accuracy/F1 with the latency when labelled."""
        if self.scores is None:
            return f"{self.name}: {len(self.rows)} rows classified (no label column: no accuracy); {self.latency()}"
        return (
            f"{self.name}: {len(self.rows)} labelled rows: accuracy {self.scores['accuracy']:.4f}, "
            f"F1 {self.scores['f1']:.4f} (macro F1 {self.scores['f1_macro']:.4f}); {self.latency()}"
        )


def named(exc: DataError, path: Path, name: str) -> DataError:
    """``exc`` with the server's copy of an upload named as the user called it."""
    return DataError(str(exc).replace(str(path), name))


def check_extension(path: Path, name: str) -> None:
    """DataError for an upload whose extension is not one of the files the app reads."""
    if path.suffix.lower() not in EXTENSIONS:
        raise DataError(
            f"{name}: the app reads CSV, TSV, JSONL and parquet files (by their extension: "
            f"{', '.join(EXTENSIONS)}), not {path.suffix or 'a file without an extension'}"
        )


def read_rows(path: Path, name: str | None, reader: Any, max_rows: int, does: str) -> tuple[Any, str, list[int]]:
    """An uploaded file read by ``reader`` (``runner.predict``'s ``read_texts`` or ``read_questions``):
    (what it read, the file's name as the user called it, the line each row starts on). DataError, naming
    the file, for an extension the app does not read, what ``reader`` refuses, more than ``max_rows`` rows
    (``does``: what the app does with at most that many, e.g. "classifies at most 2,000 rows")."""
    path = Path(path)
    name = name or path.name
    check_extension(path, name)
    try:
        found = reader(path)
    except DataError as exc:
        raise named(exc, path, name) from None
    if len(found.items) > max_rows:
        raise DataError(
            f"{name}: {len(found.items):,} rows; the app {does} per file: "
            f"split it, or run `specrun predict RUN --file {name}`, which has no limit"
        )
    lines = [found.rows.lines[i] if i < len(found.rows.lines) else i + 1 for i in range(len(found.items))]
    return found, name, lines


def read_upload(path: Path, name: str | None = None, max_rows: int = MAX_ROWS) -> Upload:
    """The texts of an uploaded file (``name``: as the user called it). DataError, naming the file and
    line, for a file the app cannot classify: wrong extension, not UTF-8, empty, no 'text' column, an
    empty text, a row that does not fit the header, more than ``max_rows`` rows."""
    from specrun.runner.predict import read_texts

    found, name, lines = read_rows(path, name, read_texts, max_rows, f"classifies at most {max_rows:,} rows")
    if not found.items:
        raise DataError(f"{name}: no rows under the header")
    return Upload(name, found.items, found.labels, lines, found)


def expect_labels(upload: Upload, label_names: tuple[str, ...]) -> Upload:
    """``upload`` with its labels as the model's label ids (names or ids accepted); DataError, naming
    the file and line, at the first that is neither."""
    from specrun.runner.predict import label_ids

    if upload.labels is not None:
        try:
            upload.expected = label_ids(upload.source, label_names)
        except DataError as exc:
            raise named(exc, upload.source.rows.path, upload.name) from None
    return upload


def confusion_matrix(expected: list[int], predicted: list[int], n: int) -> list[list[int]]:
    """counts[true][predicted]."""
    counts = np.zeros((n, n), dtype=int)
    for t, p in zip(expected, predicted):
        counts[t, p] += 1
    return counts.tolist()


def classify_upload(predictor: Any, upload: Upload, out_dir: Path, run_id: str) -> BatchResult:
    """Classify every row of ``upload`` (one at a time, as latency is measured) and write the CSV."""
    from specrun.runner.evaluate import classification_metrics

    names = tuple(predictor.label_names)
    results = predictor.classify(upload.items)
    pairs = any(pair is not None for _, pair in upload.items)
    columns = [
        "line",
        "text",
        *(["text_pair"] if pairs else []),
        *(["label"] if upload.labels is not None else []),
        "prediction",
        "confidence",
        *[f"p({n})" for n in names],
        "latency_ms",
    ]
    rows = []
    for i, ((text, pair), found) in enumerate(zip(upload.items, results)):
        rows.append(
            [
                upload.lines[i],
                text,
                *([pair or ""] if pairs else []),
                *([upload.labels[i]] if upload.labels is not None else []),
                found.label,
                round(found.confidence, 4),
                *[round(found.probabilities[n], 4) for n in names],
                round(found.latency_ms, 3),
            ]
        )
    scores = confusion = None
    if upload.expected is not None:
        predicted = [names.index(r.label) for r in results]
        scores = classification_metrics(np.array(upload.expected), np.array(predicted), len(names))
        confusion = (names, confusion_matrix(upload.expected, predicted, len(names)))
    return BatchResult.written(
        upload.name,
        columns,
        rows,
        [r.latency_ms for r in results],
        scores,
        out_dir / f"{Path(upload.name).stem}-predictions-{run_id[:8]}.csv",
        confusion=confusion,
    )


def write_csv(path: Path, columns: list[str], rows: list[list]) -> Path:
    """Write a batch's result table as the CSV the app offers for download; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path
