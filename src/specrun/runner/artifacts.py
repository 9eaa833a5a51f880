"""Saving and reloading a run's trained weights, in folders plain peft and transformers load.

A run's folder (``specrun-artifacts/<run_id>/``) holds ``run.json`` and the weights in one of three
formats (``run.json``'s ``format``):

- ``peft``: the peft model's ``save_pretrained`` — ``adapter_config.json`` and
  ``adapter_model.safetensors`` (the adapters, and the classifier head under ``modules_to_save``). For
  methods whose model is a ``PeftModel`` (lora, qlora, ia3, prompt_tuning).
- ``transformers``: the model's ``save_pretrained`` — ``config.json`` with ``id2label``/``label2id``,
  ``model.safetensors`` with every weight — and its tokenizer. For methods whose model is a plain
  ``PreTrainedModel`` that is not quantized (full, bitfit, freeze, head_only).
- ``specrun``: ``trained.safetensors``, the tensors that train under the model's parameter names. For
  any other model, and the format of every run saved before the other two existed.

``run.json`` holds the run id, its config, label names, the format, the weights file and ``tensors``:
{key in the weights file: parameter name in the model specrun builds} for each tensor the method
trained (and the frozen ones a transfer loaded). Reloading rebuilds the model with the same method and
options (frozen weights come from the model source again) and copies exactly those tensors in by
parameter name, whatever the format: a reloaded run predicts what the trained one did, and
``model.init_from`` transfers what the source trained.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from specrun.errors import StoreError
from specrun.runner.costs import sha256_file

log = logging.getLogger("specrun.runner")

META = "run.json"
#: The weights file of each format.
WEIGHTS = "trained.safetensors"
PEFT_WEIGHTS = "adapter_model.safetensors"
MODEL_WEIGHTS = "model.safetensors"
FORMAT_WEIGHTS = {"specrun": WEIGHTS, "peft": PEFT_WEIGHTS, "transformers": MODEL_WEIGHTS}
#: Files of a run's folder that are not its saved weights (an unfinished run's checkpoint).
KEEP = ("checkpoint.pt", "checkpoint.json")


def trainable_state(model: torch.nn.Module, also: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The parameters that train, and those named in ``also`` (frozen ones a transfer loaded)."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad or n in also}


@dataclass
class SavedRun:
    """A run's saved weights: its folder, format, weights file and {file key: parameter name}."""

    folder: Path
    format: str
    weights: Path
    tensors: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)

    def artifact_rows(self) -> list[tuple[str, str, str, int]]:
        """Rows of the ``artifacts`` table: (kind, path, sha256, bytes)."""
        return [("weights", str(self.weights), sha256_file(self.weights), self.weights.stat().st_size)]

    def trained_bytes(self) -> int:
        """Bytes of the tensors the method trained, as saved (``artifact_bytes``): what a task adds to the
        shared base model, whatever else the folder holds (a transformers folder holds every weight)."""
        with safe_open(str(self.weights), framework="pt") as f:
            total = 0
            for key in self.tensors:
                piece = f.get_slice(key)
                numel = 1
                for size in piece.get_shape():
                    numel *= size
                total += numel * _DTYPE_BYTES.get(piece.get_dtype(), 4)
        return total

    def tensors_by_parameter(self) -> dict[str, torch.Tensor]:
        """The saved trained tensors, by the parameter name they load into."""
        with safe_open(str(self.weights), framework="pt") as f:
            keys = set(f.keys())
            missing = [k for k in self.tensors if k not in keys]
            if missing:
                raise StoreError(
                    f"{self.weights}: {len(missing)} tensors that run.json lists are missing (e.g. {missing[0]})"
                )
            return {param: f.get_tensor(key) for key, param in self.tensors.items()}


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


# --- saving ----------------------------------------------------------------------------------------


