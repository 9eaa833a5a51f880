"""End-to-end on the tiny model and toy data through the CLI: apply, cache, sql, predict."""

import json


def test_apply_then_cached_then_sql(write_spec, cli):
    spec = write_spec(method='name = "full"', train="epochs = 6\nlearning_rate = 1e-3")
    code, out, err = cli("apply", str(spec))
    assert code == 0, err
    assert "1 completed" in err
    code, out, err = cli("apply", str(spec))
    assert code == 0 and "1 cached" in err
    code, out, err = cli("sql", "SELECT status, method FROM runs", "--format", "json")
    assert json.loads(out) == [{"status": "completed", "method": "full"}]
    code, out, _ = cli(
        "sql", "SELECT value FROM metrics WHERE final AND split='validation' AND name='accuracy'", "-f", "json"
    )
    assert json.loads(out)[0]["value"] > 0.8


def test_a_run_whose_loss_diverges_fails_instead_of_completing(write_spec, cli):
    """A finite but absurd learning rate turns the loss to NaN: the run is failed with the reason, not
    recorded as completed with a meaningless accuracy."""
    import json

    spec = write_spec(name="diverged", train="max_steps = 6\neval_every = 3\nlearning_rate = 1e308")
    code, _, err = cli("apply", str(spec))
    assert code == 1, err
    assert "training diverged: the training loss is nan at step 3" in err and "lower train.learning_rate" in err
    code, out, _ = cli("sql", "SELECT status, (SELECT count(*) FROM metrics) AS metrics FROM runs", "-f", "json")
    assert json.loads(out) == [{"status": "failed", "metrics": 0}]
