"""Evaluating a model on tokenized examples: metrics and per-example predictions."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from specrun.runner.batching import Encoded, eval_batches
from specrun.runner.modeling import autocast


@dataclass
class Evaluation:
    """Metrics of one evaluation set and the per-example predictions behind them (in example order)."""

    metrics: dict[str, float]
    prediction: np.ndarray
    confidence: np.ndarray
    loss: np.ndarray
    seconds: float = 0.0


def classification_metrics(labels: np.ndarray, prediction: np.ndarray, num_labels: int) -> dict[str, float]:
    """accuracy; f1 (binary: of class 1, else macro); f1_macro."""
    f1s = []
    for c in range(num_labels):
        tp = np.sum((prediction == c) & (labels == c))
        fp = np.sum((prediction == c) & (labels != c))
        fn = np.sum((prediction != c) & (labels == c))
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    macro = float(np.mean(f1s)) if f1s else 0.0
    return {
        "accuracy": float(np.mean(prediction == labels)) if len(labels) else 0.0,
        "f1": float(f1s[1]) if num_labels == 2 else macro,
        "f1_macro": macro,
    }


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, data: Encoded, num_labels: int, batch_size: int, precision: str, device: torch.device
) -> Evaluation:
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    n = len(data)
    prediction = np.zeros(n, dtype=np.int64)
    confidence = np.zeros(n, dtype=np.float64)
    losses = np.zeros(n, dtype=np.float64)
    for index in eval_batches(data.lengths, batch_size):
        batch = data.collate(index, device)
        with autocast(precision, device):
            logits = model(**batch).logits
        logits = logits.float()
        labels = torch.from_numpy(data.labels[index]).to(device)
        probs = logits.softmax(-1)
        conf, pred = probs.max(-1)
        prediction[index] = pred.cpu().numpy()
        confidence[index] = conf.cpu().numpy()
        losses[index] = F.cross_entropy(logits, labels, reduction="none").cpu().numpy()
    if was_training:
        model.train()
    metrics = classification_metrics(data.labels, prediction, num_labels)
    metrics["loss"] = float(losses.mean()) if n else 0.0
    metrics["n_examples"] = float(n)
    return Evaluation(metrics, prediction, confidence, losses, time.perf_counter() - start)
