"""The example plugins in examples/, loaded from their source (nothing installed) into a registry: what
they write after a tiny run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TENSORBOARD = REPO / "examples" / "specrun-tensorboard" / "src" / "specrun_tensorboard" / "plugin.py"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tensorboard_logger_writes_each_runs_curve_final_metrics_and_config(write_spec, cli, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from specrun.plugins import set_registry
    from specrun.testing import registry_with

    set_registry(registry_with(_load(TENSORBOARD, "specrun_tensorboard.plugin")))
    monkeypatch.setenv("SPECRUN_TENSORBOARD_DIR", str(tmp_path / "tb"))
    code, _, err = cli("apply", str(write_spec(train="max_steps = 8\neval_every = 4")))
    assert code == 0, err
    [run] = json.loads(cli("sql", "SELECT run_id, accuracy, f1 FROM run_summary", "-f", "json")[1])
    loss = json.loads(
        cli(
            "sql", "SELECT step, value FROM metrics WHERE split = 'train' AND name = 'loss' ORDER BY step", "-f", "json"
        )[1]
    )

    [folder] = (tmp_path / "tb" / "toy").iterdir()
    assert folder.name == run["run_id"]
    events = EventAccumulator(str(folder))
    events.Reload()
    curve = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [step for step, _ in curve] == [r["step"] for r in loss] == [4, 8]
    assert all(abs(value - r["value"]) < 1e-5 for (_, value), r in zip(curve, loss))
    assert abs(events.Scalars("final/validation/accuracy")[0].value - run["accuracy"]) < 1e-6
    assert abs(events.Scalars("hparam/f1")[0].value - run["f1"]) < 1e-6
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"name": "lora"' in config and '"rank": 4' in config
