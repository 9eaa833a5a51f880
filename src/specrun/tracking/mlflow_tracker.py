"""The ``mlflow`` tracker: an MLflow experiment per specrun experiment, an MLflow run per specrun run
(tagged ``specrun.run_id``), its resolved config as parameters, its metrics per step as it trains, its
final metrics, and its artifact folder. ``pip install 'specrun[mlflow]'``."""

from __future__ import annotations

import os
from pathlib import Path

from specrun.core.task import MetricRow, RunRecord, RunTask
from specrun.spec.schema import TrackingSpec
from specrun.tracking import Tracker, flat_params

#: MLflow caps a parameter value's length.
MAX_PARAM = 6000


def metric_key(row: MetricRow, window: bool = False) -> str:
    """``<split>/<name>`` for the learning curve (the rows of each evaluation), ``window/<name>`` for the
    training windows between them, ``final/<split>/<name>`` for the end results and costs."""
    if window:
        return f"window/{row.name}"
    return f"final/{row.split}/{row.name}" if row.final else f"{row.split}/{row.name}"


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, spec: TrackingSpec, store_path: Path):
        from mlflow import MlflowClient

        self.uri = (
            spec.mlflow_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{store_path.resolve().parent / 'mlflow.db'}"
        )
        self.client = MlflowClient(tracking_uri=self.uri)
        # a local database: artifacts beside it (MLflow's default is ./mlruns in whatever folder apply runs from)
        local = self.uri.startswith("sqlite:///")
        self.artifact_root = Path(self.uri[len("sqlite:///") :]).resolve().parent / "mlartifacts" if local else None
        self.runs: dict[str, str] = {}  # specrun run id -> MLflow run id
        self.logged: dict[str, set] = {}  # specrun run id -> (key, step) logged live
        self.experiments: dict[str, str] = {}

    def _experiment(self, name: str) -> str:
        if name not in self.experiments:
            found = self.client.get_experiment_by_name(name)
            location = (self.artifact_root / name).as_uri() if self.artifact_root else None
            self.experiments[name] = (
                found.experiment_id if found else self.client.create_experiment(name, artifact_location=location)
            )
        return self.experiments[name]

    def run_start(self, task: RunTask) -> None:
        tags = {
            "specrun.run_id": task.run_id,
            "specrun.label": task.label,
            "specrun.kind": task.kind,
            "mlflow.runName": f"{task.label} {task.run_id}",
        }
        run = self.client.create_run(self._experiment(task.experiment), tags=tags)
        self.runs[task.run_id] = run.info.run_id
        self.logged[task.run_id] = set()
        from mlflow.entities import Param

        params = [Param(k, v[:MAX_PARAM]) for k, v in flat_params(task.config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
            self.client.log_batch(run.info.run_id, params=params[i : i + 100])

    def _log(self, task: RunTask, rows: list[MetricRow], window: bool = False) -> None:
        import time

        from mlflow.entities import Metric

        run_id = self.runs.get(task.run_id)
        logged = self.logged.setdefault(task.run_id, set())
        rows = [r for r in rows if (metric_key(r, window), r.step) not in logged]
        if run_id is None or not rows:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(r, window), float(r.value), now, int(r.step)) for r in rows]
        logged.update((m.key, m.step) for m in metrics)
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def window(self, task: RunTask, step: int, metrics: list[MetricRow]) -> None:
        self._log(task, metrics, window=True)

    def evaluation(self, task: RunTask, step: int, metrics: list[MetricRow]) -> None:
        self._log(task, metrics)

    def run_end(self, task: RunTask, record: RunRecord) -> None:
        run_id = self.runs.get(task.run_id)
        if run_id is None:
            return
        try:
            self._log(task, record.metrics)  # the final rows, and any of the curve not logged live
            folders = {Path(a.path).parent for a in record.artifacts}
            for folder in sorted(folders):
                if folder.is_dir():
                    self.client.log_artifacts(run_id, str(folder))
            self.client.set_tag(run_id, "specrun.status", record.status)
            if record.status != "completed" and record.status != "evaluated":
                self.client.set_tag(run_id, "specrun.error", (record.message or record.error or "")[:MAX_PARAM])
        finally:
            self.runs.pop(task.run_id, None)
            self.logged.pop(task.run_id, None)
            status = (
                "FINISHED"
                if record.status in ("completed", "evaluated")
                else "KILLED"
                if record.status in ("interrupted", "pruned")
                else "FAILED"
            )
            self.client.set_terminated(run_id, status)
