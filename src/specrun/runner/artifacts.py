"""Saving and reloading a run's trained weights: the parameters its method made trainable.

Reloading rebuilds the model with the same method and options (frozen weights come from the model
source again) and loads the saved tensors over it, so adapters stay small on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
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


def trainable_state(model: torch.nn.Module, also: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The parameters that train, and those named in ``also`` (frozen ones a transfer loaded)."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad or n in also}


def save_run(model: torch.nn.Module, folder: Path, meta: dict, also: frozenset[str] = frozenset()) -> list[tuple[str, str, str, int]]:
    """Write the trainable weights (and the frozen ones in ``also``) and the run's config; returns
    artifact rows (kind, path, sha256, bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS
    tmp = weights.with_suffix(".tmp")
    save_file(trainable_state(model, also), str(tmp))
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


@dataclass
class Transfer:
    """What ``model.init_from`` loaded from a source run's saved weights into a new run's model."""

    source_run_id: str
    source_method: str
    #: Tensors copied in, by name; those that stay frozen in the new model are kept with its weights.
    loaded: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    #: The source's classification head: never transferred (the new run's head starts fresh).
    head: list[str] = field(default_factory=list)
    #: Source tensors whose name exists in the new model with another shape, or not at all.
    shape_mismatch: list[str] = field(default_factory=list)
    no_place: list[str] = field(default_factory=list)

    @property
    def transferable(self) -> int:
        return len(self.loaded) + len(self.shape_mismatch) + len(self.no_place)

    @property
    def placed_fraction(self) -> float:
        return len(self.loaded) / self.transferable if self.transferable else 0.0

    def summary(self) -> str:
        return (f"{len(self.loaded)} of {self.transferable} tensors loaded ({len(self.no_place)} with no place, "
                f"{len(self.shape_mismatch)} of another shape; head of {len(self.head)} tensors not transferred)")


HEAD = ("classifier",)


def transfer_weights(model: torch.nn.Module, path: Path, source_run_id: str, head: tuple[str, ...] = HEAD) -> Transfer:
    """Copy a source run's saved weights into ``model`` wherever a tensor of the same name and shape
    exists, except its classification head; returns what went where."""
    if not path.is_file():
        raise StoreError(f"saved weights of run {source_run_id} not found: {path}")
    meta_file = path.parent / META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    transfer = Transfer(source_run_id, str(meta.get("config", {}).get("method", {}).get("name", "?")))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in load_file(str(path)).items():
            if any(part in name for part in head):
                transfer.head.append(name)
            elif name not in params:
                transfer.no_place.append(name)
            elif params[name].shape != tensor.shape:
                transfer.shape_mismatch.append(name)
            else:
                params[name].copy_(tensor.to(params[name].dtype))
                transfer.loaded.append(name)
                if not params[name].requires_grad:
                    transfer.frozen.append(name)
    return transfer
