"""Loading a pretrained transformers classifier: its config, the model with a fresh head, its module names.

Below the plugin API (``BuildContext.load_backbone`` and ``ModelInfo.module_names`` call these) and the
runner (``specrun.runner.modeling`` re-exports them). torch and transformers are imported inside the
functions: planning and validating must not pay for them.
"""

from __future__ import annotations

import contextlib
import functools
import io

from specrun.errors import DataError


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
def linear_shapes(model_path: str) -> dict[str, tuple[int, int]]:
    """``{name: (in_features, out_features)}`` of the sequence classifier's linear layers, from a copy
    built on the meta device (no weights)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(load_config(model_path))
    return {name: (module.in_features, module.out_features) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)}


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
