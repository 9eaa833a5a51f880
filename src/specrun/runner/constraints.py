"""A spec's ``[constraints]``, checked by ``plan`` and ``apply`` before anything trains.

``max_trainable_params`` is counted, not estimated: each configuration's model is built once, as its
method builds it but on the meta device (no weights loaded), and its trainable parameters counted the
way the run's cost metric ``trainable_params`` counts them (tests check the two agree for every
built-in method). Runs over the budget refuse the spec (``on_violation = "error"``) or
are left out of the apply (``"skip"``), each with the count it reaches.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from specrun.errors import SpecError
from specrun.plugins.registry import Registry
from specrun.runner.plan import PlannedRun
from specrun.spec.load import LoadedSpec

log = logging.getLogger("specrun.constraints")


@dataclass(frozen=True)
class Skipped:
    run: PlannedRun
    trainable: int
    limit: int

    @property
    def reason(self) -> str:
        return f"over constraints.max_trainable_params: {self.trainable:,} trainable > {self.limit:,}"


def trainable_counts(planned: list[PlannedRun], registry: Registry) -> dict[str, int]:
    """{run id: trainable parameters} of each run's model, counted once per configuration from a copy
    built on the meta device (``build.trainable_parameters``): seeds share one count, and so do runs that
    differ only in options their method declares free of parameters (``count_free_options``: lora's
    alpha and dropout)."""
    from specrun.runner.build import trainable_parameters
    from specrun.runner.data import load_dataset

    counts: dict[str, int] = {}
    built: dict[str, int] = {}
    for run in planned:
        dataset = load_dataset(run.config["data"], registry, run.spec_dir)
        method = dict(run.config["method"])
        free = registry.get("method", method.get("name")).count_free_options
        key = json.dumps(
            [
                run.config["model"],
                {k: v for k, v in method.items() if k not in free},
                run.config.get("task"),
                run.config["train"]["precision"],
                dataset.num_labels,
            ],
            sort_keys=True,
            default=str,
        )
        if key not in built:
            built[key] = trainable_parameters(run.settings, registry, dataset.num_labels, dataset.label_names)
        counts[run.run_id] = built[key]
    return counts


def apply_constraints(
    loaded: LoadedSpec, planned: list[PlannedRun], registry: Registry
) -> tuple[list[PlannedRun], list[Skipped]]:
    """The runs that respect the spec's constraints, and those left out (``on_violation = "skip"``);
    a SpecError at the constraint's line when runs break it and ``on_violation = "error"``."""
    constraints = loaded.spec.constraints
    if constraints is None or constraints.max_trainable_params is None:
        return planned, []
    limit = constraints.max_trainable_params
    counts = trainable_counts(planned, registry)
    over = [Skipped(run, counts[run.run_id], limit) for run in planned if counts[run.run_id] > limit]
    within = [run for run in planned if counts[run.run_id] <= limit]
    if within:
        log.info(
            "constraints.max_trainable_params %s: %d run(s) within (%s to %s trainable)",
            f"{limit:,}",
            len(within),
            f"{min(counts[r.run_id] for r in within):,}",
            f"{max(counts[r.run_id] for r in within):,}",
        )
    if over and constraints.on_violation == "error":
        labels = sorted({f"{s.run.label().rsplit(' seed=', 1)[0]}: {s.trainable:,}" for s in over})
        raise SpecError(
            str(loaded.path),
            [
                loaded.locate(
                    "constraints.max_trainable_params",
                    f"{len(over)} run(s) train more than {limit:,} parameters ({'; '.join(labels)}); lower their size, "
                    'or set constraints.on_violation = "skip" to leave them out',
                )
            ],
        )
    return within, over
