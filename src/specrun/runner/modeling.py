"""Resolving model names, loading tokenizers and classifiers, picking devices."""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np
import torch

from specrun.errors import DataError, MethodUnavailable
from specrun.plugins.registry import Registry


@functools.lru_cache(maxsize=32)
def resolve_model(name: str, registry: Registry) -> str:
    """Ask the model sources in priority order; the first answer is what ``from_pretrained`` loads."""
    for source in registry.model_sources():
        found = source.resolve(name)
        if found:
            return found
    raise DataError(f"no model source could resolve model {name!r}")


@functools.lru_cache(maxsize=16)
def load_config(model_path: str):
    """The transformers config of the model at ``model_path`` (a folder or a hub id); OSError if none."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_path)
    except ValueError as exc:  # e.g. a config.json without a known model_type
        raise OSError(str(exc)) from None


@functools.lru_cache(maxsize=8)
def module_names(model_path: str) -> list[str]:
    """Module names of the sequence classifier for ``model_path``, built on the meta device (no weights)."""
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(load_config(model_path))
    return [name for name, _ in model.named_modules()]


@functools.lru_cache(maxsize=8)
def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:
        raise DataError(f"cannot load the tokenizer of {model_path!r}: {type(exc).__name__}: {exc}") from None


def quiet_load():
    """Around ``from_pretrained``: transformers prints a load report on stdout."""
    return contextlib.redirect_stdout(io.StringIO())


def load_classifier(model_path: str, num_labels: int, label_names: tuple[str, ...] = (), **kwargs):
    """``AutoModelForSequenceClassification`` with a new head of ``num_labels`` outputs."""
    from transformers import AutoModelForSequenceClassification

    names = list(label_names) or [str(i) for i in range(num_labels)]
    with quiet_load():
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                model_path,
                num_labels=num_labels,
                id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)},
                **kwargs,
            )
        except OSError as exc:
            raise DataError(f"cannot load model {model_path!r}: {exc}") from None


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise MethodUnavailable("train.device = 'cuda' but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def check_precision(precision: str, device: torch.device) -> None:
    """Fail before training when the device cannot compute in the requested precision."""
    if precision == "fp16" and device.type == "cpu":
        raise MethodUnavailable("precision 'fp16' needs a CUDA device (this machine trains on the CPU; use bf16 or fp32)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MethodUnavailable("precision 'bf16' is not supported by this GPU; use fp16 or fp32")


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# --- faster training steps on the CPU --------------------------------------------------------------
#
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
        or kwargs.get("is_causal") or getattr(module, "is_causal", False)
        or query.shape[1] != key.shape[1]  # grouped-query attention
        or kwargs.get("position_bias") is not None
    )
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
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


def freeze_frozen_linears_to_bf16(model: torch.nn.Module) -> int:
    """Store frozen Linear weights in bf16 so autocast does not re-cast them every step; returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not module.weight.requires_grad and module.weight.dtype == torch.float32:
            module.weight.data = module.weight.data.to(torch.bfloat16)
            if module.bias is not None and not module.bias.requires_grad:
                module.bias.data = module.bias.data.to(torch.bfloat16)
            count += 1
    return count


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) counted the way peft's ``get_nb_trainable_parameters`` counts them:
    4-bit packed weights count as the parameters they stand for, not their storage elements."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if n == 0 and hasattr(param, "ds_numel"):
            n = param.ds_numel
        if param.__class__.__name__ == "Params4bit":
            itemsize = param.quant_storage.itemsize if hasattr(param, "quant_storage") else 1
            n = n * 2 * itemsize
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total
