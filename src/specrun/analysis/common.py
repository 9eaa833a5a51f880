"""Small pieces the built-in analyses share: grouping runs by configuration, checking metric options
against a spec, and the SQL filter every figure uses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from pydantic import Field

from specrun.errors import AnalysisError
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


def mean_of_present(values: Iterable[float | None]) -> float | None:
    """The mean of the values that exist (None when none does)."""
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


def correct_by_seed(frame, runs: Iterable[RunInfo]) -> dict[int, dict[str, bool]]:
    """{seed: {example id: whether the run got it right}} of ``runs`` from a predictions frame
    (``ctx.predictions(...)``): what paired tests compare, example by example."""
    out = {}
    for run in runs:
        mine = frame.filter(frame["run_id"] == run.run_id)
        if mine.height:
            out[run.seed] = dict(zip(mine["example_id"].to_list(), (mine["label"] == mine["prediction"]).to_list()))
    return out


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
    from specrun.core.tasks import task_name
    from specrun.plugins import get_registry

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
    return (
        f"the runs' task ({', '.join(names)}) records no metric {ref.name!r}; it records {', '.join(sorted(computed))}"
    )


def key_problems(facts: SpecFacts, **keys: str | None) -> list[tuple[str, str]]:
    """(option, message) for each config-key option that no run's config has."""
    return [
        (option, problem) for option, key in keys.items() if key is not None and (problem := facts.key_problem(key))
    ]


class ResamplingOptions(PluginOptions):
    """Options every bootstrap-based analysis takes."""

    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    n_resamples: int = Field(2000, ge=100, le=100_000, description="bootstrap resamples")
    seed: int = Field(0, ge=0, description="seed of the resampling (results are reproducible)")


# --- comparisons by design -------------------------------------------------------------------------


@dataclass
class Design:
    """Which pairs of arms an analysis compares, and how it says so (``init_from within each placement``)."""

    text: str
    #: (arm a, arm b, group): group names the other keys' values shared by a and b ("" for none).
    pairs: list[tuple[str, str, str]]
    vary: str | None = None

    def pair_label(self, a: str, b: str, arms: dict[str, dict], group: str) -> str:
        """How a pair reads on a chart: the group and the varied values (``placement=attn-q: from source − from
        pretrained``), else both arms."""
        if self.vary:
            values = f"{arms[a]['factors'].get(self.vary, a)} − {arms[b]['factors'].get(self.vary, b)}"
            return f"{group}: {values}" if group else values
        return f"{a} − {b}"


def _dimension_names(runs: list[RunInfo], arm_factors: dict[str, dict[str, str]]):
    """The experiment's dimensions (``specrun.spec.labels``) whose values tell the arms apart, plus eval_set."""
    from specrun.spec.labels import Dimension, design

    dims = design([(r.method or "?", r.sweep) for r in runs])[0]
    dims.append(Dimension("eval_set", ("eval_set",)))
    present = {name for factors in arm_factors.values() for name in factors}
    return [d for d in dims if d.name in present]


def _find(dims, text: str, option: str):
    found = next((d for d in dims if d.matches(text)), None)
    if found is None:
        known = ", ".join(d.name for d in dims) or "none: only one configuration"
        raise AnalysisError(f"{option}: {text!r} is not a key that varies across the arms; they vary in: {known}")
    return found


def _factor_text(dim, value: Any) -> set[str]:
    """The factor texts a baseline value may match: the value as written and as labels show it."""
    from specrun.spec.labels import readable

    return {str(value), readable(dim.keys[0], value)}


def resolve_design(
    arm_factors: dict[str, dict[str, str]],
    vary: str | None,
    baseline: dict[str, Any] | None,
    pairs: str,
    runs: list[RunInfo],
) -> Design:
    """The pairs to compare among arms ({arm: factors}, in configuration order): ``vary`` compares the
    values of one key within each group of the others; ``baseline`` compares each other arm with the baseline
    arm of its group; ``pairs = "all"`` (or, by default, a study where one key varies) compares every pair."""
    from specrun.spec.labels import label

    arms = list(arm_factors)
    dims = _dimension_names(runs, arm_factors)
    if pairs == "all" or (vary is None and baseline is None and len(dims) <= 1):
        return Design(
            "all pairs" + (f" of {dims[0].name}" if len(dims) == 1 else ""),
            [(a, b, "") for a, b in combinations(arms, 2)],
        )
    if vary is None and baseline is None:
        raise AnalysisError(
            f"{len(dims)} keys vary ({', '.join(d.name for d in dims)}): say which pairs to compare with "
            'vary = "KEY" (its values within each group of the others), baseline = {KEY = VALUE}, or pairs = "all"'
        )
    if vary is not None:
        dim = _find(dims, vary, "vary")
        others = [d.name for d in dims if d is not dim]
        groups: dict[str, list[str]] = {}
        for arm in arms:
            groups.setdefault(label({k: arm_factors[arm][k] for k in others if k in arm_factors[arm]}), []).append(arm)
        chosen = [(a, b, group) for group, members in groups.items() for a, b in combinations(members, 2)]
        text = f"{dim.name} within each {', '.join(others)}" if others else f"all pairs of {dim.name}"
        return Design(text, chosen, vary=dim.name)
    wanted = {}
    for key, value in baseline.items():
        dim = _find(dims, key, "baseline")
        wanted[dim.name] = _factor_text(dim, value)
    base = [a for a in arms if all(arm_factors[a].get(k) in texts for k, texts in wanted.items())]
    if not base:
        shown = ", ".join(f"{k}: {sorted({f.get(k, '') for f in arm_factors.values()})}" for k in wanted)
        raise AnalysisError(f"baseline: no arm has {baseline}; the arms' values are {shown}")
    others = [d.name for d in dims if d.name not in wanted]

    def group_of(arm: str) -> str:
        return label({k: arm_factors[arm][k] for k in others if k in arm_factors[arm]})

    by_group = {group_of(b): b for b in base}
    chosen = [(a, by_group[group_of(a)], group_of(a)) for a in arms if a not in base and group_of(a) in by_group]
    text = f"each arm against {label({k: arm_factors[base[0]][k] for k in wanted})}" + (
        f" within each {', '.join(others)}" if others else ""
    )
    return Design(text, chosen)


def design_problems(
    facts: SpecFacts, vary: str | None, baseline: dict[str, Any] | None, eval_sets: bool = False
) -> list[tuple[str, str]]:
    """(option, message) for a ``vary`` or ``baseline`` key that names no swept key of the spec."""
    from specrun.errors import did_you_mean

    names = list(facts.sweep_keys) + (["eval_set"] if eval_sets else [])

    def known(text: str) -> bool:
        return any(text in (k, k.split(".")[-1]) or (text == "method" and k.startswith("method")) for k in names)

    shown = ", ".join(names) or "none (the spec sweeps nothing)"
    problems = []
    if vary is not None and not known(vary):
        problems.append(("vary", f"{vary!r} is not a swept key{did_you_mean(vary, names)}; swept: {shown}"))
    for key in baseline or {}:
        if not known(key):
            problems.append(("baseline", f"{key!r} is not a swept key{did_you_mean(key, names)}; swept: {shown}"))
    return problems
