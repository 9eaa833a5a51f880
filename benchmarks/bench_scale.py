"""Scale of what users read (issue 23, item 6): a report over a 240-run experiment, and ``specrun app``'s
first page over a store of 1,000 runs, each on a store generated here without training anything.

The store is written through specrun's own store API, as ``specrun apply`` writes it: a spec is planned
(``plan_runs``: the real run ids, configs and sweep values), the apply recorded (``record_apply``), each
run claimed (``claim``) and completed (``complete``) with a synthetic ``RunRecord`` of the size a real
run records: final metrics on the dev set, every cost metric, a learning curve (train and evaluation
metrics every ``--eval-every`` steps), one prediction per dev example (SST-2's 872), the training
examples' ids (2,000), and a weights artifact. Accuracies follow the configuration (rank, learning rate,
placement) plus seed noise, and each run's predictions are right on that share of the examples (easy
examples more often), so the analyses have real work: bootstrap CIs over 872 predictions, McNemar pairs,
learning curves of every run, sensitivity grids, the Pareto front.

Measured (each a fresh process, as a user runs it, after one untimed warm-up):
  report   ``specrun report SPEC --store S`` with no analysis computed yet (it computes the spec's six
           analyses, then builds the HTML): wall seconds; also ``--no-analyze`` (build only), and
           ``specrun analyze``'s share. Goal: <= 10 s at 240 runs.
  app      ``specrun app --store S --port P``: seconds from launching the process to the first complete
           HTTP response of its main page (GET /), then the page's own load event (the model list it
           fetches when a browser opens it, through Gradio's API), and the size of the page. Goal: <= 3 s
           at 1,000 runs.

    python benchmarks/bench_scale.py                 # 240-run report, 1,000-run app, 3 repeats each
    python benchmarks/bench_scale.py --quick         # smoke test: 8 runs and 24 runs, 1 round, no warm-up
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPECRUN = str(Path(sys.executable).with_name("specrun"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEV_EXAMPLES = 872  # SST-2's dev set
TRAIN_EXAMPLES = 2000
PLACEMENTS = ["attn-qv", "attn-full", "ffn-only", "full-model"]
RANKS = [4, 8, 16, 32, 64]
RATES = [1e-4, 3e-4, 1e-3, 3e-3]

GOALS = {"report": 10.0, "app": 3.0}


def spec_text(name: str, placements: list[str], ranks: list[int], rates: list[float], seeds: list[int]) -> str:
    """A study of LoRA placement × rank × learning rate × seeds on SST-2, with the usual analyses."""
    return f"""
[experiment]
name = "{name}"
seeds = {json.dumps(seeds)}

[model]
name = "{MODEL}"
max_length = 128

[data]
dataset = "glue/sst2"
max_train_examples = {TRAIN_EXAMPLES}

[method]
name = "lora"
rank = 8
alpha = 16
placement = "attn-qv"

[train]
epochs = 4
batch_size = 32
learning_rate = 1e-3
eval_every = 25

[sweep]
"method.placement" = {json.dumps(placements)}
"method.rank" = {json.dumps(ranks)}
"train.learning_rate" = {json.dumps(rates)}

[[analyses]]
name = "efficiency"
costs = ["trainable_params", "train_seconds"]

[[analyses]]
name = "bootstrap_ci"

[[analyses]]
name = "paired_comparison"
vary = "method.placement"

[[analyses]]
name = "learning_curves"

[[analyses]]
name = "sensitivity"
x = "train.learning_rate"
y = "method.rank"

[[analyses]]
name = "scaling"
x = "method.rank"
group = "method.placement"

