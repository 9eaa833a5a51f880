"""The run boundary and the executors: a task and its record pickle; the driver alone writes the store;
`--executor ray` gives the runs, metrics and predictions `local` gives, runs dependencies first, and a
Ray worker killed mid-run leaves its run interrupted while the others complete."""

from __future__ import annotations

import ast
import json
import logging
import os
import pickle
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "specrun"

SWEEP = '[sweep]\n"train.learning_rate" = [0.003, 0.01]'


def rows(store: Path, sql: str) -> list[tuple]:
    db = duckdb.connect(str(store), read_only=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# --- the boundary --------------------------------------------------------------------------------


def test_runner_holds_no_sql_and_no_store_handle():
    """Everything under runner/ and executors/ works without the store: no import of specrun.store,
    no SQL statement in a string."""
    offenders = []
    for folder in ("runner", "executors"):
        for path in sorted((SRC / folder).glob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("specrun.store"):
                    offenders.append(f"{path.name}: imports {node.module}")
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    words = node.value.upper().split()
                    if words[:1] in (["SELECT"], ["INSERT"], ["UPDATE"], ["DELETE"]) and (
                        "FROM" in words or "INTO" in words or "SET" in words
                    ):
                        offenders.append(f"{path.name}: SQL {node.value[:40]!r}")
    assert not offenders, offenders


class Elsewhere:
    """An executor whose worker does not share the driver's disk and talks to it through pickles only:
    the task and the record cross as bytes, and artifacts come back inside the record."""

    name = "elsewhere"
    shares_artifacts = False

    def __init__(self, registry, worker_disk: Path):
        from specrun.executors.local import LocalExecutor

        self.inner = LocalExecutor(registry)
        self.worker_disk = worker_disk
        self.sizes: list[tuple[int, int]] = []

    def free_slots(self):
        return self.inner.free_slots()

    def submit(self, task):
        blob = pickle.dumps(task)
        task = pickle.loads(blob)
        assert task.return_artifacts
        task.artifacts_dir = str(self.worker_disk)
        self.inner.submit(task)
        self.sizes.append((len(blob), 0))

    def next_finished(self):
        blob = pickle.dumps(self.inner.next_finished())
        self.sizes[-1] = (self.sizes[-1][0], len(blob))
        return pickle.loads(blob)

    def cancel(self):
        self.inner.cancel()

    def close(self):
        pass


def test_tasks_and_records_cross_as_pickles_with_artifacts(write_spec, registry, tmp_path, cli):
    from specrun.driver.apply import Driver
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec
    from specrun.store import Store

    spec = write_spec(name="apart", train="max_steps = 6")
    loaded = load_spec(spec, [], registry)
    planned = plan_runs(loaded, registry)
    worker_disk = tmp_path / "worker-disk"
    executor = Elsewhere(registry, worker_disk)
    store = Store(tmp_path / "store.duckdb")
    outcomes = Driver(store, registry, str(spec), executor).run_all(planned)
    assert [o.status for o in outcomes] == ["completed"], outcomes
    assert all(sent > 0 and back > 0 for sent, back in executor.sizes)
    (path,) = rows(store.path, "SELECT path FROM artifacts WHERE kind = 'weights'")[0:1][0]
    # the weights lie in the driver's artifact folder (recorded relative to the store's folder), not on the
    # worker's disk (which the worker cleaned)
    assert path.startswith("artifacts/") and (tmp_path / path).is_file()
    assert not (worker_disk / planned[0].run_id).exists()
    assert (tmp_path / path).with_name("run.json").is_file()
    code, out, err = cli("predict", planned[0].run_id, "a really good film", "--store", str(store.path), "-f", "json")
    assert code == 0, err
    assert json.loads(out)[0]["label"] in ("0", "1")


def test_executor_options_are_checked(write_spec, cli, tmp_path, monkeypatch):
    spec = write_spec(name="opts", train="max_steps = 2")
    store = tmp_path / "opts.duckdb"
    code, _, err = cli("apply", str(spec), "--executor", "slurm", "--store", str(store))
    assert code == 2 and "--executor must be one of local, ray" in err and "Traceback" not in err
    code, _, err = cli("apply", str(spec), "--cpus-per-run", "2", "--store", str(store))
    assert code == 2 and "go with --executor ray" in err
    monkeypatch.setenv("SPECRUN_EXECUTOR", "dask")
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 2 and "SPECRUN_EXECUTOR must be one of local, ray, not 'dask'" in err
    assert not store.exists()


# --- Ray ------------------------------------------------------------------------------------------


class _FakeRay:
    """Stands in for the ``ray`` module in RayExecutor: records ``init``'s options and each submitted
    call, so that a worker's side can be replayed in this process (no Ray instance starts)."""

    def __init__(self):
        self.init_kwargs, self.calls = None, []

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.init_kwargs = kwargs

    def cluster_resources(self):
        return {"CPU": 2}

    def remote(self, **_):
        fake = self

        def wrap(fn):
            class Remote:
                def options(self, **_):
                    return self

                def remote(self, *args):
                    fake.calls.append((fn, args))
                    return object()

            return Remote()

        return wrap


@pytest.mark.parametrize("flag,level", [("-v", logging.DEBUG), ("", logging.INFO), ("-q", logging.WARNING)])
def test_a_ray_worker_logs_at_the_drivers_level(monkeypatch, flag, level):
    """`-v` on the driver makes each Ray worker log its debug notes, and shows the workers' output;
    without it the worker keeps the driver's level and Ray keeps their output in its log files."""
    from specrun import logs
    from specrun.core.task import RunRecord
    from specrun.executors import ray as ray_executor
    from specrun.runner import execute as execute_module

    fake = _FakeRay()
    monkeypatch.setattr(ray_executor, "_import_ray", lambda: fake)
    heard = []
    monkeypatch.setattr(
        execute_module,
        "execute",
        lambda task, on_metrics=None: (
            heard.append(logging.getLogger("specrun.runner").getEffectiveLevel())
            or RunRecord(task.run_id, status="completed")
        ),
    )
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    try:
        logs.configure()  # the CLI's defaults, before it reads the options: quiet libraries
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
        logs.configure(verbose=flag == "-v", quiet=flag == "-q")  # the driver's options
        # a worker inherits the environment: -v takes back what would keep transformers quiet there
        assert ("TRANSFORMERS_VERBOSITY" in os.environ) is (flag != "-v")
        executor = ray_executor.RayExecutor()
        executor.submit(SimpleNamespace(run_id="r1", threads=None, track_every=0, awaits_decision=False))
        logs.configure()  # a fresh worker process: the defaults
        ((function, args),) = fake.calls
        assert function(*args).status == "completed"
        assert heard == [level]
        assert fake.init_kwargs["log_to_driver"] is (flag == "-v")
        assert "SPECRUN_LOG_LEVEL" not in ray_executor.FORWARDED_ENV  # passed with each task, not read from env
    finally:
        logs.configure()


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs, no GPU whatever the machine has) for this module's tests; `apply
    --executor ray` joins it."""
    ray = pytest.importorskip("ray", reason="the ray extra is installed by the dev extra")
    ray.init(
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        object_store_memory=256 * 2**20,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    yield ray
    ray.shutdown()


def test_ray_gives_the_same_runs_metrics_and_predictions_as_local(ray_instance, write_spec, cli, tmp_path):
    spec = write_spec(name="both", train="max_steps = 12", extra=SWEEP)
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    local, ray = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(local))
    assert code == 0 and "4 completed" in err, err
    code, _, err = cli("apply", str(spec), "--store", str(ray), "--executor", "ray")
    assert code == 0 and "4 completed" in err, err
    assert "[pool] runs:" in err and "[started]" in err

    ids = "SELECT run_id, status FROM runs ORDER BY run_id"
    assert rows(local, ids) == rows(ray, ids) and len(rows(local, ids)) == 4
    executors = rows(ray, "SELECT DISTINCT environment->>'executor', environment->>'torch_threads' FROM runs")
    assert executors == [("ray", "1")]
    metrics = (
        "SELECT run_id, split, name, value FROM metrics WHERE split <> 'cost' AND name <> 'seconds'"  # timings differ
        " ORDER BY run_id, split, name, step"
    )
    a, b = rows(local, metrics), rows(ray, metrics)
    assert [r[:3] for r in a] == [r[:3] for r in b]
    # fp32 on the CPU: thread counts differ (2 here, 1 per Ray worker), results must not beyond rounding
    assert max(abs(x[3] - y[3]) for x, y in zip(a, b)) < 1e-4
    preds = "SELECT run_id, split, example_id, prediction, confidence FROM predictions ORDER BY ALL"
    a, b = rows(local, preds), rows(ray, preds)
    assert len(a) == len(b) == 4 * 80
    assert [r[:4] for r in a] == [r[:4] for r in b]
    assert max(abs(x[4] - y[4]) for x, y in zip(a, b)) < 1e-4

    code, _, err = cli("apply", str(spec), "--store", str(ray), "--executor", "ray")
    assert code == 0 and "4 cached" in err


def test_ray_runs_teachers_first_and_stores_their_scores_once(ray_instance, write_spec, cli, tmp_path):
    teacher = write_spec(name="teacher", method='name = "full"', train="max_steps = 4")
    student = write_spec(
        name="student", train="max_steps = 2", extra='[sweep]\n"data.transforms.0.strategy" = ["easy", "hard"]'
    )
    student.write_text(
        student.read_text().replace(
            "[method]",
            f'[[data.transforms]]\nname = "difficulty"\nteacher = "{teacher.name}"\nn = 40\nstrategy = "easy"\n\n[method]',
        )
    )
    store = tmp_path / "teach.duckdb"
    code, _, err = cli("apply", str(student), "--store", str(store), "--executor", "ray")
    assert code == 0, err
    assert "[required first]" in err and "2 completed" in err
    # the teacher finished before either student started
    (teacher_done,) = rows(store, "SELECT finished_at FROM runs WHERE experiment = 'teacher'")[0]
    starts = rows(store, "SELECT started_at FROM runs WHERE experiment = 'student'")
    assert len(starts) == 2 and all(s[0] >= teacher_done for s in starts)
    # both students scored the same 240 examples with the teacher; the store keeps each score once
    assert rows(store, "SELECT count(*), count(DISTINCT example_id) FROM example_scores") == [(240, 240)]


def _kill_worker_of(run_id: str, seen: list, stop: threading.Event) -> None:
    """Kill the Ray worker process running ``run_id`` (Ray titles it ``ray::specrun:<run_id>``) once it
    has trained for a moment."""
    import os
    import signal

    import psutil

    while not stop.is_set():
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if f"specrun:{run_id}" in " ".join(proc.info["cmdline"] or []):
                time.sleep(1.5)
                os.kill(proc.info["pid"], signal.SIGKILL)
                seen.append(proc.info["pid"])
                return
        time.sleep(0.05)


def test_a_killed_ray_worker_leaves_its_run_interrupted_and_the_rest_complete(
    ray_instance, write_spec, cli, tmp_path, registry
):
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec

    spec = write_spec(name="killed", train="max_steps = 400\ncheckpoint_every = 20", extra=SWEEP)
    planned = plan_runs(load_spec(spec, [], registry), registry)
    victim = planned[0].run_id
    store = tmp_path / "killed.duckdb"
    seen, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_worker_of, args=(victim, seen, stop), daemon=True)
    killer.start()
    try:
        code, _, err = cli("apply", str(spec), "--store", str(store), "--executor", "ray")
    finally:
        stop.set()
        killer.join(timeout=10)
    assert seen, "the worker was never found"
    assert code == 1, err
    statuses = dict(rows(store, "SELECT run_id, status FROM runs"))
    assert statuses == {victim: "interrupted", planned[1].run_id: "completed"}
    error = rows(store, f"SELECT error FROM runs WHERE run_id = '{victim}'")[0][0]
    assert "Ray worker" in error

    # the next apply runs it again (from its checkpoint when one was saved) and leaves the other cached
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    assert "1 cached" in err and "1 completed" in err
    assert dict(rows(store, "SELECT run_id, status FROM runs")) == {p.run_id: "completed" for p in planned}


def test_ray_trains_transfer_sources_before_their_targets(ray_instance, write_spec, cli, tmp_path):
    """One source stage per placement, then its head-only transfer: on Ray each target starts only once
    its own source is stored, and loads that source's adapters."""
    spec = write_spec(
        name="moved",
        method='name = "lora"\nrank = 4\ntrain = "head"',
        train="max_steps = 3\nlearning_rate = 0.05",
        extra='[stages.source]\ntrain = { learning_rate = 0.01, max_steps = 4 }\nmethod = { train = "all" }\n\n'
        '[sweep]\n"method.placement" = ["attn-q", "attn-v"]\n',
    )
    spec.write_text(spec.read_text().replace("max_length = 32", 'max_length = 32\ninit_from = "stage:source"'))
    store = tmp_path / "moved.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(store), "--executor", "ray")
    assert code == 0, err
    pairs = rows(
        store,
        """
        SELECT t.config->'method'->>'placement', s.config->'method'->>'placement', s.finished_at <= t.started_at, x.loaded
        FROM runs t JOIN runs s ON s.run_id = (t.config->'model'->>'init_from') JOIN transfers x ON x.run_id = t.run_id
        ORDER BY 1""",
    )
    assert [(p[0], p[1], p[2]) for p in pairs] == [("attn-q", "attn-q", True), ("attn-v", "attn-v", True)]
    assert all(p[3] == 4 for p in pairs)  # 2 layers x (A, B) of the one adapted projection, all loaded


def test_sigterm_to_a_ray_apply_records_its_runs_in_flight_as_interrupted(write_spec, tmp_path, registry):
    """A kill of the driver (SIGTERM, as Ctrl-C) cancels the Ray tasks and records both runs in flight as
    interrupted; the process exits 130 without a traceback; the next apply completes them."""
    import os
    import signal
    import subprocess
    import sys

    pytest.importorskip("ray")
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec

    spec = write_spec(name="stopped", train="max_steps = 2000\ncheckpoint_every = 50", extra=SWEEP)
    planned = plan_runs(load_spec(spec, [], registry), registry)
    store = tmp_path / "stopped.duckdb"
    env = {**os.environ, "SPECRUN_PROGRESS_EVERY": "1"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "specrun"), "apply", str(spec), "--store", str(store), "--executor", "ray"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stderr:  # wait until both runs are in flight on Ray
        lines.append(line)
        if "[pool] runs: 2 running" in line:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "Traceback" not in rest
    statuses = dict(rows(store, "SELECT run_id, status FROM runs"))
    assert statuses == {p.run_id: "interrupted" for p in planned}


def test_a_run_asking_more_than_the_cluster_has_is_refused(ray_instance, write_spec, cli, tmp_path):
    spec = write_spec(name="toobig", train="max_steps = 2")
    store = tmp_path / "big.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(store), "--executor", "ray", "--gpus-per-run", "1")
    assert code == 2 and "--gpus-per-run 1: the Ray cluster has 0 GPUs in all" in err, err
    code, _, err = cli("apply", str(spec), "--store", str(store), "--executor", "ray", "--cpus-per-run", "3")
    assert code == 2 and "--cpus-per-run 3: the Ray cluster has 2 CPUs in all" in err, err
    assert not store.exists()  # refused before anything was written


def test_ray_forwards_live_reports_to_the_driver_and_mlflow_reads_them_back(ray_instance, write_spec, cli, tmp_path):
    """The live hooks hear the same calls with the same arguments on Ray as on the local executor, in the
    driver's process, and the mlflow tracker logs the Ray run's metrics per step (issue 24)."""
    pytest.importorskip("mlflow")
    from test_plugins import LiveLog
    from test_tracking import check_mlflow_run

    from specrun.plugins import set_registry
    from specrun.testing import registry_with

    heard = {}
    for executor in ("local", "ray"):
        live = LiveLog()
        set_registry(registry_with(live))
        uri = f"sqlite:///{tmp_path / executor}.db"
        spec = write_spec(train="max_steps = 4\neval_every = 2", extra=f'[tracking]\nevery = 2\nmlflow_uri = "{uri}"')
        store = tmp_path / f"{executor}.duckdb"
        track = ["--track", "mlflow"] if executor == "ray" else []
        code, _, err = cli("apply", str(spec), "--store", str(store), "--executor", executor, *track)
        assert code == 0 and "1 completed" in err, err
        heard[executor] = live.calls
        if executor == "ray":
            check_mlflow_run(cli, store, uri)
    shape = {k: [(c[0], c[1], c[2], [r[:3] for r in c[3] or []]) for c in calls] for k, calls in heard.items()}
    assert shape["local"] == shape["ray"] and [c[0] for c in heard["ray"]] == [
        "start",
        "window",
        "evaluation",
        "window",
        "evaluation",
        "end",
    ]
    values = {k: [r[3] for c in calls for r in c[3] or [] if r[2] != "seconds"] for k, calls in heard.items()}
    assert values["local"] == pytest.approx(values["ray"], abs=1e-4)


def test_a_search_trains_a_wave_of_trials_side_by_side_on_ray_and_its_pruner_stops_workers(
    ray_instance, write_spec, cli, tmp_path, monkeypatch
):
    """``search.parallel = 2`` on Ray: a wave's trials are claimed and trained together, the driver's pruner
    stops a worker at the evaluation it decided on, and the store replays the same trials on any executor."""
    optuna = pytest.importorskip("optuna")
    from test_search import SEARCH, TRIALS, sql

    import specrun.driver.search as search_module

    class PruneTheSecondWave(optuna.pruners.BasePruner):
        """Decided in the driver from the forwarded evaluations: the second wave's trials stop at their first."""

        def prune(self, study, trial):
            return trial.number >= 2

    monkeypatch.setattr(search_module, "make_pruner", lambda search, optuna: PruneTheSecondWave())
    text = SEARCH.format(n=4, sampler="random", pruner="median").replace("seed = 3", "seed = 3\nparallel = 2")
    spec, store = write_spec(train="max_steps = 6\neval_every = 2", extra=text), tmp_path / "ray.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(store), "--executor", "ray")
    assert code == 0 and "2 completed" in err and "2 pruned" in err, err
    trials = sql(cli, store, TRIALS)
    assert [t["state"] for t in trials] == ["complete", "complete", "pruned", "pruned"]
    runs = {
        r["run_id"]: r for r in sql(cli, store, "SELECT run_id, status, pruned_step, started_at, finished_at FROM runs")
    }
    for t in trials[2:]:  # stopped in its worker right after its first evaluation, with that evaluation's curve
        assert runs[t["run_id"]]["status"] == "pruned" and runs[t["run_id"]]["pruned_step"] == 2
        steps = sql(
            cli, store, f"SELECT DISTINCT step FROM metrics WHERE run_id = '{t['run_id']}' AND split = 'selection'"
        )
        assert steps == [{"step": 2}]
    for a, b in ((0, 1), (2, 3)):  # a wave's runs are claimed together, before either finishes
        first, second = runs[trials[a]["run_id"]], runs[trials[b]["run_id"]]
        assert max(first["started_at"], second["started_at"]) < min(first["finished_at"], second["finished_at"])

    monkeypatch.undo()
    code, out, err = cli("plan", str(spec), "--store", str(store))
    assert code == 0 and "4 trials: 4 finished (2 complete, 2 pruned, 0 failed), 0 left, 2 at a time" in out + err
    code, _, err = cli("apply", str(spec), "--store", str(store))  # the local executor replays the same trials
    assert code == 0 and "completed" not in err.split("summary:")[1], err
    assert sql(cli, store, TRIALS) == trials
