"""Executing one planned run in this process: data, model, training, evaluation, costs, artifacts.

Nothing here touches the store; the executor (``local``) records what this returns.
"""

from __future__ import annotations

import platform
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import specrun
from specrun.errors import ConfigError
from specrun.plugins.api import BuildContext
from specrun.plugins.registry import Registry, get_registry, plugin_packages
from specrun.runner import artifacts
from specrun.runner.checkpoint import Checkpoints, checkpoint_path, remove_checkpoint
from specrun.runner.costs import PeakMemory, latency, model_bytes
from specrun.runner.data import Encoded, TokenCache, prepare_run_data
from specrun.runner.evaluate import evaluate
from specrun.runner.modeling import (
    check_precision,
    count_parameters,
    freeze_frozen_linears_to_bf16,
    load_tokenizer,
    pick_device,
    resolve_model,
)
from specrun.runner.plan import PlannedRun, _version
from specrun.runner.train import StepReport, train_model
from specrun.store.runs import RunRecord


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment_info(device: torch.device, spec_dir: str | None, config: dict | None = None) -> dict:
    info = {
        "specrun": specrun.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "packages": {lib: _version(lib) for lib in ("torch", "transformers", "peft", "bitsandbytes", "duckdb")},
        "plugins": plugin_packages(get_registry(), config),  # without the run config: every plugin package loaded
    }
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=spec_dir or ".", capture_output=True, text=True, timeout=5
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def build_model(config: dict, registry: Registry, num_labels: int, label_names: tuple[str, ...], device: torch.device):
    """The method's model for ``config``, seeded, on ``device``; frozen weights in bf16 where that helps."""
    method = registry.get("method", config["method"]["name"])
    options = method.Options.model_validate({k: v for k, v in config["method"].items() if k != "name"})
    precision = config["train"]["precision"]
    check_precision(precision, device)
    method.check(options, device, precision)
    seed_everything(config["seed"])
    ctx = BuildContext(
        model_path=resolve_model(config["model"]["name"], registry),
        num_labels=num_labels,
        device=device,
        precision=precision,
        seed=config["seed"],
        label_names=label_names,
        max_length=config["model"]["max_length"],
    )
    model = method.build(options, ctx)
    if precision == "bf16" and method.prefers_frozen_bf16(options):
        freeze_frozen_linears_to_bf16(model)
    if not getattr(model, "is_loaded_in_4bit", False) and not getattr(model, "is_loaded_in_8bit", False):
        model.to(device)
    return model, ctx


#: Below this share of a source's trained tensors (head excluded) finding a place, a transfer is refused.
MIN_PLACED = 0.5


def check_transfer(transfer: artifacts.Transfer, config: dict) -> None:
    """Refuse a transfer that loads little of what its source trained (unless ``model.init_partial``):
    such a run would train from the pretrained model while its record says it started from the source."""
    if transfer.placed_fraction >= MIN_PLACED or config["model"].get("init_partial"):
        return
    method = config["method"]["name"]
    examples = (transfer.no_place + transfer.shape_mismatch)[:2]
    raise ConfigError(
        f"the source run {transfer.source_run_id} (method {transfer.source_method!r}) trained {transfer.transferable} tensors "
        f"besides its head, and {len(transfer.loaded)} of them found a place in this run's model (method {method!r}): "
        f"{len(transfer.no_place)} have no place, {len(transfer.shape_mismatch)} another shape"
        + (f" (e.g. {', '.join(examples)})" if examples else "")
        + ". Start from a source trained with a method whose tensors this model has (e.g. LoRA into LoRA with the same "
        "placement), or set model.init_partial = true to keep what fits",
        key="model.init_from",
    )


def _no_phase(name: str) -> None:
    pass


def evaluate_sets(
    record: RunRecord, model, run: PlannedRun, data, evals: dict, step: int, device, known: dict | None = None, on_phase=_no_phase
) -> dict[str, float]:
    """Evaluate ``model`` on each of ``evals`` (name -> Encoded) into ``record``: final metrics at ``step``,
    per-example predictions, and for named evaluation sets their definitions. Returns seconds per set."""
    train_cfg = run.config["train"]
    predictions = record.predictions or {k: [] for k in ("split", "example_id", "label", "prediction", "confidence", "loss")}
    seconds = {}
    for name, enc in evals.items():
        ev = (known or {}).get(name)
        if ev is None:
            on_phase(f"evaluating {name}")
            ev = evaluate(model, enc, data.dataset.num_labels, train_cfg["eval_batch_size"], train_cfg["precision"], device)
        seconds[name] = ev.seconds
        record.metrics += [(step, None, name, k, v, True) for k, v in ev.metrics.items()]
        predictions["split"] += [name] * len(enc)
        predictions["example_id"] += list(data.eval_sets[name].ids)
        predictions["label"] += enc.labels.tolist()
        predictions["prediction"] += ev.prediction.tolist()
        predictions["confidence"] += ev.confidence.tolist()
        predictions["loss"] += ev.loss.tolist()
        if name in run.eval_sets:
            record.evaluations.append((name, run.eval_sets[name].definition, run.eval_sets[name].fingerprint))
    record.predictions = predictions
    return seconds


