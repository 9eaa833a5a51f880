"""A long sweep in one process holds its memory: nothing a run builds (its model, optimizer, data)
outlives the run. The resident-memory figures themselves are a benchmark (benchmarks/bench_memory.py,
benchmarks/README.md), not a timed test."""

from __future__ import annotations

import gc
import weakref

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
