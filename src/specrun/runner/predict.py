"""Loading a stored run's trained model and classifying new texts with it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specrun.datafiles import Rows, json_kind, read_rows
from specrun.errors import DataError, StoreError
from specrun.examples import Examples
from specrun.logs import quiet_libraries
from specrun.plugins import get_registry
from specrun.plugins.registry import Registry
from specrun.runner.artifacts import META, load_weights, read_run
from specrun.runner.batching import Encoded, TokenCache
from specrun.runner.build import build_model
from specrun.runner.modeling import autocast, load_tokenizer, pick_device
from specrun.spec.schema import RunSettings


@dataclass
class TextFile:
    """What ``predict --file`` reads: (text, text_pair) items and, when the file has a label column,
    each item's label as written (a name or an id)."""

    items: list[tuple[str, str | None]]
    labels: list[str] | None
    rows: Rows


def _separator_hint(path: Path, rows) -> str:
    """Why a file's header came out as one column: commas in a file read as TSV, or tabs in a CSV."""
    from specrun.datafiles import infer_format

    if len(rows.columns) != 1:
        return ""
    fmt, header = infer_format(path), rows.columns[0]
    if fmt == "tsv" and "," in header:
        return f" (a {path.suffix or 'file without extension'} file is read as tab-separated: name a comma-separated file .csv)"
    if fmt == "csv" and "\t" in header:
        return " (a .csv file is read as comma-separated: name a tab-separated file .tsv)"
    return ""


def read_texts(path: Path) -> TextFile:
    """A CSV/TSV/JSONL/parquet file with a 'text' column (and optional 'text_pair' and 'label')."""
    rows = read_rows(path)
    if not rows.rows:  # a header and nothing else
        raise DataError(f"{path}: no rows; give a file with a text per row")
    if "text" not in rows.columns:
        raise DataError(f"{path}: needs a 'text' column; columns are {rows.columns}{_separator_hint(path, rows)}")
    items = []
    for n, row in enumerate(rows.rows):
        text = row.get("text")
        if text is None or not str(text).strip():
            raise DataError(f"{rows.where(n)}: the text is empty")
        if isinstance(text, (list, dict, bool)):
            raise DataError(f"{rows.where(n)}: the text is {json_kind(text)}, not a string")
        pair = row.get("text_pair")
        items.append((str(text), str(pair) if pair not in (None, "") else None))
    labels = [str(row.get("label", "")).strip() for row in rows.rows] if "label" in rows.columns else None
    return TextFile(items, labels, rows)


def label_ids(file: TextFile, label_names: tuple[str, ...]) -> list[int]:
    """The file's labels as the run's label ids (names or ids accepted); DataError at the first that is neither."""
    index = {name: i for i, name in enumerate(label_names)}
    ids = []
    for n, raw in enumerate(file.labels or []):
        if raw in index:
            ids.append(index[raw])
        elif raw.lstrip("-").isdigit() and 0 <= int(raw) < len(label_names):
            ids.append(int(raw))
        else:
            raise DataError(f"{file.rows.where(n)}: label {raw!r} is not one of the run's labels {list(label_names)}")
    return ids


def scores(
    predicted: list[str], expected: list[int], label_names: tuple[str, ...], latencies: list[float]
) -> dict[str, float]:
    """accuracy and F1 (as the run's evaluation computes them) and the mean latency in ms."""
    from specrun.runner.evaluate import classification_metrics

    index = {name: i for i, name in enumerate(label_names)}
    metrics = classification_metrics(np.array(expected), np.array([index[p] for p in predicted]), len(label_names))
    return {
        "accuracy": metrics["accuracy"],
        "f1": metrics["f1"],
        "latency_ms_mean": float(np.mean(latencies)) if latencies else 0.0,
    }


@dataclass
class Classified:
    """One text's prediction: its label and that label's probability, every label's probability, and the
    model's latency (tokenized input to probabilities) in ms."""

    text: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    latency_ms: float


@dataclass
class Answered:
    """One question's answer from an extractive-QA run: the span's text, its first character in the
    context (-1: no answer), its score, and the model's latency (all windows, batch size 1) in ms."""

    question: str
    context: str
    answer: str
    start: int
    score: float
    latency_ms: float


@dataclass
class QAFile:
    """What ``predict --file`` reads for a QA run: (question, context) items and, when the file has an
    'answers' column (a JSON list of texts, or one text), each item's reference answers."""

    items: list[tuple[str, str]]
    answers: list[list[str]] | None
    rows: Rows


def read_questions(path: Path) -> QAFile:
    """A CSV/TSV/JSONL/parquet file with 'question' and 'context' columns (and optional 'answers')."""
    import json

    rows = read_rows(path)
    if not rows.rows:
        raise DataError(f"{path}: no rows; give a file with a question and a context per row")
    missing = [c for c in ("question", "context") if c not in rows.columns]
    if missing:
        raise DataError(
            f"{path}: needs 'question' and 'context' columns (missing {', '.join(missing)}); columns are {rows.columns}"
            + _separator_hint(path, rows)
        )
    items, answers = [], []
    for n, row in enumerate(rows.rows):
        question, context = row.get("question"), row.get("context")
        for name, value in (("question", question), ("context", context)):
            if not isinstance(value, str) or not value.strip():
                raise DataError(
                    f"{rows.where(n)}: the {name} is empty"
                    if not value
                    else f"{rows.where(n)}: the {name} is {json_kind(value)}, not a string"
                )
        items.append((question, context))
        if "answers" in rows.columns:
            raw = row.get("answers")
            if isinstance(raw, str) and raw.strip().startswith("["):
                try:
                    raw = json.loads(raw)
                except json.JSONDecodeError:
                    raise DataError(f"{rows.where(n)}: answers is not a JSON list of texts") from None
            texts = raw if isinstance(raw, list) else [raw]
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise DataError(f"{rows.where(n)}: answers must be a non-empty text or a JSON list of texts")
            answers.append(texts)
    return QAFile(items, answers if "answers" in rows.columns else None, rows)


