"""A long sweep in one process holds its memory: nothing a run builds (its model, optimizer, data)
outlives the run, and the kernel caches keyed by tensor shapes that runs fill are bounded. The
resident-memory figures themselves are a benchmark (benchmarks/bench_memory.py, benchmarks/README.md),
not a timed test."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import warnings
import weakref

import pytest
import torch

import specrun.runner.execute as execute_module


def test_no_model_survives_its_run(write_spec, cli, monkeypatch):
    built: list[weakref.ref] = []
    real = execute_module.build_model

    def tracked(*args, **kwargs):
        model, ctx = real(*args, **kwargs)
        built.append(weakref.ref(model))
        return model, ctx

    monkeypatch.setattr(execute_module, "build_model", tracked)
    spec = write_spec(train="max_steps = 3", extra='[sweep]\n"train.learning_rate" = [1e-3, 2e-3, 3e-3]')
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    assert len(built) == 3
    gc.collect()
    alive = [ref() for ref in built if ref() is not None]
    referrers = [type(r).__name__ for model in alive for r in gc.get_referrers(model)][:10]
    assert not alive, f"{len(alive)} of 3 models outlived their runs (held by {referrers})"


def test_each_run_gives_its_freed_memory_back(write_spec, cli, monkeypatch):
    """After every run (completed or failed) the local executor's process returns the memory the run
    freed (glibc keeps it otherwise: hundreds of MB a MiniLM run, see benchmarks/README.md)."""
    released = []
    real = execute_module.release_memory
    monkeypatch.setattr(execute_module, "release_memory", lambda: released.append(1) or real())
    spec = write_spec(train="max_steps = 2", extra='[sweep]\n"train.learning_rate" = [1e-3, 2e-3]')
    assert cli("apply", str(spec))[0] == 0
    assert len(released) == 2


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def test_live_tensors_return_to_baseline_after_each_run(write_spec, cli, monkeypatch):
    """Runs of different configurations (methods, placements) leave no tensor behind: the number of live
    tensors after each run is what it was after the first."""
    counts: list[int] = []
    real = execute_module.execute

    def counted(*args, **kwargs):
        record = real(*args, **kwargs)
        counts.append(_live_tensors())
        return record

    monkeypatch.setattr(execute_module, "execute", counted)
    sweep = """[sweep]
"method, train.learning_rate" = [
    [{ name = "lora", rank = 4, placement = "attn-qv" }, 1e-3],
    [{ name = "lora", rank = 4, placement = "ffn-only" }, 2e-3],
    [{ name = "bitfit" }, 1e-3],
    [{ name = "full" }, 1e-4],
    [{ name = "lora", rank = 4, placement = "attn-qv" }, 3e-3],
]"""
    spec = write_spec(train="max_steps = 2", extra=sweep)
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    assert len(counts) == 5
    assert counts[1:] == [counts[0]] * 4, f"live tensors after each run: {counts}"


_KERNEL_CACHE_PROBE = textwrap.dedent("""
    import ctypes, gc, sys
    import specrun.runner  # sets the kernel caches' capacities before the first primitive is built
    import torch

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2

    def in_use():
        gc.collect()
        return libc.mallinfo2().uordblks

    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 128)

    def shapes(rows):
        for n in rows:  # a bf16 product of a new shape per row count, forward and backward
            x = torch.randn(n, 256, requires_grad=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = layer(x)
            y.float().sum().backward()

    shapes(range(1, 5))  # oneDNN's and torch's one-time set-up
    start = in_use()
    shapes(range(200, 400, 2))  # 100 new shapes: a few hundred primitives
    middle = in_use()
    shapes(range(201, 401, 2))  # 100 more, of the same sizes
    print(middle - start, in_use() - middle)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc's heap statistics (mallinfo2)")
@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN: no kernel caches")
def test_shape_keyed_kernel_caches_stop_growing():
    """bf16 products on the CPU go through oneDNN, whose kernel caches keep a primitive (and its heap) per
    shape; a sweep brings new shapes run after run. With the capacities specrun.runner sets, the heap stops
    growing once the caches are full: 100 more shapes after the first 100 add next to nothing (with
    oneDNN's default capacities, as much again)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _KERNEL_CACHE_PROBE], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0 and "mallinfo2" in done.stderr:
        pytest.skip("this C library has no mallinfo2")
    assert done.returncode == 0, done.stderr
    first, second = (int(v) for v in done.stdout.split())
    if first < 2**20:
        pytest.skip(f"bf16 products keep no shape-keyed kernels on this CPU (the heap grew {first} bytes)")
    assert second < 0.25 * first, (
        f"heap grew {first / 2**20:.1f} MB over 100 shapes, then {second / 2**20:.1f} MB over 100 more"
    )
