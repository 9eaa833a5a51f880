"""Runner and store behaviour: caching, run identity, determinism, failures, interruption, concurrency."""

import json
import os
import signal
import subprocess
import sys
import time

import duckdb

from specrun.store import Store


def sql(cli, query):
    code, out, err = cli("sql", query, "-f", "json")
    assert code == 0, err
    return json.loads(out)


def test_migrations_recorded_once(tmp_path):
    from specrun.store.migrations import MIGRATIONS

    store = Store(tmp_path / "m.duckdb")
    with store.write():
        pass
    with Store(store.path).write() as db:  # a second open applies nothing new
        names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name").fetchall()]
    assert names == [m.__name__ for m in MIGRATIONS]


def test_current_runs_are_those_of_the_latest_apply_without_overrides(write_spec, cli):
    spec = write_spec(train="max_steps = 1")
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    assert cli("apply", str(spec))[0] == 0
    first = {r["run_id"] for r in sql(cli, "SELECT run_id FROM runs")}
    spec.write_text(spec.read_text().replace("max_steps = 1", "max_steps = 2"))  # a new version of the spec
    # a variant: --set leaves the experiment's current runs alone
    assert cli("apply", str(spec), "--set", "experiment.seeds=[1]")[0] == 0
    everything = {r["run_id"] for r in sql(cli, "SELECT run_id FROM experiment_runs WHERE experiment = 'toy'")}
    [variant] = sql(cli, "SELECT apply_id, overrides, variant FROM applies ORDER BY started_at DESC LIMIT 1")
    assert len(everything) == 3 and first < everything
    assert json.loads(variant["overrides"]) == ["experiment.seeds=[1]"] and variant["variant"] is True
    assert {r["run_id"] for r in sql(cli, "SELECT run_id FROM current_runs WHERE experiment = 'toy'")} == first
    code, out, _ = cli("runs", "--experiment", "toy", "-f", "json")
    assert code == 0 and {r["run_id"] for r in json.loads(out)} == first
    code, out, _ = cli("runs", "--experiment", "toy", "--history", "-f", "json")
    assert code == 0 and {r["run_id"] for r in json.loads(out)} == everything
    variant_runs = {
        r["run_id"] for r in sql(cli, f"SELECT run_id FROM apply_runs WHERE apply_id = '{variant['apply_id']}'")
    }
    assert len(variant_runs) == 1 and not variant_runs & first  # the variant's runs stay queryable
    # applying the new version without overrides makes its runs the current ones
    assert cli("apply", str(spec))[0] == 0
    current = sql(cli, "SELECT run_id, spec_path FROM current_runs WHERE experiment = 'toy'")
    assert len(current) == 2 and variant_runs < {r["run_id"] for r in current} and current[0]["spec_path"] == str(spec)
    assert sql(cli, "SELECT count(*) AS n FROM applies")[0]["n"] == 3
    # an apply refused before training (bad data) records nothing
    bad = write_spec(name="bad", extra='[[data.transforms]]\nname = "few_shot"\nk = 500\n')
    assert cli("apply", str(bad))[0] == 2
    assert sql(cli, "SELECT count(*) AS n FROM applies")[0]["n"] == 3


def test_an_experiment_with_only_variant_applies_has_the_latest_as_current(write_spec, cli):
    spec = write_spec(train="max_steps = 1")
    assert cli("apply", str(spec), "--set", "train.max_steps=2")[0] == 0
    [run] = sql(cli, "SELECT run_id FROM runs")
    assert sql(cli, "SELECT run_id FROM current_runs WHERE experiment = 'toy'") == [run]


def test_run_id_is_content_hash(write_spec, cli):
    spec = write_spec(train="max_steps = 2")
    _, out1, _ = cli("plan", str(spec), "-f", "json")
    _, out2, _ = cli("plan", str(spec), "-f", "json")
    _, out3, _ = cli("plan", str(spec), "-f", "json", "--set", "train.learning_rate=0.01")
    _, out4, _ = cli("plan", str(spec), "-f", "json", "--set", "experiment.name=renamed")
    ids = [json.loads(o)[0]["run_id"] for o in (out1, out2, out3, out4)]
    assert ids[0] == ids[1] != ids[2]
    assert ids[3] == ids[0]  # the experiment's name is not part of what a run computes


def test_plan_marks_cached_and_force_reruns(write_spec, cli):
    spec = write_spec(train="max_steps = 3", extra='[sweep]\n"train.learning_rate" = [0.001, 0.002]')
    _, out, _ = cli("plan", str(spec), "-f", "json")
    assert [r["status"] for r in json.loads(out)] == ["new", "new"]
    code, _, err = cli("apply", str(spec))
    assert code == 0 and "2 completed" in err
    _, out, _ = cli("plan", str(spec), "-f", "json")
    assert [r["status"] for r in json.loads(out)] == ["cached", "cached"]
    code, _, err = cli("apply", str(spec), "--force")
    assert code == 0 and "2 completed" in err
    rows = sql(
        cli,
        "SELECT attempts, (SELECT count(*) FROM metrics m WHERE m.run_id = r.run_id AND m.final AND m.name = 'accuracy') AS n FROM runs r",
    )
    assert rows == [{"attempts": 2, "n": 1}, {"attempts": 2, "n": 1}]  # a rerun replaces, never duplicates


