"""Saving and reloading a run's trained weights: the parameters its method made trainable.

Reloading rebuilds the model with the same method and options (frozen weights come from the model
source again) and loads the saved tensors over it, so adapters stay small on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from specrun.errors import StoreError
from specrun.runner.costs import sha256_file

WEIGHTS = "trained.safetensors"
META = "run.json"


def artifacts_root(store_path: Path) -> Path:
    """Where runs save weights: ``SPECRUN_ARTIFACTS``, else ``specrun-artifacts/`` beside the store."""
    env = os.environ.get("SPECRUN_ARTIFACTS")
    return Path(env) if env else store_path.resolve().parent / "specrun-artifacts"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_run(model: torch.nn.Module, folder: Path, meta: dict) -> list[tuple[str, str, str, int]]:
    """Write the trainable weights and the run's config; returns artifact rows (kind, path, sha256, bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS
    tmp = weights.with_suffix(".tmp")
    save_file(trainable_state(model), str(tmp))
    tmp.replace(weights)
    (folder / META).write_text(json.dumps(meta, indent=2, default=str))
    return [("weights", str(weights), sha256_file(weights), weights.stat().st_size)]


def load_weights(model: torch.nn.Module, path: Path, strict: bool = True, skip: tuple[str, ...] = ()) -> list[str]:
    """Load saved trainable weights into ``model``; returns names skipped for a shape mismatch."""
    if not path.is_file():
        raise StoreError(f"saved weights not found: {path}")
    saved = load_file(str(path))
    params = dict(model.named_parameters())
    missing = [n for n in saved if n not in params]
    if missing and strict:
        raise StoreError(f"{path}: {len(missing)} saved tensors have no place in the model (e.g. {missing[0]})")
    skipped = []
    with torch.no_grad():
        for name, tensor in saved.items():
            if name not in params or any(s in name for s in skip):
                continue
            if params[name].shape != tensor.shape:
                skipped.append(name)
                continue
            params[name].copy_(tensor.to(params[name].dtype))
    return skipped
