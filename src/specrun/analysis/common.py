"""Small pieces the built-in analyses share: grouping runs by configuration, checking metric options
against a spec, and the SQL filter every figure uses."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from specrun.metrics import MetricRef
from specrun.plugins.api import PluginOptions, RunInfo, SpecFacts

#: Selects one analysis entry's rows of a result table (the report substitutes both parameters).
MINE = "experiment = $experiment AND analysis = $analysis"


def by_config(runs: Iterable[RunInfo]) -> dict[str, list[RunInfo]]:
    """Runs grouped by configuration (sweep point), each group ordered by seed."""
    groups: dict[str, list[RunInfo]] = {}
    for run in runs:
        groups.setdefault(run.config_label, []).append(run)
    return {label: sorted(group, key=lambda r: r.seed) for label, group in groups.items()}


def metric_problems(facts: SpecFacts, **metrics: str | None) -> list[tuple[str, str]]:
    """(option, message) for each metric option that can name no metric a run of this spec records."""
    problems = []
    for option, text in metrics.items():
        if text is None:
            continue
        ref = MetricRef.parse(text)
        problem = ref.problem(facts.eval_sets) or _task_metric_problem(facts, ref)
        if problem:
            problems.append((option, problem))
    return problems


def _task_metric_problem(facts: SpecFacts, ref: MetricRef) -> str | None:
    """Why no run's task records the evaluation metric ``ref`` (accuracy on extractive QA...), or None."""
    if ref.split == "cost" or ref.name == "n_examples" or not facts.configs:
        return None
    from specrun.plugins import get_registry
    from specrun.core.tasks import task_name

    registry = get_registry()
    names = sorted({task_name(c) for c in facts.configs})
    computed = set()
    for name in names:
        entry = registry.entries.get("task", {}).get(name)
        if entry is None:
            return None  # an unknown task is reported at task.name
        computed |= set(entry.plugin.metrics)
    if ref.name in computed:
        return None
    return f"the runs' task ({', '.join(names)}) records no metric {ref.name!r}; it records {', '.join(sorted(computed))}"


def key_problems(facts: SpecFacts, **keys: str | None) -> list[tuple[str, str]]:
    """(option, message) for each config-key option that no run's config has."""
    return [(option, problem) for option, key in keys.items() if key is not None and (problem := facts.key_problem(key))]


class ResamplingOptions(PluginOptions):
    """Options every bootstrap-based analysis takes."""

    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    n_resamples: int = Field(2000, ge=100, le=100_000, description="bootstrap resamples")
    seed: int = Field(0, ge=0, description="seed of the resampling (results are reproducible)")