[report]
headline = "efficiency"
title = "Synthetic study: LoRA placement x rank x learning rate"
"""


def _quality(config: dict) -> float:
    """A plausible dev accuracy for a configuration (no noise): more rank and more modules help a little,
    the learning rate has an optimum at 1e-3."""
    import math

    method, lr = config["method"], config["train"]["learning_rate"]
    placement = PLACEMENTS.index(method.get("placement", "attn-qv")) if method.get("placement") in PLACEMENTS else 0
    return min(
        0.93,
        0.80 + 0.012 * math.log2(method.get("rank", 8)) + 0.01 * placement - 0.03 * abs(math.log10(lr) + 3),
    )


def synthetic_record(run, steps: int, eval_every: int, difficulty: list[float], labels: list[int], weights: Path):
    """A RunRecord the size of a real run's: final and cost metrics, a learning curve, 872 predictions,
    2,000 training example ids and a weights file."""
    from specrun.core.task import ArtifactFile, MetricRow, RunRecord

    rng = random.Random(run.run_id)
    accuracy = max(0.5, min(0.99, _quality(run.config) + rng.gauss(0, 0.006)))
    rank = run.config["method"].get("rank", 8)
    trainable = 1538 + rank * 2 * 384 * 2 * 6 * (1 + PLACEMENTS.index(run.config["method"]["placement"]))
    train_seconds = 60 + 0.5 * rank + rng.random() * 5
    metrics: list[MetricRow] = []
    for step in range(eval_every, steps + 1, eval_every):
        progress = step / steps
        at = 0.5 + (accuracy - 0.5) * (1 - (1 - progress) ** 3) + rng.gauss(0, 0.004)
        epoch = 4 * progress
        metrics += [
            MetricRow(step, epoch, "train", "loss", 0.7 * (1 - progress) + 0.15 + rng.gauss(0, 0.01)),
            MetricRow(step, epoch, "train", "accuracy", at + 0.02),
            MetricRow(step, epoch, "train", "learning_rate", run.config["train"]["learning_rate"] * (1 - progress)),
            MetricRow(step, epoch, "train", "seconds", train_seconds * progress),
            MetricRow(step, epoch, "validation", "accuracy", at),
            MetricRow(step, epoch, "validation", "f1", at - 0.005),
            MetricRow(step, epoch, "validation", "f1_macro", at - 0.006),
            MetricRow(step, epoch, "validation", "loss", 0.75 - 0.4 * progress),
            MetricRow(step, epoch, "validation", "n_examples", DEV_EXAMPLES),
        ]
    # right on the easiest examples, with a little noise: a paired design like real runs of one study
    threshold = sorted(d + rng.gauss(0, 0.05) for d in difficulty)[int(accuracy * len(difficulty)) - 1]
    right = [d + rng.gauss(0, 0.05) <= threshold for d in difficulty]
    predictions = [y if ok else 1 - y for y, ok in zip(labels, right)]
    accuracy = sum(right) / len(right)
    confidence = [0.5 + 0.5 * rng.random() for _ in labels]
    costs = {
        "artifact_bytes": 150_000 + 4_000 * rank,
        "eval_examples_per_second": 400 + rng.random() * 50,
        "latency_examples": 32,
        "latency_ms_mean": 7 + rng.random(),
        "latency_ms_p50": 7 + rng.random(),
        "latency_ms_p95": 9 + rng.random(),
        "model_memory_mb": 87 + rank / 10,
        "peak_memory_mb": 900 + rank,
        "samples_per_second": TRAIN_EXAMPLES * 4 / train_seconds,
        "time_to_best_seconds": train_seconds * 0.8,
        "total_params": 22_700_000 + trainable,
        "train_examples": TRAIN_EXAMPLES,
        "train_seconds": train_seconds,
        "train_steps": steps,
        "trainable_params": trainable,
        "trainable_pct": 100 * trainable / (22_700_000 + trainable),
    }
    metrics += [MetricRow(steps, 4.0, "cost", name, float(value), final=True) for name, value in costs.items()]
    metrics += [
        MetricRow(steps, 4.0, "validation", "accuracy", accuracy, final=True),
        MetricRow(steps, 4.0, "validation", "f1", accuracy - 0.004, final=True),
        MetricRow(steps, 4.0, "validation", "f1_macro", accuracy - 0.005, final=True),
        MetricRow(steps, 4.0, "validation", "loss", 0.35, final=True),
        MetricRow(steps, 4.0, "validation", "n_examples", DEV_EXAMPLES, final=True),
    ]
    return RunRecord(
        run_id=run.run_id,
        metrics=metrics,
        predictions={
            "split": ["validation"] * len(labels),
            "example_id": [str(i) for i in range(len(labels))],
            "label": labels,
            "prediction": predictions,
            "confidence": confidence,
            "loss": [0.1 if ok else 1.5 for ok in right],
        },
        artifacts=[ArtifactFile("weights", str(weights), hashlib.sha256(weights.read_bytes()).hexdigest(), 4)],
        train_examples=(
            [f"train-{(i * 7919 + run.seed) % 67349}" for i in range(TRAIN_EXAMPLES)],
            [i % 2 for i in range(TRAIN_EXAMPLES)],
        ),
        train_seconds=train_seconds,
        environment={"executor": "local", "synthetic": "benchmarks/bench_scale.py"},
    )


def generate(folder: Path, store_path: Path, name: str, configs: int, seeds: int, eval_every: int = 25) -> dict:
    """Plan a spec of about ``configs`` configurations × ``seeds`` seeds and record every run as completed
    in ``store_path``; returns the spec path, the number of runs and the seconds each phase took."""
    from specrun.plugins import get_registry
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec
    from specrun.store.db import Store
    from specrun.store.runs import claim, complete, record_apply

    grid = [(p, r, lr) for p in PLACEMENTS for r in RANKS for lr in RATES]
    if configs > len(grid):
        raise ValueError(f"at most {len(grid)} configurations")
    # a sub-grid with at least ``configs`` points, grown one value per axis in turn (every axis varies from 8)
    placements, ranks, rates = PLACEMENTS[:1], RANKS[:1], RATES[:1]
    while len(placements) * len(ranks) * len(rates) < configs:
        for axis, full in ((placements, PLACEMENTS), (ranks, RANKS), (rates, RATES)):
            if len(axis) < len(full) and len(placements) * len(ranks) * len(rates) < configs:
                axis.append(full[len(axis)])
    spec = folder / f"{name}.toml"
    spec.write_text(spec_text(name, placements, ranks, rates, list(range(seeds))))
    started = time.perf_counter()
    registry = get_registry()
    loaded = load_spec(spec, [], registry)
    planned = plan_runs(loaded, registry)
    planned_seconds = time.perf_counter() - started
    store = Store(store_path)
    record_apply(store, loaded, [], [p.run_id for p in planned])
    rng = random.Random(0)
    difficulty = [rng.random() for _ in range(DEV_EXAMPLES)]
    labels = [rng.randrange(2) for _ in range(DEV_EXAMPLES)]
    weights = folder / "weights" / "adapter_model.safetensors"
    weights.parent.mkdir(exist_ok=True)
    weights.write_bytes(b"fake")  # the app lists runs with a weights artifact; nothing here loads it
    steps = 4 * (TRAIN_EXAMPLES // 32)
    t = time.perf_counter()
    for run in planned:
        claim(store, run, str(spec), {"executor": "local"}, force=False)
        complete(store, run.run_id, synthetic_record(run, steps, eval_every, difficulty, labels, weights))
    return {
        "spec": spec,
        "runs": len(planned),
        "configs": len(placements) * len(ranks) * len(rates),
        "plan_seconds": planned_seconds,
        "record_seconds": time.perf_counter() - t,
    }


def env() -> dict:
    # as installed: specrun's bytecode written once and read after (see bench_processes.env)
    environ = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {
        **environ,
        "PYTHONPATH": str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
        "SPECRUN_DATA_DIR": os.environ.get("SPECRUN_DATA_DIR", str(HERE.parent.parent / "shared" / "data")),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of a fresh process of ``cmd``. On a loaded machine the
    CPU time is the steadier figure: the work done, whoever else was on the cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clear_analyses(store_path: Path) -> None:
    """Forget every computed analysis, so the next ``report`` computes them as after a fresh apply."""
    import duckdb

    db = duckdb.connect(str(store_path))
    try:
        db.execute("DELETE FROM analyses")  # their result tables are rewritten when computed again
    finally:
        db.close()


def bench_report(folder: Path, configs: int, seeds: int, repeats: int, log=print, warmup: bool = True) -> dict:
    store = folder / "report.duckdb"
    made = generate(folder, store, "scale-report", configs, seeds)
    log(
        f"  store: {made['runs']} runs ({made['configs']} configurations x {seeds} seeds) planned in {made['plan_seconds']:.1f} s, "
        f"recorded in {made['record_seconds']:.1f} s; {store.stat().st_size / 1e6:.0f} MB"
    )
    out = folder / "report.html"
    spec = str(made["spec"])
    rounds = []
    for r in range(repeats + 1):  # round 0: the untimed warm-up (page cache, .pyc)
        if r == 0 and not warmup:
            continue
        clear_analyses(store)
        full = timed([SPECRUN, "-q", "report", spec, "--store", str(store), "-o", str(out)], folder)
        build = timed([SPECRUN, "-q", "report", spec, "--store", str(store), "-o", str(out), "--no-analyze"], folder)
        clear_analyses(store)
        analyze = timed([SPECRUN, "-q", "analyze", spec, "--store", str(store)], folder)
        if r:
            row = {"load_avg_1min": os.getloadavg()[0]}
            for key, (wall, cpu) in (("report", full), ("build_only", build), ("analyze", analyze)):
                row[key], row[key + "_cpu"] = wall, cpu
            rounds.append(row)
            log(
                f"  round {r}: report {full[0]:.2f} s wall, {full[1]:.2f} s CPU (build only {build[0]:.2f} s, {build[1]:.2f} s CPU; "
                f"analyze alone {analyze[0]:.2f} s, {analyze[1]:.2f} s CPU)  load {row['load_avg_1min']:.1f}"
            )
    keys = ("report", "report_cpu", "build_only", "build_only_cpu", "analyze", "analyze_cpu")
    return {
        **{k: v for k, v in made.items() if k != "spec"},
        "html_bytes": out.stat().st_size,
        "rounds": rounds,
        "median": {k: statistics.median(r[k] for r in rounds) for k in keys},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_page(store: Path, folder: Path, timeout: float = 120) -> dict:
    """Launch ``specrun app`` and time its first complete answer to GET /, then the page's load event."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [SPECRUN, "app", "--store", str(store), "--port", str(port)],
        cwd=folder,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = None
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"specrun app exited ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    body = response.read()
                break
            except OSError:
                time.sleep(0.05)
        first = time.perf_counter() - t0
        first_cpu = cpu_seconds(proc.pid)
        if body is None:
            raise RuntimeError(f"specrun app did not answer {url} in {timeout:.0f} s")
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            again = len(response.read())
        warm = time.perf_counter() - t
        loaded = page_load(url)
        return {
            "first_page": first,
            "first_page_cpu": first_cpu,
            "page_bytes": len(body),
            "warm_page": warm,
            "warm_bytes": again,
            **loaded,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def page_load(url: str) -> dict:
    """What a browser does next: run the page's load event (the model list, from the store) through
    Gradio's client; seconds until its result, and how many table rows it sent."""
    try:
        from gradio_client import Client
    except ImportError:
        return {}
    t = time.perf_counter()
    client = Client(url, verbose=False, download_files=False)
    connect = time.perf_counter() - t
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    name = next((n for n in endpoints if n.startswith("/refilter")), None)
    if name is None:
        return {"client_connect": connect}
    t = time.perf_counter()
    result = client.predict("(all)", "(all)", "(all)", None, [], api_name=name)
    seconds = time.perf_counter() - t
    client.close()
    table = result[1] if isinstance(result, (list, tuple)) else None
    rows = len(table.get("data", [])) if isinstance(table, dict) else None
    return {"client_connect": connect, "model_list": seconds, "model_list_rows": rows}


def bench_app(folder: Path, configs: int, seeds: int, repeats: int, log=print, warmup: bool = True) -> dict:
    store = folder / "app.duckdb"
    made = generate(folder, store, "scale-app", configs, seeds)
    log(
        f"  store: {made['runs']} runs planned in {made['plan_seconds']:.1f} s, recorded in {made['record_seconds']:.1f} s; "
        f"{store.stat().st_size / 1e6:.0f} MB"
    )
    rounds = []
    for r in range(repeats + 1):
        if r == 0 and not warmup:
            continue
        result = first_page(store, folder)
        if r:
            result["load_avg_1min"] = os.getloadavg()[0]
            rounds.append(result)
            log(
                f"  round {r}: first page {result['first_page']:.2f} s after launch, {result['first_page_cpu']:.2f} s CPU ({result['page_bytes'] / 1e3:.0f} kB; "
                f"again {result['warm_page']:.2f} s); model list {result.get('model_list', float('nan')):.2f} s "
                f"({result.get('model_list_rows')} rows)  load {result['load_avg_1min']:.1f}"
            )
    keys = [k for k in ("first_page", "first_page_cpu", "warm_page", "model_list") if all(k in r for r in rounds)]
    return {
        **{k: v for k, v in made.items() if k != "spec"},
        "rounds": rounds,
        "median": {k: statistics.median(r[k] for r in rounds) for k in keys},
    }


def run(folder: Path, quick: bool, repeats: int, log=print, which=("report", "app")) -> dict:
    """Both measurements at their sizes (quick: 8 and 24 runs, no warm-up round); the bench_all entry point."""
    results = {}
    if "report" in which:
        configs, seeds = (8, 1) if quick else (80, 3)
        log(f"[scale] report over {configs * seeds} runs, {repeats} round(s)")
        (folder / "report").mkdir(parents=True, exist_ok=True)
        results["report"] = bench_report(folder / "report", configs, seeds, repeats, log, warmup=not quick)
    if "app" in which:
        configs, seeds = (10, 2) if quick else (80, 13)  # 80 x 13 = 1,040 runs
        log(f"[scale] app's first page over {configs * seeds} runs, {repeats} round(s)")
        (folder / "app").mkdir(parents=True, exist_ok=True)
        results["app"] = bench_app(folder / "app", configs, seeds, repeats, log, warmup=not quick)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: small stores, 1 round")
    parser.add_argument("--repeats", type=int, help="timed rounds after the warm-up (default 3; --quick 1)")
    parser.add_argument("--only", choices=["report", "app"], action="append")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep its stores")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("SPECRUN_DATA_DIR", str(HERE.parent.parent / "shared" / "data"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    repeats = args.repeats or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = args.keep or Path(tmp)
        results = run(folder, args.quick, repeats, which=args.only or ("report", "app"))
    for what, r in results.items():
        print(
            f"{what}: median {json.dumps({k: round(v, 2) for k, v in r['median'].items()})} (goal <= {GOALS[what]} s)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