def save_run(
    model: torch.nn.Module,
    folder: Path,
    meta: dict,
    also: frozenset[str] = frozenset(),
    tokenizer=None,
    max_length: int | None = None,
    base_model: str | None = None,
) -> SavedRun:
    """Save ``model``'s trained weights (and the frozen ones in ``also``) into ``folder`` in the most
    portable format it allows, with ``run.json``. ``tokenizer`` joins a transformers folder, its
    ``model_max_length`` set to ``max_length`` (the run truncates there). ``base_model`` is the name an
    adapter folder gives its base model (``runner.modeling.portable_model_name``; default: the path it
    was loaded from). Replaces what the folder held, except a checkpoint."""
    trained = trainable_state(model, also)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / ".saving"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        fmt, tensors = _save_portable(model, trained, staging, tokenizer, max_length)
        if fmt == "peft" and base_model:
            name_base_model(staging, base_model)
        if fmt is None:
            fmt, tensors = "specrun", {name: name for name in trained}
            save_file(trained, str(staging / WEIGHTS))
        meta = {**meta, "format": fmt, "weights": FORMAT_WEIGHTS[fmt], "tensors": tensors}
        quantization = quantization_config(model)
        if quantization:
            meta["quantization"] = quantization
        (staging / META).write_text(json.dumps(meta, indent=2, default=str))
        for old in folder.iterdir():
            if old != staging and old.name not in KEEP:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        for new in staging.iterdir():
            new.replace(folder / new.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SavedRun(folder, fmt, folder / FORMAT_WEIGHTS[fmt], tensors, meta)


def _save_portable(
    model, trained: dict[str, torch.Tensor], folder: Path, tokenizer, max_length
) -> tuple[str | None, dict[str, str]]:
    """Save as peft or transformers would, when that holds every trained tensor; (None, {}) otherwise."""
    if is_peft_model(model):
        tensors = peft_tensor_names(model, trained)
        if tensors is not None:
            model.save_pretrained(str(folder), save_embedding_layers=False)
            (folder / "README.md").unlink(missing_ok=True)  # peft's model card, with nothing to say
            if _file_keys(folder / PEFT_WEIGHTS) == set(tensors):
                return "peft", tensors
        log.debug("the adapter format cannot hold every trained tensor of %s: saving %s", type(model).__name__, WEIGHTS)
    elif is_plain_transformers(model):
        model.save_pretrained(str(folder))
        if tokenizer is not None:
            save_tokenizer(tokenizer, folder, max_length)
        if set(trained) <= _file_keys(folder / MODEL_WEIGHTS):
            return "transformers", {name: name for name in trained}
        log.debug("the transformers folder of %s lacks trained tensors: saving %s", type(model).__name__, WEIGHTS)
    for path in list(folder.iterdir()):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return None, {}


def name_base_model(folder: Path, base_model: str) -> None:
    """Write ``base_model`` as the base model of the adapter folder ``folder`` (peft writes the path the
    base was loaded from, which may lie inside one environment)."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def save_tokenizer(tokenizer, folder: Path, max_length: int | None) -> None:
    """The tokenizer's files, with ``model_max_length`` at the run's ``max_length``, so that a plain
    tokenizer (``pipeline(..., truncation=True)``) cuts texts where the run did."""
    tokenizer.save_pretrained(str(folder))
    config = folder / "tokenizer_config.json"
    if max_length and config.is_file():
        data = json.loads(config.read_text())
        data["model_max_length"] = max_length
        config.write_text(json.dumps(data, indent=2, ensure_ascii=False))


def _file_keys(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def is_plain_transformers(model) -> bool:
    """A transformers model whose weights ``save_pretrained`` writes as they are (not quantized)."""
    from transformers import PreTrainedModel

    return (
        isinstance(model, PreTrainedModel)
        and getattr(model, "hf_quantizer", None) is None
        and not getattr(model, "is_loaded_in_8bit", False)
        and not getattr(model, "is_loaded_in_4bit", False)
    )


def quantized_bits(model) -> int | None:
    """8 or 4 when the model's frozen base is quantized (bitsandbytes), else None."""
    base = model.get_base_model() if is_peft_model(model) else model
    if getattr(base, "is_loaded_in_8bit", False):
        return 8
    if getattr(base, "is_loaded_in_4bit", False):
        return 4
    return None


def quantization_config(model) -> dict | None:
    """The bitsandbytes config the frozen base was loaded with (None when not quantized): what loading
    the saved adapters over the base model needs (``BitsAndBytesConfig.from_dict``)."""
    if not quantized_bits(model):
        return None
    config = getattr(
        getattr(model.get_base_model() if is_peft_model(model) else model, "config", None), "quantization_config", None
    )
    if config is None:
        return None
    return json.loads(config.to_json_string()) if hasattr(config, "to_json_string") else dict(config)


def peft_tensor_names(model, trained: dict[str, torch.Tensor]) -> dict[str, str] | None:
    """{key in peft's adapter file: parameter name} when the adapter file holds every tensor in
    ``trained`` (else None). peft saves most tensors as views of the parameters; the rest (a soft
    prompt, computed from its embedding) are matched by shape and value, and only when unambiguous."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    params = dict(model.named_parameters())
    by_pointer = {p.data_ptr(): n for n, p in params.items() if p.numel()}
    names: dict[str, str] = {}
    unmatched = []
    for key, tensor in state.items():
        name = by_pointer.get(tensor.data_ptr()) if tensor.numel() else None
        if name is not None and params[name].shape == tensor.shape:
            names[key] = name
        else:
            unmatched.append(key)
    left = [n for n in trained if n not in names.values()]
    for key in unmatched:
        tensor = state[key].detach().to("cpu")
        same = [
            n for n in left if trained[n].shape == tensor.shape and torch.equal(trained[n], tensor.to(trained[n].dtype))
        ]
        if len(same) != 1:
            return None
        names[key] = same[0]
        left.remove(same[0])
    return names if not left else None


# --- reading ---------------------------------------------------------------------------------------


def run_folder(path: Path | str) -> Path:
    """A run's folder, from its folder or its weights file (as the store records it)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def read_run(path: Path | str) -> SavedRun:
    """A run's saved weights, from its folder or weights file: any format, ``run.json`` or not (runs
    saved before ``run.json`` listed its tensors have ``trained.safetensors`` under parameter names)."""
    if not Path(path).exists():
        raise StoreError(f"saved weights not found: {path}")
    folder = run_folder(path)
    meta_file = folder / META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    fmt = meta.get("format", "specrun")
    weights = folder / meta.get("weights", FORMAT_WEIGHTS.get(fmt, WEIGHTS))
    if not weights.is_file():
        raise StoreError(f"saved weights not found: {weights}")
    tensors = meta.get("tensors")
    if tensors is None:
        if fmt != "specrun":
            raise StoreError(f"{meta_file} does not list the run's trained tensors")
        tensors = {key: key for key in _file_keys(weights)}
    return SavedRun(folder, fmt, weights, dict(tensors), meta)


def load_weights(model: torch.nn.Module, path: Path, strict: bool = True, skip: tuple[str, ...] = ()) -> list[str]:
    """Load a run's saved trained weights (its folder or weights file, any format) into ``model``;
    returns names skipped for a shape mismatch."""
    saved = read_run(path)
    tensors = saved.tensors_by_parameter()
    params = dict(model.named_parameters())
    missing = [n for n in tensors if n not in params]
    if missing and strict:
        raise StoreError(
            f"{saved.weights}: {len(missing)} saved tensors have no place in the model (e.g. {missing[0]})"
        )
    skipped = []
    with torch.no_grad():
        for name, tensor in tensors.items():
            if name not in params or any(s in name for s in skip):
                continue
            if params[name].shape != tensor.shape:
                skipped.append(name)
                continue
            params[name].copy_(tensor.to(params[name].dtype))
    return skipped


# --- transfer (``model.init_from``) ----------------------------------------------------------------


@dataclass
class Transfer:
    """What ``model.init_from`` loaded from a source run's saved weights into a new run's model."""

    source_run_id: str
    source_method: str
    #: Tensors copied in, by name; those that stay frozen in the new model are kept with its weights.
    loaded: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    #: The source's task head (classifier, qa_outputs): never transferred (the new run's head starts fresh).
    head: list[str] = field(default_factory=list)
    #: Source tensors whose name exists in the new model with another shape, or not at all.
    shape_mismatch: list[str] = field(default_factory=list)
    no_place: list[str] = field(default_factory=list)

    @property
    def transferable(self) -> int:
        return len(self.loaded) + len(self.shape_mismatch) + len(self.no_place)

    @property
    def placed_fraction(self) -> float:
        return len(self.loaded) / self.transferable if self.transferable else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} of {self.transferable} tensors loaded ({len(self.no_place)} with no place, "
            f"{len(self.shape_mismatch)} of another shape; head of {len(self.head)} tensors not transferred)"
        )


