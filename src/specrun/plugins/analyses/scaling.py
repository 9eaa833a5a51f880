"""Built-in ``scaling`` analysis: a metric against the amount of training data — the examples a run
trained on (after transforms), or a config key such as few_shot's ``k`` — with a bootstrap CI band over
seeds, one line per group (e.g. per method)."""

from __future__ import annotations

import json

from pydantic import Field

from specrun.analysis.common import MINE, ResamplingOptions, key_problems, metric_problems
from specrun.errors import AnalysisError
from specrun.hookspecs import hookimpl
from specrun.metrics import COST_METRICS, MetricRef
from specrun.plugins.api import AnalysisPlugin, Figure, ResultTable


class ScalingOptions(ResamplingOptions):
    x: str = Field(
        "train_examples",
        description="the size: a cost metric (train_examples, train_steps) or a dotted config key (data.transforms.0.k, data.max_train_examples)",
    )
    metric: str = Field("accuracy", description="the final metric")
    group: str | None = Field(
        None, description="a dotted config key drawing one line per value (e.g. method.name); default: one line"
    )


class Scaling(AnalysisPlugin):
    name = "scaling"
    description = "a metric against training-set size (few-shot k, examples) with a bootstrap CI band over seeds"
    Options = ScalingOptions
    tables = (
        ResultTable(
            "scaling",
            {
                "x_key": "VARCHAR",
                "grp": "VARCHAR",
                "size": "DOUBLE",
                "metric": "VARCHAR",
                "n": "INTEGER",
                "mean": "DOUBLE",
                "sd": "DOUBLE",
                "ci_low": "DOUBLE",
                "ci_high": "DOUBLE",
                "confidence": "DOUBLE",
            },
            "one row per group and size: the metric over the runs there, with a bootstrap CI of the mean (NULL for one run)",
        ),
    )

    def check(self, options, spec):
        problems = metric_problems(spec, metric=options.metric) + key_problems(spec, group=options.group)
        if options.x not in COST_METRICS:
            problems += key_problems(spec, x=options.x)
        return problems

    def run(self, options, ctx):
        from specrun.analysis.stats import summarize

        ref = MetricRef.parse(options.metric)
        values = ctx.final_metric(ref)
        sizes = ctx.final_metric(MetricRef("cost", options.x)) if options.x in COST_METRICS else None
        points: dict[tuple[str, float], list[float]] = {}
        for run in ctx.runs:
            if run.run_id not in values:
                continue
            try:
                size = sizes.get(run.run_id) if sizes is not None else run.value(options.x)
                group = _text(run.value(options.group)) if options.group else "all runs"
            except KeyError:  # e.g. a baseline arm of another method: not on this axis
                continue
            if not isinstance(size, int | float) or isinstance(size, bool):
                raise AnalysisError(f"{options.x} of run {run.run_id} is {size!r}, not a number")
            points.setdefault((group, float(size)), []).append(values[run.run_id])
        if not points:
            raise AnalysisError(
                f"no run with {options.metric!r} has {options.x!r}"
                + (f" and {options.group!r}" if options.group else "")
            )
        rows = [
            {
                "x_key": options.x,
                "grp": group,
                "size": size,
                "metric": str(ref),
                **{
                    k: v
                    for k, v in summarize(
                        found, options.confidence, options.n_resamples, "percentile", options.seed
                    ).items()
                    if k not in ("min", "max")
                },
                "confidence": options.confidence,
            }
            for (group, size), found in sorted(points.items())
        ]
        return {"scaling": rows}

    def figures(self, options):
        from specrun.report import charts

        level = f"{options.confidence:.0%}"
        return [
            Figure(
                f"{options.metric} against {options.x} (band: {level} bootstrap CI over seeds)",
                'SELECT grp AS "group", size, n, round(mean, 4) AS mean, round(sd, 4) AS sd, round(ci_low, 4) AS ci_low,\n'
                f"       round(ci_high, 4) AS ci_high\nFROM scaling WHERE {MINE} ORDER BY grp, size",
                lambda rows: charts.line_with_band(
                    rows,
                    "size",
                    "mean",
                    "ci_low",
                    "ci_high",
                    "group" if len({r["group"] for r in rows}) > 1 else None,
                    f"{options.x} ({_scale(rows)} scale)",
                    options.metric,
                    x_scale=_scale(rows),
                    tooltip=["group", "size", "n", "mean", "sd", "ci_low", "ci_high"],
                ),
                caption="n: runs (seeds) at that size. The interval resamples their values: with three seeds it understates the uncertainty.",
            ),
            Figure(
                f"{options.metric} by {options.x}",
                f"SELECT * EXCLUDE (experiment, analysis) FROM scaling WHERE {MINE} ORDER BY grp, size",
            ),
        ]


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _scale(rows: list[dict]) -> str:
    """Log when sizes span a decade or more; symlog when one of them is 0 (e.g. k = 0, the untrained model)."""
    sizes = [r["size"] for r in rows]
    positive = [s for s in sizes if s > 0]
    if len(positive) < 2 or max(positive) / min(positive) < 10:
        return "linear"
    return "symlog" if len(positive) < len(sizes) else "log"


@hookimpl
def register_analyses(register):
    register(Scaling())
