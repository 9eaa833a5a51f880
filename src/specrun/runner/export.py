"""A run as others load it: its saved folder through plain transformers or peft, and ``specrun export``
(a model folder that ``AutoModelForSequenceClassification.from_pretrained`` and
``pipeline("text-classification")`` load without specrun; for an extractive-QA run,
``AutoModelForQuestionAnswering.from_pretrained``).

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
#: (question, context) pairs an extractive-QA export is checked on: its start and end distributions must
#: be the run's model's.
QA_PROBES = [
    ("what color is the car ?", "the car is red and the boat is blue ."),
    ("who won the game ?", "the broncos won the game against the panthers in february 2016 ."),
    ("when was the bridge built ?", "the bridge was built in 1932 and painted orange in 1933 ."),
]
QA_TASK = "extractive_qa"
#: Largest difference in any class probability between the run's model and its export.
TOLERANCE = 1e-4


def label_config(label_names: tuple[str, ...] | list[str]) -> dict:
    """``from_pretrained`` kwargs giving a classifier the run's labels."""
    names = list(label_names)
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }


def pad_config(base_name: str, folder: Path, registry: Registry | None = None) -> dict:
    """``from_pretrained`` kwargs giving a decoder base model the pad token its run padded with (the
    tokenizer saved in ``folder``, else the base model's with specrun's rule: its pad token, else its
    end-of-sequence token): without one, its classifier cannot find the last token of a padded batch.
    ``base_name`` is found through specrun's model sources, as ``load_base`` finds it."""
    from transformers import AutoTokenizer

    from specrun.core.roles import pad_kwargs
    from specrun.runner.modeling import load_config, load_tokenizer, resolve_model

    if registry is None:
        from specrun.plugins.registry import get_registry

        registry = get_registry()
    try:
        path = resolve_model(base_name, registry)
    except SpecrunError:
        path = base_name

    def tokenizer():
        if (Path(folder) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder))
        return load_tokenizer(path)

    return pad_kwargs(load_config(path), tokenizer)


def load_plain(path: Path | str, device: str = "cpu", registry: Registry | None = None):
    """A run's saved folder loaded as someone without specrun loads it: a transformers folder with
    ``AutoModelForSequenceClassification.from_pretrained(folder)`` (``AutoModelForQuestionAnswering`` for an
    extractive-QA run); an adapter folder with
    ``PeftModel.from_pretrained`` over the base model its ``adapter_config.json`` names, given the run's
    labels (and, for a quantized base, its bitsandbytes config from ``run.json``). None for
    ``trained.safetensors`` (specrun's own format: only specrun reloads it). The base model's name is
    found through specrun's model sources (``runner.modeling.load_base``): a hub id that a source serves
    from a local copy loads offline here, as it loads from the hub on a machine without specrun."""
    import transformers

    from specrun.runner.modeling import load_base

    saved = artifacts.read_run(path)
    qa = saved_task(saved.meta) == "extractive_qa"
    auto_model = "AutoModelForQuestionAnswering" if qa else "AutoModelForSequenceClassification"
    if saved.format == "transformers":
        return getattr(transformers, auto_model).from_pretrained(str(saved.folder)).to(device).eval()
    if saved.format != "peft":
        return None
    from peft import PeftConfig, PeftModel

    base_path = PeftConfig.from_pretrained(str(saved.folder)).base_model_name_or_path
    kwargs = ({} if qa else label_config(saved.meta["label_names"])) | pad_config(base_path, saved.folder, registry)
    kwargs["auto_model"] = auto_model
    if saved.meta.get("quantization"):
        from transformers import BitsAndBytesConfig

        kwargs.update(
            quantization_config=BitsAndBytesConfig.from_dict(saved.meta["quantization"]), device_map={"": device}
        )
    base = load_base(base_path, registry, **kwargs)
    model = PeftModel.from_pretrained(base, str(saved.folder))
    return model.eval() if saved.meta.get("quantization") else model.to(device).eval()


