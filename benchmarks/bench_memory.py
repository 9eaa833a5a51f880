"""Resident memory across a long sweep in one process (issue 22: "long sweeps hold their memory").

One ``specrun apply`` (the library call, one process, the local executor) of a sweep of N runs on the
tiny random BERT and the toy task (or ``--minilm``: MiniLM on 400 SST-2 sentences), printing the
process's RSS after each run and the ratio RSS(run N) / RSS(run 5) (goal: at most 1.10 at N = 50).

    SPECRUN_DATA_DIR=/work/shared/data HF_HUB_OFFLINE=1 python benchmarks/bench_memory.py --runs 50
    python benchmarks/bench_memory.py --runs 20 --minilm --method lora

Each run is a distinct sweep point (its learning rate), so nothing is served from the store.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--minilm", action="store_true", help="MiniLM on SST-2 instead of the tiny random BERT")
    parser.add_argument("--method", default="lora", help="method name (lora, full, ...)")
    parser.add_argument("--steps", type=int, default=6, help="max_steps per run")
    parser.add_argument("--dataset", default="glue/sst2", help="with --minilm: the dataset (glue/mrpc: sentence pairs)")
    parser.add_argument("--max-length", type=int, default=64, help="with --minilm: model.max_length")
    parser.add_argument("--train-examples", type=int, default=400, help="with --minilm: data.max_train_examples")
    parser.add_argument("--noise", action="store_true", help="a noised evaluation set per run (new texts each run)")
    parser.add_argument("--precision", default="fp32", help="train.precision (specrun's default is bf16)")
    parser.add_argument(
        "--transfer",
        action="store_true",
        help="transfer runs as specs/transfer_mrpc.toml: per seed a LoRA source stage, then a head trained over its frozen adapters",
    )
    parser.add_argument(
        "--spec", type=Path, help="apply this spec instead (with --set and --profile); e.g. specs/transfer_mrpc.toml"
    )
    parser.add_argument("--set", action="append", default=[], help="an override for --spec (repeatable)")
    parser.add_argument("--profile", help="a profile of --spec")
    parser.add_argument(
        "--trim",
        action="store_true",
        help="glibc malloc_trim(0) after each run, before measuring (is the growth freed memory the allocator keeps?)",
    )
    parser.add_argument("--every", action="store_true", help="print the RSS after every run")
    parser.add_argument("--json", type=Path, help="write the RSS series here")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    os.environ["SPECRUN_ARTIFACTS"] = str(work / "artifacts")
    os.environ.setdefault("SPECRUN_CACHE_DIR", str(work / "cache"))

    import specrun.runner.execute as execute_module
    from specrun import api
    from specrun.testing.toy import make_tiny_model, write_toy_data

    if args.minilm:
        model = "sentence-transformers/all-MiniLM-L6-v2"
        data = f'dataset = "{args.dataset}"\nmax_train_examples = {args.train_examples}\nmax_eval_examples = 200'
        max_length = args.max_length
    else:
        model = str(make_tiny_model(work / "tiny"))
        toy = write_toy_data(work / "toy")
        data = (
            f'dataset = "local"\neval_split = "validation"\n[data.options]\n'
            f'files = {{ train = "{toy / "train.tsv"}", validation = "{toy / "dev.tsv"}" }}'
        )
        max_length = 32
    noisy = (
        '\n[data.eval_sets.noisy]\ntransforms = [{ name = "noise", mode = "replace", char_rate = 0.1, seed = 5 }]\n'
        if args.noise
        else ""
    )
    rates = [round(1e-3 * (1 + i / args.runs), 8) for i in range(args.runs)]
    seeds, sweep, init, method = "[0]", f'"train.learning_rate" = {json.dumps(rates)}', "", f'name = "{args.method}"'
    if args.transfer:  # two runs per seed: the source, then the run that starts from it
        seeds, sweep, init = json.dumps(list(range(args.runs // 2))), "", 'init_from = "stage:source"'
        method = 'name = "lora"\ntrain = "head"'
        sweep = '[stages.source]\nmethod = { train = "all" }\n'
    spec = work / "sweep.toml"
    spec.write_text(f"""[experiment]
name = "memory"
seeds = {seeds}

[model]
name = "{model}"
max_length = {max_length}
{init}

[data]
{data}
{noisy}
[method]
{method}

[train]
batch_size = 16
precision = "{args.precision}"
max_steps = {args.steps}

{"" if args.transfer else "[sweep]"}
{sweep}
""")

    if args.spec:
        spec = args.spec
    series: list[float] = []
    real_execute = execute_module.execute

    def measured(*a, **kw):
        record = real_execute(*a, **kw)
        gc.collect()
        if args.trim:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        series.append(rss_mb())
        n = len(series)
        if args.every or n in (1, 5) or n % 5 == 0 or n == args.runs:
            task = a[0] if a else kw.get("task")
            what = ""
            if task is not None:
                method = task.config["method"]
                what = f"  {task.config['data']['dataset']} {method['name']} {method.get('placement') or ''}"
                what += " transfer" if task.config["model"].get("init_from") else ""
            print(f"run {n:3d}: rss {series[-1]:8.1f} MB{what}", file=sys.stderr, flush=True)
        return record

    execute_module.execute = measured  # the local executor imports it at each run
    print(f"before: rss {rss_mb():.1f} MB", file=sys.stderr)
    t0 = time.perf_counter()
    result = api.apply(
        spec, overrides=args.set or None, profile=args.profile, store=work / "store.duckdb", progress=False
    )
    assert result.ok, result.counts
    wall = time.perf_counter() - t0
    base = series[4] if len(series) >= 5 else series[0]
    summary = {
        "runs": len(series),
        "model": model if args.minilm else "tiny random BERT",
        "method": args.method,
        "rss_mb_run1": series[0],
        "rss_mb_run5": base,
        "rss_mb_last": series[-1],
        "ratio_last_over_run5": series[-1] / base,
        "wall_seconds": wall,
        "series_mb": series,
    }
    print(
        f"runs {len(series)}: rss after run 5 {base:.1f} MB, after run {len(series)} {series[-1]:.1f} MB, "
        f"ratio {series[-1] / base:.3f} (goal <= 1.10); {wall:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
