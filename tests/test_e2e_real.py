"""One real run of the whole path: the MiniLM model on real SST-2 data through `specrun apply`."""

import json

import pytest
from conftest import REPO


@pytest.mark.slow
def test_quickstart_shape_on_real_sst2(cli, tmp_path):
    spec = REPO / "specs" / "quickstart.toml"
    overrides = [
        "--set",
        "data.max_train_examples=500",
        "--set",
        "data.max_eval_examples=200",
        "--set",
        "experiment.seeds=[0]",
        "--set",
        "train.epochs=3",
    ]
    code, _, err = cli("apply", str(spec), *overrides)
    assert code == 0, err
    code, out, _ = cli(
        "sql", "SELECT method, dataset, model, status, seed, accuracy, trainable_pct FROM run_summary", "-f", "json"
    )
    [row] = json.loads(out)
    assert (row["method"], row["dataset"], row["status"]) == ("lora", "glue/sst2", "completed")
    assert row["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert row["accuracy"] > 0.6  # clearly above chance (0.5) after 500 examples
    assert 0 < row["trainable_pct"] < 1
    code, out, _ = cli("sql", "SELECT count(*) AS n, count(DISTINCT example_id) AS ids FROM predictions", "-f", "json")
    assert json.loads(out) == [{"n": 200, "ids": 200}]
    code, out, _ = cli("sql", "SELECT count(*) AS n FROM train_examples", "-f", "json")
    assert json.loads(out) == [{"n": 500}]
    code, _, err = cli("apply", str(spec), *overrides)
    assert code == 0 and "1 cached" in err
    code, out, _ = cli("sql", "SELECT run_id FROM runs", "-f", "json")
    run_id = json.loads(out)[0]["run_id"]
    code, out, err = cli("predict", run_id, "a gorgeous, heartfelt film", "-f", "json")
    assert code == 0, err
    [pred] = json.loads(out)
    assert pred["label"] in ("positive", "negative") and 0.5 <= pred["confidence"] <= 1
