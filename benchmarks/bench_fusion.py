"""Issue 23 item 3: what two exact cast savings in the CPU training step are worth, in CPU time.

W1 (benchmarks/README.md), one process, two models built alike by specrun (``build_model``: frozen
Linear weights in bf16), each inside ``cpu_training_speedups`` as ``specrun apply`` trains:
  without  specrun as it is: autocast casts the fp32 hidden states to bf16 separately for query, key and
           value; dropout masks of bf16 activations are drawn as float32 and cast to bf16
  with     the two candidates, defined here (measured, not adopted; README "The rest of the step"):
           one bf16 cast of a frozen bf16 Linear's fp32 input shared by the Linears that read it (each
           Linear's gradient cast back to fp32 on its own, as autocast's cast does), and bf16 masks built
           directly as bit patterns in numpy
Every batch of one epoch goes through both, in alternating order; the clock is the thread's CPU time
(``time.thread_time``), so that other jobs on a shared machine slow neither side much. Both sides must
give the same losses to the bit (exit status 1 otherwise): the candidates are exact.

    SPECRUN_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fusion.py --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--steps", type=int, help="batches per round (default: one epoch)")
    parser.add_argument("--rounds", type=int, default=1, help="epochs, each a paired ratio")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPECRUN_DATA_DIR", "/work/shared/data")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from specrun.logs import quiet_libraries

    quiet_libraries()
    import numpy as np
    import torch
    import torch.nn.functional as F

    from specrun.plugins import get_registry
    from specrun.runner import cpu_speedups
    from specrun.runner.batching import Encoded, TokenCache, train_batches
    from specrun.runner.data import prepare_run_data
    from specrun.runner.execute import build_model
    from specrun.runner.modeling import load_tokenizer
    from specrun.spec.schema import RunSettings

    torch.set_num_threads(args.threads)
    from bench_trainer import BATCH_SIZE, LEARNING_RATE, LORA, MODEL

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
    float32_mask_dropout = cpu_speedups.cpu_dropout
    bits = np.uint16(torch.tensor(1 / 0.9).to(torch.bfloat16).view(torch.int16).item() & 0xFFFF)

    def bf16_mask_dropout(x, p, rng):  # the same mask, built in bf16 when x is bf16
        if x.dtype != torch.bfloat16 or p <= 0 or p >= 1 or x.numel() == 0:
            return float32_mask_dropout(x, p, rng)
        assert p == 0.1, "W1 drops out with p = 0.1 everywhere"
        draws = rng.random(x.numel(), dtype=np.float32)
        mask16 = (draws >= np.float32(p)).astype(np.uint16)
        mask16 *= bits
        return x * torch.from_numpy(mask16).view(torch.bfloat16).view(x.shape)

    class SharedCast(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, cast):
            return cast.view_as(cast)

        @staticmethod
        def backward(ctx, grad):
            return grad.to(torch.float32), None

    shared = {"on": False, "source": None, "version": -1, "cast": None}

    def shared_input_cast(module, args):  # forward pre-hook on frozen bf16 Linears
        x = args[0]
        if not shared["on"] or x.dtype != torch.float32 or x.is_inference() or not torch.is_autocast_enabled("cpu"):
            return None
        source = shared["source"]
        if source is None or source() is not x or shared["version"] != x._version:
            shared.update(source=weakref.ref(x), version=x._version, cast=x.detach().to(torch.bfloat16))
        return (SharedCast.apply(x, shared["cast"]),)

    def use(variant):
        shared["on"] = variant == "with"
        cpu_speedups.cpu_dropout = bf16_mask_dropout if variant == "with" else float32_mask_dropout

    variants = ["without", "with"]
    stack = contextlib.ExitStack()
    models = {}
    for variant in variants:
        model, ctx = build_model(settings, registry, data.dataset.num_labels, data.dataset.label_names, cpu)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, fused=True)
        stack.enter_context(cpu_speedups.cpu_training_speedups(model, cpu, seed=0))
        for module in model.modules():
            if type(module) is torch.nn.Linear and module.weight.dtype == torch.bfloat16:
                module.register_forward_pre_hook(shared_input_cast)
        model.train()
        models[variant] = (model, params, optimizer)
    train = Encoded.build(data.train, TokenCache(load_tokenizer(ctx.model_path), 128))
    order = np.random.default_rng(0)
    ratios, identical = [], True
    with stack:
        for r in range(args.rounds):
            batches = train_batches(train.lengths, BATCH_SIZE, order, True)[: args.steps]
            seconds, losses = dict.fromkeys(variants, 0.0), {v: [] for v in variants}
            for i, index in enumerate(batches):
                batch = train.collate(index, cpu)
                labels = torch.from_numpy(train.labels[index])
                for variant in variants if i % 2 == 0 else variants[::-1]:
                    model, params, optimizer = models[variant]
                    use(variant)
                    t0 = time.thread_time()
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        logits = model(**batch).logits
                    loss = F.cross_entropy(logits.float(), labels)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if r or i >= 2:
                        seconds[variant] += time.thread_time() - t0
                    losses[variant].append(loss.detach())
            identical &= all(torch.equal(a, b) for a, b in zip(losses["without"], losses["with"], strict=True))
            ratios.append(seconds["without"] / seconds["with"])
            n = len(batches) - (0 if r else 2)
            print(
                f"round {r + 1}: {n} steps, CPU ms/step without {1000 * seconds['without'] / n:.1f}, "
                f"with {1000 * seconds['with'] / n:.1f}: {ratios[-1]:.3f}x  (1-min load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    use("without")
    print(f"per-round ratios {', '.join(f'{x:.3f}' for x in ratios)}; losses identical to the bit: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