#: The task heads a transfer leaves behind, as components of a parameter's dotted name: an encoder
#: classifier's (``classifier``, DistilBERT's ``pre_classifier``), a decoder classifier's (``score``) and
#: extractive QA's (``qa_outputs``).
HEAD = ("classifier", "pre_classifier", "score", "qa_outputs")


def is_head(name: str, head: tuple[str, ...] = HEAD) -> bool:
    """Whether parameter ``name`` belongs to a task head (a component of its dotted name is one of ``head``)."""
    return any(part in head for part in name.split("."))


def transfer_weights(model: torch.nn.Module, path: Path, source_run_id: str, head: tuple[str, ...] = HEAD) -> Transfer:
    """Copy a source run's saved trained weights into ``model`` wherever a parameter of the same name
    and shape exists, except its task head (``HEAD``); returns what went where."""
    try:
        saved = read_run(path)
    except StoreError as exc:
        raise StoreError(f"saved weights of run {source_run_id}: {exc}") from None
    transfer = Transfer(source_run_id, str(saved.meta.get("config", {}).get("method", {}).get("name", "?")))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in sorted(saved.tensors_by_parameter().items()):
            if is_head(name, head):
                transfer.head.append(name)
            elif name not in params:
                transfer.no_place.append(name)
            elif params[name].shape != tensor.shape:
                transfer.shape_mismatch.append(name)
            else:
                params[name].copy_(tensor.to(params[name].dtype))
                transfer.loaded.append(name)
                if not params[name].requires_grad:
                    transfer.frozen.append(name)
    return transfer
