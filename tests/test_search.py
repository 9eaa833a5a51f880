"""Adaptive search (issue 24): trials are runs, pruned trials stop early and are recorded so, a re-apply
trains nothing, an interrupted search resumes with the suggestions it would have made."""

import json
import re

import pytest

from specrun import hookimpl

pytest.importorskip("optuna", reason="the search extra is installed by the dev extra")

SEARCH = """
[search]
n_trials = {n}
sampler = "{sampler}"
seed = 3
pruner = "{pruner}"
metric = "loss"
direction = "minimize"

[search.space]
"train.learning_rate" = {{ type = "float", low = 1e-4, high = 3e-2, log = true }}
"method.rank" = {{ type = "int", low = 2, high = 8, step = 2 }}
"""


def search_spec(write_spec, n=6, sampler="tpe", pruner="median", extra=""):
    return write_spec(
        train="max_steps = 6\neval_every = 2", extra=SEARCH.format(n=n, sampler=sampler, pruner=pruner) + extra
    )


def sql(cli, store, query):
    code, out, err = cli("sql", query, "--store", str(store), "-f", "json")
    assert code == 0, err
    return json.loads(out)


TRIALS = "SELECT trial, run_id, state, value, params FROM search_trials ORDER BY trial"


def test_a_search_with_a_pruner_trains_trials_as_runs_and_a_reapply_trains_nothing(write_spec, cli, tmp_path):
    spec, store = search_spec(write_spec, extra='\n[[analyses]]\nname = "optimization"\n'), tmp_path / "s.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    trials = sql(cli, store, TRIALS)
    check_optimization_analysis(cli, store, trials)
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
            curve = sql(
                cli,
                store,
                f"SELECT step, final FROM metrics WHERE run_id = '{t['run_id']}' AND split = 'selection' AND name = 'loss'",
            )
            assert curve and max(c["step"] for c in curve) == run["pruned_step"] and not any(c["final"] for c in curve)
        else:
            assert run["status"] == "completed" and run["pruned_step"] is None
            [final] = sql(
                cli,
                store,
                f"SELECT value FROM metrics WHERE run_id = '{t['run_id']}' AND final AND split = 'selection' AND name = 'loss'",
            )
            assert t["value"] == final["value"]

    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    assert "completed" not in err.split("summary:")[1] and "cached" in err, err
    assert sql(cli, store, "SELECT sum(attempts) AS n FROM runs")[0]["n"] == len(runs), "the re-apply trained nothing"
    assert sql(cli, store, TRIALS) == trials


class StopAtRun:
    """A plugin that presses Ctrl-C at the first evaluation of the ``n``-th run that trains."""

    def __init__(self, n):
        self.n, self.started = n, []

    @hookimpl
    def on_run_start(self, task):
        self.started.append(task.run_id)

    @hookimpl
    def on_evaluation(self, task, step, metrics):
        if len(self.started) == self.n:
            raise KeyboardInterrupt


def test_an_interrupted_search_resumes_with_the_suggestions_it_would_have_made(write_spec, cli, tmp_path):
    from specrun.plugins import set_registry
    from specrun.testing import registry_with

    spec = search_spec(write_spec, n=5, sampler="tpe", pruner="median")
    whole, resumed = tmp_path / "whole.duckdb", tmp_path / "resumed.duckdb"
    assert cli("apply", str(spec), "--store", str(whole))[0] == 0
    expected = [(t["trial"], t["run_id"], t["params"], t["state"]) for t in sql(cli, whole, TRIALS)]

    stop = StopAtRun(3)
    set_registry(registry_with(stop))
    code, _, err = cli("apply", str(spec), "--store", str(resumed))
    assert code != 0 and len(stop.started) == 3, err
    assert [t["trial"] for t in sql(cli, resumed, TRIALS)] == [0, 1]
    assert sql(cli, resumed, f"SELECT status FROM runs WHERE run_id = '{stop.started[-1]}'") == [
        {"status": "interrupted"}
    ]
    code, out, err = cli("plan", str(spec), "--store", str(resumed))
    assert code == 0 and "5 trials: 2 finished" in out + err, out + err

    set_registry(registry_with())
    code, _, err = cli("apply", str(spec), "--store", str(resumed))
    assert code == 0, err
    assert [(t["trial"], t["run_id"], t["params"], t["state"]) for t in sql(cli, resumed, TRIALS)] == expected
    trained_twice = sql(cli, resumed, "SELECT run_id FROM runs WHERE attempts > 1")
    assert trained_twice == [{"run_id": stop.started[-1]}], (
        "only the interrupted run trained again; the finished trials were told from the store"
    )