@dataclass
class Predictor:
    model: torch.nn.Module
    cache: TokenCache
    label_names: tuple[str, ...]
    precision: str
    device: torch.device
    #: The run's task plugin and its ``TaskContext`` (None: classification).
    task: object = None
    task_ctx: object = None

    @property
    def task_name(self) -> str:
        return getattr(self.task, "name", "classification")

    @classmethod
    def from_weights(cls, config: dict, weights: Path, registry: Registry | None = None) -> Predictor:
        """The model of a run with ``config`` (its config tree), with its saved ``weights`` (the run's
        folder or weights file, any format) loaded; the label names come from the ``run.json`` beside them."""
        quiet_libraries()
        from specrun.core.tasks import DEFAULT_TASK, task_of
        from specrun.plugins.api import TaskContext

        registry = registry or get_registry()
        saved = read_run(weights)  # StoreError when the weights are not where the store says
        settings = RunSettings.of(config)
        task, options = task_of(settings, registry)
        label_names = tuple(saved.meta.get("label_names") or ())
        if not label_names and task.name == DEFAULT_TASK:
            raise StoreError(f"{saved.folder / META} is missing its label names")
        device = pick_device(settings.train.device)
        model, ctx = build_model(settings, registry, len(label_names), label_names, device)
        load_weights(model, saved.folder)
        model.eval()
        cache = TokenCache(load_tokenizer(ctx.model_path), settings.model.max_length)
        tctx = TaskContext(cache.tokenizer, settings.model.max_length, options, label_names)
        return cls(model, cache, label_names, settings.train.precision, device, task=task, task_ctx=tctx)

    def require_task(self, name: str, what: str) -> None:
        """A DataError when this run's task is not ``name`` (``what``: the request, for the message)."""
        if self.task_name != name:
            raise DataError(f"this run's task is {self.task_name!r}: {what} needs a run of task {name!r}")

    @torch.inference_mode()
    def answer(self, items: list[tuple[str, str]]) -> list[Answered]:
        """Each (question, context) answered on its own: every window of the context at batch size 1,
        then the n-best span post-processing the run's evaluation uses. A question too long for
        ``model.max_length`` is a DataError."""
        from specrun.core.qa import QAExamples

        self.require_task("extractive_qa", "answering questions")
        options = self.task_ctx.options
        out = []
        for number, (question, context) in enumerate(items, start=1):
            examples = QAExamples(("0",), (question,), (context,), ((("", 0),),), ("",))
            features = self.task.encode(examples, self.task_ctx, training=False)
            if not len(features):
                raise DataError(
                    f"question {number} is too long: with it, model.max_length = {self.task_ctx.max_length} tokens leave "
                    f"no more than doc_stride = {options.doc_stride} tokens of context per window"
                )
            t0 = time.perf_counter()
            starts, ends = [], []
            for f in range(len(features)):
                batch = features.collate(np.array([f]), self.device)
                with autocast(self.precision, self.device):
                    output = self.model(**batch)
                starts.append(output.start_logits[0].float().cpu().numpy())
                ends.append(output.end_logits[0].float().cpu().numpy())
            ((text, score, start),) = self.task.best_spans(features, starts, ends, options)
            out.append(Answered(question, context, text, start, score, (time.perf_counter() - t0) * 1000))
        return out

    @torch.inference_mode()
    def classify(self, items: list[tuple[str, str | None]]) -> list[Classified]:
        """Each (text, pair) classified on its own (batch size 1, as the store's latency is measured)."""
        self.require_task("classification", "classifying texts")
        rows = []
        for text, pair in items:
            examples = Examples.from_columns([0], [text], [0], None if pair is None else [pair])
            enc = Encoded.build(examples, self.cache)
            t0 = time.perf_counter()
            batch = enc.collate(np.array([0]), self.device)
            with autocast(self.precision, self.device):
                logits = self.model(**batch).logits.float()
            probs = logits.softmax(-1)[0]
            ms = (time.perf_counter() - t0) * 1000
            k = int(probs.argmax())
            every = dict(zip(self.label_names, (float(p) for p in probs)))
            rows.append(
                Classified(
                    text if pair is None else f"{text} / {pair}", self.label_names[k], float(probs[k]), every, ms
                )
            )
        return rows

    def predict(self, items: list[tuple[str, str | None]]) -> list[tuple[str, str, float, float]]:
        """(text, label, confidence, latency in ms) for each (text, pair), one at a time."""
        return [(c.text, c.label, c.confidence, c.latency_ms) for c in self.classify(items)]