def saved_task(meta: dict) -> str:
    """The task of a saved run (``run.json``): its ``task``, else its config's, else classification."""
    from specrun.core.tasks import task_name

    return str(meta.get("task") or task_name(meta.get("config") or {}))


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
    #: The run's task: ``classification`` or ``extractive_qa`` (a question-answering model).
    task: str = "classification"

    def how_to_load(self) -> str:
        if self.task == QA_TASK:
            if self.kind != "adapter":
                # transformers 5 has no question-answering pipeline: the model gives start/end logits
                return f"AutoModelForQuestionAnswering.from_pretrained({str(self.folder)!r})" + (
                    " (with peft installed)" if self.kind == "model+adapter" else ""
                )
            return (
                f"PeftModel.from_pretrained(AutoModelForQuestionAnswering.from_pretrained({self.base_model!r}), "
                f"{str(self.folder)!r}) (peft)"
            )
        if self.kind != "adapter":
            return (
                f"AutoModelForSequenceClassification.from_pretrained({str(self.folder)!r}) or "
                f"pipeline('text-classification', model={str(self.folder)!r})"
                + (" (with peft installed)" if self.kind == "model+adapter" else "")
            )
        labels = label_config(self.label_names)
        pad = f", pad_token_id={self.pad_token_id}" if self.pad_token_id is not None else ""
        return (
            f"AutoPeftModelForSequenceClassification.from_pretrained({str(self.folder)!r}, num_labels={labels['num_labels']}, "
            f"id2label={labels['id2label']}, label2id={labels['label2id']}{pad}) (peft; it loads the base model {self.base_model!r})"
        )


