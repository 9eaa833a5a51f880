"""What ``specrun app`` reads from the store — the models it can serve, with the numbers their runs
recorded — and the one thing it may write: predictions, only when started with ``--record``.

Every read is one short read-only connection, so the app never keeps the store from a running
``specrun apply``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from specrun.store.db import Store, now

#: How long a recording waits for a process writing the store, in seconds: a page should not hang.
RECORD_TIMEOUT = 10.0

_MODELS = """
WITH costs AS (
    SELECT run_id,
           max(value) FILTER (WHERE name = 'model_memory_mb') AS model_memory_mb,
           max(value) FILTER (WHERE name = 'latency_ms_mean') AS latency_ms_mean,
           max(value) FILTER (WHERE name = 'latency_ms_p95') AS latency_ms_p95
    FROM metrics WHERE split = 'cost' AND final GROUP BY run_id
), current AS (
    SELECT run_id, list(DISTINCT experiment ORDER BY experiment) AS experiments FROM current_runs GROUP BY run_id
)
SELECT r.run_id, coalesce(c.experiments, [r.experiment]) AS experiments, r.method, r.dataset, r.model, r.seed,
       r.sweep, r.config, r.eval_set, s.accuracy, s.f1, s.trainable_params, s.total_params,
       k.model_memory_mb, k.latency_ms_mean, k.latency_ms_p95, r.finished_at, s.exact_match
FROM runs r
JOIN run_summary s USING (run_id)
LEFT JOIN costs k USING (run_id)
LEFT JOIN current c USING (run_id)
WHERE r.status = 'completed'
  AND EXISTS (SELECT 1 FROM artifacts a WHERE a.run_id = r.run_id AND a.kind = 'weights')
  AND ($experiment IS NULL OR list_contains(c.experiments, $experiment))
ORDER BY r.finished_at DESC, r.run_id
"""


@dataclass(frozen=True)
class StoredModel:
    """A completed run with saved weights, and what its run recorded about it."""

    run_id: str
    #: The experiments whose current runs include it (else the one that first planned it).
    experiments: tuple[str, ...]
    method: str
    dataset: str
    model: str
    seed: int
    sweep: dict[str, Any]
    config: dict[str, Any]
    #: The primary evaluation set, on which ``accuracy`` and ``f1`` were measured.
    eval_set: str
    accuracy: float | None
    f1: float | None
    trainable_params: float | None
    total_params: float | None
    model_memory_mb: float | None
    latency_ms_mean: float | None
    latency_ms_p95: float | None
    finished_at: datetime | None = field(default=None, compare=False)
    #: Exact match on ``eval_set`` for an extractive-QA run (``f1`` is then its SQuAD F1); None otherwise.
    exact_match: float | None = None


def stored_models(store: Store, experiment: str | None = None) -> list[StoredModel]:
    """Completed runs with weights, newest first; with ``experiment``, only that experiment's current runs."""
    with store.read() as db:
        rows = db.execute(_MODELS, {"experiment": experiment}).fetchall()
    return [
        StoredModel(
            run_id,
            tuple(experiments),
            method,
            dataset,
            model,
            seed,
            json.loads(sweep) if sweep else {},
            json.loads(config) if config else {},
            eval_set,
            *numbers,
            finished_at,
            exact_match,
        )
        for run_id, experiments, method, dataset, model, seed, sweep, config, eval_set, *numbers, finished_at, exact_match in rows
    ]


def model_experiments(store: Store) -> list[str]:
    """The experiments whose current runs include at least one model (a completed run with weights)."""
    with store.read() as db:
        rows = db.execute(
            "SELECT DISTINCT c.experiment FROM current_runs c JOIN runs r USING (run_id) "
            "WHERE r.status = 'completed' AND EXISTS (SELECT 1 FROM artifacts a WHERE a.run_id = r.run_id AND a.kind = 'weights') "
            "ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


@dataclass(frozen=True)
class RecordedPrediction:
    """One prediction the app made, as ``app_predictions`` stores it."""

    run_id: str
    position: int
    text: str
    text_pair: str | None
    label: str | None
    prediction: str
    confidence: float
    latency_ms: float


def record_predictions(store: Store, source: str, predictions: list[RecordedPrediction]) -> str:
    """Write one request's predictions into ``app_predictions`` in one transaction; returns its request id."""
    import pyarrow as pa

    request_id = uuid.uuid4().hex[:12]
    columns = ("run_id", "position", "text", "text_pair", "label", "prediction", "confidence", "latency_ms")
    table = pa.table(
        {
            "request_id": [request_id] * len(predictions),
            **{name: [getattr(p, name) for p in predictions] for name in columns},
            "source": [source] * len(predictions),
        },
        schema=pa.schema(
            [
                ("request_id", pa.string()),
                ("run_id", pa.string()),
                ("position", pa.int32()),
                ("text", pa.string()),
                ("text_pair", pa.string()),
                ("label", pa.string()),
                ("prediction", pa.string()),
                ("confidence", pa.float64()),
                ("latency_ms", pa.float64()),
                ("source", pa.string()),
            ]
        ),
    )
    with store.write(timeout=RECORD_TIMEOUT) as db:
        db.register("_app_predictions", table)
        db.execute(
            "INSERT INTO app_predictions (request_id, run_id, position, source, text, text_pair, label, prediction, confidence, latency_ms, recorded_at) "
            "SELECT request_id, run_id, position, source, text, text_pair, label, prediction, confidence, latency_ms, ? FROM _app_predictions",
            [now()],
        )
        db.unregister("_app_predictions")
    return request_id
