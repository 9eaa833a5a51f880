"""Loading a pretrained transformers classifier: its config, the model with a fresh head, its module names.

Below the plugin API (``BuildContext.load_backbone`` and ``ModelInfo.module_names`` call these) and the
runner (``specrun.runner.modeling`` re-exports them). torch and transformers are imported inside the
functions: planning and validating must not pay for them.
"""

from __future__ import annotations

import contextlib
import functools
import io
from typing import TYPE_CHECKING

from specrun.errors import DataError

if TYPE_CHECKING:
    import torch


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
def parameter_names(model_path: str) -> tuple[str, ...]:
    """Parameter names of the sequence classifier for ``model_path``, built on the meta device (no weights)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(load_config(model_path))
    return tuple(name for name, _ in model.named_parameters())


@functools.lru_cache(maxsize=8)
def linear_shapes(model_path: str) -> dict[str, tuple[int, int]]:
    """``{name: (in_features, out_features)}`` of the sequence classifier's linear layers, from a copy
    built on the meta device (no weights)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(load_config(model_path))
    return {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


#: ``from_pretrained`` arguments about where and how weights are stored: a model built on the meta
#: device has no weights, so ``meta_pretrained`` drops them (4-bit and 8-bit layers then count as the
#: parameters they stand for, as peft counts them).
_STORAGE_KWARGS = (
    "quantization_config",
    "device_map",
    "dtype",
    "torch_dtype",
    "low_cpu_mem_usage",
    "max_memory",
    "offload_folder",
    "offload_state_dict",
    "use_safetensors",
    "weights_only",
    "local_files_only",
    "cache_dir",
    "revision",
    "token",
)


@contextlib.contextmanager
def meta_pretrained():
    """While active, every transformers ``from_pretrained`` (a method's ``ctx.load_backbone``, a task's
    ``load_model``) builds the model from its config on the meta device instead of loading weights: the
    same modules and parameter shapes in a few milliseconds, no tensor data. For counting parameters
    (``plan``'s budget), never for running a model. Not thread-safe: it swaps the class method."""
    import copy
    import os

    import torch
    from transformers import PreTrainedModel

    original = PreTrainedModel.__dict__["from_pretrained"]

    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        for name in _STORAGE_KWARGS:
            kwargs.pop(name, None)
        if config is None or isinstance(config, (str, os.PathLike)):
            config, kwargs = cls.config_class.from_pretrained(
                config or pretrained_model_name_or_path, return_unused_kwargs=True, **kwargs
            )
        else:
            config = copy.deepcopy(config)
            for name, value in kwargs.items():
                setattr(config, name, value)
        with torch.device("meta"):
            return cls._from_config(config)

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)
    try:
        yield
    finally:
        PreTrainedModel.from_pretrained = original


def quiet_load():
    """Around ``from_pretrained``: transformers prints a load report on stdout."""
    return contextlib.redirect_stdout(io.StringIO())


@functools.lru_cache(maxsize=8)
def load_tokenizer(model_path: str):
    """The tokenizer of the model at ``model_path``, with a pad token: its own, else its end-of-sequence
    token (decoders), padding on the right (``core.roles.ensure_pad_token``)."""
    from transformers import AutoTokenizer

    from specrun.core.roles import ensure_pad_token

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:
        raise DataError(f"cannot load the tokenizer of {model_path!r}: {type(exc).__name__}: {exc}") from None
    ensure_pad_token(tokenizer)
    return tokenizer


def load_classifier(model_path: str, num_labels: int, label_names: tuple[str, ...] = (), **kwargs):
    """``AutoModelForSequenceClassification`` with a new head of ``num_labels`` outputs; a decoder's
    config gets the pad token its batches are padded with (``core.roles.pad_kwargs``)."""
    from transformers import AutoModelForSequenceClassification

    from specrun.core.roles import pad_kwargs

    names = list(label_names) or [str(i) for i in range(num_labels)]
    try:
        kwargs = {**pad_kwargs(load_config(model_path), lambda: load_tokenizer(model_path)), **kwargs}
    except OSError as exc:
        raise DataError(f"cannot load model {model_path!r}: {exc}") from None
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


def gpu_supports_bf16(device: torch.device) -> bool:
    """Whether the GPU computes in bf16 natively: compute capability 8.0 (Ampere) or later, or ROCm.
    (``torch.cuda.is_bf16_supported()`` also answers yes for older GPUs that only emulate bf16, many
    times slower, and only for the current device.)"""
    import torch

    if torch.version.hip:
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_properties(index).major >= 8
