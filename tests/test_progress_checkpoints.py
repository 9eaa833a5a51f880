"""Progress an apply reports (phases, periodic lines off a terminal, -q) and mid-run checkpoints: a run
killed or interrupted part way resumes from its last checkpoint and ends with the results of a run that
never stopped."""

import json
import os
import subprocess
import sys
import textwrap
import time

import duckdb
import pytest

from specrun.runner.checkpoint import CHECKPOINT, Checkpoints
from specrun.spec.schema import duration_seconds


def test_piped_apply_prints_phases_and_training_lines(write_spec, cli, monkeypatch):
    monkeypatch.setenv("SPECRUN_PROGRESS_EVERY", "0")  # a line at every step and phase
    spec = write_spec(train="max_steps = 4\neval_every = 2")
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    lines = err.splitlines()
    for phase in ("loading data", "building model", "training", "evaluating validation", "saving", "measuring latency"):
        assert any(f"lora seed=0: {phase}" in line for line in lines), (phase, err)
    steps = [line for line in lines if ": training, step " in line]
    assert {line.split("step ")[1].split("/")[0] for line in steps} == {
        "1",
        "2",
        "3",
        "4",
    } and "step 4/4 (100%)" in steps[-1]
    assert all(" loss " in line and " lr " in line and "samples/s" in line for line in steps)
    assert any("ETA" in line for line in steps[1:-1])  # from the second step on, while steps remain
    assert "[1/1]" in steps[0] and "done accuracy=" in err


def test_quiet_apply_prints_no_progress(write_spec, cli, monkeypatch):
    monkeypatch.setenv("SPECRUN_PROGRESS_EVERY", "0")
    spec = write_spec(train="max_steps = 2")
    code, _, err = cli("-q", "apply", str(spec))
    assert code == 0, err
    assert "loading data" not in err and "step " not in err and ": training" not in err
    assert "done accuracy=" in err and "summary: 1 completed" in err  # results stay


