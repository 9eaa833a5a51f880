"""Mid-run checkpoints: what a run needs to go on from a step as if it had never stopped.

The training loop (``runner.train``) decides what goes in: trainable weights, optimizer, scheduler,
every random generator it draws from, its place in the epoch, the early-stopping state and the metrics
recorded so far. This module decides when (``train.checkpoint_every``), where (``checkpoint.pt`` in the
run's artifacts folder) and how: written to a temporary file and renamed over the last one, so a kill
mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specrun.spec.schema import duration_seconds

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("specrun.checkpoint")

CHECKPOINT = "checkpoint.pt"
#: Beside it, the step it was saved at (for ``plan``, which should not read a large file to say so).
SUMMARY = "checkpoint.json"
#: Bump when what the loop saves changes shape: an older checkpoint is then ignored, not misread.
FORMAT = 1


def checkpoint_path(artifacts_dir: Path, run_id: str) -> Path:
    return artifacts_dir / run_id / CHECKPOINT


def remove_checkpoint(artifacts_dir: Path, run_id: str) -> None:
    """Delete a run's checkpoint (and a temporary file a kill left); a finished run needs neither."""
    path = checkpoint_path(artifacts_dir, run_id)
    for name in (CHECKPOINT, SUMMARY, CHECKPOINT + ".tmp", SUMMARY + ".tmp"):
        try:
            path.with_name(name).unlink(missing_ok=True)
        except (
            OSError
        ):  # e.g. the artifacts "folder" is a file: there is no checkpoint, and recording the failure must go on
            pass


def saved_step(artifacts_dir: Path, run_id: str) -> int | None:
    """The step a run's checkpoint was saved at; None when it has none."""
    path = checkpoint_path(artifacts_dir, run_id)
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.with_name(SUMMARY).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class Checkpoints:
    """When and where one run saves checkpoints: every ``every`` steps (an int) or seconds of wall time
    (a duration string), never with ``"off"``."""

    def __init__(self, path: Path, every: int | str | None):
        self.path = path
        self.steps = every if isinstance(every, int) else None
        self.seconds = duration_seconds(every) if isinstance(every, str) and every != "off" else None
        self.last = time.perf_counter()

    @property
    def enabled(self) -> bool:
        return self.steps is not None or self.seconds is not None

    def due(self, step: int) -> bool:
        if self.steps is not None:
            return step % self.steps == 0
        return self.seconds is not None and time.perf_counter() - self.last >= self.seconds

    def save(self, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
        """Write ``tensors`` (nested dicts and lists of tensors, as ``state_dict``s are) and ``meta``
        (plain values; numpy arrays allowed) atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        import torch

        _write_atomically(
            self.path, lambda f: torch.save({"format": FORMAT, "meta": json.dumps(_plain(meta)), "tensors": tensors}, f)
        )
        summary = json.dumps({"step": meta.get("step"), "steps": meta.get("steps")}).encode()
        _write_atomically(self.path.with_name(SUMMARY), lambda f: f.write(summary))
        self.last = time.perf_counter()

    def load(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(tensors, meta) of the last checkpoint, or None when there is none or it cannot be read."""
        if not self.path.is_file():
            return None
        try:
            import torch

            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if saved.get("format") != FORMAT:
                raise ValueError(f"format {saved.get('format')!r}, this specrun writes {FORMAT}")
            return saved["tensors"], _restore_arrays(json.loads(saved["meta"]))
        except (
            OSError,
            EOFError,
            RuntimeError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            pickle.UnpicklingError,
        ) as exc:
            # a damaged or foreign file: start over rather than fail the run
            why = (str(exc).strip().splitlines() or [""])[0][:200]
            log.warning("ignoring the checkpoint %s (%s: %s); the run starts over", self.path, type(exc).__name__, why)
            return None


def rng_states(**generators: np.random.Generator | None) -> dict[str, Any]:
    """The global generators (python, numpy, torch, CUDA) and the named numpy ``generators``."""
    import numpy as np

    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": list(np.random.get_state()),
        "generators": {name: g.bit_generator.state for name, g in generators.items() if g is not None},
    }


def rng_tensors() -> dict[str, Any]:
    import torch

    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rngs(states: dict[str, Any], tensors: dict[str, Any], **generators: np.random.Generator | None) -> None:
    import numpy as np
    import torch

    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(states["numpy"]))
    for name, g in generators.items():
        if g is not None and name in states["generators"]:
            g.bit_generator.state = states["generators"][name]
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: numpy arrays and scalars marked so that they come back as such."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _restore_arrays(value: Any) -> Any:
    import numpy as np

    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"])
        return {k: _restore_arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_arrays(v) for v in value]
    return value
