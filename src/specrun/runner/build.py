"""Building a run's model: the method's ``build`` on its pretrained backbone, seeded, on the run's device.

``execute`` (training), ``predict`` (a stored run's predictor), ``teacher`` and ``constraints`` all build
models through here, so none of them needs another's module.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

from specrun.errors import SpecrunError
from specrun.plugins.api import BuildContext
from specrun.plugins.registry import Registry
from specrun.runner.modeling import (
    bitsandbytes_unless_loaded,
    check_precision,
    count_parameters,
    freeze_frozen_linears_to_bf16,
    resolve_model,
    skip_needless_work,
)
from specrun.spec.schema import RunSettings

log = logging.getLogger("specrun.build")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def trainable_parameters(
    settings: RunSettings | dict,
    registry: Registry,
    num_labels: int,
    label_names: tuple[str, ...],
) -> int:
    """The trainable parameters of the model ``build_model`` would build for ``settings``, counted as
    ``count_parameters`` counts them (the run's ``trainable_params``), without loading any weights: the
    method builds its model on the meta device (``meta_pretrained``). A method that cannot build there
    (its ``build`` reads weight values) is counted from the real model, built on the CPU."""
    if isinstance(settings, dict):
        settings = RunSettings.of(settings)
    from specrun.core.models import meta_pretrained
    from specrun.core.tasks import task_of

    task, task_options = task_of(settings, registry)
    method = registry.get("method", settings.method.name)
    options = method.Options.model_validate(settings.method_options())
    meta = torch.device("meta")
    ctx = BuildContext(
        model_path=resolve_model(settings.model.name, registry),
        num_labels=num_labels,
        device=meta,
        precision=settings.train.precision,
        seed=settings.seed,
        label_names=label_names,
        max_length=settings.model.max_length,
        task=task,
        task_options=task_options,
    )
    try:
        with meta_pretrained(), meta:
            try:
                with bitsandbytes_unless_loaded():
                    model = method.build(options, ctx)
            except ImportError:  # a method that imports bitsandbytes itself (k-bit helpers)
                model = method.build(options, ctx)
    except SpecrunError:
        raise
    except Exception as exc:  # any method whose build needs real weights
        log.debug(
            "method %r cannot build on the meta device (%s: %s); counting a real model",
            method.name,
            type(exc).__name__,
            exc,
        )
        model, _ = build_model(settings, registry, num_labels, label_names, torch.device("cpu"))
    return count_parameters(model)[0]


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
    skip_needless_work(model)
    if precision == "bf16" and method.prefers_frozen_bf16(options):
        freeze_frozen_linears_to_bf16(model)
    if not getattr(model, "is_loaded_in_4bit", False) and not getattr(model, "is_loaded_in_8bit", False):
        model.to(device)
    return model, ctx