def export_model(config: dict, weights: Path, out: Path, merge: bool, registry: Registry) -> Exported:
    """Write a completed run (its ``config`` tree and saved ``weights``) into the new folder ``out`` as a
    model plain transformers loads, with its tokenizer and labels; with ``merge``, adapters merged into
    the weights. Refuses (UsageError) a merge the method does not allow. The folder is written aside and
    moved into place once it loads and predicts what the run's model predicts."""
    from specrun.runner.modeling import portable_model_name
    from specrun.runner.predict import Predictor

    fp32 = copy.deepcopy(config)
    fp32.setdefault("train", {}).update(precision="fp32", device="cpu")  # weights kept (and merged) at full precision
    predictor = Predictor.from_weights(fp32, weights, registry)
    model, labels = predictor.model, predictor.label_names
    task = predictor.task_name
    if task not in ("classification", QA_TASK):
        raise UsageError(
            f"a run of task {task!r}: export writes sequence-classification and extractive-QA models only; "
            "its folder in the store's artifacts holds the trained model"
        )
    method = str(config.get("method", {}).get("name", "?"))
    max_length = predictor.cache.max_length
    base_path = getattr(getattr(_base(model), "config", None), "_name_or_path", "") or ""
    model_name = config.get("model", {}).get("name")
    base_name = portable_model_name(model_name, registry) if model_name and registry is not None else base_path
    # what `specrun predict` shows for the probes (its code path, at fp32); for QA the start/end distributions
    reference = (
        _predicted(predictor) if task != QA_TASK else _span_probabilities(model, predictor.cache.tokenizer, max_length)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        exported = _write(model, staging, merge, method, labels, base_path, base_name, task)
        artifacts.save_tokenizer(predictor.cache.tokenizer, staging, max_length)
        if exported.kind == "adapter" and base_path:
            exported.pad_token_id = pad_config(base_path, staging, registry).get("pad_token_id")
        meta = artifacts.read_run(weights).meta
        exported.run_id = str(meta.get("run_id", ""))
        (staging / artifacts.META).write_text(
            json.dumps(
                {k: meta[k] for k in ("run_id", "config", "label_names") if k in meta} | {"export": exported.kind},
                indent=2,
                default=str,
            )
        )
        if not (
            exported.kind == "adapter" and artifacts.quantized_bits(model)
        ):  # a quantized base: bitsandbytes' kernels
            exported.max_difference = _check(staging, exported.kind, reference, labels, max_length, registry, task)
        if out.exists():
            out.rmdir()  # empty: the caller checked
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    exported.folder = out
    return exported


def _base(model):
    return model.get_base_model() if artifacts.is_peft_model(model) else model


def _write(
    model,
    folder: Path,
    merge: bool,
    method: str,
    labels: tuple[str, ...],
    base_path: str,
    base_name: str,
    task: str = "classification",
) -> Exported:
    """Save ``model`` into ``folder`` as the export's kind requires; returns what was written. ``base_path``
    is where the base model loads from here, ``base_name`` the name an adapter folder gives it."""
    exported = Exported(folder, "model", method, base_name or base_path, labels, task=task)
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
        else:  # the base model with the run's labels (QA: its head), and the adapter transformers attaches when loading it
            if task == QA_TASK:
                from transformers import AutoModelForQuestionAnswering

                from specrun.runner.modeling import quiet_load

                with quiet_load():
                    AutoModelForQuestionAnswering.from_pretrained(base_path).save_pretrained(str(folder))
            else:
                from specrun.runner.modeling import load_classifier

                load_classifier(base_path, len(labels), labels).save_pretrained(str(folder))
            model.save_pretrained(str(folder), save_embedding_layers=False)
            exported.kind = "model+adapter"
        if base_name:
            artifacts.name_base_model(folder, base_name)
        (folder / "README.md").unlink(missing_ok=True)
        return exported
    if not artifacts.is_plain_transformers(model):
        raise UsageError(
            f"method {method!r} builds a {type(model).__name__}, which is not a transformers model: it cannot be exported"
        )
    model.save_pretrained(str(folder))
    if merge:
        exported.note = f"method {method!r} trains the model's own weights: there was nothing to merge"
    return exported


def _cannot_merge(model, method: str) -> str | None:
    """Why a peft model's adapters cannot be merged into its weights (None when they can)."""
    config = model.peft_config[model.active_adapter]
    if config.is_prompt_learning:
        return (
            f"{config.peft_type.value.lower()} adds virtual tokens to the input, which no weight of the model can hold"
        )
    bits = artifacts.quantized_bits(model)
    if bits:
        return f"its base model is quantized to {bits} bits, and merging would quantize the adapters too, changing predictions"
    if not hasattr(model.base_model, "merge_and_unload"):
        return f"peft cannot merge {config.peft_type.value} adapters"
    return None


def _predicted(predictor) -> torch.Tensor:
    """The class probabilities ``specrun predict`` shows for the probe sentences (``Predictor.classify``)."""
    rows = predictor.classify([(text, None) for text in PROBES])
    return torch.tensor([[row.probabilities[name] for name in predictor.label_names] for row in rows])


@torch.inference_mode()
def _span_probabilities(model, tokenizer, max_length: int) -> torch.Tensor:
    """The start and end distributions (softmax over each probe's tokens) of ``QA_PROBES``, one probe at a
    time (no padding), concatenated: what a QA model's answers are made from."""
    found = []
    for question, context in QA_PROBES:
        inputs = tokenizer(question, context, truncation="only_second", max_length=max_length, return_tensors="pt")
        out = model(**inputs)
        found += [out.start_logits.float().softmax(-1)[0], out.end_logits.float().softmax(-1)[0]]
    return torch.cat(found)


@torch.inference_mode()
def _probabilities(model, tokenizer, max_length: int) -> torch.Tensor:
    inputs = tokenizer(PROBES, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return model(**inputs).logits.float().softmax(-1)


def _check(
    folder: Path,
    kind: str,
    reference: torch.Tensor,
    labels: tuple[str, ...],
    max_length: int,
    registry: Registry | None = None,
    task: str = "classification",
) -> float:
    """Load ``folder`` as ``how_to_load`` says (transformers; peft for an adapter folder, over the base model
    its ``adapter_config.json`` names, found through the model sources as ``load_plain`` does) and compare
    its predictions with ``reference`` (what ``specrun predict`` shows; for QA, the start/end distributions
    of the run's model); returns the largest probability difference. SpecrunError when it predicts
    otherwise (a bug, not a user error)."""
    import transformers
    from transformers import AutoTokenizer

    from specrun.runner.modeling import load_base, quiet_load

    qa = task == QA_TASK
    auto_model = "AutoModelForQuestionAnswering" if qa else "AutoModelForSequenceClassification"
    with quiet_load():
        if kind == "adapter":
            from peft import PeftConfig, PeftModel

            base_name = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
            kwargs = ({} if qa else label_config(labels)) | pad_config(base_name, folder, registry)
            base = load_base(base_name, registry, auto_model=auto_model, **kwargs)
            loaded = PeftModel.from_pretrained(base, str(folder)).eval()
        else:
            loaded = getattr(transformers, auto_model).from_pretrained(str(folder)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if qa:
        got = _span_probabilities(loaded, tokenizer, max_length)
        difference = float((got - reference).abs().max())
        if difference > TOLERANCE:
            raise SpecrunError(
                f"the exported folder does not answer as the run does (start/end probabilities differ by up to "
                f"{difference:.2g}); it was not written"
            )
        return difference
    got = _probabilities(loaded, tokenizer, max_length)
    names = [loaded.config.id2label[i] for i in range(got.shape[-1])]
    difference = float((got - reference).abs().max())
    if names != list(labels) or difference > TOLERANCE:
        raise SpecrunError(
            f"the exported folder does not predict what the run does (labels {names} vs {list(labels)}, "
            f"probabilities differ by up to {difference:.2g}); it was not written"
        )
    return difference
