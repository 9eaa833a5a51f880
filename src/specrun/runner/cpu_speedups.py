"""Faster training steps on the CPU: dropout masks drawn by numpy and an attention that uses them.

Swapped in by the training loop (``cpu_training_speedups``) for the length of a run's training only.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

# Profiling a LoRA step of MiniLM on SST-2 on the CPU (one thread) puts a quarter of its time in
# torch's dropout: CPU ``bernoulli_`` draws a double per element from a serial mt19937. Drawing the
# same Bernoulli(1 - p) keep masks as float32 uniforms from numpy's SFC64 costs about half as much.
# Attention dropout happens inside SDPA, out of reach, so while training we route attention through
# an explicit softmax(QK^T)V that drops out with those masks; without dropout (evaluation) it is SDPA.
# (Its softmax pads rows shorter than 16 keys: torch's CPU kernel is 3-4x slower on those, and SST-2
# batches are mostly that short.)

CPU_TRAIN_ATTENTION = "specrun_cpu_train"


class CpuDropout(torch.nn.Dropout):
    """``nn.Dropout`` whose keep masks come from a seeded numpy generator (a CPU speed-up, same math:
    each element kept with probability 1 - p and scaled by 1 / (1 - p))."""

    def __init__(self, p: float, rng: np.random.Generator):
        super().__init__(p)
        self.rng = rng

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_dropout(x, self.p, self.rng) if self.training else x


def cpu_dropout(x: torch.Tensor, p: float, rng: np.random.Generator) -> torch.Tensor:
    if p <= 0 or x.numel() == 0:
        return x
    if p >= 1:
        return x * 0
    draws = rng.random(x.numel(), dtype=np.float32)
    # As torch's own dropout: a mask of 0 and 1 / (1 - p) (float32, then x's dtype), times x; autograd
    # saves the mask. Scaling in numpy skips torch's slow bool -> float conversion.
    mask = np.multiply(draws >= np.float32(p), np.float32(1 / (1 - p)), out=draws)
    return x * torch.from_numpy(mask).view(x.shape).to(x.dtype)


def _cpu_train_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """softmax(QK^T * scaling + mask) V with ``CpuDropout`` on the probabilities; SDPA when nothing drops out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    drop = getattr(module, "dropout", None)
    plain = (
        not dropout
        or not isinstance(drop, CpuDropout)
        or kwargs.get("is_causal")
        or getattr(module, "is_causal", False)
        or query.shape[1] != key.shape[1]  # grouped-query attention
        or kwargs.get("position_bias") is not None
    )
    if plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # SDPA's mask: True where attention is allowed
            scores = scores.masked_fill(attention_mask.logical_not(), torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    keys = scores.shape[-1]
    if keys < 16:  # torch's CPU softmax falls back to scalar code on rows shorter than a vector: pad them
        scores = torch.nn.functional.pad(scores, (0, 16 - keys), value=float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)[..., :keys]  # float32, as SDPA on the CPU
    probs = cpu_dropout(probs, dropout, drop.rng)
    output = torch.matmul(probs.to(value.dtype), value)
    return output.transpose(1, 2).contiguous(), None


def _register_cpu_train_attention() -> bool:
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(CPU_TRAIN_ATTENTION, _cpu_train_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(CPU_TRAIN_ATTENTION, sdpa_mask)
    return True


@contextlib.contextmanager
def cpu_training_speedups(model: torch.nn.Module, device: torch.device, seed: int):
    """While training on the CPU: ``CpuDropout`` in place of every ``nn.Dropout``, and attention that
    uses it (for transformers models on SDPA). Restores the model as it was on exit. Yields the numpy
    generator the dropout masks come from (None off the CPU), for checkpoints to save and restore."""
    if device.type != "cpu":
        yield None
        return
    rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, 0xD209])))
    swapped, replacements = [], {}
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if type(child) is torch.nn.Dropout and not child.inplace and child.p > 0:
                if id(child) not in replacements:  # a module shared by several parents stays shared
                    replacements[id(child)] = CpuDropout(child.p, rng).train(child.training)
                new = replacements[id(child)]
                parent._modules[name] = new
                swapped.append((parent, name, child))
    switched = []
    if swapped and _register_cpu_train_attention():
        from transformers import PreTrainedModel

        for module in model.modules():
            if (
                isinstance(module, PreTrainedModel)
                and getattr(module.config, "_attn_implementation", None) == "sdpa"
                and module._can_set_attn_implementation()
            ):
                try:
                    module.set_attn_implementation(CPU_TRAIN_ATTENTION)
                except Exception:  # a speed-up must never stop a run: keep SDPA (and torch's attention dropout)
                    continue
                switched.append(module)
    try:
        yield rng
    finally:
        for module in switched:
            module.set_attn_implementation("sdpa")
        for parent, name, child in swapped:
            parent._modules[name] = child
