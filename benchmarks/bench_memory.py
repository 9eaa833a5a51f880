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


#: ``--study``: what a paper's comparison of methods and LoRA placements sweeps, scaled down to short runs
#: (memory growth per run is what is measured, not training): every run is a new configuration of
#: method, placement and task (single sentences, sentence pairs), at specrun's defaults (bf16, length-
#: grouped batches of varying shapes). Seeds are the inner loop: run 5 is the third configuration.
STUDY = """[experiment]
name = "memory-study"
seeds = [0, 1]

[model]
name = "{model}"
max_length = 128

[data]
dataset = "glue/sst2"
max_train_examples = 160
max_eval_examples = 64

[method]
name = "lora"

[train]
batch_size = 16
max_steps = {steps}

[sweep]
"method, train.learning_rate" = [
    [{{ name = "lora", rank = 8, placement = "attn-q" }}, 1e-3],
    [{{ name = "lora", rank = 8, placement = "attn-v" }}, 1e-3],
    [{{ name = "lora", rank = 8, placement = "attn-qv" }}, 1e-3],
    [{{ name = "lora", rank = 8, placement = "attn-qkv" }}, 1e-3],
    [{{ name = "lora", rank = 8, placement = "attn-full" }}, 1e-3],
    [{{ name = "lora", rank = 8, placement = "ffn-only" }}, 1e-3],
    [{{ name = "lora", rank = 8, placement = "full-model" }}, 1e-3],
    [{{ name = "ia3" }}, 3e-3],
    [{{ name = "bitfit" }}, 1e-3],
    [{{ name = "prompt_tuning", num_virtual_tokens = 10 }}, 3e-2],
    [{{ name = "head_only" }}, 1e-2],
    [{{ name = "freeze", layers = 3 }}, 5e-5],
    [{{ name = "full" }}, 5e-5],
]
"data.dataset" = ["glue/sst2", "glue/mrpc"]
"""


def proc_status_mb() -> dict[str, float]:
    """RssAnon (heap, tensors) and RssFile (mapped files: shared libraries' code, mmapped weights), in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) / 1024
    return out


def heap_mb() -> dict[str, float]:
    """glibc's ``mallinfo2`` over all arenas, in MB: bytes in use, free bytes kept in the arenas, mmapped chunks."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = Mallinfo2
    info = fn()
    return {
        "heap_in_use": info.uordblks / 2**20,
        "heap_free": info.fordblks / 2**20,
        "heap_arena": info.arena / 2**20,
        "mmapped": info.hblkhd / 2**20,
    }


def tensor_census() -> tuple[int, float]:
    """(live torch tensors the garbage collector sees, their storage in MB, each storage once)."""
    import warnings

    import torch

    count, seen, size = 0, set(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on deprecated module attributes warns
        objects = gc.get_objects()
    for obj in objects:
        try:
            if isinstance(obj, torch.Tensor):
                count += 1
                storage = obj.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    size += storage.nbytes()
        except Exception:  # meta tensors, tensor subclasses without storage
            continue
    return count, size / 2**20


def type_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', kind.__name__)}"
        counts[name] = counts.get(name, 0) + 1
    return counts


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
    parser.add_argument(
        "--study",
        action="store_true",
        help="a realistic study: MiniLM (bf16, 128 tokens) on SST-2 and MRPC, 13 methods and LoRA placements, 2 seeds: 52 runs",
    )
    parser.add_argument(
        "--census",
        action="store_true",
        help="after each run also: anonymous vs file-backed RSS, glibc's heap (in use / free / mmapped), live torch tensors, gc objects",
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

    if args.study:
        spec.write_text(STUDY.format(model="sentence-transformers/all-MiniLM-L6-v2", steps=args.steps))
    if args.spec:
        spec = args.spec
    series: list[float] = []
    census: list[dict] = []
    types_at: dict[int, dict[str, int]] = {}
    real_execute = execute_module.execute

    def measured(*a, **kw):
        record = real_execute(*a, **kw)
        gc.collect()
        if args.trim:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        series.append(rss_mb())
        n = len(series)
        if args.census:
            tensors, tensor_mb = tensor_census()
            row = {"rss": series[-1], **proc_status_mb(), **heap_mb(), "tensors": tensors, "tensor_mb": tensor_mb}
            row["gc_objects"] = len(gc.get_objects())
            census.append(row)
            if n == 5:
                types_at[5] = type_counts()
            print(
                "         " + "  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                file=sys.stderr,
                flush=True,
            )
        if args.every or args.census or n in (1, 5) or n % 5 == 0 or n == args.runs:
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
        "model": "MiniLM study (--study)" if args.study else model if args.minilm else "tiny random BERT",
        "method": args.method,
        "rss_mb_run1": series[0],
        "rss_mb_run5": base,
        "rss_mb_last": series[-1],
        "ratio_last_over_run5": series[-1] / base,
        "rss_mb_run50": series[49] if len(series) >= 50 else None,
        "ratio_run50_over_run5": series[49] / base if len(series) >= 50 else None,
        "wall_seconds": wall,
        "series_mb": series,
    }
    print(
        f"runs {len(series)}: rss after run 5 {base:.1f} MB, after run {len(series)} {series[-1]:.1f} MB, "
        f"ratio {series[-1] / base:.3f} (goal <= 1.10); {wall:.0f} s"
    )
    if len(series) >= 50:
        print(f"run 50 / run 5: {series[49]:.1f} / {base:.1f} MB = {series[49] / base:.3f}")
    if args.census and 5 in types_at:
        last = type_counts()
        grown = sorted(
            ((last.get(k, 0) - types_at[5].get(k, 0), k) for k in set(last) | set(types_at[5])), reverse=True
        )
        summary["census"] = census
        summary["types_grown_since_run5"] = {k: d for d, k in grown[:15] if d}
        print("objects grown since run 5: " + (", ".join(f"{k} +{d}" for d, k in grown[:15] if d > 0) or "none"))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
