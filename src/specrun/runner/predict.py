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


def read_texts(path: Path) -> TextFile:
    """A CSV/TSV/JSONL/parquet file with a 'text' column (and optional 'text_pair' and 'label')."""
    rows = read_rows(path)
    if not rows.rows:  # a header and nothing else
        raise DataError(f"{path}: no rows; give a file with a text per row")
    if "text" not in rows.columns:
        raise DataError(f"{path}: needs a 'text' column; columns are {rows.columns}")
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


def scores(predicted: list[str], expected: list[int], label_names: tuple[str, ...], latencies: list[float]) -> dict[str, float]:
    """accuracy and F1 (as the run's evaluation computes them) and the mean latency in ms."""
    from specrun.runner.evaluate import classification_metrics

    index = {name: i for i, name in enumerate(label_names)}
    metrics = classification_metrics(np.array(expected), np.array([index[p] for p in predicted]), len(label_names))
    return {"accuracy": metrics["accuracy"], "f1": metrics["f1"], "latency_ms_mean": float(np.mean(latencies)) if latencies else 0.0}


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
class Predictor:
    model: torch.nn.Module
    cache: TokenCache
    label_names: tuple[str, ...]
    precision: str
    device: torch.device

    @classmethod
    def from_weights(cls, config: dict, weights: Path, registry: Registry | None = None) -> Predictor:
        """The model of a run with ``config`` (its config tree), with its saved ``weights`` (the run's
        folder or weights file, any format) loaded; the label names come from the ``run.json`` beside them."""
        quiet_libraries()
        saved = read_run(weights)  # StoreError when the weights are not where the store says
        label_names = tuple(saved.meta.get("label_names") or ())
        if not label_names:
            raise StoreError(f"{saved.folder / META} is missing its label names")
        settings = RunSettings.of(config)
        device = pick_device(settings.train.device)
        model, ctx = build_model(settings, registry or get_registry(), len(label_names), label_names, device)
        load_weights(model, saved.folder)
        model.eval()
        cache = TokenCache(load_tokenizer(ctx.model_path), settings.model.max_length)
        return cls(model, cache, label_names, settings.train.precision, device)

    @torch.inference_mode()
    def classify(self, items: list[tuple[str, str | None]]) -> list[Classified]:
        """Each (text, pair) classified on its own (batch size 1, as the store's latency is measured)."""
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
            rows.append(Classified(text if pair is None else f"{text} / {pair}", self.label_names[k], float(probs[k]), every, ms))
        return rows

    def predict(self, items: list[tuple[str, str | None]]) -> list[tuple[str, str, float, float]]:
        """(text, label, confidence, latency in ms) for each (text, pair), one at a time."""
        return [(c.text, c.label, c.confidence, c.latency_ms) for c in self.classify(items)]
