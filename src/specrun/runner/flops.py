"""What a run computed: the useful FLOPs of its training and evaluation passes, counted from the model's
own matrix shapes and the real (unpadded) tokens of each batch, as ``benchmarks/bench_flops.py`` counts W1.

Useful FLOPs count the matrix products only, on real tokens only:

  forward    every linear layer (``nn.Linear``, transformers' ``Conv1D``, quantized linears at the shape
             they stand for): 2 * in * out per row it sees (a row per token, or per sequence for a pooler
             and a classifier); attention scores QK^T and values PV: 2 * 2 * L * d per token and layer (L
             the sequence's real length, soft-prompt tokens included; d the attention width; causal
             attention counted in full)
  backward   the input gradient of every linear layer whose input depends on a trainable parameter:
             another 2 * in * out per row; the weight gradient of every trainable linear layer: 2 * in *
             out per row; attention: twice its forward, in the layers where a gradient flows through it

Elementwise work (norms, activations, softmax, dropout, the optimizer) and embedding look-ups are not
counted. Which layers run per token or per sequence, which inputs need a gradient and which weights train
is read off two short probe passes of the run's own model with hooks, once per run, after it trained.
During the run a hook on the model's forward only adds up each batch's real lengths (the attention
mask's row sums): with n a sequence's real length, one sequence costs ``per_token * n + per_sequence +
per_token_sq * n**2`` FLOPs, with one set of coefficients for a training pass and one for an
evaluation (forward only) pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: The two probe lengths: two points tell per-token rows (the slope) from per-sequence ones and offsets.
PROBE_LENGTHS = (6, 10)


@dataclass(frozen=True)
class Coefficients:
    """FLOPs of one sequence of real length n: ``per_token * n + per_sequence + per_token_sq * n**2``."""

    per_token: float
    per_sequence: float
    per_token_sq: float

    def flops(self, sequences: float, tokens: float, tokens_sq: float) -> float:
        return self.per_token * tokens + self.per_sequence * sequences + self.per_token_sq * tokens_sq


@dataclass(frozen=True)
class FlopModel:
    """The coefficients of a training pass (forward and backward) and of an evaluation pass (forward)."""

    train: Coefficients
    forward: Coefficients
    layers: int
    attention_width: int


def _shape(module) -> tuple[int, int] | None:
    """(in, out) of a linear layer: ``nn.Linear`` (and its quantized subclasses) or transformers' ``Conv1D``."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.shape[0], module.nf
    return None


def _attention_width(config) -> int:
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None)
    if heads and head_dim:
        return int(heads * head_dim)
    return int(config.hidden_size)


