"""A run as others load it: its saved folder through plain transformers or peft, and ``specrun export``
(a model folder that ``AutoModelForSequenceClassification.from_pretrained`` and
``pipeline("text-classification")`` load without specrun).

Nothing here touches the store: ``specrun.driver.models`` looks the run up and calls ``export_model``.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from specrun.errors import SpecrunError, UsageError
from specrun.plugins.registry import Registry
from specrun.runner import artifacts

#: Sentences the export is checked on: the folder must predict what the run's model predicts.
PROBES = ["a gorgeous, heartfelt film", "the plot was dull and the acting was worse", "it is a movie", "not bad at all"]
#: Largest difference in any class probability between the run's model and its export.
TOLERANCE = 1e-4


def label_config(label_names: tuple[str, ...] | list[str]) -> dict:
    """``from_pretrained`` kwargs giving a classifier the run's labels."""
    names = list(label_names)
    return {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def pad_config(base_path: str, folder: Path) -> dict:
    """``from_pretrained`` kwargs giving a decoder base model the pad token its run padded with (the
    tokenizer saved in ``folder``, else the base model's with specrun's rule: its pad token, else its
    end-of-sequence token): without one, its classifier cannot find the last token of a padded batch."""
    from transformers import AutoConfig, AutoTokenizer

    from specrun.runner.modeling import load_tokenizer
    from specrun.runner.roles import pad_kwargs

    def tokenizer():
        if (Path(folder) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder))
        return load_tokenizer(base_path)

    return pad_kwargs(AutoConfig.from_pretrained(base_path), tokenizer)


def load_plain(path: Path | str, device: str = "cpu"):
    """A run's saved folder loaded as someone without specrun loads it: a transformers folder with
    ``AutoModelForSequenceClassification.from_pretrained(folder)``; an adapter folder with
    ``PeftModel.from_pretrained`` over the base model its ``adapter_config.json`` names, given the run's
    labels (and, for a quantized base, its bitsandbytes config from ``run.json``). None for
    ``trained.safetensors`` (specrun's own format: only specrun reloads it)."""
    from transformers import AutoModelForSequenceClassification

    saved = artifacts.read_run(path)
    if saved.format == "transformers":
        return AutoModelForSequenceClassification.from_pretrained(str(saved.folder)).to(device).eval()
    if saved.format != "peft":
        return None
    from peft import PeftConfig, PeftModel

    base_path = PeftConfig.from_pretrained(str(saved.folder)).base_model_name_or_path
    kwargs = label_config(saved.meta["label_names"]) | pad_config(base_path, saved.folder)
    if saved.meta.get("quantization"):
        from transformers import BitsAndBytesConfig

        kwargs.update(quantization_config=BitsAndBytesConfig.from_dict(saved.meta["quantization"]), device_map={"": device})
    base = AutoModelForSequenceClassification.from_pretrained(base_path, **kwargs)
    model = PeftModel.from_pretrained(base, str(saved.folder))
    return model.eval() if saved.meta.get("quantization") else model.to(device).eval()


@dataclass
class Exported:
    """What ``export_model`` wrote: ``kind`` is ``model`` (a transformers model folder), ``merged`` (adapters
    merged into the weights), ``model+adapter`` (the base model with the run's labels and its adapter,
    which transformers attaches when it loads the folder) or ``adapter`` (an adapter folder over a base
    model it names: peft loads it); ``max_difference`` the largest probability difference from the run's
    model on the probe sentences, loaded as ``how_to_load`` says (None for adapters over a quantized base,
    which bitsandbytes' inference kernels compute otherwise than training did)."""

    folder: Path
    kind: str
    method: str
    base_model: str
    label_names: tuple[str, ...]
    max_difference: float | None = None
    note: str = ""
    run_id: str = ""
    #: A decoder's pad token id, which an adapter folder's base model needs (None: not needed).
    pad_token_id: int | None = None

    def how_to_load(self) -> str:
        if self.kind != "adapter":
            return (f"AutoModelForSequenceClassification.from_pretrained({str(self.folder)!r}) or "
                    f"pipeline('text-classification', model={str(self.folder)!r})"
                    + (" (with peft installed)" if self.kind == "model+adapter" else ""))
        labels = label_config(self.label_names)
        pad = f", pad_token_id={self.pad_token_id}" if self.pad_token_id is not None else ""
        return (f"AutoPeftModelForSequenceClassification.from_pretrained({str(self.folder)!r}, num_labels={labels['num_labels']}, "
                f"id2label={labels['id2label']}, label2id={labels['label2id']}{pad}) (peft; it loads the base model {self.base_model!r})")


