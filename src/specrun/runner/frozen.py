"""Frozen features computed once (``train.cache_frozen``): train a classifier's head on its frozen
backbone's output, computed once per example instead of once per example and epoch.

A run that trains only what sits above a frozen backbone (``head_only``, ``freeze`` of every layer,
``lora``/``qlora`` with ``train = "head"``) spends nearly all of its time pushing every training example
through the backbone in every epoch, for a head of a few thousand parameters. A sequence classifier's
head reads one vector per example of the backbone's output, so the backbone — embeddings, every layer,
adapters loaded from ``model.init_from`` included — runs once per example, in inference mode, and the
head trains on those vectors; evaluation reads them too. Which vector, and what the head is:

- the encoders in ``HEADS`` read the last hidden state of the first token ([CLS], <s>); their head is
  the pooler where the architecture has one, its dropout and the classifier;
- the decoders in ``HEADS`` (GPT-2, GPT-Neo, GPT-NeoX, Llama, Qwen2, Mistral) apply their ``score``
  (linear, no bias) to every position's hidden state after the final norm and keep the logits of the
  last token that is not the pad token (``last_positions``: the rightmost such token, exactly as
  transformers finds it, so a real end-of-sequence token that is also the pad token is skipped as it
  is there). Both the final norm and ``score`` act on each position alone, so the feature is the last
  layer's output at that position, before the final norm, and the head is the final norm then
  ``score``: the final norm belongs to the head because ``freeze`` of every layer trains it.

How it differs from the same run without the option: no dropout inside the backbone while training
(inference mode: the head's own dropout still applies), so the head sees the same features in every
epoch. Evaluation is the same computation as before (the backbone in eval mode, batched the same way).

The vectors are kept in specrun's on-disk cache (``specrun.cache``, kind ``frozen-features``) under the
content hash of the backbone's weights (after any transfer), the model's config, the method's options,
the tokenized examples, the precision and the device type: a later run with the same frozen backbone and
data (another seed or learning rate of a linear probe) loads them instead of computing them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from specrun import cache
from specrun.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from specrun.runner.batching import Encoded
    from specrun.spec.schema import RunSettings

log = logging.getLogger("specrun.frozen")

#: The cache kind the features are kept under.
CACHE_KIND = "frozen-features"
#: Bump when what a feature entry holds, or how it is computed, changes.
FORMAT = 1

#: model_type -> how its sequence classifier reads the backbone: the head's modules by the name
#: ``FrozenHead`` gives them and their path in the model (``{base}``: the model's ``base_model_prefix``),
#: in the order ``FrozenHead.forward`` applies them. The encoders read the first token's last hidden
#: state; the decoders (``DECODER_HEADS``) the last non-padding token's, before their final norm.
HEADS: dict[str, dict[str, str]] = {
    "bert": {"pooler": "{base}.pooler", "dropout": "dropout", "classifier": "classifier"},
    "albert": {
        "pooler": "{base}.pooler",
        "pooler_activation": "{base}.pooler_activation",
        "dropout": "dropout",
        "classifier": "classifier",
    },
    "roberta": {"classifier": "classifier"},
    "xlm-roberta": {"classifier": "classifier"},
    "camembert": {"classifier": "classifier"},
    "electra": {"classifier": "classifier"},
    "distilbert": {"pre_classifier": "pre_classifier", "dropout": "dropout", "classifier": "classifier"},
    "deberta-v2": {"pooler": "pooler", "dropout": "dropout", "classifier": "classifier"},
    "gpt2": {"norm": "{base}.ln_f", "score": "score"},
    "gpt_neo": {"norm": "{base}.ln_f", "score": "score"},
    "gpt_neox": {"norm": "{base}.final_layer_norm", "score": "score"},
    "llama": {"norm": "{base}.norm", "score": "score"},
    "qwen2": {"norm": "{base}.norm", "score": "score"},
    "mistral": {"norm": "{base}.norm", "score": "score"},
}
#: The decoders among ``HEADS``: their classifier keeps the logits of each sequence's last non-padding token.
DECODER_HEADS = frozenset(("gpt2", "gpt_neo", "gpt_neox", "llama", "qwen2", "mistral"))


def architecture_problem(config: Any) -> str | None:
    """Why frozen features cannot serve a model with this transformers config (None when they can)."""
    model_type = getattr(config, "model_type", None)
    if model_type in HEADS:
        return None
    encoders = ", ".join(sorted(set(HEADS) - DECODER_HEADS))
    decoders = ", ".join(sorted(DECODER_HEADS))
    return (
        f"frozen features are implemented for the encoders {encoders} and the decoders {decoders}; "
        f"{model_type!r} is not one of them"
    )


def last_positions(
    input_ids: torch.Tensor, pad_token_id: int | None, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Where a decoder's sequence classifier reads each row of ``input_ids``: the rightmost token that is
    not ``pad_token_id`` (0 for a row of nothing else), as transformers' ``*ForSequenceClassification``
    computes it. A model without a pad token is read at its last position (transformers allows that
    only for a batch of one, an unpadded sequence): here each row's last attended one."""
    import torch

    if pad_token_id is None:
        if attention_mask is None:
            return torch.full((input_ids.shape[0],), input_ids.shape[-1] - 1, device=input_ids.device)
        return attention_mask.sum(-1) - 1
    non_pad = (input_ids != pad_token_id).to(torch.int32)
    indices = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
    return (indices * non_pad).argmax(-1)


