"""Where a W1 training step's time goes: torch.profiler over specrun's own loop, ops grouped by kind.

W1 (benchmarks/README.md): MiniLM-L6, LoRA r16 on query/value, 2,000 SST-2 sentences, length-grouped
batches of 32, max_length 128, bf16 autocast. The model is built by specrun (``build_model``: frozen
Linear weights in bf16) and trained inside ``cpu_training_speedups`` exactly as ``specrun apply`` does;
the first ``--warmup`` steps are not profiled. Prints the share of self CPU time per op group, the
largest single ops, and how many of the batch's token slots are padding.

    SPECRUN_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/profile_step.py --threads 1 --steps 20
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collections import defaultdict

GROUPS = [  # first match wins
    ("matmul (linear layers)", r"^aten::(addmm|mm|linear|matmul)$"),
    ("batched matmul (attention)", r"^aten::(bmm|baddbmm)$"),
    ("softmax", r"softmax"),
    ("layer norm", r"layer_norm"),
    ("gelu", r"gelu"),
    ("dropout masks (numpy) and mul", r"^aten::mul$|dropout"),
    ("dtype casts and copies", r"^aten::(to|_to_copy|copy_|clone|contiguous)$"),
    ("optimizer (fused AdamW) and clipping", r"adam|_foreach|clip|norm$"),
    (
        "other elementwise",
        r"^aten::(add|add_|sub|div|tanh|where|masked_fill|fill_|zero_|pad|constant_pad_nd|cat|sum|neg|exp|rsub)",
    ),
    ("embedding", r"embedding"),
    (
        "views and reshapes",
        r"^aten::(view|reshape|transpose|permute|expand|select|slice|t|unsqueeze|as_strided|_unsafe_view|split|narrow)",
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=20, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("SPECRUN_DATA_DIR", "/work/shared/data")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from specrun.logs import quiet_libraries

    quiet_libraries()
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from specrun.plugins import get_registry
    from specrun.runner.batching import Encoded, TokenCache, train_batches
    from specrun.runner.cpu_speedups import cpu_training_speedups
    from specrun.runner.data import prepare_run_data
    from specrun.runner.execute import build_model
    from specrun.runner.modeling import load_tokenizer
    from specrun.spec.schema import RunSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    from bench_trainer import BATCH_SIZE, LEARNING_RATE, LORA, MODEL  # the W1 workload, defined once

    settings = RunSettings.of(
        {
            "model": {"name": MODEL, "max_length": 128},
            "data": {"dataset": "glue/sst2", "max_train_examples": 2000},
            "method": {
                "name": "lora",
                "rank": LORA["r"],
                "alpha": LORA["alpha"],
                "dropout": LORA["dropout"],
                "target_modules": LORA["targets"],
            },
            "train": {"batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE},
            "seed": 0,
        }
    )
    registry = get_registry()
    data = prepare_run_data(settings, registry, None)
    cpu = torch.device("cpu")
    model, ctx = build_model(settings, registry, data.dataset.num_labels, data.dataset.label_names, cpu)
    train = Encoded.build(data.train, TokenCache(load_tokenizer(ctx.model_path), 128))
    batches = train_batches(train.lengths, BATCH_SIZE, np.random.default_rng(0), True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, fused=True)
    model.train()

    def step(index):
        batch = train.collate(index, cpu)
        labels = torch.from_numpy(train.labels[index])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(**batch).logits
        F.cross_entropy(logits.float(), labels).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    chosen = batches[args.warmup : args.warmup + args.steps]
    real = sum(int(train.lengths[b].sum()) for b in chosen)
    slots = sum(len(b) * int(train.lengths[b].max()) for b in chosen)
    with cpu_training_speedups(model, cpu, seed=0):
        for index in batches[: args.warmup]:
            step(index)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for index in chosen:
                step(index)
    events = [
        e for e in prof.key_averages() if e.key.startswith("aten::") or "Optimizer" in e.key or "adam" in e.key.lower()
    ]
    total = sum(e.self_cpu_time_total for e in events)
    grouped: dict[str, float] = defaultdict(float)
    for e in events:
        group = next((g for g, pattern in GROUPS if re.search(pattern, e.key)), "other")
        grouped[group] += e.self_cpu_time_total
    print(f"{len(chosen)} steps profiled, torch threads {torch.get_num_threads()}, 1-min load {os.getloadavg()[0]:.1f}")
    print(
        f"token slots: {slots}, real tokens {real} ({100 * real / slots:.1f}%), padding {100 * (1 - real / slots):.1f}%"
    )
    print(f"self CPU time in aten ops: {total / 1e6:.2f} s ({total / 1e3 / len(chosen):.0f} ms per step)")
    for group, t in sorted(grouped.items(), key=lambda kv: -kv[1]):
        print(f"  {group:40s} {100 * t / total:5.1f}%")
    print("largest ops (self CPU):")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"  {e.key:40s} {100 * e.self_cpu_time_total / total:5.1f}%  calls {e.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
