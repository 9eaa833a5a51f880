"""`--executor ray` (2 workers x 1 thread) against `--executor local` (one run at a time, 2 threads) on a
4-run sweep, in one benchmark run; and what the driver's single writer costs per record.

Workloads (4 runs each: seeds 0 and 1 x learning rates 2e-3 and 3e-3, LoRA r8 on query/value):
  tiny     a random 2-layer BERT (hidden 32) on 240 toy sentences, 60 steps, fp32
  minilm   sentence-transformers/all-MiniLM-L6-v2 on 1,000 SST-2 sentences, 1 epoch, max_length 64, bf16,
           evaluated on the 872 dev sentences

Each apply is a fresh `specrun apply` process with an empty store (the ray one pays Ray's start-up, which
is also timed on its own). The peers alternate who goes first each round. The writer cost: records of a
real tiny run (predictions on the 80 dev sentences) and of a MiniLM run (872), written --records times
under new run ids through the driver's path (claim, then `store.runs.complete` in one transaction).

    SPECRUN_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_executors.py --rounds 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPECRUN = str(Path(sys.executable).parent / "specrun")

SWEEP = '[sweep]\n"train.learning_rate" = [0.002, 0.003]\n'


def tiny_spec(folder: Path) -> Path:
    from specrun.testing import make_tiny_model, write_toy_data

    model = make_tiny_model(folder / "tiny-bert")
    write_toy_data(folder)
    spec = folder / "tiny.toml"
    spec.write_text(f"""
[experiment]
name = "bench-tiny"
seeds = [0, 1]
[model]
name = "{model}"
max_length = 32
[data]
dataset = "local"
eval_split = "validation"
[data.options]
files = {{ train = "{folder / "train.tsv"}", validation = "{folder / "dev.tsv"}" }}
[method]
name = "lora"
rank = 8
[train]
batch_size = 16
max_steps = 60
precision = "fp32"
checkpoint_every = "off"
{SWEEP}""")
    return spec


def minilm_spec(folder: Path) -> Path:
    spec = folder / "minilm.toml"
    spec.write_text(f"""