def _pad_token_id(config: Any) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "pad_token_id", None)


def classifier_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers sequence classifier inside ``model`` (a peft wrapper's base model, or itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _head_paths(classifier: torch.nn.Module) -> dict[str, str]:
    model_type = getattr(classifier.config, "model_type", None)
    problem = architecture_problem(classifier.config)
    if problem:
        raise ConfigError(problem, key="train.cache_frozen")
    base = classifier.base_model_prefix
    return {name: path.format(base=base) for name, path in HEADS[model_type].items()}


def _under(name: str, paths) -> bool:
    return any(name == p or name.startswith(p + ".") for p in paths)


def _build_head(model: torch.nn.Module):
    import torch

    class FrozenHead(torch.nn.Module):
        """The top of a sequence classifier (pooler, dropout, classifier; a decoder's final norm and
        score: the very modules of the model, shared), run on the backbone's hidden states of the token
        the classifier reads. Called like the model: ``head(features=...)`` returns an object with
        ``.logits``."""

        def __init__(self, classifier: torch.nn.Module, paths: dict[str, str]):
            super().__init__()
            self.model_type = classifier.config.model_type
            for name, path in paths.items():
                self.add_module(name, classifier.get_submodule(path))

        def forward(self, features: torch.Tensor, **_: Any):
            from transformers.modeling_outputs import SequenceClassifierOutput

            x = features
            kind = self.model_type
            if kind in DECODER_HEADS:  # score(norm(h)) at the last non-padding token, as the model computes it
                return SequenceClassifierOutput(logits=self.score(self.norm(x)))
            if kind == "bert" or kind == "deberta-v2":  # pooler(hidden) reads hidden[:, 0]
                x = self.dropout(self.pooler(x[:, None]))
            elif kind == "albert":
                x = self.dropout(self.pooler_activation(self.pooler(x)))
            elif kind == "distilbert":
                x = self.dropout(torch.relu(self.pre_classifier(x)))
            else:  # RoBERTa-style classification heads read features[:, 0, :] themselves
                x = x[:, None]
            return SequenceClassifierOutput(logits=self.classifier(x))

    classifier = classifier_of(model)
    return FrozenHead(classifier, _head_paths(classifier))


@dataclass
class FrozenSplit:
    """A split's frozen features, in example order: what the task's ``loss`` and ``evaluate`` batch in
    place of its ``Encoded`` (same labels, same token lengths: training draws the same batches)."""

    features: np.ndarray  # (examples, hidden) float32
    labels: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def collate(self, index: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        import torch

        return {"features": torch.from_numpy(self.features[index]).to(device, non_blocking=True)}


class FrozenPrefix:
    """A built (and transferred) model split into its frozen backbone and the head that trains.

    Raises ConfigError (key ``train.cache_frozen``) when the model is not an architecture this serves
    or when any of its trainable parameters sits inside the backbone."""

    def __init__(self, model: torch.nn.Module, settings: RunSettings):
        self.model = model
        self.classifier = classifier_of(model)
        paths = _head_paths(self.classifier)
        inside = [n for n, p in self.classifier.named_parameters() if p.requires_grad and not _under(n, paths.values())]
        if inside:
            raise ConfigError(
                f"the method {settings.method.name!r} built a model that trains {len(inside)} parameter tensors inside "
                f"the backbone (e.g. {', '.join(inside[:2])}); frozen features need everything it trains in the head "
                f"({', '.join(paths.values())}); leave cache_frozen out for this run",
                key="train.cache_frozen",
            )
        self.backbone = getattr(self.classifier, self.classifier.base_model_prefix)
        self.head = _build_head(model)
        self.paths = paths
        self.head_paths = tuple(paths.values())
        self.settings = settings
        self.weights = self._weights_digest()
        self.seconds = 0.0  # spent computing or loading features
        self.loaded = self.computed = 0  # splits served from the cache / computed here

    def _weights_digest(self) -> str:
        """Content hash of what the features depend on: the backbone's tensors (head excluded), the
        model's config (label names excluded) and the method's options (e.g. LoRA's scaling)."""
        import torch

        digest = hashlib.sha256()
        for name, tensor in sorted(self.classifier.state_dict().items()):
            if _under(name, self.head_paths):
                continue
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes())
        config = {
            k: v for k, v in self.classifier.config.to_dict().items() if k not in ("id2label", "label2id", "num_labels")
        }
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        digest.update(json.dumps(self.settings.method.model_dump(mode="json"), sort_keys=True).encode())
        return digest.hexdigest()

    def features(self, data: Encoded, batch_size: int, precision: str, device: torch.device) -> FrozenSplit:
        """``data``'s frozen features: from the cache, or computed (and then cached)."""
        start = time.perf_counter()
        key = self._key(data, precision, device)
        found = cache.get(CACHE_KIND, key)
        if isinstance(found, np.ndarray) and found.shape[0] == len(data):
            self.loaded += 1
            features = found
        else:
            features = self._compute(data, batch_size, precision, device)
            cache.put(CACHE_KIND, key, features)
            self.computed += 1
        self.seconds += time.perf_counter() - start
        return FrozenSplit(features, data.labels, data.lengths)

    def _key(self, data: Encoded, precision: str, device: torch.device) -> dict[str, Any]:
        import torch
        import transformers

        digest = hashlib.sha256()
        digest.update(np.asarray(data.lengths, dtype=np.int64).tobytes())
        for ids in data.ids:
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        if len(data) and data.types[0] is not None:
            for types in data.types:
                digest.update(np.asarray(types, dtype=np.int64).tobytes())
        digest.update(str(data.pad_id).encode())
        return {
            "features": FORMAT,
            "weights": self.weights,
            "data": digest.hexdigest(),
            "max_length": self.settings.model.max_length,
            "precision": precision,
            "device": device.type,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }

    def _compute(self, data: Encoded, batch_size: int, precision: str, device: torch.device) -> np.ndarray:
        """The hidden state the head reads of every example (an encoder's first token's last hidden state,
        a decoder's last layer output at its last non-padding token): the backbone in eval mode, batched
        as evaluation batches (sorted by length), under the run's autocast."""
        import torch

        from specrun.runner.batching import eval_batches
        from specrun.runner.modeling import autocast

        hidden = self.classifier.config.hidden_size if hasattr(self.classifier.config, "hidden_size") else None
        out = None
        was_training = self.model.training
        self.model.eval()
        decoder = self.classifier.config.model_type in DECODER_HEADS
        captured: list[torch.Tensor] = []
        hook = None
        if decoder:  # the final norm is the head's: keep what goes into it
            norm = self.classifier.get_submodule(self.paths["norm"])
            hook = norm.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
        try:
            with torch.inference_mode():
                for index in eval_batches(data.lengths, batch_size):
                    batch = data.collate(index, device)
                    with autocast(precision, device):
                        states = self.backbone(**batch)[0]
                    if decoder:
                        (states,) = captured
                        captured.clear()
                        rows = torch.arange(states.shape[0], device=states.device)
                        pad = _pad_token_id(self.classifier.config)
                        where = last_positions(batch["input_ids"], pad, batch["attention_mask"])
                        states = states[rows, where.to(states.device)]
                    else:
                        states = states[:, 0]
                    states = states.float().cpu().numpy()
                    if out is None:
                        out = np.zeros((len(data), states.shape[1]), dtype=np.float32)
                    out[index] = states
        finally:
            if hook is not None:
                hook.remove()
            if was_training:
                self.model.train()
        if out is None:
            out = np.zeros((0, hidden or 0), dtype=np.float32)
        return out
