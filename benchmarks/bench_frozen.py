"""Frozen features computed once (issue 23, item 1): the same head-only run with and without
``train.cache_frozen``, side by side, round by round.

Workload (the transfer study's cpu profile, specs/transfer_mrpc.toml, with the pretrained backbone):
MiniLM (sentence-transformers/all-MiniLM-L6-v2), MRPC, 2,000 training pairs, 3 epochs, batch 32,
lr 1e-2, warm-up 6%, max_length 128, evaluated each epoch on the 408 validation pairs; method
``head_only``. Each round r (seed r) runs three peers in one process, order alternating by round:

  plain   the run as specrun trains it without the option (the backbone in every epoch, dropout on)
  cold    cache_frozen = true, its cache empty: the run computes the features (every split) itself
  warm    cache_frozen = true again, the features in the cache (another run on the same frozen
          backbone and data: another seed or learning rate of the same probe)

Timed: the run's recorded ``train_seconds`` (for cold and warm it includes computing or loading the
features of every split, evaluation sets too; evaluations excluded, as for plain), and the wall of the
whole ``specrun.apply`` (data, model, training, evaluation, latency, saving); and the process CPU
seconds of that training (``CpuClock``), which other jobs on a shared machine move far less than wall
time. Ratios per round are plain / cold and plain / warm; accuracy and F1 of every peer on the
validation set.

    .venv/bin/python benchmarks/bench_frozen.py --rounds 3 --json benchmarks/results-frozen.json
    .venv/bin/python benchmarks/bench_frozen.py --quick      # smoke test: 200 pairs, 1 epoch, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PEERS = ("plain", "cold", "warm")


def spec_text(
    seed: int,
    cached: bool,
    train_examples: int,
    epochs: float,
    max_eval_examples: int | None,
    model: str = MODEL,
    dataset: str = "glue/mrpc",
) -> str:
    limit = f"max_eval_examples = {max_eval_examples}\n" if max_eval_examples else ""
    return f"""
[experiment]
name = "bench-frozen-{"cached" if cached else "plain"}"
seeds = [{seed}]

[model]
name = "{model}"
max_length = 128

[data]
dataset = "{dataset}"
max_train_examples = {train_examples}
{limit}
[method]
name = "head_only"

[train]
epochs = {epochs}
batch_size = 32
learning_rate = 1e-2
warmup_ratio = 0.06
eval_every = "epoch"
checkpoint_every = "off"
cache_frozen = {"true" if cached else "false"}
"""


class CpuClock:
    """Process CPU seconds of training as the run records it (``train_model`` less the evaluations
    inside it, plus computing or loading frozen features): a figure that other jobs on a shared machine
    move far less than wall time, which counts the time the scheduler gave them."""

    def __enter__(self):
        import specrun.runner.execute as execute
        from specrun.plugins.tasks.classification import Classification

        self.train = 0.0
        self.execute, self.Classification = execute, Classification
        self.saved = (execute.train_model, execute.frozen_inputs, Classification.evaluate)
        train_model, frozen_inputs, evaluate = self.saved
        inside = [False]

        def clocked_train(*args, **kwargs):
            t0, inside[0] = time.process_time(), True
            try:
                return train_model(*args, **kwargs)
            finally:
                inside[0] = False
                self.train += time.process_time() - t0

        def clocked_features(*args, **kwargs):
            t0 = time.process_time()
            try:
                return frozen_inputs(*args, **kwargs)
            finally:
                self.train += time.process_time() - t0

        def clocked_evaluate(*args, **kwargs):
            t0 = time.process_time()
            try:
                return evaluate(*args, **kwargs)
            finally:
                if inside[0]:  # evaluations during training: not training time (as the run records it)
                    self.train -= time.process_time() - t0

        execute.train_model, execute.frozen_inputs = clocked_train, clocked_features
        Classification.evaluate = clocked_evaluate
        return self

    def __exit__(self, *exc):
        self.execute.train_model, self.execute.frozen_inputs, self.Classification.evaluate = self.saved


def run_peer(folder: Path, peer: str, seed: int, args) -> dict:
    """One run of ``peer`` (a fresh store; cold: a fresh, empty cache folder)."""
    import specrun

    sub = folder / f"{peer}-{seed}"
    sub.mkdir()
    spec = sub / "spec.toml"
    spec.write_text(
        spec_text(
            seed, peer != "plain", args.train_examples, args.epochs, args.max_eval_examples, args.model, args.dataset
        )
    )
    os.environ["SPECRUN_ARTIFACTS"] = str(sub / "artifacts")
    if peer == "cold":
        os.environ["SPECRUN_CACHE_DIR"] = str(folder / f"cache-{seed}")  # empty: nothing computed yet
    elif peer == "warm":
        os.environ["SPECRUN_CACHE_DIR"] = str(folder / f"cache-{seed}")  # what cold left there
    t0, c0 = time.perf_counter(), time.process_time()
    with CpuClock() as clock:
        outcome = specrun.apply(spec, store=sub / "store.duckdb", force=True, progress=False).outcomes[0]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if outcome.status != "completed":
        raise RuntimeError(f"{peer} run {outcome.status}: {outcome.error}")
    m = outcome.metrics
    import duckdb

    with duckdb.connect(str(sub / "store.duckdb"), read_only=True) as db:
        costs = dict(db.execute("SELECT name, value FROM metrics WHERE final AND split = 'cost'").fetchall())
    return {
        "train_seconds": m["train_seconds"],
        "train_cpu_seconds": clock.train,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "accuracy": m["accuracy"],
        "f1": m["f1"],
        "features_seconds": costs.get("frozen_features_seconds", 0.0),
        "features_cached": costs.get("frozen_features_cached"),
    }


def run(folder: Path, args, log=print) -> dict:
    """``args.rounds`` rounds of the three peers in ``folder``; per-round figures and a summary."""
    saved = {k: os.environ.get(k) for k in ("SPECRUN_CACHE_DIR", "SPECRUN_ARTIFACTS")}
    try:
        return _run(folder, args, log)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def random_decoder(folder: Path) -> Path:
    """``--decoder``'s backbone: bench_tasks' random GPT-2 at MiniLM's size."""
    import bench_tasks

    sentences = bench_tasks.Work(folder, "sentences", bench_tasks.dec_spec(MODEL, 67349, None, 0), 0).train.text
    return bench_tasks.make_decoder(folder / "gpt2-minilm-size", list(sentences), layers=6, hidden=384, heads=12)


