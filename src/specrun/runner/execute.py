"""Executing one run: ``execute(task) -> record``. Data, model, training, evaluation, costs, artifacts.

Nothing here touches the store: the task carries everything the run needs (``core.task``), the
record everything it produced, and the driver writes it. A run's own failure is a record with status
'failed'; Ctrl-C and SIGTERM (KeyboardInterrupt) propagate, leaving the run's checkpoint to resume from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import platform
import shutil
import socket
import subprocess
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from specrun.core.roles import padding_info
from specrun.core.task import ArtifactFile, MetricRow, RunRecord, RunTask, StopRun
from specrun.errors import ConfigError, SpecrunError
from specrun.plugins.registry import Registry, get_registry, plugin_packages
from specrun.runner import artifacts
from specrun.runner.batching import TokenCache
from specrun.runner.build import build_model, seed_everything  # noqa: F401  (re-exported: tests and benchmarks use them here)
from specrun.runner.checkpoint import Checkpoints, checkpoint_path, remove_checkpoint
from specrun.runner.costs import PeakMemory, latency, model_bytes
from specrun.runner.data import prepare_run_data
from specrun.runner.modeling import count_parameters, load_tokenizer, pick_device, portable_model_name
from specrun.runner.plan import _version
from specrun.runner.teacher import teacher_scorer
from specrun.runner.train import StepReport, train_model
from specrun.spec.schema import RunSettings
from specrun.version import __version__


def environment_info(
    device: torch.device, spec_dir: str | None, config: dict | None = None, registry: Registry | None = None
) -> dict:
    """Where and with what a run executes: recorded in ``runs.environment``. With the run's config, its
    ``plugins`` are the plugin packages the run uses; without, every plugin package loaded."""
    info = {
        "specrun": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
        "packages": {lib: _version(lib) for lib in ("torch", "transformers", "peft", "bitsandbytes", "duckdb")},
        "plugins": plugin_packages(registry or get_registry(), config),
    }
    try:
        info["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=spec_dir or ".", capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


#: Below this share of a source's trained tensors (head excluded) finding a place, a transfer is refused.
MIN_PLACED = 0.5


def check_transfer(transfer: artifacts.Transfer, settings: RunSettings) -> None:
    """Refuse a transfer that loads little of what its source trained (unless ``model.init_partial``):
    such a run would train from the pretrained model while its record says it started from the source."""
    if transfer.placed_fraction >= MIN_PLACED or settings.model.init_partial:
        return
    examples = (transfer.no_place + transfer.shape_mismatch)[:2]
    raise ConfigError(
        f"the source run {transfer.source_run_id} (method {transfer.source_method!r}) trained {transfer.transferable} tensors "
        f"besides its head, and {len(transfer.loaded)} of them found a place in this run's model (method {settings.method.name!r}): "
        f"{len(transfer.no_place)} have no place, {len(transfer.shape_mismatch)} another shape"
        + (f" (e.g. {', '.join(examples)})" if examples else "")
        + ". Start from a source trained with a method whose tensors this model has (e.g. LoRA into LoRA with the same "
        "placement), or set model.init_partial = true to keep what fits",
        key="model.init_from",
    )


def _no_phase(name: str) -> None:
    pass


def evaluate_sets(
    record: RunRecord,
    model,
    task: RunTask,
    data,
    evals: dict,
    step: int,
    device,
    known: dict | None = None,
    on_phase=_no_phase,
    run_task=None,
) -> dict[str, float]:
    """Evaluate ``model`` on each of ``evals`` (name -> the task's features) into ``record``: final metrics
    at ``step``, per-example prediction rows (the task's table), and for named evaluation sets their
    definitions. ``run_task``: (task plugin, its TaskContext). Returns seconds per set."""
    train_cfg = task.settings.train
    plugin, tctx = run_task
    record.prediction_table = plugin.prediction_table
    predictions = record.predictions or {}
    seconds = {}
    for name, enc in evals.items():
        ev = (known or {}).get(name)
        if ev is None:
            on_phase(f"evaluating {name}")
            ev = plugin.evaluate(model, enc, tctx, train_cfg.eval_batch_size, train_cfg.precision, device)
        seconds[name] = ev.seconds
        record.metrics += [MetricRow(step, None, name, k, v, final=True) for k, v in ev.metrics.items()]
        rows = {"split": [name] * len(data.eval_sets[name])}
        if plugin.prediction_table == "predictions":
            rows["example_id"] = list(data.eval_sets[name].ids)
        rows.update(ev.rows)
        for column, values in rows.items():
            predictions.setdefault(column, []).extend(values)
        skipped = plugin.skipped(enc)
        record.metrics += [
            MetricRow(step, None, name, f"skipped_{reason}", float(n), final=True) for reason, n in skipped.items()
        ]
        if skipped:
            record.environment.setdefault("data", {}).setdefault("skipped", {})[name] = skipped
        if name in task.eval_sets:
            record.evaluations.append((name, task.eval_sets[name]))
    record.predictions = predictions
    return seconds


def task_runtime(settings: RunSettings, registry: Registry, tokenizer, label_names: tuple[str, ...]):
    """(the run's task plugin, its TaskContext)."""
    from specrun.core.tasks import task_of
    from specrun.plugins.api import TaskContext

    plugin, options = task_of(settings, registry)
    return plugin, TaskContext(tokenizer, settings.model.max_length, options, tuple(label_names))


def execute(
    task: RunTask,
    registry: Registry | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    on_phase: Callable[[str], None] = _no_phase,
    on_metrics: Callable[[str, int, list[MetricRow]], None] | None = None,
) -> RunRecord:
    """Carry out ``task`` and return its record. A failure of the run itself (bad data, a method that
    cannot build, a library error) is a record with status 'failed' and the error; the checkpoint is
    then removed. ``on_metrics(event, step, rows)`` hears training live (``task.track_every``; see
    ``runner.train.train_model``). KeyboardInterrupt (Ctrl-C, SIGTERM) propagates and the checkpoint stays.
    Afterwards the memory the run freed goes back to the operating system (``release_memory``)."""
    try:
        return _execute(task, registry, on_step, on_phase, on_metrics)
    finally:
        release_memory()


def _execute(task: RunTask, registry: Registry | None, on_step, on_phase, on_metrics) -> RunRecord:
    if registry is None:
        from specrun.plugins import get_registry

        registry = get_registry()
    if task.data_dir and not os.environ.get("SPECRUN_DATA_DIR"):
        os.environ["SPECRUN_DATA_DIR"] = task.data_dir
    if task.threads:
        torch.set_num_threads(task.threads)
    artifacts_dir = Path(task.artifacts_dir)
    try:
        if task.kind == "evaluate":
            record = _evaluate_stored(task, registry, on_phase)
        else:
            record = _train(task, registry, artifacts_dir, on_step, on_phase, on_metrics)
    except KeyboardInterrupt:
        raise
    except StopRun as stop:  # pruned at an evaluation: the curve so far, no weights
        remove_checkpoint(artifacts_dir, task.run_id)
        return RunRecord(
            task.run_id,
            status="pruned",
            message=stop.reason,
            error=stop.reason,
            metrics=stop.rows,
            train_seconds=stop.train_seconds,
            pruned_step=stop.step,
        )
    except SpecrunError as exc:
        return _failed(task, artifacts_dir, f"{type(exc).__name__}: {exc}", str(exc))
    except Exception as exc:  # a bug or a library failure: keep the traceback in the store
        detail = "".join(traceback.format_exception(exc))
        return _failed(task, artifacts_dir, f"{type(exc).__name__}: {exc}\n{detail}", f"{type(exc).__name__}: {exc}")
    if task.kind == "train":
        remove_checkpoint(artifacts_dir, task.run_id)
    if task.return_artifacts:
        _attach_bytes(record, artifacts_dir)
    return record


def release_memory() -> None:
    """Give the memory a finished run freed back to the operating system. Nothing of a run outlives it
    (its model, optimizer, batches and autograd graph are garbage once ``execute`` returns; a test keeps
    it so), but glibc's allocator keeps freed heap memory in its arenas for reuse: after a MiniLM run
    that is hundreds of MB of resident memory, more or less from run to run depending on where the last
    allocations landed, which a sweep of hundreds of runs in one process (the local executor, a Ray
    worker) carries along. ``gc.collect`` frees what only cycles hold; ``malloc_trim(0)`` returns the
    free pages of every arena. A no-op where the C library has no ``malloc_trim`` (macOS, musl)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _failed(task: RunTask, artifacts_dir: Path, error: str, message: str) -> RunRecord:
    if task.kind == "train":
        remove_checkpoint(artifacts_dir, task.run_id)
    return RunRecord(task.run_id, status="failed", error=error, message=message)


def _attach_bytes(record: RunRecord, artifacts_dir: Path) -> None:
    """The run's files travel back in the record, for a worker whose disk the driver does not see."""
    folder = artifacts_dir / record.run_id
    if folder.is_dir():
        record.files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        shutil.rmtree(folder, ignore_errors=True)


def _evaluate_stored(task: RunTask, registry: Registry, on_phase) -> RunRecord:
    """A completed run's stored weights on the named evaluation sets it has not been evaluated on
    (added to the spec after it trained): no training, the weights as they are."""
    from specrun.runner.predict import Predictor

    record = RunRecord(task.run_id, status="evaluated")
    predictor = Predictor.from_weights(task.config, Path(task.weights), registry)
    on_phase("loading data")
    data = prepare_run_data(
        task.settings, registry, task.spec_dir, scores=teacher_scorer(task.teachers, registry, record.teacher_scores)
    )
    plugin, tctx = task_runtime(task.settings, registry, predictor.cache.tokenizer, data.dataset.label_names)
    evals = {n: plugin.encode(data.eval_sets[n], tctx, training=False) for n in task.evaluate_sets}
    evaluate_sets(
        record,
        predictor.model,
        task,
        data,
        evals,
        task.step,
        predictor.device,
        on_phase=on_phase,
        run_task=(plugin, tctx),
    )
    return record


def frozen_inputs(model, settings: RunSettings, train, evals: dict, selection, device):
    """``train.cache_frozen``: (the head to train, the training set's, evaluation sets' and selection
    set's frozen features in place of their tokens, the ``FrozenPrefix``). See ``runner.frozen``."""
    from specrun.runner.frozen import FrozenPrefix

    prefix = FrozenPrefix(model, settings)
    cfg = settings.train

    def features(enc):
        return prefix.features(enc, cfg.eval_batch_size, cfg.precision, device)

    evals_in = {name: features(enc) for name, enc in evals.items()}
    if selection is not None and selection[1] is not None:
        selection = (selection[0], features(selection[1]))
    return prefix.head, features(train), evals_in, selection, prefix


def _train(task: RunTask, registry: Registry, artifacts_dir: Path, on_step, on_phase, on_metrics=None) -> RunRecord:
    """Train and evaluate; with ``task.resume``, training goes on from the run's last checkpoint in
    ``artifacts_dir`` if it has one (an interrupted or killed attempt); without, it starts over."""
    settings = task.settings
    train_cfg = settings.train
    record = RunRecord(task.run_id)
    checkpoints = Checkpoints(checkpoint_path(artifacts_dir, task.run_id), train_cfg.checkpoint_every)
    if not task.resume:
        remove_checkpoint(artifacts_dir, task.run_id)
    on_phase("loading data")
    data = prepare_run_data(
        settings, registry, task.spec_dir, scores=teacher_scorer(task.teachers, registry, record.teacher_scores)
    )
    device = pick_device(train_cfg.device)
    record.environment = environment_info(device, task.spec_dir, task.config, registry)
    num_labels = data.dataset.num_labels
    on_phase("building model")
    model, ctx = build_model(settings, registry, num_labels, data.dataset.label_names, device)
    transfer = None
    if settings.model.init_from and task.init_weights is not None:
        # transfer: everything the source run trained except its classification head, which starts fresh
        transfer = artifacts.transfer_weights(model, Path(task.init_weights), settings.model.init_from)
        check_transfer(transfer, settings)

    on_phase("tokenizing")
    cache = TokenCache(load_tokenizer(ctx.model_path), settings.model.max_length)
    record.environment["padding"] = padding_info(cache.tokenizer)  # decoders: which token pads, on which side
    plugin, tctx = task_runtime(settings, registry, cache.tokenizer, data.dataset.label_names)
    train = plugin.encode(data.train, tctx, training=True)
    evals = {name: plugin.encode(ex, tctx, training=False) for name, ex in data.eval_sets.items()}
    selection = None
    if data.selection_name is not None:
        selection = (
            data.selection_name,
            plugin.encode(data.selection, tctx, training=False) if data.selection is not None else None,
        )
    skipped = plugin.skipped(train)
    data_info = {"dataset": settings.data.dataset, "task": plugin.name}
    if data.dataset.description:
        data_info["description"] = data.dataset.description
    if skipped:
        data_info["skipped"] = {"train": skipped}
    record.environment["data"] = data_info

    trainable, total = count_parameters(model)
    trained, train_in, evals_in, prefix = model, train, evals, None
    if train_cfg.cache_frozen:  # the backbone once per example; the head trains on its output
        trained, train_in, evals_in, selection, prefix = frozen_inputs(model, settings, train, evals, selection, device)
    with PeakMemory(device) as memory:
        outcome = train_model(
            trained,
            train_in,
            evals_in[data.primary_eval],
            data.primary_eval,
            num_labels,
            train_cfg,
            settings.seed,
            device,
            on_step=on_step,
            on_phase=on_phase,
            checkpoints=checkpoints,
            selection=selection,
            on_metrics=on_metrics,
            track_every=task.track_every,
            task=plugin,
            task_ctx=tctx,
        )

    if prefix is not None:  # computing (or loading) the features is part of training this run
        outcome.train_seconds += prefix.seconds
        if outcome.time_to_best is not None:
            outcome.time_to_best += prefix.seconds
    record.train_seconds, record.resumed_from = outcome.train_seconds, outcome.resumed_from
    record.skipped_steps = outcome.skipped_steps
    record.memory_kind = memory.kind
    record.metrics = [MetricRow(r.step, r.epoch, r.split, r.name, r.value, final=False) for r in outcome.rows]
    final_step = outcome.steps
    seconds = evaluate_sets(
        record,
        trained,
        task,
        data,
        evals_in,
        final_step,
        device,
        known={data.primary_eval: outcome.final_eval},
        on_phase=on_phase,
        run_task=(plugin, tctx),
    )
    record.metrics += [
        MetricRow(final_step, None, "train", f"skipped_{reason}", float(n), final=True) for reason, n in skipped.items()
    ]
    primary_seconds = seconds.get(data.primary_eval, 0.0)

    primary = evals[data.primary_eval]
    folder = artifacts_dir / task.run_id
    meta = {"run_id": task.run_id, "config": task.config, "label_names": data.dataset.label_names, "task": plugin.name}
    on_phase("saving")
    saved = artifacts.save_run(
        model,
        folder,
        meta,
        also=frozenset(transfer.frozen) if transfer else frozenset(),
        tokenizer=cache.tokenizer,
        max_length=settings.model.max_length,
        base_model=portable_model_name(settings.model.name, registry),
    )
    record.artifacts = [ArtifactFile(*row) for row in saved.artifact_rows()]
    record.transfer = transfer
    costs = {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100.0 * trainable / total if total else 0.0,
        "train_seconds": outcome.train_seconds,
        "train_steps": outcome.steps,
        "train_examples": len(data.train) - sum(skipped.values()),
        "samples_per_second": outcome.samples_seen / outcome.train_seconds if outcome.train_seconds else 0.0,
        "peak_memory_mb": memory.peak_bytes / 2**20,  # of memory.kind (recorded on the run)
        "model_memory_mb": model_bytes(model) / 2**20,
        "eval_examples_per_second": len(data.eval_sets[data.primary_eval]) / primary_seconds
        if primary_seconds
        else 0.0,
        "artifact_bytes": saved.trained_bytes(),
    }
    if outcome.time_to_best is not None:
        costs["time_to_best_seconds"] = outcome.time_to_best
    if prefix is not None:
        costs["frozen_features_seconds"] = prefix.seconds
        costs["frozen_features_cached"] = prefix.loaded / max(prefix.loaded + prefix.computed, 1)
    if len(primary):
        on_phase("measuring latency")
        costs.update(latency(model, primary, train_cfg.precision, device))
    record.metrics += [MetricRow(final_step, None, "cost", k, float(v), final=True) for k, v in costs.items()]
    if data.selection_info is not None:  # what early stopping selected on: its size, and whether it is reported
        info = data.selection_info
        size = len(data.selection) if data.selection is not None else len(primary)
        if data.selection is not None:  # the selection metrics of the weights the run keeps (a search's objective)
            record.metrics += [
                MetricRow(final_step, None, r.split, r.name, r.value, final=True)
                for r in outcome.rows
                if r.split == data.selection_name and r.step == outcome.weights_step
            ]
        record.metrics += [
            MetricRow(final_step, None, "selection", "examples", float(size), final=True),
            MetricRow(
                final_step, None, "selection", "on_reported_split", float(bool(info.get("reported"))), final=True
            ),
        ]
    record.train_examples = (list(data.train.ids), list(data.train.label))
    return record
