"""Checks, before anything trains, that a run's model exists and that its settings and method fit the
model (refused: they cannot work anywhere) and this machine (the run would fail here)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from specrun.errors import ConfigError, MethodUnavailable
from specrun.plugins.api import ModelInfo
from specrun.plugins.registry import Registry
from specrun.runner.modeling import check_precision, load_config, pick_device, resolve_model
from specrun.spec.schema import RunSettings

log = logging.getLogger("specrun.compat")

#: Models whose position ids start after the padding index (fairseq's convention): 2 positions fewer.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer"}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()


def _missing_model(name: str, path: str, exc: Exception) -> ConfigError:
    if _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            why = "no such folder"
        elif not folder.is_dir():
            why = "it is a file, not a folder"
        elif (folder / "config.json").is_file():
            why = f"its config.json cannot be read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        else:
            why = "the folder has no config.json"
        return ConfigError(
            f"no model at {name!r} ({why}); give a folder with a Hugging Face model, or a hub id", key="model.name"
        )
    if _offline():
        return ConfigError(
            f"{name!r} is not a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE is set: "
            "download it once with network access, or give a local folder",
            key="model.name",
        )
    return ConfigError(f"cannot load model {name!r} ({path}): {str(exc).splitlines()[0]}", key="model.name")


#: Files a local model folder holds its weights in, and its tokenizer's vocabulary in (any ``*.model``:
#: a sentencepiece model).
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")


def _check_folder(name: str, path: str) -> None:
    """A local model folder needs weights and a tokenizer besides its config.json: without weights the run
    fails when it loads the model; without a tokenizer transformers builds an empty one that turns every
    word into [UNK], and the run trains on nothing."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return  # a hub id
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        raise ConfigError(
            f"no model weights in {str(folder)!r} (no {' or '.join(_WEIGHT_FILES[::2])}); save the model there "
            "with save_pretrained",
            key="model.name",
        )
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES) and not any(folder.glob("*.model")):
        raise ConfigError(
            f"no tokenizer in {str(folder)!r} (no {', '.join(_TOKENIZER_FILES)} or sentencepiece *.model): every word "
            "would become [UNK]; save the tokenizer there too (tokenizer.save_pretrained)",
            key="model.name",
        )
    for weights in sorted(folder.glob("*.safetensors")):
        why = safetensors_problem(weights)
        if why:
            raise ConfigError(
                f"{weights}: {why}; save the model again (save_pretrained) or copy the file whole", key="model.name"
            )


def safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file at ``path`` cannot be loaded whole (cheap: its header and size only), or
    None: a truncated copy (an interrupted download or save) passes a check for the file's presence and
    fails only when a run loads the model."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"truncated: {size} bytes, too short for a safetensors header"
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return (
                    f"truncated: its header says {length} bytes of header, the file holds {size - 8} after the first 8"
                )
            header = json.loads(handle.read(length))
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except (ValueError, UnicodeDecodeError):
        return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__"
        and isinstance(entry, dict)
        and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2
    ]
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return f"truncated: {size} bytes, but its tensors need {expected}"
    return None


def model_info(name: str, registry: Registry, max_length: int, init_from: str | None = None) -> ModelInfo:
    """The model ``name`` resolves to, with its config; ConfigError at ``model.name`` when there is none."""
    path = resolve_model(name, registry)
    if not _looks_like_path(path) and _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            raise _missing_model(name, path, FileNotFoundError("not cached"))
    try:
        config = load_config(path)
    except OSError as exc:
        raise _missing_model(name, path, exc) from None
    _check_folder(name, path)
    log.debug("model %r is %s (%s)", name, path, type(config).__name__)
    return ModelInfo(name=name, path=path, config=config, max_length=max_length, init_from=init_from)


def usable_positions(config) -> int | None:
    positions = getattr(config, "max_position_embeddings", None)
    if not positions:
        return None
    return positions - 2 if getattr(config, "model_type", "") in _OFFSET_POSITIONS else positions


def check_run_model(settings: RunSettings, registry: Registry) -> str | None:
    """Raise ConfigError when a run's settings cannot work with its model on any machine; return why it
    cannot run on this machine (None when it can)."""
    model = model_info(settings.model.name, registry, settings.model.max_length, settings.model.init_from)
    positions = usable_positions(model.config)
    if positions and model.max_length > positions:
        raise ConfigError(
            f"{model.max_length} tokens, but {model.name!r} has {positions} positions; lower it to {positions} or less",
            key="model.max_length",
        )
    method = registry.get("method", settings.method.name)
    options = method.Options.model_validate(settings.method_options())
    method.check_model(options, model)
    train = settings.train
    if train.cache_frozen:
        from specrun.runner.frozen import architecture_problem

        why = architecture_problem(model.config) or method.frozen_prefix_problem(options, model)
        if why:
            raise ConfigError(f"{why}; leave cache_frozen out for this run", key="train.cache_frozen")
    if train.precision == "fp16" and train.device == "cpu":
        raise ConfigError(
            "'fp16' needs a CUDA device, and train.device = 'cpu'; use bf16 or fp32", key="train.precision"
        )
    try:
        device = pick_device(train.device)
        check_precision(train.precision, device)
        method.check(options, device, train.precision)
    except MethodUnavailable as exc:
        return str(exc)
    return None
