"""Built-in ``bootstrap_ci`` analysis: mean, sd and a bootstrap confidence interval of a metric over
seeds for each configuration, and per run a confidence interval of accuracy and F1 from its own
per-example predictions (how much the number would move on another sample of the evaluation set)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from specrun.analysis.common import (
    MINE,
    ResamplingOptions,
    by_config,
    design_problems,
    metric_problems,
    resolve_design,
)
from specrun.errors import AnalysisError
from specrun.hookspecs import hookimpl
from specrun.metrics import MetricRef
from specrun.plugins.api import AnalysisPlugin, Figure, ResultTable

#: Metrics that per-example predictions determine (so a run's own CI can be bootstrapped).
FROM_PREDICTIONS = ("accuracy", "f1")
#: The same for extractive-QA runs (``qa_predictions``: the mean over questions of EM or F1).
QA_FROM_PREDICTIONS = ("exact_match", "f1")


class BootstrapOptions(ResamplingOptions):
    metric: str = Field(
        "accuracy",
        description="the final metric to summarize per configuration: accuracy, f1, noisy.accuracy, cost.train_seconds, ...",
    )
    method: Literal["percentile", "basic", "BCa"] = Field(
        "percentile", description="scipy.stats.bootstrap's interval method"
    )
    per_run: bool = Field(True, description="also each run's accuracy and F1 CI from its per-example predictions")
    vary: str | None = Field(
        None,
        description="also the metric's difference between the values of this swept key within each group of the other keys, paired by seed",
    )
    baseline: dict[str, Any] | None = Field(
        None,
        description="also each configuration's difference from the baseline configuration of its group, paired by seed",
    )

    @model_validator(mode="after")
    def _one_design(self):
        if self.vary is not None and self.baseline is not None:
            raise ValueError("give vary or baseline, not both")
        return self


class BootstrapCI(AnalysisPlugin):
    name = "bootstrap_ci"
    description = (
        "mean ± bootstrap CI of a metric over seeds per configuration; per-run CIs from per-example predictions"
    )
    Options = BootstrapOptions
    version = "2"
    tables = (
        ResultTable(
            "bootstrap_ci",
            {
                "config": "VARCHAR",
                "metric": "VARCHAR",
                "n": "INTEGER",
                "mean": "DOUBLE",
                "sd": "DOUBLE",
                "min": "DOUBLE",
                "max": "DOUBLE",
                "ci_low": "DOUBLE",
                "ci_high": "DOUBLE",
                "confidence": "DOUBLE",
            },
            "one row per configuration: the metric over its seeds (n), with a bootstrap CI of the mean (NULL for one seed)",
        ),
        ResultTable(
            "bootstrap_ci_runs",
            {
                "run_id": "VARCHAR",
                "config": "VARCHAR",
                "seed": "INTEGER",
                "eval_set": "VARCHAR",
                "metric": "VARCHAR",
                "value": "DOUBLE",
                "ci_low": "DOUBLE",
                "ci_high": "DOUBLE",
                "n_examples": "INTEGER",
            },
            "one row per run and metric: the run's value with a bootstrap CI over its evaluation examples (NULL for metrics predictions do not determine)",
        ),
        ResultTable(
            "bootstrap_ci_diffs",
            {
                "a": "VARCHAR",
                "b": "VARCHAR",
                "grp": "VARCHAR",
                "design": "VARCHAR",
                "metric": "VARCHAR",
                "n": "INTEGER",
                "diff": "DOUBLE",
                "ci_low": "DOUBLE",
                "ci_high": "DOUBLE",
                "confidence": "DOUBLE",
            },
            "with vary or baseline: one row per pair of configurations the design names: the mean over shared seeds of a − b, with a bootstrap CI over those seeds",
        ),
    )

    def check(self, options, spec):
        return metric_problems(spec, metric=options.metric) + design_problems(spec, options.vary, options.baseline)

    def run(self, options, ctx):
        from specrun.analysis.stats import summarize

        ref = MetricRef.parse(options.metric)
        values = ctx.final_metric(ref)
        configs = []
        for label, runs in by_config(ctx.runs).items():
            seen = [values[r.run_id] for r in runs if r.run_id in values]
            if not seen:
                continue
            summary = summarize(seen, options.confidence, options.n_resamples, options.method, options.seed)
            configs.append({"config": label, "metric": str(ref), **summary, "confidence": options.confidence})
        return {
            "bootstrap_ci": configs,
            "bootstrap_ci_runs": self._per_run(options, ctx, ref, values),
            "bootstrap_ci_diffs": self._differences(options, ctx, ref, values),
        }

    def _differences(self, options, ctx, ref, values) -> list[dict]:
        """The design's pairs of configurations (``vary`` or ``baseline``): a − b per shared seed, summarized."""
        from specrun.analysis.stats import summarize

        if options.vary is None and options.baseline is None:
            return []
        groups = by_config(r for r in ctx.runs if r.role == "run")
        design = resolve_design(
            {label: runs[0].factors for label, runs in groups.items()},
            options.vary,
            options.baseline,
            "design",
            [r for r in ctx.runs if r.role == "run"],
        )
        rows = []
        for a, b, group in design.pairs:
            seeds_a = {r.seed: values[r.run_id] for r in groups[a] if r.run_id in values}
            seeds_b = {r.seed: values[r.run_id] for r in groups[b] if r.run_id in values}
            shared = sorted(set(seeds_a) & set(seeds_b))
            if not shared:
                continue
            summary = summarize(
                [seeds_a[s] - seeds_b[s] for s in shared],
                options.confidence,
                options.n_resamples,
                options.method,
                options.seed,
            )
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "grp": group,
                    "design": design.text,
                    "metric": str(ref),
                    "n": len(shared),
                    "diff": summary["mean"],
                    "ci_low": summary["ci_low"],
                    "ci_high": summary["ci_high"],
                    "confidence": options.confidence,
                }
            )
        return rows

    def _per_run(self, options, ctx, ref, values):
        import numpy as np

        from specrun.analysis.stats import (
            accuracy_statistic,
            bootstrap_interval,
            counted_interval,
            f1_statistic,
            weighted_mean,
        )

        def interval(data, statistic, counted_statistic, paired=False):
            """By counts where the observations take few values (same distribution, far fewer draws), else scipy's."""
            args = (options.confidence, options.n_resamples, options.method, options.seed)
            found = counted_interval(data, counted_statistic, *args)
            return found if found is not None else bootstrap_interval(data, statistic, *args, paired=paired)

        metrics = [ref] + (
            [MetricRef(ref.split if ref.split != "cost" else None, m) for m in FROM_PREDICTIONS]
            if options.per_run
            else []
        )
        rows, done = [], set()
        for metric in metrics:
            key = (metric.split, metric.name)
            if key in done:
                continue
            done.add(key)
            try:
                known = values if metric == ref else ctx.final_metric(metric)
            except AnalysisError:  # e.g. accuracy, which extractive-QA runs do not record
                continue
            split = metric.split if metric.split not in (None, "cost") else None
            frame = ctx.predictions(split) if metric.name in FROM_PREDICTIONS else None
            qa = ctx.qa_predictions(split) if metric.name in QA_FROM_PREDICTIONS else None
            # each run's rows, split once (not one filter over every run's rows per run)
            frames = frame.partition_by("run_id", as_dict=True) if frame is not None and frame.height else {}
            qas = qa.partition_by("run_id", as_dict=True) if qa is not None and qa.height else {}
            for run in ctx.runs:
                if run.run_id not in known:
                    continue
                low = high = n = None
                answered = qas.get((run.run_id,))
                mine = frames.get((run.run_id,))
                if answered is not None:  # extractive QA: the mean of per-question EM or F1
                    values = answered[metric.name].to_numpy().astype(float)
                    n = len(values)
                    low, high = interval((values,), accuracy_statistic, weighted_mean)
                elif frame is not None:
                    labels = mine["label"].to_numpy() if mine is not None else np.zeros(0, dtype=np.int64)
                    predicted = mine["prediction"].to_numpy() if mine is not None else np.zeros(0, dtype=np.int64)
                    n = len(labels)
                    if metric.name == "accuracy":
                        low, high = interval(((labels == predicted).astype(float),), accuracy_statistic, weighted_mean)
                    else:
                        num_labels = max(2, int(max(labels.max(initial=0), predicted.max(initial=0))) + 1)
                        f1 = f1_statistic(num_labels)
                        low, high = interval((labels, predicted), f1, f1, paired=True)
                rows.append(
                    {
                        "run_id": run.run_id,
                        "config": run.config_label,
                        "seed": run.seed,
                        "eval_set": metric.split_for(run.eval_set),
                        "metric": str(metric),
                        "value": known[run.run_id],
                        "ci_low": low,
                        "ci_high": high,
                        "n_examples": n,
                    }
                )
        return rows

    def figures(self, options):
        from specrun.report import charts

        metric = options.metric
        level = f"{options.confidence:.0%}"
        ref = MetricRef.parse(metric)
        per_run = str(ref) if ref.name in FROM_PREDICTIONS else "accuracy"
        quoted = per_run.replace("'", "''")
        return [
            Figure(
                f"{metric}: mean over seeds with {level} bootstrap CI, per configuration",
                f"SELECT config, n, round(mean, 4) AS mean, round(sd, 4) AS sd, round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high\n"
                f"FROM bootstrap_ci WHERE {MINE} ORDER BY mean DESC",
                lambda rows: charts.interval_dots(
                    rows,
                    "mean",
                    "ci_low",
                    "ci_high",
                    "config",
                    f"{metric} (mean, {level} CI)",
                    tooltip=["config", "n", "mean", "sd", "ci_low", "ci_high"],
                ),
                caption="The interval resamples the seeds' values: with few seeds it understates the uncertainty; n is the number of seeds.",
            ),
            Figure(
                f"{metric} per configuration",
                f"SELECT * EXCLUDE (experiment, analysis) FROM bootstrap_ci WHERE {MINE} ORDER BY mean DESC",
            ),
            Figure(
                f"Each run's {per_run} with its {level} CI from its evaluation examples",
                f"SELECT config, seed, metric, round(value, 4) AS value, round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high,\n"
                f"       config || ' · seed ' || seed AS run\n"
                f"FROM bootstrap_ci_runs WHERE {MINE} AND ci_low IS NOT NULL AND metric = '{quoted}' ORDER BY value DESC",
                lambda rows: charts.interval_dots(
                    rows,
                    "value",
                    "ci_low",
                    "ci_high",
                    "run",
                    f"{per_run} ({level} CI over examples)",
                    tooltip=["run", "metric", "value", "ci_low", "ci_high"],
                ),
                caption="Resampling the evaluation examples of one run: the spread a different test sample would give.",
            ),
            *(
                [
                    Figure(
                        f"{metric}: differences by design (a − b, paired by seed)",
                        "SELECT a, b, design, n, round(diff, 4) AS diff, round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high\n"
                        f"FROM bootstrap_ci_diffs WHERE {MINE} ORDER BY diff DESC",
                        caption="n: the seeds both configurations ran; the interval resamples the per-seed differences (none for one seed).",
                    )
                ]
                if options.vary is not None or options.baseline is not None
                else []
            ),
        ]


@hookimpl
def register_analyses(register):
    register(BootstrapCI())
