"""Useful FLOPs of a training epoch, counted from the model's own shapes, and the bf16 matmul peak.

Useful FLOPs count real tokens only (no padding) and only the matrix products a training step needs:

  forward    every nn.Linear that runs: 2 * in * out per row it sees (a row per token, or per sequence
             for the pooler and the classifier); attention scores QK^T and values PV: 2 * 2 * L * d per
             token and layer (L the example's real length, d the attention width)
  backward   the input gradient of every Linear whose input depends on a trainable parameter (through
             frozen layers too): another 2 * in * out per row; weight gradients of trainable Linears
             only (LoRA A and B, the head): 2 * in * out per row; attention: twice its forward (dQ, dK
             from the scores, dP, dV from the values)

Elementwise work (LayerNorm, GELU, softmax, dropout, bias, the optimizer) is not counted. Which Linears
run per token or per sequence, which inputs need a gradient and which weights train is read off one
training-mode forward pass of the real model with hooks, so the count follows whatever the method built.
With n_i the real length of example i:

  FLOPs(epoch) = sum_i [ a * n_i + b + c * n_i^2 ]

a = per-token Linear FLOPs (forward + input grads + weight grads), b = the same for per-sequence Linears,
c = 3 * 4 * layers * d (attention forward and backward).

    SPECRUN_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_flops.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import numpy as np

#: The shapes the peak is measured on: square, and the Linears of a MiniLM batch (32 x ~30 tokens).
PEAK_SHAPES = ((2048, 2048, 2048), (1024, 384, 1536), (1024, 1536, 384))


@dataclass
class FlopModel:
    """FLOPs of one training example of real length n: ``per_token * n + per_sequence + per_token_sq * n**2``."""

    per_token: float
    per_sequence: float
    per_token_sq: float
    layers: int
    attention_width: int
    linears: list[dict] = field(default_factory=list)

    def example(self, n: np.ndarray | float) -> np.ndarray | float:
        return self.per_token * n + self.per_sequence + self.per_token_sq * np.square(n)

    def epoch(self, lengths: np.ndarray) -> float:
        lengths = np.asarray(lengths, dtype=np.float64)
        return float(
            self.per_token * lengths.sum()
            + self.per_sequence * len(lengths)
            + self.per_token_sq * np.square(lengths).sum()
        )

    def summary(self) -> dict:
        forward = sum(2 * r["in"] * r["out"] for r in self.linears if r["per"] == "token")
        return {
            "per_token": self.per_token,
            "per_sequence": self.per_sequence,
            "per_token_sq": self.per_token_sq,
            "layers": self.layers,
            "attention_width": self.attention_width,
            "linear_forward_per_token": forward,
            "linears": len(self.linears),
            "trainable_linears": sum(r["weight_grad"] for r in self.linears),
            "linears_without_input_grad": [r["name"] for r in self.linears if not r["input_grad"]],
        }


def flop_model(model, probe_length: int = 8) -> FlopModel:
    """Count ``model``'s useful training FLOPs per example from one training-mode forward pass of a
    ``probe_length``-token sequence, hooked at every ``nn.Linear``."""
    import torch

    if probe_length < 2:
        raise ValueError("probe_length must be at least 2 to tell per-token Linears from per-sequence ones")
    seen: list[dict] = []

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            seen.append(
                {
                    "name": name,
                    "in": module.in_features,
                    "out": module.out_features,
                    "rows": x.numel() // module.in_features,
                    "input_grad": bool(x.requires_grad),
                    "weight_grad": bool(module.weight.requires_grad),
                }
            )

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.train()
        ids = torch.full((1, probe_length), 1000, dtype=torch.long, device=device)
        with torch.enable_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    per_token = per_sequence = 0.0
    for r in seen:
        if r["rows"] == probe_length:
            r["per"] = "token"
        elif r["rows"] == 1:
            r["per"] = "sequence"
        else:
            raise RuntimeError(
                f"{r['name']} saw {r['rows']} rows for a {probe_length}-token probe: neither per token nor per sequence"
            )
        flops = 2 * r["in"] * r["out"] * (1 + r["input_grad"] + r["weight_grad"])
        if r["per"] == "token":
            per_token += flops
        else:
            per_sequence += flops
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    heads = config.num_attention_heads
    width = heads * getattr(config, "head_dim", None) if getattr(config, "head_dim", None) else config.hidden_size
    layers = config.num_hidden_layers
    # per sequence of length n: forward QK^T and PV are 2 * n^2 * d each; backward twice that
    per_token_sq = 3 * 2 * 2 * layers * width
    return FlopModel(per_token, per_sequence, per_token_sq, layers, width, seen)


def matmul_peak(threads: int | None = None, shapes=PEAK_SHAPES, seconds: float = 0.4, min_reps: int = 3) -> dict:
    """The best bf16 ``torch.matmul`` rate (FLOP/s) over ``shapes`` (m, k, n) at ``threads`` threads."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    results = {}
    for m, k, n in shapes:
        a = torch.randn(m, k).to(torch.bfloat16)
        b = torch.randn(k, n).to(torch.bfloat16)
        for _ in range(2):
            torch.matmul(a, b)
        best, reps, start = float("inf"), 0, time.perf_counter()
        while reps < min_reps or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
            reps += 1
        results[f"{m}x{k}x{n}"] = 2 * m * k * n / best
    shape = max(results, key=results.get)
    return {"flops_per_second": results[shape], "shape": shape, "by_shape": results, "threads": torch.get_num_threads()}


def w1_flop_model(work) -> FlopModel:
    """The FLOP model of the workload's run, built the way specrun builds it (bf16 frozen Linears, CPU)."""
    import torch

    from specrun.runner.execute import build_model

    model, _ = build_model(
        work.planned[0].settings, work.registry, len(work.label_names), work.label_names, torch.device("cpu")
    )
    return flop_model(model)


def real_lengths(work, examples=None) -> np.ndarray:
    """Token counts (special tokens included, padding excluded) of the workload's training examples, as
    specrun tokenizes them."""
    from specrun.runner.batching import Encoded, TokenCache
    from specrun.runner.modeling import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(work.planned[0].config["model"]["name"], work.registry))
    return Encoded.build(work.train if examples is None else examples, TokenCache(tokenizer, work.max_length)).lengths


def main(argv: list[str] | None = None) -> int:
    import os
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    os.environ.setdefault("SPECRUN_DATA_DIR", "/work/shared/data")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_trainer import Workload

    from specrun.logs import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        work = Workload(Path(tmp), args.train_examples, args.max_length, seed=0)
        fm = w1_flop_model(work)
        lengths = real_lengths(work)
    flops = fm.epoch(lengths)
    peak = matmul_peak(args.threads)
    s = fm.summary()
    print(
        f"per real token: {s['per_token'] / 1e6:.2f} MFLOP in Linears (forward alone {s['linear_forward_per_token'] / 1e6:.2f}); "
        f"per sequence {s['per_sequence'] / 1e6:.3f} MFLOP; attention {s['per_token_sq']:.0f} x n^2"
    )
    print(
        f"{s['trainable_linears']} trainable Linears of {s['linears']}; no input gradient: {', '.join(s['linears_without_input_grad']) or '-'}"
    )
    print(
        f"epoch: {len(lengths)} examples, {int(lengths.sum())} real tokens (mean {lengths.mean():.1f}), {flops / 1e12:.3f} TFLOP"
    )
    print(
        f"bf16 matmul peak at {peak['threads']} thread(s): {peak['flops_per_second'] / 1e9:.1f} GFLOP/s ({peak['shape']}); "
        + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in peak["by_shape"].items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