def test_validate_locates_errors_in_the_search_space(write_spec, cli):
    space = """
[search]
n_trials = 4
metric = "precision"

[search.space]
"train.learning_rate" = { type = "float", low = 0, high = 1e-2, log = true }
"train.batch_size" = { type = "int", low = 16, high = 8 }
"method.rnk" = { type = "int", low = 2, high = 8 }
"experiment.name" = { type = "categorical", choices = ["a", "b"] }
"method.alpha" = { type = "categorical", choices = [8, "wide"] }
"""
    spec = write_spec(train="max_steps = 2", extra=space)
    code, _, err = cli("validate", str(spec))
    lines = {m.group(1): line for line in err.splitlines() if (m := re.search(r"\.toml:\d+: ([\w.]+):", line))}
    assert code == 2 and "Traceback" not in err, err
    text = spec.read_text().splitlines()
    at = lambda key: next(i + 1 for i, line in enumerate(text) if line.startswith(key))  # noqa: E731
    assert f"toy.toml:{at('metric')}:" in lines["search.metric"] and "'accuracy'" in lines["search.metric"]
    assert "log = true needs low above 0" in lines["search.space.train.learning_rate"]
    assert "empty range: low 16 is not below high 8" in lines["search.space.train.batch_size"]
    rnk = at('"method.rnk"')
    assert (
        f"toy.toml:{rnk}:" in lines["search.space.method.rnk"]
        and "did you mean 'rank'" in lines["search.space.method.rnk"]
    )
    assert "can only search keys under model, data, method, train" in lines["search.space.experiment.name"]
    assert "value 'wide': method.alpha" in lines["search.space.method.alpha"]


def check_optimization_analysis(cli, store, trials):
    """The optimization analysis's tables agree with the trials the search stored."""
    rows = sql(
        cli, store, "SELECT trial, state, value, best_so_far, pruned_step FROM optimization_trials ORDER BY trial"
    )
    assert [(r["trial"], r["state"], r["value"]) for r in rows] == [
        (t["trial"], t["state"], t["value"]) for t in trials
    ]
    values = [t["value"] for t in trials]
    assert [r["best_so_far"] for r in rows] == [
        min((v for v in values[: i + 1] if v is not None), default=None) for i in range(len(values))
    ]
    importance = sql(cli, store, "SELECT param, importance FROM optimization_importance")
    assert {r["param"] for r in importance} <= {"train.learning_rate", "method.rank"} and importance
    assert sum(r["importance"] for r in importance) == pytest.approx(1.0)
    marks = sql(cli, store, "SELECT trial, step FROM optimization_curves WHERE pruned_here ORDER BY trial")
    assert marks == [{"trial": r["trial"], "step": r["pruned_step"]} for r in rows if r["state"] == "pruned"]
    complete = [t for t in trials if t["state"] == "complete"]
    assert sql(cli, store, "SELECT count(DISTINCT trial) AS n FROM optimization_slices")[0]["n"] == len(complete)


def test_the_objective_is_the_mean_selection_metric_never_the_reported_one(write_spec, cli, tmp_path):
    """Nothing selects on the split whose numbers are reported: a trial's runs carve a selection set from the
    training split, and the objective is the mean of search.metric over the seeds on split 'selection'."""
    spec = write_spec(train="max_steps = 4\neval_every = 2", extra=SEARCH.format(n=2, sampler="random", pruner="none"))
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    store = tmp_path / "s.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0 and "4 completed" in err, err
    finals = sql(
        cli,
        store,
        "SELECT t.trial, m.split, avg(m.value) AS mean FROM search_trials t JOIN metrics m USING (run_id) "
        "WHERE m.final AND m.name = 'loss' GROUP BY ALL",
    )
    mean = {(r["trial"], r["split"]): r["mean"] for r in finals}
    trials = sql(cli, store, "SELECT trial, count(*) AS runs, any_value(value) AS value FROM search_trials GROUP BY 1")
    assert len(trials) == 2
    for t in trials:
        assert t["runs"] == 2 and t["value"] == pytest.approx(mean[(t["trial"], "selection")], abs=1e-12)
        assert t["value"] != pytest.approx(mean[(t["trial"], "validation")], abs=1e-9), "not the reported split's"
    carved = sql(
        cli,
        store,
        "SELECT DISTINCT config->>'$.train.evaluate_selection' AS on, m.name, m.value FROM runs JOIN metrics m USING (run_id) "
        "WHERE m.final AND m.split = 'selection' AND m.name IN ('examples', 'on_reported_split') ORDER BY m.name",
    )
    assert carved == [
        {"on": "true", "name": "examples", "value": 24.0},  # 10% of the 240 training examples
        {"on": "true", "name": "on_reported_split", "value": 0.0},
    ]


