"""Loading a stored run's trained model (``specrun predict``, the app, ``specrun.load_run``) and
exporting it as a standalone model folder (``specrun export``)."""

from __future__ import annotations

from pathlib import Path

from specrun.errors import StoreError, UsageError
from specrun.store import runs as store_runs
from specrun.store.db import Store


def _completed(store: Store, run_id: str, what: str) -> store_runs.StoredWeights:
    """The stored weights of the completed run ``run_id`` (a unique prefix will do)."""
    stored = store_runs.run_weights(store, run_id, prefix=True)
    if stored.status != "completed" or stored.path is None:
        raise StoreError(f"run {stored.run_id} is {stored.status}: only completed runs with saved weights can {what}")
    return stored


def load_predictor(store: Store, run_id: str, registry=None):
    """A ``runner.predict.Predictor`` for the completed run ``run_id`` (a unique prefix will do)."""
    from specrun.runner.predict import Predictor

    stored = _completed(store, run_id, "predict")
    try:
        return Predictor.from_weights(stored.config, Path(stored.path), registry)
    except StoreError as exc:
        raise StoreError(f"run {stored.run_id}: {exc}") from None


def export_run(store: Store, run_id: str, out: Path, merge: bool = False, registry=None):
    """Write the completed run ``run_id`` into ``out`` (a new or empty folder) as a model folder plain
    transformers loads (``runner.export.export_model``); returns its ``Exported``."""
    from specrun.plugins import get_registry
    from specrun.runner.export import export_model

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty folder: give a new folder to export into")
    stored = _completed(store, run_id, "be exported")
    try:
        return export_model(stored.config, Path(stored.path), out, merge, registry or get_registry())
    except (StoreError, UsageError) as exc:
        raise type(exc)(f"run {stored.run_id}: {exc}") from None
