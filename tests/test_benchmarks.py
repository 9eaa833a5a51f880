"""`make bench` in miniature: every target bench_all.py knows runs a few steps and reports its row, so a
refactor cannot break the benchmark silently (it did once: the task refactor moved what it clocked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

BENCH = REPO / "benchmarks"


def targets() -> list[str]:
    """The targets bench_all.py measures (its GOALS): new ones are smoke-tested without editing this file."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_all
    finally:
        sys.path.remove(str(BENCH))
    return sorted(bench_all.GOALS)


def _environ() -> dict:
    """The benchmark as a fresh process on this checkout's sources, one torch thread."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


@pytest.mark.slow
def test_every_benchmark_target_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_all.py"), "--smoke", "--keep", str(tmp_path / "work"), "--json", str(out)],
        cwd=REPO,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["meta"]["args"]["smoke"] is True
    reported = {row["target"] for row in results["summary"]}
    expected = set(targets())
    assert expected <= reported, f"targets without a summary row: {sorted(expected - reported)}"
    for row in results["summary"]:
        assert row["measured"] and row["what"], row
        assert row["met"] in ("met", "NOT met", "-", ""), row  # a verdict, whatever the smoke sizes gave


@pytest.mark.slow
def test_the_frozen_features_benchmark_runs_on_a_decoder(tmp_path):
    """`bench_frozen.py --decoder` (cache_frozen on a random GPT-2) at smoke size: the three peers run,
    the warm peer reads what the cold one computed, and both cached peers agree."""
    out = tmp_path / "frozen.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_frozen.py"),
            *("--quick", "--decoder", "--dataset", "glue/sst2", "--json", str(out)),
        ],
        cwd=REPO,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert "gpt2-minilm-size" in results["args"]["model"]
    [round_] = results["rounds"]
    assert round_["cold"]["features_cached"] == 0.0 and round_["warm"]["features_cached"] == 1.0
    assert round_["warm"]["accuracy"] == round_["cold"]["accuracy"]