def test_a_bad_progress_interval_is_refused_before_anything_is_written(write_spec, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("SPECRUN_PROGRESS_EVERY", "soon")
    code, _, err = cli("apply", str(write_spec(train="max_steps = 1")))
    assert code == 2 and "SPECRUN_PROGRESS_EVERY must be a number of seconds" in err and "Traceback" not in err
    assert not (tmp_path / "store.duckdb").exists()


def test_checkpoint_every_values_and_run_identity(write_spec, cli):
    spec = write_spec(train="max_steps = 2")
    ids = set()
    for value in ("5", '"90s"', '"10m"', '"1.5h"', '"off"'):
        code, out, err = cli("plan", str(spec), "-f", "json", "--set", f"train.checkpoint_every={value}")
        assert code == 0, err
        ids.add(json.loads(out)[0]["run_id"])
    _, out, _ = cli("plan", str(spec), "-f", "json")
    assert ids == {json.loads(out)[0]["run_id"]}  # how often a run saves is not what it computes
    for bad in ("0", '"10x"', '"0m"', "true", "-3"):
        code, _, err = cli("plan", str(spec), "--set", f"train.checkpoint_every={bad}")
        assert code == 2 and "train.checkpoint_every" in err and "Traceback" not in err, (bad, err)


def test_checkpoint_schedule(tmp_path):
    assert duration_seconds("90s") == 90 and duration_seconds("10m") == 600 and duration_seconds("1.5h") == 5400
    assert duration_seconds("0s") is None and duration_seconds("10") is None
    by_steps = Checkpoints(tmp_path / CHECKPOINT, 3)
    assert [s for s in range(1, 10) if by_steps.due(s)] == [3, 6, 9]
    off = Checkpoints(tmp_path / CHECKPOINT, "off")
    assert not off.enabled and not off.due(1)
    by_time = Checkpoints(tmp_path / CHECKPOINT, "1h")
    assert by_time.enabled and not by_time.due(1)
    by_time.last -= 3601
    assert by_time.due(2)


# --- resuming -------------------------------------------------------------------------------------

#: Sends its own process a signal once training reaches a step: a kill at a known point, not a race.
SIGNAL_AT_STEP = textwrap.dedent("""
    import os, signal
    from specrun.executors import local

    at, sig = int(os.environ["SIGNAL_AT_STEP"]), getattr(signal, os.environ["SIGNAL_NAME"])
    on_step = local.LocalExecutor._on_step

    def signalling(self, report):
        if report.step == at:
            os.kill(os.getpid(), sig)
        on_step(self, report)

    local.LocalExecutor._on_step = signalling
    from specrun import cli
    cli.main()
""")

# 30 steps (batches of 16 over 240 examples: two epochs), evaluated every 5, checkpoints every 6; early
# stopping that never stops, so that its best weights are saved, restored and put back at the end.
RESUMABLE = 'max_steps = 30\neval_every = 5\ncheckpoint_every = 6\nlearning_rate = 0.003\nearly_stopping = { metric = "loss", patience = 100, mode = "min" }'


def _results(store):
    db = duckdb.connect(str(store), read_only=True)
    try:
        metrics = db.execute(
            "SELECT step, split, name, final, value FROM metrics "
            "WHERE NOT (split = 'train' AND name = 'seconds') AND split <> 'cost' ORDER BY ALL"
        ).fetchall()
        costs = dict(
            db.execute(
                "SELECT name, value FROM metrics WHERE split = 'cost' AND name IN ('train_steps', 'train_examples', 'trainable_params')"
            ).fetchall()
        )
        predictions = db.execute(
            "SELECT split, example_id, prediction, confidence, loss FROM predictions ORDER BY split, example_id"
        ).fetchall()
        run = db.execute("SELECT status, attempts, environment->>'resumed_from_step' FROM runs").fetchone()
    finally:
        db.close()
    return metrics, costs, predictions, run


def _close(a, b, tol=1e-6):
    """Rows equal, their floats within ``tol`` (relative above 1)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            assert abs(u - v) <= tol * max(1.0, abs(u)) if isinstance(u, float) else u == v, (x, y)


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_stopped_run_resumes_from_its_checkpoint_with_the_same_results(
    write_spec, cli, tmp_path, monkeypatch, signal_name
):
    spec = write_spec(train=RESUMABLE)
    whole = tmp_path / "whole.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(whole))
    assert code == 0, err

    store, artifacts = tmp_path / "stopped.duckdb", tmp_path / "stopped-artifacts"
    helper = tmp_path / "signal_at_step.py"
    helper.write_text(SIGNAL_AT_STEP)
    env = {
        **os.environ,
        "SPECRUN_STORE": str(store),
        "SPECRUN_ARTIFACTS": str(artifacts),
        "SIGNAL_AT_STEP": "19",
        "SIGNAL_NAME": signal_name,
    }
    proc = subprocess.run(
        [sys.executable, str(helper), "apply", str(spec)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    [run_dir] = artifacts.iterdir()
    assert (run_dir / CHECKPOINT).is_file() and not (run_dir / f"{CHECKPOINT}.tmp").exists()
    db = duckdb.connect(str(store), read_only=True)
    status = db.execute("SELECT status FROM runs").fetchone()[0]
    db.close()
    if signal_name == "SIGKILL":  # no chance to record anything: the next apply reaps it as interrupted
        assert proc.returncode == -9 and status == "running"
    else:
        assert proc.returncode == 130 and status == "interrupted" and "Traceback" not in proc.stderr, proc.stderr

    # checkpoint_every is not part of the run's identity: changing it keeps the run and its checkpoint
    spec.write_text(spec.read_text().replace("checkpoint_every = 6", 'checkpoint_every = "10m"'))
    monkeypatch.setenv("SPECRUN_ARTIFACTS", str(artifacts))
    _, out, _ = cli("plan", str(spec), "--store", str(store), "-f", "json")
    assert json.loads(out)[0]["status"] == f"will resume from step 18 ({status})"
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    assert "resuming from step 18 of 30" in err
    # a completed run needs no checkpoint: its folder is the saved adapters
    assert sorted(p.name for p in run_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "run.json"]

    metrics, costs, predictions, run = _results(store)
    whole_metrics, whole_costs, whole_predictions, whole_run = _results(whole)
    assert run == ("completed", 2, "18") and whole_run == ("completed", 1, None)
    assert costs == whole_costs and costs["train_steps"] == 30
    assert len(metrics) == len(whole_metrics) > 30  # the history before the checkpoint is there too
    _close(metrics, whole_metrics)
    assert len(predictions) == 80
    _close(predictions, whole_predictions)


def test_a_damaged_checkpoint_is_ignored_and_force_starts_over(write_spec, cli, tmp_path):
    spec = write_spec(train="max_steps = 4\ncheckpoint_every = 2")
    _, out, _ = cli("plan", str(spec), "-f", "json")
    run_dir = tmp_path / "artifacts" / json.loads(out)[0]["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / CHECKPOINT).write_bytes(b"not a checkpoint")
    code, _, err = cli("apply", str(spec))
    assert code == 0 and "ignoring the checkpoint" in err and "resuming" not in err, err
    assert not (run_dir / CHECKPOINT).exists()
    (run_dir / CHECKPOINT).write_bytes(b"stale")
    code, _, err = cli("apply", str(spec), "--force")  # --force starts over: the checkpoint is not even read
    assert code == 0 and "ignoring the checkpoint" not in err and not (run_dir / CHECKPOINT).exists(), err


# --- the display itself, driven without training ----------------------------------------------------


class _Run:
    run_id, experiment = "0123456789ab", "toy"

    def label(self):
        return "lora seed=0"


def _report(step, total=10, loss=0.5):
    import torch

    from specrun.runner.train import StepReport

    return StepReport(
        step,
        total,
        samples=16 * step,
        train_seconds=0.1 * step,
        learning_rate=1e-3 * (1 - step / total),
        loss_sum=torch.tensor(loss * 16 * step, dtype=torch.float64),
        loss_count=16 * step,
    )


def _console(monkeypatch, terminal: bool):
    import io

    from rich.console import Console

    from specrun import console

    buffer = io.StringIO()
    monkeypatch.setattr(
        console, "err", Console(file=buffer, force_terminal=terminal, width=200, markup=False, highlight=False)
    )
    return buffer


def test_terminal_bar_shows_phase_steps_eta_loss_lr_and_rate(monkeypatch):
    from specrun.console import ApplyProgress

    buffer = _console(monkeypatch, terminal=True)
    with ApplyProgress(1, quiet=False, every=30) as progress:
        progress.run_started(_Run())
        progress.phase("loading data")
        progress.bar.refresh()
        loading = buffer.getvalue()
        progress.phase("training")
        for step in range(1, 6):
            progress.step(_report(step))
            time.sleep(0.3)  # the numbers refresh twice a second
        progress.bar.refresh()
    assert "loading data" in loading and "0/?" not in loading
    shown = buffer.getvalue()
    assert "0123456789ab lora seed=0 · training" in shown and "5/10" in shown
    assert "loss 0.5000" in shown and "lr 0.0005" in shown and "samples/s" in shown and "ETA " in shown


def test_plain_lines_keep_coming_through_a_long_phase_without_steps(monkeypatch):
    from specrun.console import ApplyProgress

    buffer = _console(monkeypatch, terminal=False)
    with ApplyProgress(1, quiet=False, every=0.3) as progress:
        progress.run_started(_Run())
        progress.phase("training")
        progress.step(_report(4))
        progress.phase("evaluating validation")
        time.sleep(1.5)
    lines = [line for line in buffer.getvalue().splitlines() if "evaluating validation (" in line]
    assert lines and all(line.startswith("[1/1] 0123456789ab lora seed=0: evaluating validation (") for line in lines)
    assert "step 4/10 (40%)" in lines[0] and "loss 0.5000" in lines[0]
