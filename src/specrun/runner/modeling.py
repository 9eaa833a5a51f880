"""Resolving model names, loading tokenizers and classifiers, picking devices."""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

from specrun.core.models import (  # noqa: F401  (re-exported)
    gpu_supports_bf16,
    linear_shapes,
    load_classifier,
    load_config,
    load_tokenizer,
    module_names,
    quiet_load,
)
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


def portable_model_name(name: str, registry: Registry) -> str:
    """The name a saved run gives its base model so that it loads elsewhere: the spec's ``model.name``,
    or what the model source that resolves it calls it (``ModelSource.portable_name``), e.g. the hub id
    of the MiniLM bundled in a package rather than a folder inside one environment."""
    for source in registry.model_sources():
        if source.resolve(name):
            return source.portable_name(name) or name
    return name


def load_base(
    name: str, registry: Registry | None = None, auto_model: str = "AutoModelForSequenceClassification", **kwargs
):
    """``AutoModelForSequenceClassification.from_pretrained`` (or the ``auto_model`` class of the run's task,
    e.g. ``AutoModelForQuestionAnswering``) of the base model a saved adapter folder names (``kwargs`` pass
    through): through specrun's model sources, so a hub id served from a local copy loads offline here as
    it loads from the hub elsewhere."""
    import transformers

    if registry is None:
        from specrun.plugins.registry import get_registry

        registry = get_registry()
    try:
        path = resolve_model(name, registry)
    except DataError:
        path = name
    with quiet_load():
        return getattr(transformers, auto_model).from_pretrained(path, **kwargs)


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


def check_precision(precision: str, device: torch.device) -> None:
    """Fail before training when the device cannot compute in the requested precision."""
    if precision == "fp16" and device.type == "cpu":
        raise MethodUnavailable(
            "precision 'fp16' needs a CUDA device (this machine trains on the CPU; use bf16 or fp32)"
        )
    if precision == "bf16" and device.type == "cuda" and not gpu_supports_bf16(device):
        import torch

        name = torch.cuda.get_device_name(device)
        raise MethodUnavailable(
            f"precision 'bf16' is not supported by this GPU ({name}: bf16 needs compute capability 8.0 or later); use fp16 or fp32"
        )


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


def skip_needless_work(model: torch.nn.Module) -> dict[str, int]:
    """Two exact savings for every task specrun runs (none generates text), whatever the method built:

    - no key/value cache: decoders (GPT-2, GPT-Neo, Llama, ...) otherwise build one in every forward pass
      of training and evaluation (``config.use_cache`` defaults to true), a copy of every layer's keys and
      values that nothing reads;
    - GPT-2's tanh GELU (``gelu_new``: ``NewGELUActivation``, ``FastGELUActivation``), written as seven
      elementwise tensor operations, becomes ``GELUTanh``: the same function in one fused kernel
      (``torch.nn.functional.gelu(x, approximate="tanh")``), equal up to float rounding.

    Returns how many configs and activations it changed."""
    changed = {"use_cache": 0, "gelu_tanh": 0}
    try:
        from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation
    except ImportError:  # another transformers: keep its activations
        tanh_gelus: tuple[type, ...] = ()
    else:
        tanh_gelus = (NewGELUActivation, FastGELUActivation)
    seen_configs: set[int] = set()
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and id(config) not in seen_configs and getattr(config, "use_cache", False) is True:
            seen_configs.add(id(config))
            config.use_cache = False
            changed["use_cache"] += 1
        for name, child in list(module._modules.items()):
            if tanh_gelus and type(child) in tanh_gelus:
                module._modules[name] = GELUTanh()
                changed["gelu_tanh"] += 1
    text_config = getattr(getattr(model, "config", None), "get_text_config", None)
    if callable(text_config):  # a composite model's text config is read by its decoder
        inner = text_config()
        if getattr(inner, "use_cache", False) is True:
            inner.use_cache = False
            changed["use_cache"] += 1
    return changed


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
