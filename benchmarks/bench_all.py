"""Every performance target of issue 13 in one run, each a ratio of peers measured side by side.

  1  W1 training throughput: specrun / the Trainer at its best CPU setting (bf16, group_by_length),
     paired rounds (seed r for both in round r), at each --threads count; dev accuracy of both
  2  useful FLOP/s of specrun's W1 epoch (real tokens only, bench_flops.py) as a share of the best bf16
     matmul rate measured at the same thread count in this run
  3  end to end: trainer_script.py wall / `specrun apply` wall, W1, each a fresh process (empty store)
  4  sweep: wall of one `specrun apply` of 8 runs / the sum of its runs' train + eval seconds (store)
  5  evaluation throughput on the SST-2 dev set: specrun's evaluate / Trainer.predict (bf16), same weights
  6  CLI latency: median wall of fresh processes of the light commands, against python's own start-up
  7  scale of what users read (issue 23): `specrun report` over a generated 240-run store, and `specrun app`'s
     first page over a generated 1,040-run store, fresh processes (bench_scale.py)
  8  new tasks against the Trainer (issue 23): extractive QA (run_qa recipe: training, then predict +
     post-processing) and a random GPT-2 classifier, paired rounds at the largest --threads (bench_tasks.py)
  frozen  issue 23: the same head-only MiniLM/MRPC run with and without train.cache_frozen (cache empty,
     then filled), side by side per round: train-time ratios and both accuracies (bench_frozen.py)

W1: sentence-transformers/all-MiniLM-L6-v2, LoRA r16 on query/value, 2,000 SST-2 sentences, 1 epoch,
batch 32, lr 2e-3, max_length 128 (bench_trainer.py). Targets 3-5 run at the largest --threads count.

    make bench                                                   # all targets, the defaults
    .venv/bin/python benchmarks/bench_all.py --quick --threads 1 # smoke test: 1 round, small sizes
    .venv/bin/python benchmarks/bench_all.py --smoke             # tests/test_benchmarks.py: a few steps, measures nothing
    .venv/bin/python benchmarks/bench_all.py --only 3,4 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: Goals per target (issue 13): (comparison, value); None: reported without a threshold.
GOALS: dict[str, tuple[str, float] | None] = {
    "1": (">=", 2.0),
    "2": (">=", 0.60),
    "3": (">=", 1.5),
    "4": ("<=", 1.15),
    "5": (">=", 1.5),
    "6": ("<=", 0.5),
    "7": ("<=", 10.0),  # the report, seconds; the app's first page: APP_GOAL
    "8": (">=", 1.0),  # at least as fast as the Trainer (aim: 1.5x)
    "frozen": (">=", 10.0),
}
APP_GOAL = 3.0


def log(message: str = "") -> None:
    print(message, flush=True)


def machine(torch_threads: int) -> dict:
    from bench_trainer import cpu_name

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "src", "benchmarks"],
                cwd=HERE.parent,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "", False
    import peft
    import torch
    import transformers

    return {
        "cpu": cpu_name() + cpu_details(),
        "cpus": os.cpu_count(),
        "torch_default_threads": torch_threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "git": commit + ("+dirty" if dirty else ""),
        "load_avg_start": os.getloadavg(),
    }


def cpu_details() -> str:
    """Family/model and the matmul-relevant flags from /proc/cpuinfo (the model name alone can be vague)."""
    try:
        fields, flags = {}, set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("cpu family", "model") and key not in fields:
                fields[key] = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        return ""
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f" (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}; {' '.join(shown) or 'no AVX2'})"


# --- targets 1 and 2: training throughput and useful FLOP/s --------------------------------------


def train_rounds(folder: Path, args, with_trainer: bool, with_flops: bool) -> dict:
    """W1 rounds at each thread count: specrun (and the Trainer) alternating; FLOPs and matmul peak."""
    import torch
    from bench_flops import matmul_peak, real_lengths, w1_flop_model
    from bench_trainer import Workload, run_specrun, run_trainer

    peers = ["specrun"] + (["trainer-bf16"] if with_trainer else [])
    flops_model = None
    out = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        sub = folder / f"train-t{threads}"
        sub.mkdir()
        log(f"[1/2] W1 training, {threads} thread(s): {args.rounds} round(s) of {', '.join(peers)}")
        peaks = [matmul_peak(threads)] if with_flops else []
        if not args.no_warmup:  # first-use costs (lazy imports, kernel selection) land here, not on round 0
            (sub / "warmup").mkdir()
            warm = Workload(sub / "warmup", 128, args.max_length, 0, max_eval_examples=64)
            for peer in peers:
                run_specrun(warm, sub / "warmup") if peer == "specrun" else run_trainer(warm, sub / "warmup", bf16=True)
        rounds = []
        for r in range(args.rounds):
            (sub / f"r{r}").mkdir()
            work = Workload(
                sub / f"r{r}", args.train_examples, args.max_length, seed=r, max_eval_examples=args.max_eval_examples
            )
            result: dict = {"seed": r, "load_avg_1min": os.getloadavg()[0]}
            for peer in peers if r % 2 == 0 else peers[::-1]:
                result[peer] = (
                    run_specrun(work, sub / f"r{r}")
                    if peer == "specrun"
                    else run_trainer(work, sub / f"r{r}", bf16=True)
                )
            s = result["specrun"]
            line = f"  {threads}t seed {r}: specrun {s['samples_per_second']:.1f} samples/s ({s['train_seconds']:.1f} s, acc {s['accuracy']:.4f})"
            if with_trainer:
                t = result["trainer-bf16"]
                result["ratio"] = s["samples_per_second"] / t["samples_per_second"]
                result["cpu_ratio"] = s["samples_per_cpu_second"] / t["samples_per_cpu_second"]
                line += (
                    f", trainer-bf16 {t['samples_per_second']:.1f} ({t['train_seconds']:.1f} s, acc {t['accuracy']:.4f}): "
                    f"{result['ratio']:.2f}x (CPU time {result['cpu_ratio']:.2f}x)"
                )
            if with_flops:
                flops_model = flops_model or w1_flop_model(work)
                lengths = real_lengths(work)
                result["real_tokens"] = int(lengths.sum())
                result["epoch_flops"] = flops_model.epoch(lengths)
                result["useful_flops_per_second"] = result["epoch_flops"] / s["train_seconds"]
                line += f"; {result['useful_flops_per_second'] / 1e9:.1f} useful GFLOP/s"
            log(line + f"  load {result['load_avg_1min']:.1f}")
            rounds.append(result)
        entry: dict = {"threads": threads, "rounds": rounds}
        if with_trainer:
            entry["per_round"] = [r["ratio"] for r in rounds]
            entry["ratio"] = statistics.median(entry["per_round"])
            entry["cpu_ratio"] = statistics.median(r["cpu_ratio"] for r in rounds)
            entry["accuracy"] = {p: statistics.mean(r[p]["accuracy"] for r in rounds) for p in peers}
            entry["samples_per_second"] = {
                p: statistics.median(r[p]["samples_per_second"] for r in rounds) for p in peers
            }
        if with_flops:
            peaks.append(matmul_peak(threads))
            peak = max(peaks, key=lambda p: p["flops_per_second"])
            entry["peak"] = {
                "flops_per_second": peak["flops_per_second"],
                "shape": peak["shape"],
                "measurements": peaks,
            }
            entry["share_per_round"] = [r["useful_flops_per_second"] / peak["flops_per_second"] for r in rounds]
            entry["share"] = statistics.median(entry["share_per_round"])
            entry["flop_model"] = flops_model.summary()
            log(
                f"  {threads}t bf16 matmul peak {peak['flops_per_second'] / 1e9:.1f} GFLOP/s ({peak['shape']}; "
                + ", ".join(f"{p['flops_per_second'] / 1e9:.1f}" for p in peaks)
                + " before/after the rounds)"
            )
        out[str(threads)] = entry
    return out


# --- the report ----------------------------------------------------------------------------------


def verdict(target: str, value: float) -> str:
    goal = GOALS.get(target)
    if goal is None:
        return "-"
    op, bound = goal
    return "met" if (value >= bound if op == ">=" else value <= bound) else "NOT met"


def goal_text(target: str, unit: str = "x") -> str:
    goal = GOALS.get(target)
    if goal is None:
        return "report"
    return f"{goal[0]} {goal[1]:g}{unit}"


def summary_rows(results: dict) -> list[tuple[str, ...]]:
    rows = []
    fmt = lambda xs, f="{:.2f}": " ".join(f.format(x) for x in xs)  # noqa: E731
    for threads, e in results.get("train", {}).items():
        if "ratio" in e:
            acc = e["accuracy"]
            rows.append(
                (
                    "1",
                    f"W1 train samples/s specrun / trainer-bf16, {threads}t",
                    goal_text("1"),
                    f"{e['ratio']:.2f}x",
                    verdict("1", e["ratio"]),
                    fmt(e["per_round"]),
                    f"dev acc {acc['specrun']:.4f} / {acc['trainer-bf16']:.4f}; CPU-time ratio {e['cpu_ratio']:.2f}x",
                )
            )
    for threads, e in results.get("train", {}).items():
        if "share" in e:
            rows.append(
                (
                    "2",
                    f"W1 useful FLOP/s / bf16 matmul peak, {threads}t",
                    ">= 60%",
                    f"{100 * e['share']:.1f}%",
                    verdict("2", e["share"]),
                    fmt([100 * s for s in e["share_per_round"]], "{:.1f}%"),
                    (
                        f"peak {e['peak']['flops_per_second'] / 1e9:.1f} GFLOP/s ({e['peak']['shape']}); "
                        f"{e['rounds'][0]['epoch_flops'] / 1e12:.3f} TFLOP/epoch (seed 0)"
                    ),
                )
            )
    if "end_to_end" in results:
        e = results["end_to_end"]
        s = [r["specrun"]["wall"] for r in e["rounds"]]
        t = [r["trainer_script"]["wall"] for r in e["rounds"]]
        rows.append(
            (
                "3",
                f"W1 end to end: trainer script wall / specrun apply wall, {e['threads']}t",
                goal_text("3"),
                f"{e['ratio']:.2f}x",
                verdict("3", e["ratio"]),
                fmt(e["per_round"]),
                (
                    f"median wall specrun {statistics.median(s):.1f} s, trainer script {statistics.median(t):.1f} s; dev acc "
                    f"{statistics.mean(r['specrun']['accuracy'] for r in e['rounds']):.4f} / "
                    f"{statistics.mean(r['trainer_script']['accuracy'] for r in e['rounds']):.4f}"
                ),
            )
        )
    if "sweep" in results:
        e = results["sweep"]
        last = e["rounds"][-1]
        rows.append(
            (
                "4",
                f"sweep of {last['runs']}: apply wall / sum(train + eval), {e['threads']}t",
                goal_text("4", ""),
                f"{e['ratio']:.3f}",
                verdict("4", e["ratio"]),
                fmt(e["per_round"], "{:.3f}"),
                f"last round: wall {last['wall']:.1f} s = train {last['train']:.1f} + eval {last['eval']:.1f} + the rest",
            )
        )
    if "evaluation" in results:
        e = results["evaluation"]
        m = e["median_examples_per_second"]
        rows.append(
            (
                "5",
                f"eval examples/s specrun / best Trainer.predict, {e['threads']}t",
                goal_text("5"),
                f"{e['ratio']:.2f}x",
                verdict("5", e["ratio"]),
                fmt(e["per_round"]),
                f"{e['examples']} ex: specrun {m['specrun']:.0f}/s, bf16 {m['trainer-bf16']:.0f}/s, bf16 full {m['trainer-bf16-full']:.0f}/s",
            )
        )
    if "cli" in results:
        for name, c in results["cli"]["commands"].items():
            floor = not name.startswith("specrun")
            note = "floor" if floor else ("imports torch" if c.get("torch") else "no torch")
            rows.append(
                (
                    "6" if not floor else "",
                    f"CLI {name}",
                    "" if floor else goal_text("6", " s"),
                    f"{c['median']:.2f} s",
                    "" if floor else verdict("6", c["median"]),
                    fmt(c["runs"]),
                    note,
                )
            )
    if "scale" in results:
        e = results["scale"]
        if "report" in e:
            m = e["report"]["median"]
            rows.append(
                (
                    "7",
                    f"report over {e['report']['runs']} runs: `specrun report` wall (analyses computed)",
                    goal_text("7", " s"),
                    f"{m['report']:.2f} s",
                    verdict("7", m["report"]),
                    fmt([r["report"] for r in e["report"]["rounds"]]),
                    f"CPU {m['report_cpu']:.2f} s; build only {m['build_only']:.2f} s (CPU {m['build_only_cpu']:.2f}); "
                    f"HTML {e['report']['html_bytes'] / 1e6:.1f} MB",
                )
            )
        if "app" in e:
            m = e["app"]["median"]
            rows.append(
                (
                    "7",
                    f"app over {e['app']['runs']} runs: launch to first page (GET /)",
                    f"<= {APP_GOAL:g} s",
                    f"{m['first_page']:.2f} s",
                    "met" if m["first_page"] <= APP_GOAL else "NOT met",
                    fmt([r["first_page"] for r in e["app"]["rounds"]]),
                    f"CPU {m['first_page_cpu']:.2f} s; page {e['app']['rounds'][-1]['page_bytes'] / 1e3:.0f} kB"
                    + (f"; model list {m['model_list']:.2f} s" if "model_list" in m else ""),
                )
            )
    for name, label in (
        ("qa", "extractive QA (SQuAD) train windows/s"),
        ("decoder", "GPT-2 classifier train samples/s"),
    ):
        e = results.get("tasks", {}).get(name)
        if e:
            rows.append(
                (
                    "8",
                    f"{label} specrun / Trainer",
                    goal_text("8"),
                    f"{e['ratio']:.2f}x",
                    verdict("8", e["ratio"]),
                    fmt(e["per_round"]),
                    f"evaluation {e['eval_ratio']:.2f}x ({fmt(e['eval_per_round'])}); "
                    + "; ".join(
                        f"{p} " + ", ".join(f"{k} {v:.4f}" for k, v in ms.items()) for p, ms in e["metrics"].items()
                    ),
                )
            )
    if "frozen" in results:
        e = results["frozen"]["summary"]
        acc, sd = e["accuracy"], e["accuracy_seed_sd"]
        spread = f" (seed sd {sd['plain']:.4f})" if sd["plain"] is not None else ""
        for peer in ("cold", "warm"):
            rows.append(
                (
                    "frozen",
                    f"head-only train seconds without / with cache_frozen, cache {'empty' if peer == 'cold' else 'filled'}",
                    goal_text("frozen"),
                    f"{e['ratio_' + peer]:.1f}x",
                    verdict("frozen", e["ratio_" + peer]),
                    fmt([r["ratio_" + peer] for r in results["frozen"]["rounds"]], "{:.1f}"),
                    f"MRPC dev acc {acc['plain']:.4f}{spread} / {acc[peer]:.4f}; train CPU-time ratio {e['cpu_ratio_' + peer]:.1f}x",
                )
            )
    return rows


def print_summary(rows: list[tuple[str, ...]]) -> None:
    head = ("#", "what", "goal", "measured", "met", "per round", "notes")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    for r in [head, *rows]:
        log("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("--only", help="comma-separated targets to run (1-8, frozen; default all)")
    parser.add_argument("--rounds", type=int, help="paired rounds of targets 1, 3 and 5 (default 5; --quick 1)")
    parser.add_argument("--sweep-rounds", type=int, help="applies of the sweep, target 4 (default 3; --quick 1)")
    parser.add_argument("--cli-repeats", type=int, help="processes per command, target 6 (default 5; --quick 2)")
    parser.add_argument(
        "--threads",
        help="torch threads for targets 1-2, comma-separated (default 1,2; --quick 1); targets 3-5 run at the largest",
    )
    parser.add_argument("--train-examples", type=int, help="W1 training examples (default 2000; --quick 256)")
    parser.add_argument(
        "--max-eval-examples", type=int, help="limit the dev set of targets 1-3 (default: all 872; --quick 128)"
    )
    parser.add_argument(
        "--sweep-examples", type=int, help="training examples per sweep run (default 2000, the W1 size; --quick 64)"
    )
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--scale-rounds", type=int, help="timed rounds of target 7 (default 3; --quick 1, no warm-up)")
    import bench_tasks

    bench_tasks.add_arguments(parser)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 round and small sizes everywhere (numbers are not results)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest sizes that still run every target's code (tests/test_benchmarks.py): a few steps, "
        "no warm-ups, short sequences; checks that the benchmark works, measures nothing",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-ups")
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (stores, specs, examples) instead of a temporary one"
    )
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args(argv)
    if args.smoke:
        smallest = {
            "rounds": 1,
            "sweep_rounds": 1,
            "cli_repeats": 1,
            "threads": "1",
            "train_examples": 16,
            "max_eval_examples": 16,
            "sweep_examples": 8,
        }
        for key, value in smallest.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.quick, args.no_warmup = True, True
        if args.max_length == 128:
            args.max_length = 32
    quick = args.quick
    defaults = {
        "rounds": 1 if quick else 5,
        "sweep_rounds": 1 if quick else 3,
        "cli_repeats": 2 if quick else 5,
        "threads": "1" if quick else "1,2",
        "train_examples": 256 if quick else 2000,
        "max_eval_examples": 128 if quick else None,
        "sweep_examples": 64 if quick else 2000,
        "scale_rounds": 1 if quick else 3,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bench_tasks.fill_defaults(args, quick)
    args.threads = [int(t) for t in str(args.threads).split(",")]
    args.only = sorted(set(args.only.split(","))) if args.only else list(GOALS)
    unknown = set(args.only) - set(GOALS)
    if unknown:
        parser.error(f"--only takes targets 1-8 and frozen, not {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("SPECRUN_DATA_DIR", str(HERE.parent.parent / "shared" / "data"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from specrun.logs import quiet_libraries

    quiet_libraries()
    import torch

    started = time.perf_counter()
    info = machine(torch.get_num_threads())
    top = max(args.threads)
    log(
        f"machine: {info['cpu']}, {info['cpus']} CPUs (torch default {info['torch_default_threads']} threads); "
        f"load average {' '.join(f'{x:.2f}' for x in info['load_avg_start'])}"
    )
    log(
        f"software: python {info['python']}, torch {info['torch']}, transformers {info['transformers']}, peft {info['peft']}; specrun at {info['git']}"
    )
    log(
        f"targets {','.join(args.only)}; rounds {args.rounds}, threads {args.threads} (targets 3-5 at {top}), "
        f"W1 {args.train_examples} examples, dev {args.max_eval_examples or 'all'}, sweep {args.sweep_examples} examples x 8"
        + ("; QUICK: smoke-test sizes, not results" if args.quick else "")
    )
    results: dict = {
        "meta": {**info, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    }

    import bench_processes as procs

    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if "1" in args.only or "2" in args.only:
            results["train"] = train_rounds(folder, args, with_trainer="1" in args.only, with_flops="2" in args.only)
        if "5" in args.only:
            import bench_eval
            from bench_trainer import Workload

            log(f"[5] evaluation throughput, {top} thread(s), {args.rounds} round(s)")
            (folder / "eval").mkdir()
            # the dev set is all that is used: all of it, but for --smoke
            work = Workload(
                folder / "eval",
                128,
                args.max_length,
                seed=0,
                max_eval_examples=args.max_eval_examples if args.smoke else None,
            )
            results["evaluation"] = bench_eval.run(work, folder / "eval", args.rounds, threads=top, log=log)
        if "3" in args.only:
            log(f"[3] end to end, {top} thread(s), {args.rounds} round(s)")
            results["end_to_end"] = procs.end_to_end(
                folder / "e2e",
                args.rounds,
                top,
                args.train_examples,
                args.max_length,
                args.max_eval_examples,
                warmup=not args.no_warmup,
                log=log,
            )
        if "4" in args.only:
            log(f"[4] sweep, {top} thread(s), {args.sweep_rounds} round(s)")
            (folder / "sweep").mkdir()
            results["sweep"] = procs.sweep(
                folder / "sweep",
                args.sweep_rounds,
                top,
                args.sweep_examples,
                args.max_length,
                args.max_eval_examples,
                log=log,
            )
        if "6" in args.only:
            log(f"[6] CLI latency, {args.cli_repeats} process(es) per command")
            (folder / "cli").mkdir()
            if "sweep" in results:  # the sweep's spec and store: a spec whose runs are all in the store
                spec, store = folder / "sweep" / "sweep.toml", Path(results["sweep"]["rounds"][-1]["store"])
            else:
                spec = procs.sweep_spec(folder / "cli", args.sweep_examples, args.max_length, args.max_eval_examples)
                store = folder / "cli" / "cached.duckdb"
                procs.timed(
                    [procs.SPECRUN, "-q", "apply", str(spec), "--store", str(store)],
                    procs.env(top, folder / "cli" / "artifacts"),
                    cwd=folder / "cli",
                )
            results["cli"] = procs.cli_latency(folder / "cli", args.cli_repeats, spec, store, log=log)
        if "7" in args.only:
            import bench_scale

            results["scale"] = bench_scale.run(folder / "scale", args.quick, args.scale_rounds, log=log)
        if "8" in args.only:
            import bench_tasks

            torch.set_num_threads(top)
            log(f"[8] new tasks against the Trainer, {top} thread(s), {args.rounds} round(s)")
            tasks_args = argparse.Namespace(**vars(args))
            tasks_args.workloads = ["qa", "decoder"]
            tasks_args.no_warmup = args.no_warmup or args.quick
            results["tasks"] = bench_tasks.run(folder / "tasks", tasks_args, log=log)
        if "frozen" in args.only:
            import bench_frozen

            frozen_args = bench_frozen.parse_args(
                ["--quick"] if args.quick else ["--rounds", str(min(args.rounds, 3)), "--threads", str(top)]
            )
            log(f"[frozen] cache_frozen, {frozen_args.rounds} round(s) of plain / cold / warm")
            (folder / "frozen").mkdir()
            results["frozen"] = bench_frozen.run(folder / "frozen", frozen_args, log=log)

    results["meta"]["load_avg_end"] = os.getloadavg()
    results["meta"]["seconds"] = time.perf_counter() - started
    rows = summary_rows(results)
    results["summary"] = [
        dict(zip(("target", "what", "goal", "measured", "met", "per_round", "notes"), r)) for r in rows
    ]
    log()
    log(
        f"== issue 13 targets: median over rounds of the per-round ratio ({results['meta']['seconds'] / 60:.1f} min) =="
    )
    print_summary(rows)
    log(
        f"machine: {info['cpu']}, {info['cpus']} CPUs; load average at start "
        f"{' '.join(f'{x:.2f}' for x in info['load_avg_start'])}, at end {' '.join(f'{x:.2f}' for x in results['meta']['load_avg_end'])}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        log(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