def test_same_seed_same_result_other_seed_differs(write_spec, cli):
    spec = write_spec(train="max_steps = 6", extra='[sweep]\n"train.weight_decay" = [0.0, 0.0001]')
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    assert cli("apply", str(spec))[0] == 0
    rows = sql(
        cli,
        "SELECT seed, json_extract(sweep, '$.\"train.weight_decay\"')::DOUBLE AS wd, value FROM metrics JOIN runs USING (run_id) WHERE final AND split = 'validation' AND name = 'loss' ORDER BY seed, wd",
    )
    assert len(rows) == 4
    by_seed = {}
    for r in rows:
        by_seed.setdefault(r["seed"], []).append(r["value"])
    assert by_seed[0] != by_seed[1]
    # rerunning a run reproduces its loss exactly
    _, out, _ = cli("plan", str(spec), "-f", "json")
    first = json.loads(out)[0]["run_id"]
    before = sql(
        cli, f"SELECT value FROM metrics WHERE run_id = '{first}' AND final AND name = 'loss' AND split = 'validation'"
    )
    assert cli("apply", str(spec), "--force")[0] == 0
    after = sql(
        cli, f"SELECT value FROM metrics WHERE run_id = '{first}' AND final AND name = 'loss' AND split = 'validation'"
    )
    assert before == after


def test_failed_run_recorded_others_go_on(write_spec, cli, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # fp16 fails: as on a machine without a GPU
    spec = write_spec(train="max_steps = 2", extra='[sweep]\n"train.precision" = ["fp16", "fp32"]')
    code, _, err = cli("apply", str(spec))
    assert code == 1
    assert "1 completed" in err and "1 failed" in err and "fp16" in err
    rows = sql(cli, "SELECT status, config->'train'->>'precision' AS p, error FROM runs ORDER BY p")
    assert rows[0]["status"] == "failed" and "needs a CUDA device" in rows[0]["error"]
    assert rows[1]["status"] == "completed"
    # the completed run is cached and the failed one is all that is left, and it cannot run here: refused
    code, _, err = cli("apply", str(spec), "--fail-fast")
    assert code == 2 and "no run of this apply can run on this machine: precision 'fp16' needs a CUDA device" in err


def test_predictions_and_provenance(write_spec, cli, toy_data):
    spec = write_spec(train="max_steps = 2")
    assert cli("apply", str(spec))[0] == 0
    rows = sql(
        cli, "SELECT count(*) AS n, count(DISTINCT example_id) AS ids, min(confidence) >= 0.5 AS ok FROM predictions"
    )
    assert rows == [{"n": 80, "ids": 80, "ok": True}]
    rows = sql(cli, "SELECT count(*) AS n FROM train_examples")
    assert rows == [{"n": 240}]
    rows = sql(cli, "SELECT kind, bytes > 0 AS nonempty, length(sha256) AS h FROM artifacts")
    assert rows == [{"kind": "weights", "nonempty": True, "h": 64}]


def _spawn_apply(spec, store, *extra):
    env = {**os.environ, "SPECRUN_STORE": str(store)}
    return subprocess.Popen(
        [sys.executable, "-m", "specrun", "apply", str(spec), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_running(store, timeout=180):
    """Poll the store (between the apply's short transactions) until its one run is training."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            db = duckdb.connect(str(store), read_only=True)
            status = db.execute("SELECT status FROM runs").fetchall()
            db.close()
        except duckdb.Error:
            continue
        if status == [("running",)]:
            return
    raise AssertionError("the run never started")


def test_two_applies_on_one_store(write_spec, tmp_path):
    a = write_spec(name="a", train="max_steps = 20", extra='[sweep]\n"train.learning_rate" = [0.001, 0.002, 0.003]')
    b = write_spec(name="b", train="max_steps = 20", extra='[sweep]\n"train.learning_rate" = [0.004, 0.005, 0.006]')
    store = tmp_path / "shared.duckdb"
    procs = [_spawn_apply(a, store), _spawn_apply(b, store), _spawn_apply(a, store)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    db = duckdb.connect(str(store), read_only=True)
    status = db.execute("SELECT status, count(*) FROM runs GROUP BY ALL").fetchall()
    per_run = db.execute(
        "SELECT count(DISTINCT run_id), count(*) FROM metrics WHERE final AND name = 'accuracy'"
    ).fetchone()
    db.close()
    assert status == [("completed", 6)]
    assert per_run == (6, 6)  # every run's results once: nothing lost, nothing doubled


def test_killed_apply_leaves_interrupted_run_that_reruns(write_spec, tmp_path, cli):
    spec = write_spec(train="max_steps = 100000")
    store = tmp_path / "k.duckdb"
    proc = _spawn_apply(spec, store)
    _wait_until_running(store)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # SIGKILL gave the process no chance to record anything: the next apply sees a dead owner
    from specrun.store.runs import reap_interrupted

    assert len(reap_interrupted(Store(store))) == 1  # what apply does first
    _, out, _ = cli("plan", str(spec), "--store", str(store), "-f", "json")
    assert json.loads(out)[0]["status"] == "will rerun (interrupted)"


def test_sigterm_records_interrupted(write_spec, tmp_path):
    spec = write_spec(train="max_steps = 100000")
    store = tmp_path / "t.duckdb"
    proc = _spawn_apply(spec, store)
    _wait_until_running(store)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    db = duckdb.connect(str(store), read_only=True)
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
    db.close()