def _run(folder: Path, args, log) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "decoder", False):
        args.model = str(random_decoder(folder))
    rounds = []
    for r in range(args.first_seed, args.first_seed + args.rounds):
        order = PEERS if r % 2 == 0 else ("cold", "warm", "plain")  # warm always after its cold
        result: dict = {"seed": r, "load_avg_1min": os.getloadavg()[0]}
        for peer in order:
            result[peer] = run_peer(folder, peer, r, args)
        p, c, w = result["plain"], result["cold"], result["warm"]
        result["ratio_cold"] = p["train_seconds"] / c["train_seconds"]
        result["ratio_warm"] = p["train_seconds"] / w["train_seconds"]
        result["cpu_ratio_cold"] = p["train_cpu_seconds"] / c["train_cpu_seconds"]
        result["cpu_ratio_warm"] = p["train_cpu_seconds"] / w["train_cpu_seconds"]
        result["wall_ratio_cold"] = p["wall_seconds"] / c["wall_seconds"]
        log(
            f"  seed {r}: plain {p['train_seconds']:.1f} s (acc {p['accuracy']:.4f}, f1 {p['f1']:.4f}); "
            f"cold {c['train_seconds']:.2f} s (features {c['features_seconds']:.2f} s; acc {c['accuracy']:.4f}, "
            f"f1 {c['f1']:.4f}): {result['ratio_cold']:.1f}x; warm {w['train_seconds']:.2f} s "
            f"(acc {w['accuracy']:.4f}): {result['ratio_warm']:.1f}x; whole run {p['wall_seconds']:.1f} s vs "
            f"{c['wall_seconds']:.1f} s ({result['wall_ratio_cold']:.1f}x); train CPU seconds plain "
            f"{p['train_cpu_seconds']:.1f}, cold {c['train_cpu_seconds']:.2f} ({result['cpu_ratio_cold']:.1f}x), "
            f"warm {w['train_cpu_seconds']:.3f} ({result['cpu_ratio_warm']:.1f}x)"
        )
        rounds.append(result)

    def med(key):
        return statistics.median(r[key] for r in rounds)

    def accs(peer, metric="accuracy"):
        return [r[peer][metric] for r in rounds]

    summary = {
        "ratio_cold": med("ratio_cold"),
        "ratio_warm": med("ratio_warm"),
        "wall_ratio_cold": med("wall_ratio_cold"),
        "cpu_ratio_cold": med("cpu_ratio_cold"),
        "cpu_ratio_warm": med("cpu_ratio_warm"),
        "accuracy": {peer: statistics.mean(accs(peer)) for peer in PEERS},
        "f1": {peer: statistics.mean(accs(peer, "f1")) for peer in PEERS},
        "accuracy_seed_sd": {peer: statistics.stdev(accs(peer)) if len(rounds) > 1 else None for peer in PEERS},
        "accuracy_paired_diff": [r["cold"]["accuracy"] - r["plain"]["accuracy"] for r in rounds],
    }
    return {"rounds": rounds, "summary": summary}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (seeds 0..N-1)")
    parser.add_argument("--first-seed", type=int, default=0, help="round r uses seed first_seed + r")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument(
        "--dataset",
        default="glue/mrpc",
        help="glue/mrpc (the transfer arms' data; a frozen MiniLM's head stays near the majority class there) "
        "or glue/sst2 (a linear probe that learns: the stronger check that accuracy agrees)",
    )
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-eval-examples", type=int, default=None)
    parser.add_argument(
        "--model", default=MODEL, help="the backbone (default MiniLM; the test suite's smoke run: a tiny BERT)"
    )
    parser.add_argument(
        "--decoder",
        action="store_true",
        help="the backbone is a random GPT-2 of MiniLM's size (6 layers, hidden 384, 12 heads; byte-level BPE "
        "trained on SST-2's training sentences; built once in the work folder): cache_frozen on a decoder, "
        "whose head reads the last non-padding token (speed only: random weights learn nothing)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200 pairs, 1 epoch, 64 eval pairs, 1 round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.train_examples, args.epochs, args.max_eval_examples = 1, 200, 1, 64
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("SPECRUN_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-frozen-") as tmp:
        results = run(Path(tmp), args)
    s = results["summary"]
    print(
        f"frozen features: train time plain / cold {s['ratio_cold']:.1f}x, plain / warm {s['ratio_warm']:.1f}x "
        f"(whole run {s['wall_ratio_cold']:.1f}x); accuracy plain {s['accuracy']['plain']:.4f}, "
        f"cold {s['accuracy']['cold']:.4f}, warm {s['accuracy']['warm']:.4f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), **results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
