"""Adaptive search (issue 24): trials are runs, pruned trials stop early and are recorded so, a re-apply
trains nothing, an interrupted search resumes with the suggestions it would have made."""

import json

import pytest

pytest.importorskip("optuna", reason="the search extra is installed by the dev extra")

SEARCH = """
[search]
n_trials = {n}
sampler = "{sampler}"
seed = 3
pruner = "{pruner}"
metric = "accuracy"

[search.space]
"train.learning_rate" = {{ type = "float", low = 1e-4, high = 3e-2, log = true }}
"method.rank" = {{ type = "int", low = 2, high = 8, step = 2 }}
"""


def search_spec(write_spec, n=6, sampler="tpe", pruner="median"):
    return write_spec(train="max_steps = 6\neval_every = 2", extra=SEARCH.format(n=n, sampler=sampler, pruner=pruner))


def sql(cli, store, query):
    code, out, err = cli("sql", query, "--store", str(store), "-f", "json")
    assert code == 0, err
    return json.loads(out)


TRIALS = "SELECT trial, run_id, state, value, params FROM search_trials ORDER BY trial"


def test_a_search_with_a_pruner_trains_trials_as_runs_and_a_reapply_trains_nothing(write_spec, cli, tmp_path):
    spec, store = search_spec(write_spec), tmp_path / "s.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    trials = sql(cli, store, TRIALS)
    assert [t["trial"] for t in trials] == list(range(6))
    runs = {r["run_id"]: r for r in sql(cli, store, "SELECT run_id, status, pruned_step, sweep FROM runs")}
    assert {t["run_id"] for t in trials} == set(runs), "every trial is a run of the store"
    states = [t["state"] for t in trials]
    assert "pruned" in states and "complete" in states, states
    for t in trials:
        run = runs[t["run_id"]]
        assert json.loads(run["sweep"]) == json.loads(t["params"]), "a trial's run is labelled with its configuration"
        if t["state"] == "pruned":  # stopped early, with its curve so far and no final results
            assert run["status"] == "pruned" and run["pruned_step"] in (2, 4) and t["value"] is None
            curve = sql(cli, store, f"SELECT step, final FROM metrics WHERE run_id = '{t['run_id']}' AND split = 'validation' AND name = 'accuracy'")
            assert curve and max(c["step"] for c in curve) == run["pruned_step"] and not any(c["final"] for c in curve)
        else:
            assert run["status"] == "completed" and run["pruned_step"] is None
            [final] = sql(cli, store, f"SELECT value FROM metrics WHERE run_id = '{t['run_id']}' AND final AND split = 'validation' AND name = 'accuracy'")
            assert t["value"] == final["value"]

    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    assert "completed" not in err.split("summary:")[1] and "cached" in err, err
    assert sql(cli, store, "SELECT sum(attempts) AS n FROM runs")[0]["n"] == len(runs), "the re-apply trained nothing"
    assert sql(cli, store, TRIALS) == trials
