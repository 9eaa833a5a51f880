"""The logger on the tiny model: what a run writes, and that a failing writer leaves the run alone."""

from __future__ import annotations

from pathlib import Path

from specrun.testing import toy_spec

TRAIN = "max_steps = 8\neval_every = 4"


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_run_writes_its_curves_final_metrics_and_config(run_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECRUN_TENSORBOARD_DIR", str(tmp_path / "tb"))
    result = run_spec(toy_spec(train=TRAIN))
    [run] = result.runs
    folder = tmp_path / "tb" / "toy" / run["run_id"]
    scalars = _scalars(folder)
    curve = result.sql(
        "SELECT step, value FROM metrics WHERE run_id = ? AND split = 'validation' AND name = 'accuracy' AND NOT final "
        "ORDER BY step",
        [run["run_id"]],
    )
    assert [step for step, _ in scalars["validation/accuracy"]] == [r["step"] for r in curve] == [4, 8]
    assert all(
        abs(value - row["value"]) < 1e-6 for (_, value), row in zip(scalars["validation/accuracy"], curve)
    )  # float32 in events
    assert abs(scalars["final/validation/accuracy"][0][1] - run["accuracy"]) < 1e-6
    assert abs(scalars["hparam/accuracy"][0][1] - run["accuracy"]) < 1e-6
    assert {"train/loss", "train/learning_rate", "final/cost/train_seconds"} <= set(scalars)


def test_a_writer_that_fails_is_a_warning_and_the_run_completes(run_spec, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the event folder would go")
    monkeypatch.setenv("SPECRUN_TENSORBOARD_DIR", str(blocker))
    result = run_spec(toy_spec(train="max_steps = 2"))
    assert [r["status"] for r in result.runs] == ["completed"]
    assert "specrun_tensorboard.plugin failed in on_run_start" in result.stderr
