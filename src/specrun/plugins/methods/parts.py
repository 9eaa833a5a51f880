"""Finding the parts of a transformers sequence classifier that the freezing methods select.

Not a plugin: ``bitfit``, ``freeze`` and ``head_only`` share these helpers. They rely only on
transformers conventions (``base_model_prefix``, an encoder holding a ``ModuleList`` of layers), so
BERT, RoBERTa, ELECTRA and DistilBERT classifiers all work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from specrun.errors import SpecrunError

if TYPE_CHECKING:  # imported where a model is built: listing plugins and adding commands stay fast
    import torch


def is_head(model: torch.nn.Module, name: str) -> bool:
    """Whether parameter ``name`` belongs to the task head: anything outside the pretrained backbone
    (``classifier``; also ``pre_classifier`` on DistilBERT). The pooler is part of the backbone."""
    return not name.startswith(model.base_model_prefix + ".")


def encoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The backbone's stack of transformer layers and its parameter-name prefix (e.g. ``bert.encoder.layer``)."""
    import torch

    backbone = model.base_model
    for name, module in backbone.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and name.split(".")[-1] in ("layer", "layers"):
            return f"{model.base_model_prefix}.{name}", module
    raise SpecrunError(f"cannot find the encoder layers of {type(model).__name__} (expected a ModuleList named 'layer')")


def train_only(model: torch.nn.Module, wanted) -> torch.nn.Module:
    """Freeze every parameter, then unfreeze those whose name ``wanted(name)`` accepts; returns ``model``."""
    for name, param in model.named_parameters():
        param.requires_grad_(bool(wanted(name)))
    return model