def test_a_search_that_would_select_on_the_reported_split_is_refused_with_the_fix(write_spec, cli, tmp_path):
    extra = SEARCH.format(n=2, sampler="random", pruner="none")
    spec = write_spec(train='max_steps = 2\nselect_on = "validation"', extra=extra)
    code, _, err = cli("validate", str(spec))
    line = next(i + 1 for i, text in enumerate(spec.read_text().splitlines()) if text.startswith("select_on"))
    assert code == 2 and "Traceback" not in err, err
    assert (
        f"toy.toml:{line}: train.select_on: the search's objective and pruner (search.metric) would select on 'validation'"
        in err
    )
    assert "Leave select_on out" in err and "train.allow_selection_on_reported = true" in err
    spec = write_spec(train="max_steps = 2\nallow_selection_on_reported = true", extra=extra)
    code, out, err = cli("plan", str(spec), "--store", str(tmp_path / "s.duckdb"))
    assert code == 0, err
    assert "objective: the mean loss on the reported evaluation set (train.allow_selection_on_reported" in out + err


def test_pruned_trials_are_part_of_the_experiments_record_and_never_of_a_comparison(write_spec, cli, tmp_path):
    """Every run a search trained joins its apply (``current_runs``) with its status: the report counts the
    pruned trials and lists their runs, ``specrun runs --experiment`` shows them, while the analyses that
    compare results read completed runs only. The trial's other seed never ran: it is no 'not run'."""
    report = tmp_path / "report.html"
    analyses = (
        '\n[[analyses]]\nname = "bootstrap_ci"\n\n[[analyses]]\nname = "paired_comparison"\npairs = "all"\n'
        f'\n[report]\npath = "{report}"\n'
    )
    spec, store = search_spec(write_spec, n=6, extra=analyses), tmp_path / "s.duckdb"
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    trials = sql(cli, store, TRIALS)
    status = {r["run_id"]: r["status"] for r in sql(cli, store, "SELECT run_id, status FROM runs")}
    complete = {t["trial"] for t in trials if t["state"] == "complete"}
    completed = {t["run_id"] for t in trials if t["state"] == "complete"}
    pruned = {t["run_id"] for t in trials if t["state"] == "pruned" and t["run_id"] in status}
    never = {t["run_id"] for t in trials if t["state"] == "pruned" and t["run_id"] not in status}
    assert pruned and complete and len(never) == len(pruned), (trials, status)
    assert {status[r] for r in pruned} == {"pruned"} and {status[r] for r in completed} == {"completed"}
    current = {r["run_id"]: r["status"] for r in sql(cli, store, CURRENT)}
    assert current == {**dict.fromkeys(completed, "completed"), **dict.fromkeys(pruned, "pruned")}

    page = report.read_text()
    counts = re.search(r'<p class="counts">(.*?)</p>', page).group(1)
    assert (
        f"<strong>{len(completed)}</strong> completed" in counts and f"<strong>{len(pruned)}</strong> pruned" in counts
    )
    assert "not run" not in counts and "left out of the analyses" not in err, err
    n_pruned = len(pruned)
    assert f"search: 6 trials: {6 - n_pruned} completed, {n_pruned} pruned</p>" in page
    assert "<h4>Runs</h4>" in page
    runs_table = page.split("<h4>Runs</h4>", 1)[1].split("</table>", 1)[0]
    for run_id in pruned:
        row = re.search(rf"<tr>(?:(?!</tr>).)*{run_id}(?:(?!</tr>).)*</tr>", runs_table, re.S)
        assert row and "pruned" in row.group(0) and "pruned by the median pruner at step" in row.group(0), run_id

    code, out, err = cli("runs", "--experiment", "toy", "--status", "pruned", "--store", str(store), "-f", "json")
    assert code == 0, err
    listed = json.loads(out)
    assert {r["run_id"] for r in listed} == pruned
    assert all(r["accuracy"] is None and r["error"].startswith("pruned by the median pruner") for r in listed)

    compared = {r["run_id"] for r in sql(cli, store, "SELECT DISTINCT run_id FROM bootstrap_ci_runs")}
    assert compared == completed, "only completed runs enter bootstrap_ci"
    configs = {r["config"] for r in sql(cli, store, "SELECT config FROM bootstrap_ci")}
    assert len(configs) == len(complete)
    arms = sql(cli, store, "SELECT a, b, n_seeds FROM paired_comparison")
    assert arms and {r["a"] for r in arms} | {r["b"] for r in arms} == configs and all(r["n_seeds"] == 2 for r in arms)

    code, out, err = cli("plan", str(spec), "--store", str(store))
    assert code == 0 and f"({len(complete)} complete, {n_pruned} pruned, 0 failed), 0 left" in out + err, out + err
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    assert f"{n_pruned} pruned" in err.split("summary:")[1] and "completed" not in err.split("summary:")[1], err
    assert sql(cli, store, "SELECT max(attempts) AS n FROM runs")[0]["n"] == 1, "the re-apply trained nothing"
    assert {r["run_id"]: r["status"] for r in sql(cli, store, CURRENT)} == current, "the re-apply's record is the same"


CURRENT = "SELECT c.run_id, r.status FROM current_runs c JOIN runs r USING (run_id) WHERE c.experiment = 'toy'"