def export_model(config: dict, weights: Path, out: Path, merge: bool, registry: Registry) -> Exported:
    """Write a completed run (its ``config`` tree and saved ``weights``) into the new folder ``out`` as a
    model plain transformers loads, with its tokenizer and labels; with ``merge``, adapters merged into
    the weights. Refuses (UsageError) a merge the method does not allow. The folder is written aside and
    moved into place once it loads and predicts what the run's model predicts."""
    from specrun.runner.predict import Predictor

    fp32 = copy.deepcopy(config)
    fp32.setdefault("train", {}).update(precision="fp32", device="cpu")  # weights kept (and merged) at full precision
    predictor = Predictor.from_weights(fp32, weights, registry)
    model, labels = predictor.model, predictor.label_names
    method = str(config.get("method", {}).get("name", "?"))
    max_length = predictor.cache.max_length
    base_path = getattr(getattr(_base(model), "config", None), "_name_or_path", "") or ""
    reference = _probabilities(model, predictor.cache.tokenizer, max_length)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        exported = _write(model, staging, merge, method, labels, base_path)
        artifacts.save_tokenizer(predictor.cache.tokenizer, staging, max_length)
        if exported.kind == "adapter" and base_path:
            exported.pad_token_id = pad_config(base_path, staging).get("pad_token_id")
        meta = artifacts.read_run(weights).meta
        exported.run_id = str(meta.get("run_id", ""))
        (staging / artifacts.META).write_text(json.dumps(
            {k: meta[k] for k in ("run_id", "config", "label_names") if k in meta} | {"export": exported.kind}, indent=2, default=str))
        if not (exported.kind == "adapter" and artifacts.quantized_bits(model)):  # a quantized base: bitsandbytes' kernels
            exported.max_difference = _check(staging, exported.kind, reference, labels, max_length)
        if out.exists():
            out.rmdir()  # empty: the caller checked
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    exported.folder = out
    return exported


def _base(model):
    return model.get_base_model() if artifacts.is_peft_model(model) else model


def _write(model, folder: Path, merge: bool, method: str, labels: tuple[str, ...], base_path: str) -> Exported:
    """Save ``model`` into ``folder`` as the export's kind requires; returns what was written."""
    exported = Exported(folder, "model", method, base_path, labels)
    if artifacts.is_peft_model(model):
        why_not = _cannot_merge(model, method)
        if merge:
            if why_not:
                raise UsageError(f"method {method!r} cannot be merged: {why_not}; export without --merge")
            merged = model.merge_and_unload()
            merged.save_pretrained(str(folder))
            exported.kind = "merged"
            return exported
        if why_not:  # plain transformers cannot attach this adapter: the adapter folder, over the base it names
            model.save_pretrained(str(folder), save_embedding_layers=False)
            exported.kind = "adapter"
        else:  # the base model with the run's labels, and the adapter transformers attaches when loading it
            from specrun.runner.modeling import load_classifier

            load_classifier(base_path, len(labels), labels).save_pretrained(str(folder))
            model.save_pretrained(str(folder), save_embedding_layers=False)
            exported.kind = "model+adapter"
        (folder / "README.md").unlink(missing_ok=True)
        return exported
    if not artifacts.is_plain_transformers(model):
        raise UsageError(f"method {method!r} builds a {type(model).__name__}, which is not a transformers model: it cannot be exported")
    model.save_pretrained(str(folder))
    if merge:
        exported.note = f"method {method!r} trains the model's own weights: there was nothing to merge"
    return exported


def _cannot_merge(model, method: str) -> str | None:
    """Why a peft model's adapters cannot be merged into its weights (None when they can)."""
    config = model.peft_config[model.active_adapter]
    if config.is_prompt_learning:
        return f"{config.peft_type.value.lower()} adds virtual tokens to the input, which no weight of the model can hold"
    bits = artifacts.quantized_bits(model)
    if bits:
        return f"its base model is quantized to {bits} bits, and merging would quantize the adapters too, changing predictions"
    if not hasattr(model.base_model, "merge_and_unload"):
        return f"peft cannot merge {config.peft_type.value} adapters"
    return None


@torch.inference_mode()
def _probabilities(model, tokenizer, max_length: int) -> torch.Tensor:
    inputs = tokenizer(PROBES, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return model(**inputs).logits.float().softmax(-1)


def _check(folder: Path, kind: str, reference: torch.Tensor, labels: tuple[str, ...], max_length: int) -> float:
    """Load ``folder`` as ``how_to_load`` says (transformers; peft for an adapter folder) and compare its
    predictions with ``reference``; returns the largest probability difference. SpecrunError when it
    predicts otherwise (a bug, not a user error)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from specrun.runner.modeling import quiet_load

    with quiet_load():
        if kind == "adapter":
            from peft import AutoPeftModelForSequenceClassification

            base_path = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
            kwargs = label_config(labels) | (pad_config(base_path, folder) if base_path else {})
            loaded = AutoPeftModelForSequenceClassification.from_pretrained(str(folder), **kwargs).eval()
        else:
            loaded = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    got = _probabilities(loaded, tokenizer, max_length)
    names = [loaded.config.id2label[i] for i in range(got.shape[-1])]
    difference = float((got - reference).abs().max())
    if names != list(labels) or difference > TOLERANCE:
        raise SpecrunError(f"the exported folder does not predict what the run does (labels {names} vs {list(labels)}, "
                           f"probabilities differ by up to {difference:.2g}); it was not written")
    return difference
