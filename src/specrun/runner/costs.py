"""Cost accounting shared by every method: peak memory, latency, artifact sizes."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from specrun.runner.batching import Encoded
from specrun.runner.modeling import autocast

#: What a run's ``peak_memory_mb`` measures (``runs.memory_kind``): figures of different kinds are not
#: comparable, so no analysis puts them on one axis.
MEMORY_KINDS = {
    "cpu_rss_growth": "CPU: growth of the process's resident memory over its size when training started, sampled",
    "cuda_allocated_peak": "CUDA: the peak of memory allocated by torch's caching allocator on the device during training",
}


class PeakMemory:
    """Peak memory while the block runs: RSS growth over its start on CPU (sampled), CUDA peak on GPU."""

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device = device
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()

    @property
    def kind(self) -> str:
        """Which of ``MEMORY_KINDS`` ``peak_bytes`` is."""
        return "cuda_allocated_peak" if self.device.type == "cuda" else "cpu_rss_growth"

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._proc = psutil.Process()
        self._base = self._proc.memory_info().rss
        self._max = self._base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, self._proc.memory_info().rss)
            self.peak_bytes = self._max - self._base
        return False


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's weights occupy as stored: parameters and buffers at their storage dtype, so
    8-bit and 4-bit weights count at their packed size, plus their quantization constants. This is where
    quantization saves memory; ``peak_memory_mb`` (growth during training) does not show it."""
    seen: set[int] = set()
    total = 0

    def add(t) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor) and t.numel() and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()

    for tensor in [*model.parameters(), *model.buffers()]:
        add(tensor)
        add(getattr(tensor, "SCB", None))  # bitsandbytes 8-bit: per-row scales
        state = getattr(tensor, "quant_state", None)  # bitsandbytes 4-bit: block absmax (nested when double-quantized)
        while state is not None:
            add(getattr(state, "absmax", None))
            add(getattr(state, "code", None))
            state = getattr(state, "state2", None)
    return total


#: Latency probes: batch-size-1 forward passes over the first evaluation examples, after warm-ups, until
#: either ``LATENCY_MAX`` examples or ``LATENCY_BUDGET_S`` seconds (but at least ``LATENCY_MIN`` examples).
#: A mean and median settle within a few dozen examples; more would only add to every run's wall time.
LATENCY_WARMUP, LATENCY_MIN, LATENCY_MAX, LATENCY_BUDGET_S = 2, 12, 32, 0.3


@torch.inference_mode()
def latency(
    model: torch.nn.Module,
    data: Encoded,
    precision: str,
    device: torch.device,
    n: int = LATENCY_MAX,
    budget_s: float = LATENCY_BUDGET_S,
) -> dict[str, float]:
    """Per-example inference latency at batch size 1 over the first examples of ``data`` (see the
    constants above); ``latency_examples`` says how many were timed."""
    was_training = model.training
    model.eval()
    count = min(n, len(data))
    times: list[float] = []
    started = time.perf_counter()
    for i in range(count + LATENCY_WARMUP):
        batch = data.collate(np.array([i % len(data)]), device)
        t0 = time.perf_counter()
        with autocast(precision, device):
            model(**batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= LATENCY_WARMUP:
            times.append((time.perf_counter() - t0) * 1000)
            if len(times) >= LATENCY_MIN and time.perf_counter() - started > budget_s:
                break
    if was_training:
        model.train()
    if not times:
        return {}
    arr = np.asarray(times)
    return {
        "latency_ms_mean": float(arr.mean()),
        "latency_ms_p50": float(np.percentile(arr, 50)),
        "latency_ms_p95": float(np.percentile(arr, 95)),
        "latency_examples": float(len(arr)),
    }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
