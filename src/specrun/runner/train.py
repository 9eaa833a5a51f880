"""The training loop: AdamW, a scheduler, autocast, length-grouped dynamic batches, periodic evaluation,
early stopping with the best weights restored, and checkpoints to resume from."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from specrun.core.task import MetricRow, StopRun
from specrun.core.tasks import headline_metric
from specrun.errors import TrainingError
from specrun.runner.batching import Encoded, train_batches
from specrun.runner.checkpoint import Checkpoints, restore_rngs, rng_states, rng_tensors
from specrun.runner.cpu_speedups import cpu_training_speedups
from specrun.runner.modeling import synchronize
from specrun.spec.schema import TrainSpec

log = logging.getLogger("specrun.train")


@dataclass
class TrainOutcome:
    rows: list[MetricRow] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    samples_seen: int = 0
    time_to_best: float | None = None
    best_step: int | None = None
    #: The last evaluation of the primary eval set, if it was of the final weights (saves re-evaluating):
    #: a ``TaskEvaluation`` of the run's task.
    final_eval: Any = None
    #: The step a checkpoint let this run resume from (None: trained from the start).
    resumed_from: int | None = None
    #: Optimizer steps skipped because the fp16 gradient scaler found inf/NaN gradients (0 otherwise).
    skipped_steps: int = 0
    #: The step whose weights the model ends with: the last, or the best one early stopping restored.
    weights_step: int = 0


@dataclass
class StepReport:
    """Where training is after an optimizer step, for progress displays. The loss stays on the device:
    reading it waits for the device, so a display reads it (``loss_since``) only when it shows it."""

    step: int
    total: int
    samples: int  # training examples seen so far (with earlier attempts, when resumed)
    train_seconds: float  # time spent training so far, evaluations excluded
    learning_rate: float
    loss_sum: torch.Tensor  # summed over the examples since the last evaluation (zeroed by the next one)
    loss_count: int
    evaluations: int = 0  # evaluations so far in this process: each starts a new ``loss_sum``

    def loss_since(self, earlier: tuple | None) -> tuple[float | None, tuple]:
        """The mean training loss since ``earlier`` (a mark this returned before), or since the last
        evaluation if there was one in between; and the mark to pass next time. Call it before the loop
        goes on (the sum is updated in place)."""
        total, n = float(self.loss_sum), self.loss_count
        mark = (total, n, self.evaluations)
        if earlier is not None and earlier[2] == self.evaluations and n > earlier[1]:
            return (total - earlier[0]) / (n - earlier[1]), mark
        return (total / n if n else None), mark


def total_steps(n_examples: int, train: TrainSpec) -> int:
    """Optimizer steps for ``epochs`` (or ``max_steps``), never fewer than ``min_steps``."""
    per_epoch = max(1, math.ceil(n_examples / train.batch_size))
    steps = train.max_steps or math.ceil(train.epochs * per_epoch)
    return max(steps, train.min_steps) if n_examples else 0


def _optimizer(model: torch.nn.Module, train: TrainSpec) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    try:  # one fused kernel per parameter instead of a dozen ops (the Trainer's default too); same update
        return torch.optim.AdamW(groups, lr=train.learning_rate, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, lr=train.learning_rate)


def _scheduler(optimizer, train: TrainSpec, steps: int):
    """The learning-rate schedule ``train.scheduler`` names, with its warm-up: every schedule warms up
    linearly over ``warmup_ratio`` of the steps, then holds (constant) or decays to 0 (linear, cosine,
    polynomial with ``power``)."""
    from transformers import get_scheduler

    warmup = int(train.warmup_ratio * steps)
    name, options = train.scheduler, {}
    if name == "constant" and warmup:  # transformers' "constant" takes no warm-up steps: its warm-up variant does
        name = "constant_with_warmup"
    elif name == "polynomial":
        options = {"power": train.power or 1.0, "lr_end": 0.0}
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup, num_training_steps=max(steps, 1), scheduler_specific_kwargs=options
    )


def gradient_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16 trains with loss scaling (a disabled scaler, a no-op, for bf16 and fp32): the loss is
    multiplied before ``backward`` so that small gradients do not underflow to zero in fp16, the
    gradients are unscaled before clipping and the update, and a step whose gradients hold inf or NaN
    is skipped and the scale lowered, as ``torch.amp`` and the Trainer do."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def _better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def train_model(
    model: torch.nn.Module,
    data: Encoded,
    eval_data: Encoded,
    eval_name: str,
    num_labels: int,
    train: TrainSpec | dict,
    seed: int,
    device: torch.device,
    on_step: Callable[[StepReport], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    checkpoints: Checkpoints | None = None,
    on_metrics: Callable[[str, int, list[MetricRow]], None] | None = None,
    track_every: int = 0,
    selection: tuple[str, Encoded | None] | None = None,
    task: Any = None,
    task_ctx: Any = None,
) -> TrainOutcome:
    """Train ``model`` in place (``train``: the run's train settings, or that section of its config
    tree); returns the metric history and timings. With ``checkpoints``, resumes from the last one saved
    for this run (if it fits) and saves new ones as they fall due. ``selection`` is what early stopping
    evaluates: (name, examples) of a set of its own, or (``eval_name``, None) to select on the primary
    evaluation set; without it, early stopping (if any) selects on the primary set. ``on_metrics(event,
    step, rows)`` hears the run live: event 'window' every ``track_every`` optimizer steps (the training
    loss over the window and the learning rate), 'evaluation' after each evaluation (its rows, as
    recorded); neither when ``track_every`` is 0. ``task`` (a ``TaskPlugin``) and
    ``task_ctx`` (its ``TaskContext``) compute the loss and evaluate; by default classification with
    ``num_labels`` labels, on ``data`` and ``eval_data`` as ``Encoded``."""
    if isinstance(train, dict):
        train = TrainSpec.model_validate(train)
    if task is None:
        task, task_ctx = default_task(num_labels)
    loop = _Loop(model, data, eval_data, eval_name, num_labels, train, seed, device, on_step, on_phase)
    loop.task, loop.task_ctx = task, task_ctx
    if selection is not None and selection[1] is not None:
        loop.select_name, loop.select_data = selection
    if on_metrics and track_every:
        loop.on_metrics, loop.track_every = on_metrics, track_every
    if loop.steps:
        try:
            loop.run(checkpoints)
        except StopRun as stop:  # a pruner stopped it after an evaluation: what it has so far goes with it
            stop.rows, stop.step, stop.train_seconds = list(loop.outcome.rows), loop.step, loop.elapsed()
            raise
    return loop.outcome


def default_task(num_labels: int):
    """The classification task and a context for ``num_labels`` labels (callers that pass ``Encoded``)."""
    from specrun.core.tasks import DEFAULT_TASK
    from specrun.plugins import get_registry
    from specrun.plugins.api import NoOptions, TaskContext

    task = get_registry().get("task", DEFAULT_TASK)
    return task, TaskContext(None, 0, NoOptions(), tuple(str(i) for i in range(num_labels)))


class _Loop:
    """One run's training. Its state lives on the instance so that a checkpoint saves and restores it whole."""

    def __init__(self, model, data, eval_data, eval_name, num_labels, train, seed, device, on_step, on_phase):
        self.model, self.data, self.eval_data, self.eval_name = model, data, eval_data, eval_name
        self.num_labels, self.train, self.seed, self.device = num_labels, train, seed, device
        self.on_step, self.phase = on_step, on_phase or (lambda name: None)
        self.outcome = TrainOutcome()
        self.steps = total_steps(len(data), train)
        self.rng = np.random.default_rng(seed)
        self.dropout_rng: np.random.Generator | None = None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = _optimizer(model, train)
        self.scheduler = _scheduler(self.optimizer, train, self.steps)
        self.scaler = gradient_scaler(train.precision, device)
        self.stopping = train.early_stopping
        self.per_epoch = max(1, math.ceil(len(data) / train.batch_size))
        self.eval_every = self.per_epoch if train.eval_every == "epoch" else int(train.eval_every)
        # what a checkpoint restores besides the model, optimizer, scheduler and random generators
        self.step = 0
        self.epoch_rng: dict | None = None  # the data-order generator's state before it drew this epoch's batches
        self.batch_in_epoch = 0  # batches of this epoch already trained on
        self.best_value: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_evals = 0
        self.running_loss = torch.zeros(
            (), dtype=torch.float64, device=device
        )  # summed on the device: no sync per step
        self.running_correct = torch.zeros((), dtype=torch.int64, device=device)
        self.running_n = 0
        self.trained_before = 0.0  # training seconds of the attempts before a resume
        self.evaluations = 0
        self.start = self.eval_seconds = 0.0
        self.select_name: str | None = None  # a selection set of its own (else early stopping reads the primary set)
        self.select_data: Encoded | None = None
        self.on_metrics, self.track_every = None, 0  # live tracking (train_model sets them)
        self.window_mark: tuple | None = None

    def run(self, checkpoints: Checkpoints | None) -> None:
        # CPU: numpy-drawn dropout masks and an attention that uses them (see modeling.cpu_training_speedups)
        with cpu_training_speedups(self.model, self.device, self.seed) as self.dropout_rng:
            resumed = checkpoints is not None and self.resume(checkpoints)
            self.model.train()
            self.phase("training")
            self.start, self.eval_seconds = time.perf_counter() - self.trained_before, 0.0
            if checkpoints is not None:
                checkpoints.last = time.perf_counter()
            while self.step < self.steps:
                if resumed:  # the epoch the checkpoint was in: the same batches, those already trained skipped
                    self.rng.bit_generator.state = self.epoch_rng
                    skip, resumed = self.batch_in_epoch, False
                else:
                    self.epoch_rng, skip = self.rng.bit_generator.state, 0
                batches = train_batches(self.data.lengths, self.train.batch_size, self.rng, self.train.group_by_length)
                for position in range(skip, len(batches)):
                    self.batch_in_epoch = position + 1
                    if self.train_step(batches[position]):
                        self.steps = self.step
                        break
                    if checkpoints is not None and checkpoints.enabled and checkpoints.due(self.step):
                        self.phase("saving checkpoint")
                        checkpoints.save(*self.state())
                        self.phase("training")
            self.outcome.train_seconds = self.elapsed()
        self.outcome.steps = self.outcome.weights_step = self.step
        if self.best_state is not None and self.outcome.best_step != self.step:
            self.outcome.weights_step = self.outcome.best_step
            with torch.no_grad():
                for name, param in self.model.named_parameters():
                    if name in self.best_state:
                        param.copy_(self.best_state[name])
            self.outcome.final_eval = None

    def elapsed(self, sync: bool = True) -> float:
        """Seconds spent training (earlier attempts included), evaluations excluded. On a GPU, waits for
        the work queued so far first (``sync``): kernels run asynchronously, and a clock read without
        waiting would miss the ones still queued. Progress reports pass ``sync=False`` (an estimate that
        costs no wait per step)."""
        if sync:
            synchronize(self.device)
        return time.perf_counter() - self.start - self.eval_seconds

    def train_step(self, index: np.ndarray) -> bool:
        """One optimizer step on the batch ``index`` (and an evaluation when one is due); returns whether
        training is over."""
        batch = self.data.collate(index, self.device)
        loss, right = self.task.loss(
            self.model, self.data, index, batch, self.task_ctx, self.train.precision, self.device
        )
        if self.scaler.is_enabled():
            self.scaled_step(loss)
        else:
            loss.backward()
            if self.train.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.outcome.samples_seen += len(index)
        self.running_loss += loss.detach() * len(index)
        self.running_correct += right
        self.running_n += len(index)
        if self.on_step:
            self.on_step(
                StepReport(
                    self.step,
                    self.steps,
                    self.outcome.samples_seen,
                    self.elapsed(sync=False),
                    self.scheduler.get_last_lr()[0],
                    self.running_loss,
                    self.running_n,
                    self.evaluations,
                )
            )
        if self.track_every and self.step % self.track_every == 0:
            self.window()
        last = self.step >= self.steps
        if self.step % self.eval_every == 0 or last:
            last = self.evaluate() or last
            if not last:
                self.phase("training")
        return last

    def scaled_step(self, loss: torch.Tensor) -> None:
        """fp16: backward on the scaled loss, unscale, clip, and step unless the gradients hold inf/NaN
        (then the scaler lowers its scale, the step is skipped and counted, and so is the scheduler's:
        the learning rate follows the updates made). Reading the scale waits for the device once a step."""
        scaler = self.scaler
        scaler.scale(loss).backward()
        scaler.unscale_(self.optimizer)
        if self.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
        before = scaler.get_scale()
        scaler.step(self.optimizer)
        scaler.update()
        if scaler.get_scale() < before:  # the scaler found inf/NaN gradients: the optimizer did not step
            self.outcome.skipped_steps += 1
        else:
            self.scheduler.step()

    def window(self) -> None:
        """Live tracking: the mean training loss since the last window (or evaluation) and the learning rate."""
        total, n = float(self.running_loss), self.running_n
        mark, self.window_mark = self.window_mark, (total, n, self.evaluations)
        if mark is not None and mark[2] == self.evaluations and n > mark[1]:
            total, n = total - mark[0], n - mark[1]
        epoch = self.step / self.per_epoch
        rows = [MetricRow(self.step, epoch, "train", "learning_rate", float(self.scheduler.get_last_lr()[0]))]
        if n:
            rows.insert(0, MetricRow(self.step, epoch, "train", "loss", total / n))
        self.on_metrics("window", self.step, rows)

    def evaluate(self) -> bool:
        """Record the training view since the last evaluation and evaluate the primary eval set; returns
        whether early stopping ends training."""
        step, outcome = self.step, self.outcome
        epoch = step / self.per_epoch
        self.phase(f"evaluating {self.eval_name}")  # before the running sums restart: a display may read them
        train_loss = float(self.running_loss) / max(self.running_n, 1)
        if not math.isfinite(train_loss):  # a run that diverged would be recorded with a meaningless accuracy
            raise TrainingError(
                f"training diverged: the training loss is {train_loss} at step {step} of {self.steps}; "
                "lower train.learning_rate (or the method's scaling options, e.g. lora alpha), or use precision fp32"
            )
        # the training batches since the last evaluation (with dropout on): a running view, not a re-evaluation
        outcome.rows += [
            MetricRow(step, epoch, "train", "loss", train_loss),
            MetricRow(
                step, epoch, "train", self.task.train_metric, float(self.running_correct) / max(self.running_n, 1)
            ),
            MetricRow(step, epoch, "train", "learning_rate", float(self.scheduler.get_last_lr()[0])),
            MetricRow(step, epoch, "train", "seconds", self.elapsed()),
        ]
        self.running_loss.zero_()
        self.running_correct.zero_()
        self.running_n = 0
        self.evaluations += 1
        t0 = time.perf_counter()
        ev = self.task.evaluate(
            self.model, self.eval_data, self.task_ctx, self.train.eval_batch_size, self.train.precision, self.device
        )
        self.eval_seconds += time.perf_counter() - t0  # evaluate reads its results back: the device is done
        outcome.rows += [MetricRow(step, epoch, self.eval_name, k, v) for k, v in ev.metrics.items()]
        outcome.final_eval = ev
        if self.select_data is not None:  # selection reads its own set, never the reported one
            t0 = time.perf_counter()
            ev = self.task.evaluate(
                self.model,
                self.select_data,
                self.task_ctx,
                self.train.eval_batch_size,
                self.train.precision,
                self.device,
            )
            self.eval_seconds += time.perf_counter() - t0
            outcome.rows += [MetricRow(step, epoch, self.select_name, k, v) for k, v in ev.metrics.items()]
        if self.on_metrics:
            try:
                self.on_metrics("evaluation", step, [r for r in outcome.rows if r.step == step])
            except StopRun:
                if step < self.steps:
                    raise
                # the final evaluation: stopping here saves nothing, the run completes (a pruner stops runs early)
        if not self.stopping:  # nothing picks weights: the best step of the primary set, for time to best
            headline = headline_metric(self.task)
            metrics = outcome.final_eval.metrics
            if outcome.best_step is None or _better(metrics[headline], self.best_value, "max"):
                self.best_value = metrics[headline]
                outcome.best_step, outcome.time_to_best = step, self.elapsed()
            return False
        value = ev.metrics.get(self.stopping.metric)
        if value is None:
            raise ValueError(
                f"early_stopping.metric {self.stopping.metric!r} is not an eval metric; have {sorted(ev.metrics)}"
            )
        if _better(value, self.best_value, self.stopping.mode):
            self.best_value, self.bad_evals = value, 0
            self.best_state = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
            outcome.best_step, outcome.time_to_best = step, self.elapsed()
            return False
        self.bad_evals += 1
        return self.bad_evals >= self.stopping.patience

    # --- checkpoints ---------------------------------------------------------------------------------

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def state(self) -> tuple[dict, dict]:
        """(tensors, plain values) that ``restore`` needs to go on from this step exactly."""

        def cpu(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu", copy=True)

        tensors = {
            "weights": {n: cpu(p) for n, p in self.trainable().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_state": {n: cpu(t) for n, t in self.best_state.items()} if self.best_state is not None else None,
            "running": {"loss": cpu(self.running_loss), "correct": cpu(self.running_correct)},
            "scaler": self.scaler.state_dict(),
            "rng": rng_tensors(),
        }
        outcome = self.outcome
        meta = {
            "steps": self.steps,
            "trainable": {n: list(p.shape) for n, p in self.trainable().items()},
            "step": self.step,
            "epoch_rng": self.epoch_rng,
            "batch_in_epoch": self.batch_in_epoch,
            "best_value": self.best_value,
            "bad_evals": self.bad_evals,
            "running_n": self.running_n,
            "train_seconds": self.elapsed(),
            "rows": [asdict(r) for r in outcome.rows],
            "samples_seen": outcome.samples_seen,
            "skipped_steps": outcome.skipped_steps,
            "best_step": outcome.best_step,
            "time_to_best": outcome.time_to_best,
            "rng": rng_states(data=self.rng, dropout=self.dropout_rng),
        }
        return tensors, meta

    def resume(self, checkpoints: Checkpoints) -> bool:
        """Restore the last checkpoint if there is one that fits this run; returns whether it did."""
        saved = checkpoints.load()
        if saved is None:
            return False
        tensors, meta = saved
        shapes = {n: list(p.shape) for n, p in self.trainable().items()}
        if meta["steps"] != self.steps or meta["trainable"] != shapes:
            log.warning(
                "ignoring the checkpoint %s: it was saved by a run of %s steps with other trainable tensors; the run starts over",
                checkpoints.path,
                meta["steps"],
            )
            return False
        with torch.no_grad():
            for name, param in self.trainable().items():
                param.copy_(tensors["weights"][name])
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.scheduler.load_state_dict(tensors["scheduler"])
        if tensors["best_state"] is not None:
            self.best_state = {n: t.to(self.device) for n, t in tensors["best_state"].items()}
        self.running_loss.copy_(tensors["running"]["loss"])
        self.running_correct.copy_(tensors["running"]["correct"])
        if tensors.get("scaler"):  # checkpoints saved before fp16 loss scaling have none
            self.scaler.load_state_dict(tensors["scaler"])
        restore_rngs(meta["rng"], tensors["rng"], data=self.rng, dropout=self.dropout_rng)
        self.step, self.epoch_rng, self.batch_in_epoch = meta["step"], meta["epoch_rng"], meta["batch_in_epoch"]
        self.best_value, self.bad_evals, self.running_n = meta["best_value"], meta["bad_evals"], meta["running_n"]
        self.trained_before = meta["train_seconds"]
        outcome = self.outcome
        outcome.rows = [MetricRow(**r) for r in meta["rows"]]
        outcome.samples_seen, outcome.best_step, outcome.time_to_best = (
            meta["samples_seen"],
            meta["best_step"],
            meta["time_to_best"],
        )
        outcome.skipped_steps = meta.get("skipped_steps", 0)
        outcome.resumed_from = self.step
        log.info("resuming from step %d of %d (checkpoint %s)", self.step, self.steps, checkpoints.path)
        return True
