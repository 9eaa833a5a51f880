"""Faster training steps on the CPU: dropout masks drawn by numpy and an attention that uses them, and
one bf16 cast of a Linear's input shared by the Linears that read it (exact: the same bits as before).

Swapped in by the training loop (``cpu_training_speedups``) for the length of a run's training only.
"""

from __future__ import annotations

import contextlib
import functools
import weakref

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
    if x.dtype == torch.bfloat16:  # the same mask built in bf16 directly: no float32 mask to cast
        mask16 = (draws >= np.float32(p)).astype(np.uint16)
        mask16 *= _bf16_bits(1 / (1 - p))
        return x * torch.from_numpy(mask16).view(torch.bfloat16).view(x.shape)
    mask = np.multiply(draws >= np.float32(p), np.float32(1 / (1 - p)), out=draws)
    return x * torch.from_numpy(mask).view(x.shape).to(x.dtype)


@functools.lru_cache(maxsize=16)
def _bf16_bits(value: float) -> np.uint16:
    """The bit pattern of ``value`` as float32 cast to bf16 by torch (round to nearest even)."""
    return np.uint16(torch.tensor(value, dtype=torch.float32).to(torch.bfloat16).view(torch.int16).item() & 0xFFFF)


class _SharedCast(torch.autograd.Function):
    """One Linear's bf16 view of an fp32 input whose bf16 copy several Linears share (query, key and
    value read the same hidden states). Forward hands out the shared copy; backward casts this
    consumer's gradient to the input's dtype, exactly what autocast's own cast does, so the gradients
    still reach the fp32 input one by one and accumulate in fp32 in the same order."""

    @staticmethod
    def forward(ctx, x, cast):
        ctx.dtype = x.dtype
        return cast.view_as(cast)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.dtype), None


class SharedInputCast:
    """A forward pre-hook for frozen bf16 Linears: under bf16 autocast, autocast casts an fp32 input to
    bf16 for every Linear it enters, so the hidden states that feed query, key and value are cast three
    times per step. This casts them once and gives each Linear that copy (the same values: the same
    cast). Only where autocast would cast: CPU bf16 autocast, an fp32 input, a bf16 weight."""

    def __init__(self):
        self.source: weakref.ref | None = None
        self.version = -1
        self.cast: torch.Tensor | None = None

    def __call__(self, module, args):
        x = args[0] if args else None
        if (
            not isinstance(x, torch.Tensor)
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or module.weight.dtype != torch.bfloat16
            or not torch.is_autocast_enabled("cpu")
            or torch.get_autocast_dtype("cpu") != torch.bfloat16
        ):
            return None
        if self.source is None or self.source() is not x or self.version != x._version:
            self.source, self.version = weakref.ref(x), x._version
            self.cast = x.detach().to(torch.bfloat16)
        return (_SharedCast.apply(x, self.cast), *args[1:])

    def clear(self) -> None:
        self.source, self.version, self.cast = None, -1, None


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
    uses it (for transformers models on SDPA), and a ``SharedInputCast`` pre-hook on each frozen bf16
    Linear. Restores the model as it was on exit. Yields the numpy
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
    shared_cast, hooks = SharedInputCast(), []
    for module in model.modules():
        if (
            type(module) is torch.nn.Linear
            and not module.weight.requires_grad
            and module.weight.dtype == torch.bfloat16
        ):
            hooks.append(module.register_forward_pre_hook(shared_cast))
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
        for hook in hooks:
            hook.remove()
        shared_cast.clear()
        for module in switched:
            module.set_attn_implementation("sdpa")
        for parent, name, child in swapped:
            parent._modules[name] = child