def flop_model(model: torch.nn.Module, precision: str = "fp32", device: torch.device | None = None) -> FlopModel:
    """Count ``model``'s useful FLOPs per sequence from two probe passes (in eval mode, so that nothing
    random is drawn, with gradients enabled, so that the hooks see which inputs need one), hooked at every
    linear layer and at the attention's query/key/value projections."""
    import torch

    from specrun.core.roles import role_map_for
    from specrun.runner.modeling import autocast

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    roles = role_map_for(getattr(config, "model_type", None))
    names = [n for n, _ in base.named_modules()]
    qkv_roles = ("query", "key", "value") if roles is not None and roles.qkv is None else ("query",)
    if roles is not None:
        first = set(roles.modules(("query",), names))  # one call per layer pass
        projections = set(roles.modules(qkv_roles, names))
    else:
        first, projections = set(), set()
    device = device or next(model.parameters()).device
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    width = _attention_width(config)

    def probe(length: int):
        linears: list[dict] = []
        attention: list[dict] = []  # one per attention computation: its sequence length, whether a gradient flows

        def linear_hook(name, shape):
            def record(module, inputs, output):
                x = inputs[0]
                linears.append(
                    {
                        "name": name,
                        "in": shape[0],
                        "out": shape[1],
                        "rows": x.numel() // shape[0],
                        "input_grad": bool(x.requires_grad),
                        "weight_grad": bool(
                            getattr(module, "weight", None) is not None and module.weight.requires_grad
                        ),
                    }
                )

            return record

        def projection_hook(name):
            def record(module, inputs, output):
                out = output[0] if isinstance(output, tuple) else output
                if name in first:
                    rows = inputs[0].numel() // inputs[0].shape[-1]
                    attention.append({"rows": rows, "grad": False})
                if attention and bool(getattr(out, "requires_grad", False)):
                    attention[-1]["grad"] = True

            return record

        handles = []
        for name, module in base.named_modules():
            shape = _shape(module)
            if shape is not None:
                handles.append(module.register_forward_hook(linear_hook(name, shape)))
            if name in projections:
                handles.append(module.register_forward_hook(projection_hook(name)))
        was_training = model.training
        vocab = int(getattr(config, "vocab_size", 0) or 2)
        pad = getattr(config, "pad_token_id", None)
        token = next(t for t in (5, 4, 3, 2, 1) if t < vocab and t != pad)
        try:
            model.eval()
            ids = torch.full((1, length), token, dtype=torch.long, device=device)
            with torch.enable_grad(), autocast(precision, device):
                model(input_ids=ids, attention_mask=torch.ones_like(ids))
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        return linears, attention

    (n1, n2) = PROBE_LENGTHS
    (lin1, att1), (lin2, att2) = probe(n1), probe(n2)
    if len(lin1) != len(lin2) or len(att1) != len(att2):
        raise RuntimeError("the model ran different layers on the two probes: its FLOPs cannot be counted per token")
    train = [0.0, 0.0, 0.0]  # per token, per sequence, per token squared
    forward = [0.0, 0.0, 0.0]
    for a, b in zip(lin1, lin2):
        slope = (b["rows"] - a["rows"]) / (n2 - n1)  # rows = slope * n + offset
        offset = a["rows"] - slope * n1
        once = 2 * a["in"] * a["out"]
        passes = 1 + a["input_grad"] + a["weight_grad"]
        for totals, times in ((train, passes), (forward, 1)):
            totals[0] += once * times * slope
            totals[1] += once * times * offset
    if roles is None:  # no role map: attention counted in every layer, with a gradient if anything trains
        grad = any(p.requires_grad for p in model.parameters())
        att1 = [{"rows": n1, "grad": grad} for _ in range(layers)]
        att2 = [{"rows": n2, "grad": grad} for _ in range(layers)]
    for a, b in zip(att1, att2):
        offset = a["rows"] - n1  # soft-prompt tokens: the attention sees n + offset positions
        if b["rows"] - n2 != offset:
            raise RuntimeError("attention saw other lengths than the probes'")
        once = 2 * 2 * width  # QK^T and PV, per squared position
        times = 3 if a["grad"] else 1
        for totals, t in ((train, times), (forward, 1)):
            # (n + k)^2 = n^2 + 2kn + k^2
            totals[2] += once * t
            totals[0] += once * t * 2 * offset
            totals[1] += once * t * offset * offset
    return FlopModel(Coefficients(*train), Coefficients(*forward), layers, width)


class TokenTally:
    """A hook on a model's forward that adds up the sequences, real tokens and squared real lengths of
    every batch it sees: training passes (the model in training mode with gradients on) apart from
    evaluation passes. The sums stay on the model's device (no synchronization per batch) until read."""

    def __init__(self, model: torch.nn.Module):
        self.sums: dict[str, list] = {"train": [0, 0, 0], "eval": [0, 0, 0]}
        self.paused = False
        self._handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        import torch

        if self.paused:
            return None
        mask = kwargs.get("attention_mask")
        if mask is not None:
            lengths = mask.sum(-1)
        else:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                return None
            lengths = torch.full(ids.shape[:1], ids.shape[-1], device=ids.device)
        lengths = lengths.to(torch.float64)
        kind = "train" if module.training and torch.is_grad_enabled() else "eval"
        sums = self.sums[kind]
        sums[0] += lengths.numel()
        sums[1] = sums[1] + lengths.sum()
        sums[2] = sums[2] + (lengths * lengths).sum()
        return None

    @contextlib.contextmanager
    def pause(self):
        """Forward passes inside the block are not counted (latency probes)."""
        self.paused = True
        try:
            yield
        finally:
            self.paused = False

    def totals(self, kind: str) -> tuple[float, float, float]:
        """(sequences, real tokens, sum of squared real lengths) of ``kind`` ('train' or 'eval')."""
        return tuple(float(x) for x in self.sums[kind])  # type: ignore[return-value]

    def remove(self) -> None:
        self._handle.remove()


def run_flops(model: torch.nn.Module, tally: TokenTally, precision: str, device) -> dict[str, float]:
    """``{"train_flops", "eval_flops", "train_real_tokens", "eval_real_tokens"}`` of the passes ``tally``
    counted on ``model``."""
    fm = flop_model(model, precision, device)
    train, evaluation = tally.totals("train"), tally.totals("eval")
    return {
        "train_flops": fm.train.flops(*train),
        "eval_flops": fm.forward.flops(*evaluation),
        "train_real_tokens": train[1],
        "eval_real_tokens": evaluation[1],
    }
