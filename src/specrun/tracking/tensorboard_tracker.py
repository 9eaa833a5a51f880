"""The ``tensorboard`` tracker: each run's event files in ``<dir>/<experiment>/<run_id>/`` (default
``<store folder>/tensorboard``), with per-step scalars as it trains (``<split>/<metric>`` at each
evaluation, ``window/<metric>`` between them), its final metrics and costs (``final/<split>/<metric>``),
its config as text and its hyperparameters against its headline results (the HPARAMS tab).
``pip install 'specrun[tensorboard]'``; ``tensorboard --logdir <dir>`` shows every run."""

from __future__ import annotations

import json
from pathlib import Path

from specrun.core.task import MetricRow, RunRecord, RunTask
from specrun.spec.schema import TrackingSpec
from specrun.tracking import Tracker


def _plain(value):
    """A value TensorBoard's hyperparameters take: bool, int, float or str."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, spec: TrackingSpec, store_path: Path):
        self.root = Path(spec.tensorboard_dir) if spec.tensorboard_dir else store_path.resolve().parent / "tensorboard"
        self.writers: dict[str, object] = {}

    def log_dir(self, task: RunTask) -> Path:
        return self.root / task.experiment / task.run_id

    def run_start(self, task: RunTask) -> None:
        from torch.utils.tensorboard import SummaryWriter

        writer = self.writers[task.run_id] = SummaryWriter(log_dir=str(self.log_dir(task)))
        writer.add_text("run", f"{task.label} ({task.run_id}, experiment {task.experiment}, {task.kind})")
        writer.add_text("config", "```\n" + json.dumps(task.config, indent=2, default=str) + "\n```")

    def _scalars(self, task: RunTask, rows: list[MetricRow], prefix: str | None = None) -> None:
        writer = self.writers.get(task.run_id)
        if writer is None:
            return
        for row in rows:
            tag = (
                f"{prefix}/{row.name}"
                if prefix
                else f"final/{row.split}/{row.name}"
                if row.final
                else f"{row.split}/{row.name}"
            )
            writer.add_scalar(tag, row.value, row.step)
        writer.flush()

    def window(self, task: RunTask, step: int, metrics: list[MetricRow]) -> None:
        self._scalars(task, metrics, prefix="window")

    def evaluation(self, task: RunTask, step: int, metrics: list[MetricRow]) -> None:
        self._scalars(task, metrics)

    def run_end(self, task: RunTask, record: RunRecord) -> None:
        writer = self.writers.pop(task.run_id, None)
        if writer is None:
            return
        try:
            self.writers[task.run_id] = writer
            self._scalars(task, [r for r in record.metrics if r.final])
            if record.status == "completed":
                self._hparams(writer, task, record)
            elif record.status != "evaluated":
                writer.add_text("status", f"{record.status}: {record.message or record.error or ''}")
        finally:
            self.writers.pop(task.run_id, None)
            writer.close()

    def _hparams(self, writer, task: RunTask, record: RunRecord) -> None:
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
        for summary in hparams({k: v for k, v in params.items() if v is not None}, results):
            writer.file_writer.add_summary(summary)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}