def evaluate_completed(
    run: PlannedRun, names: list[str], model, cache, device, step: int, registry: Registry, spec_dir: str | None, scores=None,
    on_phase: Callable[[str], None] = _no_phase,
) -> RunRecord:
    """Results of a completed run's trained ``model`` on named evaluation sets it has not been evaluated
    on (added to the spec after it trained): no training, the stored weights as they are."""
    on_phase("loading data")
    data = prepare_run_data(run.config, registry, spec_dir, scores=scores)
    record = RunRecord()
    evals = {n: Encoded.build(data.eval_sets[n], cache) for n in names}
    evaluate_sets(record, model, run, data, evals, step, device, on_phase=on_phase)
    return record


def execute(
    run: PlannedRun,
    registry: Registry,
    spec_dir: str | None,
    artifacts_dir: Path,
    init_weights: Callable[[str], Path] | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    scores: Callable | None = None,
    on_phase: Callable[[str], None] = _no_phase,
    resume: bool = True,
) -> RunRecord:
    """Train and evaluate ``run``. With ``resume``, training goes on from the run's last checkpoint in
    ``artifacts_dir`` if it has one (an interrupted or killed attempt); without, it starts over."""
    config = run.config
    train_cfg = config["train"]
    checkpoints = Checkpoints(checkpoint_path(artifacts_dir, run.run_id), train_cfg.get("checkpoint_every", "off"))
    if not resume:
        remove_checkpoint(artifacts_dir, run.run_id)
    on_phase("loading data")
    data = prepare_run_data(config, registry, spec_dir, scores=scores)
    device = pick_device(train_cfg["device"])
    num_labels = data.dataset.num_labels
    on_phase("building model")
    model, ctx = build_model(config, registry, num_labels, data.dataset.label_names, device)
    transfer = None
    if config["model"].get("init_from") and init_weights is not None:
        # transfer: everything the source run trained except its classification head, which starts fresh
        source = config["model"]["init_from"]
        transfer = artifacts.transfer_weights(model, init_weights(source), source)
        check_transfer(transfer, config)

    on_phase("tokenizing")
    cache = TokenCache(load_tokenizer(ctx.model_path), config["model"]["max_length"])
    train = Encoded.build(data.train, cache)
    evals = {name: Encoded.build(ex, cache) for name, ex in data.eval_sets.items()}

    trainable, total = count_parameters(model)
    with PeakMemory(device) as memory:
        outcome = train_model(
            model, train, evals[data.primary_eval], data.primary_eval, num_labels, train_cfg, config["seed"], device,
            on_step=on_step, on_phase=on_phase, checkpoints=checkpoints,
        )

    record = RunRecord(train_seconds=outcome.train_seconds, resumed_from=outcome.resumed_from)
    record.metrics = [(r.step, r.epoch, r.split, r.name, r.value, False) for r in outcome.rows]
    final_step = outcome.steps
    precision = train_cfg["precision"]
    seconds = evaluate_sets(
        record, model, run, data, evals, final_step, device, known={data.primary_eval: outcome.final_eval}, on_phase=on_phase
    )
    primary_seconds = seconds.get(data.primary_eval, 0.0)

    primary = evals[data.primary_eval]
    folder = artifacts_dir / run.run_id
    meta = {"run_id": run.run_id, "config": config, "label_names": data.dataset.label_names}
    on_phase("saving")
    record.artifacts = artifacts.save_run(model, folder, meta, also=frozenset(transfer.frozen) if transfer else frozenset())
    record.transfer = transfer
    costs = {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100.0 * trainable / total if total else 0.0,
        "train_seconds": outcome.train_seconds,
        "train_steps": outcome.steps,
        "train_examples": len(train),
        "samples_per_second": outcome.samples_seen / outcome.train_seconds if outcome.train_seconds else 0.0,
        "peak_memory_mb": memory.peak_bytes / 2**20,
        "model_memory_mb": model_bytes(model) / 2**20,
        "eval_examples_per_second": len(primary) / primary_seconds if primary_seconds else 0.0,
        "artifact_bytes": sum(a[3] for a in record.artifacts),
    }
    if outcome.time_to_best is not None:
        costs["time_to_best_seconds"] = outcome.time_to_best
    if len(primary):
        on_phase("measuring latency")
        costs.update(latency(model, primary, precision, device))
    record.metrics += [(final_step, None, "cost", k, float(v), True) for k, v in costs.items()]
    record.train_examples = (list(data.train.ids), list(data.train.label))
    return record
