"""The training loop: AdamW, a scheduler, autocast, length-grouped dynamic batches, periodic evaluation,
early stopping with the best weights restored."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from specrun.runner.data import Encoded, train_batches
from specrun.runner.evaluate import Evaluation, evaluate
from specrun.runner.modeling import autocast, cpu_training_speedups


@dataclass
class MetricRow:
    step: int
    epoch: float
    split: str
    name: str
    value: float


@dataclass
class TrainOutcome:
    rows: list[MetricRow] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    samples_seen: int = 0
    time_to_best: float | None = None
    best_step: int | None = None
    #: The last evaluation of the primary eval set, if it was of the final weights (saves re-evaluating).
    final_eval: Evaluation | None = None


def total_steps(n_examples: int, train: dict) -> int:
    """Optimizer steps for ``epochs`` (or ``max_steps``), never fewer than ``min_steps``."""
    per_epoch = max(1, math.ceil(n_examples / train["batch_size"]))
    steps = train["max_steps"] or math.ceil(train["epochs"] * per_epoch)
    return max(steps, train["min_steps"]) if n_examples else 0


def _optimizer(model: torch.nn.Module, train: dict) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": train["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    try:  # one fused kernel per parameter instead of a dozen ops (the Trainer's default too); same update
        return torch.optim.AdamW(groups, lr=train["learning_rate"], fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, lr=train["learning_rate"])


def _scheduler(optimizer, train: dict, steps: int):
    from transformers import get_scheduler

    warmup = int(train["warmup_ratio"] * steps)
    return get_scheduler(train["scheduler"], optimizer, num_warmup_steps=warmup, num_training_steps=max(steps, 1))


def _better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def train_model(
    model: torch.nn.Module,
    data: Encoded,
    eval_data: Encoded,
    eval_name: str,
    num_labels: int,
    train: dict,
    seed: int,
    device: torch.device,
    on_step=None,
) -> TrainOutcome:
    """Train ``model`` in place; returns the metric history and timings."""
    outcome = TrainOutcome()
    steps = total_steps(len(data), train)
    if steps == 0:
        return outcome
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(model, train)
    scheduler = _scheduler(optimizer, train, steps)
    precision = train["precision"]
    stopping = train.get("early_stopping")
    per_epoch = max(1, math.ceil(len(data) / train["batch_size"]))
    eval_every = per_epoch if train["eval_every"] == "epoch" else int(train["eval_every"])

    best_value, best_state, bad_evals = None, None, 0
    step, running_n = 0, 0
    running_loss = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per step
    running_correct = torch.zeros((), dtype=torch.int64, device=device)
    # CPU: numpy-drawn dropout masks and an attention that uses them (see modeling.cpu_training_speedups)
    with cpu_training_speedups(model, device, seed):
        model.train()
        start = time.perf_counter()
        eval_seconds = 0.0
        while step < steps:
            for index in train_batches(data.lengths, train["batch_size"], rng, train["group_by_length"]):
                batch = data.collate(index, device)
                labels = torch.from_numpy(data.labels[index]).to(device)
                with autocast(precision, device):
                    logits = model(**batch).logits
                loss = F.cross_entropy(logits.float(), labels)
                loss.backward()
                if train["max_grad_norm"]:
                    torch.nn.utils.clip_grad_norm_(params, train["max_grad_norm"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                outcome.samples_seen += len(index)
                running_loss += loss.detach() * len(index)
                running_correct += (logits.detach().argmax(-1) == labels).sum()
                running_n += len(index)
                if on_step:
                    on_step(step, steps)
                last = step >= steps
                if step % eval_every == 0 or last:
                    epoch = step / per_epoch
                    # the training batches since the last evaluation (with dropout on): a running view, not a re-evaluation
                    outcome.rows += [
                        MetricRow(step, epoch, "train", "loss", float(running_loss) / max(running_n, 1)),
                        MetricRow(step, epoch, "train", "accuracy", float(running_correct) / max(running_n, 1)),
                        MetricRow(step, epoch, "train", "learning_rate", float(scheduler.get_last_lr()[0])),
                        MetricRow(step, epoch, "train", "seconds", time.perf_counter() - start - eval_seconds),
                    ]
                    running_loss.zero_()
                    running_correct.zero_()
                    running_n = 0
                    t0 = time.perf_counter()
                    ev = evaluate(model, eval_data, num_labels, train["eval_batch_size"], precision, device)
                    eval_seconds += time.perf_counter() - t0
                    outcome.rows += [MetricRow(step, epoch, eval_name, k, v) for k, v in ev.metrics.items()]
                    outcome.final_eval = ev
                    if stopping:
                        value = ev.metrics.get(stopping["metric"])
                        if value is None:
                            raise ValueError(f"early_stopping.metric {stopping['metric']!r} is not an eval metric; have {sorted(ev.metrics)}")
                        if _better(value, best_value, stopping["mode"]):
                            best_value, bad_evals = value, 0
                            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                            outcome.best_step = step
                            outcome.time_to_best = time.perf_counter() - start - eval_seconds
                        else:
                            bad_evals += 1
                            if bad_evals >= stopping["patience"]:
                                last = True
                    elif outcome.best_step is None or _better(ev.metrics["accuracy"], best_value, "max"):
                        best_value = ev.metrics["accuracy"]
                        outcome.best_step = step
                        outcome.time_to_best = time.perf_counter() - start - eval_seconds
                if last:
                    steps = step
                    break
        outcome.train_seconds = time.perf_counter() - start - eval_seconds
    outcome.steps = step
    if best_state is not None and outcome.best_step != step:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in best_state:
                    param.copy_(best_state[name])
        outcome.final_eval = None
    return outcome