[experiment]
name = "bench-minilm"
seeds = [0, 1]
[model]
max_length = 64
[data]
dataset = "glue/sst2"
max_train_examples = 1000
[method]
name = "lora"
rank = 8
placement = "attn-qv"
[train]
epochs = 1
batch_size = 32
checkpoint_every = "off"
{SWEEP}""")
    return spec


def apply(spec: Path, store: Path, executor: str) -> float:
    args = [SPECRUN, "-q", "apply", str(spec), "--store", str(store)]
    if executor == "ray":
        args += ["--executor", "ray", "--cpus-per-run", "1"]
    env = {**os.environ, "SPECRUN_ARTIFACTS": str(store.parent / f"artifacts-{store.stem}")}
    env.pop("OMP_NUM_THREADS", None)
    t0 = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


def ray_startup() -> float:
    code = "import time, ray; t=time.perf_counter(); ray.init(num_cpus=2, include_dashboard=False, logging_level='ERROR'); ray.get(ray.remote(lambda: 1).remote()); print(time.perf_counter()-t); ray.shutdown()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def train_and_eval_seconds(store: Path) -> float:
    """Seconds the runs spent training and evaluating (the work itself), from the store."""
    import duckdb

    db = duckdb.connect(str(store), read_only=True)
    try:
        train = db.execute("SELECT sum(value) FROM metrics WHERE split = 'cost' AND name = 'train_seconds'").fetchone()[
            0
        ]
        evals = db.execute(
            "SELECT sum(value) FROM metrics m WHERE split = 'cost' AND name = 'eval_examples_per_second'"
        ).fetchone()[0]
        n_eval = db.execute("SELECT count(*) FROM predictions").fetchone()[0]
        runs = db.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0]
    finally:
        db.close()
    return train + (n_eval / (evals / runs) if evals else 0.0)


def writer_cost(store: Path, records: int) -> dict:
    """ms per record for the driver's writes: claim + complete, records copied from the store's first run."""
    import duckdb

    from specrun.driver.apply import Driver  # noqa: F401 - the path the driver takes
    from specrun.runner.plan import PlannedRun
    from specrun.runner.task import ArtifactFile, MetricRow, RunRecord
    from specrun.store import runs as store_runs
    from specrun.store.db import Store

    db = duckdb.connect(str(store), read_only=True)
    run_id, config = db.execute("SELECT run_id, config FROM runs ORDER BY run_id LIMIT 1").fetchone()
    metrics = [
        MetricRow(*r)
        for r in db.execute(
            "SELECT step, epoch, split, name, value, final FROM metrics WHERE run_id = ?", [run_id]
        ).fetchall()
    ]
    cols = ["split", "example_id", "label", "prediction", "confidence", "loss"]
    preds = db.execute(f"SELECT {', '.join(cols)} FROM predictions WHERE run_id = ?", [run_id]).fetchall()
    examples = db.execute(
        "SELECT example_id, label FROM train_examples WHERE run_id = ? ORDER BY position", [run_id]
    ).fetchall()
    db.close()
    target = Store(store.parent / f"writer-{store.stem}.duckdb")
    config = json.loads(config)
    times = []
    for n in range(records):
        rid = f"w{n:011d}"
        run = PlannedRun(rid, "writer", config, 0, {}, {})
        store_runs.claim(target, run, "bench.toml", {}, force=True)
        record = RunRecord(
            rid,
            metrics=metrics,
            predictions={c: [p[i] for p in preds] for i, c in enumerate(cols)},
            artifacts=[ArtifactFile("weights", f"/nowhere/{rid}/trained.safetensors", "0" * 64, 1)],
            train_examples=([e[0] for e in examples], [e[1] for e in examples]),
            train_seconds=1.0,
        )
        t0 = time.perf_counter()
        store_runs.complete(target, rid, record)
        times.append(time.perf_counter() - t0)
    return {
        "records": records,
        "predictions_per_record": len(preds),
        "metrics_per_record": len(metrics),
        "train_examples_per_record": len(examples),
        "ms_per_record_median": 1000 * statistics.median(times),
        "ms_per_record_p90": 1000 * sorted(times)[int(0.9 * (len(times) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--records", type=int, default=30)
    parser.add_argument("--workloads", default="tiny,minilm")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict = {"load_before": os.getloadavg(), "ray_startup_seconds": ray_startup(), "workloads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        specs = {"tiny": tiny_spec, "minilm": minilm_spec}
        for name in args.workloads.split(","):
            spec = specs[name](folder)
            walls: dict[str, list[float]] = {"local": [], "ray": []}
            work: dict[str, list[float]] = {"local": [], "ray": []}
            for r in range(args.rounds):
                order = ["local", "ray"] if r % 2 == 0 else ["ray", "local"]
                for executor in order:
                    store = folder / f"{name}-{executor}-{r}.duckdb"
                    walls[executor].append(apply(spec, store, executor))
                    work[executor].append(train_and_eval_seconds(store))
                    print(
                        f"{name} round {r} {executor}: {walls[executor][-1]:.1f} s wall, {work[executor][-1]:.1f} s of training+evaluation",
                        flush=True,
                    )
            local, ray = statistics.median(walls["local"]), statistics.median(walls["ray"])
            results["workloads"][name] = {
                "wall_seconds": walls,
                "train_eval_seconds": work,
                "local_over_ray_wall_median": local / ray,
                "per_round_local_over_ray": [a / b for a, b in zip(walls["local"], walls["ray"])],
            }
            results["workloads"][name]["writer"] = writer_cost(folder / f"{name}-local-0.duckdb", args.records)
            print(json.dumps({name: results["workloads"][name]}, indent=1), flush=True)
    results["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
