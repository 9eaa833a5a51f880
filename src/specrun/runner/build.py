"""Building a run's model: the method's ``build`` on its pretrained backbone, seeded, on the run's device.

``execute`` (training), ``predict`` (a stored run's predictor), ``teacher`` and ``constraints`` all build
models through here, so none of them needs another's module.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from specrun.plugins.api import BuildContext
from specrun.plugins.registry import Registry
from specrun.runner.modeling import (
    bitsandbytes_unless_loaded,
    check_precision,
    freeze_frozen_linears_to_bf16,
    resolve_model,
)
from specrun.spec.schema import RunSettings


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(
    settings: RunSettings | dict,
    registry: Registry,
    num_labels: int,
    label_names: tuple[str, ...],
    device: torch.device,
):
    """The method's model for ``settings`` (or a run's config tree), seeded, on ``device``; frozen weights
    in bf16 where that helps."""
    if isinstance(settings, dict):
        settings = RunSettings.of(settings)
    from specrun.core.tasks import task_of

    task, task_options = task_of(settings, registry)
    method = registry.get("method", settings.method.name)
    options = method.Options.model_validate(settings.method_options())
    precision = settings.train.precision
    check_precision(precision, device)
    method.check(options, device, precision)
    seed_everything(settings.seed)
    ctx = BuildContext(
        model_path=resolve_model(settings.model.name, registry),
        num_labels=num_labels,
        device=device,
        precision=precision,
        seed=settings.seed,
        label_names=label_names,
        max_length=settings.model.max_length,
        task=task,
        task_options=task_options,
    )
    try:
        with bitsandbytes_unless_loaded():
            model = method.build(options, ctx)
    except ImportError:  # a method that imports bitsandbytes itself, without its check having loaded it
        seed_everything(settings.seed)
        model = method.build(options, ctx)
    if precision == "bf16" and method.prefers_frozen_bf16(options):
        freeze_frozen_linears_to_bf16(model)
    if not getattr(model, "is_loaded_in_4bit", False) and not getattr(model, "is_loaded_in_8bit", False):
        model.to(device)
    return model, ctx
