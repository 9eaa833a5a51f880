"""specrun-tensorboard: every run ``specrun apply`` executes, as TensorBoard event files.

A logger on specrun's run lifecycle hooks, with no options in specs: ``on_run_start`` opens a writer in
``$SPECRUN_TENSORBOARD_DIR/<experiment>/<run_id>/`` (default ``./specrun-tensorboard``) and records
the run's config as text; ``on_run_end`` writes its learning curve (``<split>/<metric>`` at each step:
``train/loss``, ``validation/accuracy``, ...), its final metrics and costs (``final/<split>/<metric>``
at the final step) and its hyperparameters with its headline results (TensorBoard's HPARAMS tab), then
closes the writer. ``tensorboard --logdir specrun-tensorboard`` shows every run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from specrun import hookimpl

#: Where event files go (one folder per experiment, one subfolder per run).
DIR_ENV = "SPECRUN_TENSORBOARD_DIR"
DEFAULT_DIR = "specrun-tensorboard"

_writers: dict[str, object] = {}


def log_dir(task) -> Path:
    """The run's event folder: ``<root>/<experiment>/<run_id>``."""
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR) / task.experiment / task.run_id


def _writer(task):
    from torch.utils.tensorboard import SummaryWriter

    if task.run_id not in _writers:
        _writers[task.run_id] = SummaryWriter(log_dir=str(log_dir(task)))
    return _writers[task.run_id]


@hookimpl
def on_run_start(task):
    writer = _writer(task)
    if task.kind == "train":
        writer.add_text("run", f"{task.label} ({task.run_id}, experiment {task.experiment})")
        writer.add_text("config", "```\n" + json.dumps(task.config, indent=2, default=str) + "\n```")


@hookimpl
def on_run_end(task, record):
    writer = _writer(task)
    try:
        for row in record.metrics:
            tag = f"final/{row.split}/{row.name}" if row.final else f"{row.split}/{row.name}"
            writer.add_scalar(tag, row.value, row.step)
        if record.status == "completed":
            _hparams(writer, task, record)
        elif record.status != "evaluated":
            writer.add_text("status", f"{record.status}: {record.message or record.error or ''}")
    finally:
        writer.close()
        _writers.pop(task.run_id, None)


def _hparams(writer, task, record) -> None:
    """The run's method options, training settings and seed against its headline results."""
    from torch.utils.tensorboard.summary import hparams

    config = task.config
    params = {f"method.{k}": _plain(v) for k, v in config.get("method", {}).items()}
    params |= {
        f"train.{k}": _plain(config.get("train", {}).get(k))
        for k in ("learning_rate", "batch_size", "epochs", "max_steps", "precision")
    }
    params["seed"] = config.get("seed")
    final = record.final()
    results = {
        f"hparam/{name}": final[(task.primary_eval, name)]
        for name in ("accuracy", "f1", "loss")
        if (task.primary_eval, name) in final
    }
    experiment, start, end = hparams({k: v for k, v in params.items() if v is not None}, results)
    for summary in (experiment, start, end):
        writer.file_writer.add_summary(summary)
    step = max((row.step for row in record.metrics if row.final), default=0)
    for tag, value in results.items():
        writer.add_scalar(tag, value, step)


def _plain(value):
    """A value TensorBoard's hyperparameters take: bool, int, float or str."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)
