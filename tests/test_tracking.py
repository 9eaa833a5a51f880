"""Built-in live trackers (issue 24): MLflow and TensorBoard, read back with their own readers; a tracker
that fails warns once and the runs go on; tracking never changes which runs exist."""

import json
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is installed by the dev extra")


def store_rows(cli, store, query):
    code, out, err = cli("sql", query, "--store", str(store), "-f", "json")
    assert code == 0, err
    return json.loads(out)


def check_mlflow_run(cli, store, uri, experiment="toy"):
    """The store's one run, as MLflow's own client reads it back from ``uri``: tag, params, metrics per step, artifacts."""
    from mlflow import MlflowClient

    [run] = store_rows(cli, store, "SELECT run_id FROM runs")
    curve = store_rows(
        cli,
        store,
        "SELECT step, value FROM metrics WHERE split = 'validation' AND name = 'accuracy' AND NOT final ORDER BY step",
    )
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    [found] = client.search_runs([exp.experiment_id], filter_string=f"tags.`specrun.run_id` = '{run['run_id']}'")
    assert found.info.status == "FINISHED"
    assert float(found.data.params["train.learning_rate"]) > 0 and found.data.params["method.rank"] == "4"
    history = client.get_metric_history(found.info.run_id, "validation/accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (c["step"], c["value"]) for c in curve
    ]
    assert len(curve) >= 2
    assert [m.step for m in client.get_metric_history(found.info.run_id, "window/loss")] == [2, 4]
    assert "final/cost/train_seconds" in found.data.metrics
    assert {"model.safetensors", "run.json"} & {a.path for a in client.list_artifacts(found.info.run_id)}
    assert found.info.artifact_uri.startswith((Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()), (
        "artifacts beside the database"
    )
    return found


def test_mlflow_reads_back_a_runs_params_and_per_step_metrics(write_spec, cli, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(train="max_steps = 4\neval_every = 2", extra=f'[tracking]\nevery = 2\nmlflow_uri = "{uri}"')
    store = tmp_path / "store.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(store), "--track", "mlflow")
    assert code == 0, err
    check_mlflow_run(cli, store, uri)
    code, _, err = cli("apply", str(spec), "--store", str(store), "--track", "mlflow")
    assert code == 0 and "1 cached" in err  # tracking is no part of the identity: nothing reruns


@pytest.mark.parametrize(
    "uri, says",
    [
        ("nosuchscheme://x", "tracker mlflow could not start: "),  # refused when the client is made
        (
            "http://127.0.0.1:9",
            "tracker mlflow failed in run_start for run ",
        ),  # no server there: fails at the first run
    ],
)
def test_a_tracker_that_fails_warns_once_and_the_runs_go_on(write_spec, cli, tmp_path, monkeypatch, uri, says):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    extra = f'[tracking]\ntrackers = ["mlflow"]\nevery = 1\nmlflow_uri = "{uri}"\n\n[sweep]\n"train.learning_rate" = [1e-3, 2e-3]'
    store = tmp_path / "store.duckdb"
    code, _, err = cli("apply", str(write_spec(train="max_steps = 2", extra=extra)), "--store", str(store))
    assert code == 0, err
    assert err.count("tracker mlflow") == 1 and says in err, err
    assert "2 completed" in err
    assert store_rows(cli, store, "SELECT status FROM runs") == [{"status": "completed"}] * 2


def test_an_unknown_tracker_is_refused_before_anything_runs(write_spec, cli, tmp_path):
    code, _, err = cli(
        "apply", str(write_spec(train="max_steps = 2")), "--store", str(tmp_path / "s.duckdb"), "--track", "neptune"
    )
    assert (
        code == 2
        and "--track must name a built-in tracker (mlflow, tensorboard), not 'neptune'" in err
        and "Traceback" not in err
    )
    assert not (tmp_path / "s.duckdb").exists()
    code, _, err = cli("validate", str(write_spec(train="max_steps = 2", extra='[tracking]\ntrackers = ["mlflw"]')))
    assert code == 2 and "tracking.trackers" in err


def test_tensorboard_tracker_writes_per_step_scalars(write_spec, cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = write_spec(
        train="max_steps = 4\neval_every = 2",
        extra=f'[tracking]\ntrackers = ["tensorboard"]\nevery = 2\ntensorboard_dir = "{tmp_path / "tb"}"',
    )
    store = tmp_path / "store.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    [run] = store_rows(cli, store, "SELECT run_id FROM runs")
    events = EventAccumulator(str(tmp_path / "tb" / "toy" / run["run_id"])).Reload()
    curve = store_rows(
        cli,
        store,
        "SELECT step, value FROM metrics WHERE split = 'validation' AND name = 'accuracy' AND NOT final ORDER BY step",
    )
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("validation/accuracy")] == [
        (c["step"], c["value"]) for c in curve
    ]
    assert [e.step for e in events.Scalars("window/loss")] == [2, 4]
    assert "final/cost/train_seconds" in events.Tags()["scalars"]
