"""The contract every task passes (``check_task``): the checks the built-in tasks are tested with."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specrun.plugins.registry import Registry

#: The columns of each store table a task may write its prediction rows to (``run_id`` and ``split`` added by the runner).
TABLE_COLUMNS = {
    "predictions": {"label", "prediction", "confidence", "loss"},
    "qa_predictions": {"question_id", "prediction_text", "score", "exact_match", "f1", "answers"},
}


@dataclass
class TaskReport:
    """What ``check_task`` measured."""

    loss_before: float
    loss_after: float
    #: The evaluation metrics before and after training, and after the saved run was rebuilt.
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    metrics_reloaded: dict[str, float]
    n_train_features: int
    n_eval_examples: int
    #: Every parameter name, those that require grad after ``build``, and those whose values training changed.
    parameters: set[str] = field(default_factory=set)
    trainable: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    #: The metrics of the saved folder loaded with plain peft/transformers (None: specrun's own format, or a
    #: quantized base).
    metrics_plain: dict[str, float] | None = None


def check_task(
    registry: Registry,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    model_dir: Path,
    workdir: Path,
    data: dict[str, Any],
    max_length: int = 64,
    steps: int = 40,
    learning_rate: float = 3e-3,
    method: dict[str, Any] | None = None,
) -> TaskReport:
    """Train the task ``name`` (with ``options``) on ``data`` (a spec's ``[data]`` table as a dict, e.g.
    ``{"dataset": "local", "options": {...}}``) with ``method`` (a ``[method]`` table; default ``full``) on ``model_dir`` (``tiny_model_dir``),
    through the runner's own code, and check:

    - it is a ``TaskPlugin`` whose ``metrics`` name its headline first; a spec naming it validates;
    - ``encode`` gives features with one length per feature, and ``collate`` batches of those lengths;
    - ``loss`` is finite, and ``steps`` training steps at ``learning_rate`` lower it by 10% or more; only
      parameters that require grad change (frozen weights and buffers stay);
    - ``evaluate`` returns every metric in ``metrics`` (finite) and one prediction row per evaluation
      example, with exactly the columns of its ``prediction_table``;
    - the run saved as the runner saves it and rebuilt evaluates to the same metrics; so does its folder
      loaded with plain peft or transformers (``specrun.runner.export.load_plain``), where it can be.
    ``workdir`` is an empty folder."""
    import torch

    from specrun.plugins.api import TaskPlugin
    from specrun.runner.artifacts import load_weights, quantized_bits, save_run
    from specrun.runner.data import prepare_run_data
    from specrun.runner.execute import build_model, task_runtime
    from specrun.runner.export import load_plain
    from specrun.runner.modeling import load_tokenizer
    from specrun.runner.train import train_model
    from specrun.spec.load import load_spec_text
    from specrun.testing.contracts import _same_values, _snapshot
    from specrun.testing.toy import single_thread

    task = registry.get("task", name)
    assert isinstance(task, TaskPlugin), f"{name}: registered as a task but not a TaskPlugin"
    assert task.metrics and "loss" in task.metrics, (
        f"{name}: metrics must name the headline first and include loss; got {task.metrics}"
    )
    assert task.prediction_table in TABLE_COLUMNS, (
        f"{name}: prediction_table {task.prediction_table!r} is no store table ({', '.join(TABLE_COLUMNS)})"
    )

    task_table = {"name": name, **(options or {})}
    spec = "\n".join(
        [
            '[experiment]\nname = "task-contract"',
            "[task]",
            *(f"{k} = {_toml(v)}" for k, v in task_table.items()),
            "[model]",
            f"name = {json.dumps(str(model_dir))}",
            f"max_length = {max_length}",
            "[data]",
            *(f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, dict)),
            *(
                line
                for k, v in data.items()
                if isinstance(v, dict)
                for line in (f"[data.{k}]", *(f"{kk} = {_toml(vv)}" for kk, vv in v.items()))
            ),
            "[method]",
            *(f"{k} = {_toml(v)}" for k, v in (method or {"name": "full"}).items()),
            "[train]",
            f"max_steps = {steps}",
            "batch_size = 16",
            'precision = "fp32"',
            f"learning_rate = {learning_rate}",
        ]
    )
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / "task-contract.toml"
    spec_path.write_text(spec)
    loaded = load_spec_text(spec, spec_path, registry=registry)
    config = loaded.runs[0].config
    device = torch.device("cpu")
    with single_thread():
        prepared = prepare_run_data(config, registry, str(workdir))
        labels = prepared.dataset.label_names
        model, ctx = build_model(config, registry, len(labels), labels, device)
        plugin, tctx = task_runtime(_settings(config), registry, load_tokenizer(ctx.model_path), labels)
        assert plugin is task
        train = task.encode(prepared.train, tctx, training=True)
        dev = task.encode(prepared.eval_sets[prepared.primary_eval], tctx, training=False)
        assert len(train) > 0, f"{name}: encode gave no training features"
        assert len(train.lengths) == len(train), f"{name}: {len(train.lengths)} lengths for {len(train)} features"
        import numpy as np

        index = np.arange(min(4, len(train)))
        batch = train.collate(index, device)
        assert all(t.shape[0] == len(index) for t in batch.values()), f"{name}: collate gave batches of another size"
        assert batch["input_ids"].shape[1] == int(train.lengths[index].max()), (
            f"{name}: collate pads to another width than the longest feature"
        )

        def train_loss() -> float:
            model.eval()
            with torch.no_grad():
                total = 0.0
                for start in range(0, len(train), 64):
                    idx = np.arange(start, min(start + 64, len(train)))
                    loss, _ = task.loss(model, train, idx, train.collate(idx, device), tctx, "fp32", device)
                    total += float(loss) * len(idx)
            return total / len(train)

        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable, f"{name}: no parameter requires grad"
        weights_before = _snapshot(model)
        before = task.evaluate(model, dev, tctx, 64, "fp32", device)
        loss_before = train_loss()
        assert math.isfinite(loss_before), f"{name}: the loss is {loss_before}"
        train_model(
            model,
            train,
            dev,
            prepared.primary_eval,
            len(labels),
            config["train"],
            config["seed"],
            device,
            task=task,
            task_ctx=tctx,
        )
        loss_after = train_loss()
        assert loss_after < 0.9 * loss_before, (
            f"{name}: training loss {loss_before:.4f} -> {loss_after:.4f} (expected 10% lower)"
        )
        weights_after = _snapshot(model)
        changed = {n for n in weights_before if not _same_values(weights_before[n], weights_after[n])}
        assert changed <= trainable, f"{name}: frozen tensors changed: {sorted(changed - trainable)[:5]}"
        after = task.evaluate(model, dev, tctx, 64, "fp32", device)
        for ev in (before, after):
            missing = [m for m in task.metrics if m not in ev.metrics]
            assert not missing, f"{name}: evaluate did not compute {missing}"
            assert all(math.isfinite(v) for v in ev.metrics.values()), f"{name}: non-finite metrics {ev.metrics}"
            assert set(ev.rows) == TABLE_COLUMNS[task.prediction_table], (
                f"{name}: prediction rows have columns {sorted(ev.rows)}, the table {task.prediction_table} {sorted(TABLE_COLUMNS[task.prediction_table])}"
            )
            n = len(prepared.eval_sets[prepared.primary_eval])
            assert all(len(v) == n for v in ev.rows.values()), (
                f"{name}: prediction rows are not one per evaluation example ({n})"
            )
        folder = workdir / "saved-run"
        save_run(
            model,
            folder,
            {"run_id": "contract", "config": config, "label_names": labels, "task": name},
            tokenizer=tctx.tokenizer,
            max_length=max_length,
        )
        reloaded, _ = build_model(config, registry, len(labels), labels, device)
        load_weights(reloaded, folder)
        again = task.evaluate(reloaded, dev, tctx, 64, "fp32", device)
        # a quantized base loaded plainly runs bitsandbytes' inference kernels, not the trained path: not compared
        plain = load_plain(folder, registry=registry) if not quantized_bits(model) else None
        plain_metrics = task.evaluate(plain, dev, tctx, 64, "fp32", device).metrics if plain is not None else None
    for metric in task.metrics:
        assert abs(again.metrics[metric] - after.metrics[metric]) <= 1e-6, (
            f"{name}: the saved and rebuilt model gives {metric} {again.metrics[metric]}, not {after.metrics[metric]}"
        )
        if plain_metrics is not None:
            assert abs(plain_metrics[metric] - after.metrics[metric]) <= 1e-5, (
                f"{name}: the saved folder, loaded with plain peft/transformers, gives {metric} "
                f"{plain_metrics[metric]}, not {after.metrics[metric]}"
            )
    return TaskReport(
        loss_before,
        loss_after,
        before.metrics,
        after.metrics,
        again.metrics,
        len(train),
        n,
        {n for n, _ in model.named_parameters()},
        trainable,
        changed,
        plain_metrics,
    )


def _settings(config: dict):
    from specrun.spec.schema import RunSettings

    return RunSettings.of(config)


def _toml(value: Any) -> str:
    """A TOML value (inline tables for dicts)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)
