"""Loading a stored run's trained model (``specrun predict``, the app, ``specrun.load_run``)."""

from __future__ import annotations

from pathlib import Path

from specrun.errors import StoreError
from specrun.store import runs as store_runs
from specrun.store.db import Store


def load_predictor(store: Store, run_id: str, registry=None):
    """A ``runner.predict.Predictor`` for the completed run ``run_id`` (a unique prefix will do)."""
    from specrun.runner.predict import Predictor

    stored = store_runs.run_weights(store, run_id, prefix=True)
    if stored.status != "completed" or stored.path is None:
        raise StoreError(f"run {stored.run_id} is {stored.status}: only completed runs with saved weights can predict")
    try:
        return Predictor.from_weights(stored.config, Path(stored.path), registry)
    except StoreError as exc:
        raise StoreError(f"run {stored.run_id}: {exc}") from None
