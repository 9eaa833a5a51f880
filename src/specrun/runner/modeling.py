"""Resolving model names, loading tokenizers and classifiers, picking devices."""

from __future__ import annotations

import contextlib
import functools
import io
from typing import TYPE_CHECKING

from specrun.errors import DataError, MethodUnavailable
from specrun.plugins.registry import Registry

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that need it: planning and validating import this module and
# must not pay for torch (seconds) when they never touch a tensor.


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
    import torch
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


@contextlib.contextmanager
def bitsandbytes_unless_loaded():
    """While building a model: keep bitsandbytes out unless something (a quantized method's ``check``)
    has imported it already. peft imports it whenever it is installed, to offer its quantized layers,
    and that import costs seconds (it pulls in torch's compiler stack); a run that quantizes nothing
    never uses it. Inside the block ``import bitsandbytes`` raises ImportError and peft's
    availability checks (``importlib.util.find_spec``) answer no; afterwards it imports as usual."""
    import sys

    if "bitsandbytes" in sys.modules:
        yield
        return
    sys.modules["bitsandbytes"] = None  # the import system's "not importable" marker
    try:
        yield
    finally:
        if sys.modules.get("bitsandbytes", 0) is None:
            del sys.modules["bitsandbytes"]


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
    """The device ``train.device`` names: 'auto' (the first GPU if there is one, else the CPU), 'cpu',
    'cuda' (the current GPU) or 'cuda:N' (GPU N). MethodUnavailable when this machine has no such GPU."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MethodUnavailable(f"train.device = {requested!r} but no CUDA device is available")
        device = torch.device(requested)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise MethodUnavailable(
                f"train.device = {requested!r} but this machine has {count} CUDA device{'s' if count != 1 else ''} "
                f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})"
            )
        return device
    return torch.device(requested)


def gpu_supports_bf16(device: torch.device) -> bool:
    """Whether the GPU computes in bf16 natively: compute capability 8.0 (Ampere) or later, or ROCm.
    (``torch.cuda.is_bf16_supported()`` also answers yes for older GPUs that only emulate bf16, many
    times slower, and only for the current device.)"""
    import torch

    if torch.version.hip:
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_properties(index).major >= 8


def check_precision(precision: str, device: torch.device) -> None:
    """Fail before training when the device cannot compute in the requested precision."""
    if precision == "fp16" and device.type == "cpu":
        raise MethodUnavailable("precision 'fp16' needs a CUDA device (this machine trains on the CPU; use bf16 or fp32)")
    if precision == "bf16" and device.type == "cuda" and not gpu_supports_bf16(device):
        import torch

        name = torch.cuda.get_device_name(device)
        raise MethodUnavailable(f"precision 'bf16' is not supported by this GPU ({name}: bf16 needs compute capability 8.0 or later); use fp16 or fp32")


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA device (before reading a clock); nothing on the CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def freeze_frozen_linears_to_bf16(model: torch.nn.Module) -> int:
    """Store frozen Linear weights in bf16 so autocast does not re-cast them every step; returns how many."""
    import torch

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
