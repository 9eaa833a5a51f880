"""Built-in ``efficiency`` analysis: what each configuration (method) reaches and what it costs —
trainable parameters, training time, peak and model memory, latency — averaged over seeds, with the
Pareto front marked for each cost: the configurations no other one beats on both the metric and that
cost."""

from __future__ import annotations

from pydantic import Field, field_validator

from specrun.analysis.common import MINE, by_config, metric_problems
from specrun.errors import AnalysisError, did_you_mean
from specrun.hookspecs import hookimpl
from specrun.metrics import COST_METRICS, MetricRef
from specrun.plugins.api import AnalysisPlugin, Figure, PluginOptions, ResultTable

#: The cost whose figures come in kinds (``runs.memory_kind``) that one axis must not mix.
MEMORY_COST = "peak_memory_mb"

#: The costs reported in the wide table, in its column order.
COSTS = (
    "trainable_params",
    "total_params",
    "trainable_pct",
    "train_seconds",
    "peak_memory_mb",
    "model_memory_mb",
    "latency_ms_mean",
)


class EfficiencyOptions(PluginOptions):
    metric: str = Field("accuracy", description="the quality metric (higher is better unless it is a loss)")
    costs: list[str] = Field(
        default_factory=lambda: ["trainable_params", "train_seconds", "peak_memory_mb", "latency_ms_mean"],
        description="cost metrics to draw a Pareto front against (lower is better)",
    )

    @field_validator("costs")
    @classmethod
    def _known_costs(cls, costs: list[str]) -> list[str]:
        for cost in costs:
            if cost not in COST_METRICS:
                raise ValueError(
                    f"{cost!r} is not a cost metric{did_you_mean(cost, COST_METRICS)}; cost metrics: {', '.join(COST_METRICS)}"
                )
        return costs


class Efficiency(AnalysisPlugin):
    name = "efficiency"
    description = "metric vs trainable %, time, memory and latency per configuration, with the Pareto front"
    Options = EfficiencyOptions
    tables = (
        ResultTable(
            "efficiency",
            {
                "config": "VARCHAR",
                "label": "VARCHAR",
                "method": "VARCHAR",
                "n": "INTEGER",
                "metric": "VARCHAR",
                "value": "DOUBLE",
                **dict.fromkeys(COSTS, "DOUBLE"),
                "memory_kind": "VARCHAR",
            },
            "one row per configuration: the metric and each cost, means over its seeds; label: the method when that tells the configurations apart, "
            "else the configuration; memory_kind: what peak_memory_mb measures (runs.memory_kind; NULL, and no peak memory, when its runs mix kinds)",
        ),
        ResultTable(
            "efficiency_pareto",
            {
                "config": "VARCHAR",
                "label": "VARCHAR",
                "method": "VARCHAR",
                "cost_metric": "VARCHAR",
                "cost": "DOUBLE",
                "metric": "VARCHAR",
                "value": "DOUBLE",
                "on_front": "BOOLEAN",
                "memory_kind": "VARCHAR",
            },
            "one row per configuration and cost: on_front is true when no configuration is at least as good on the metric at no more cost (and better on one); "
            "for peak_memory_mb the front is drawn among the configurations of the same memory_kind only",
        ),
    )

    def check(self, options, spec):
        return metric_problems(spec, metric=options.metric)

    def run(self, options, ctx):
        from specrun.analysis.stats import pareto_front

        ref = MetricRef.parse(options.metric)
        quality = ctx.final_metric(ref)
        costs = {
            c: ctx.final_metric(MetricRef("cost", c)) if self._recorded(ctx, c) else {}
            for c in {*COSTS, *options.costs}
        }
        kinds = self._memory_kinds(ctx)
        rows = []
        for label, runs in by_config(ctx.runs).items():
            ids = [r.run_id for r in runs if r.run_id in quality]
            if not ids:
                continue
            row = {
                "config": label,
                "method": runs[0].method,
                "n": len(ids),
                "metric": str(ref),
                "value": _mean(quality, ids),
            }
            row.update({c: _mean(costs[c], ids) for c in COSTS})
            row.update({c: _mean(costs[c], ids) for c in options.costs})
            found = {kinds.get(i) for i in ids if i in costs.get(MEMORY_COST, {})}
            row["memory_kind"] = next(iter(found)) if len(found) == 1 else None
            if len(found) > 1:  # a mean over kinds measures nothing
                row[MEMORY_COST] = None
            rows.append(row)
        methods_tell = len({r["method"] for r in rows}) == len(rows)
        for row in rows:
            row["label"] = row["method"] if methods_tell else row["config"]
        front = []
        for cost in options.costs:
            have = [r for r in rows if r.get(cost) is not None]
            if not have:
                raise AnalysisError(f"no run recorded cost {cost!r}")
            # peak memory of different kinds (CPU RSS growth, CUDA allocator peak) is not one axis: a front per kind
            groups: dict[str | None, list[dict]] = {}
            for r in have:
                groups.setdefault(r["memory_kind"] if cost == MEMORY_COST else None, []).append(r)
            for kind, group in groups.items():
                marks = pareto_front([r[cost] for r in group], [r["value"] for r in group], ref.higher_is_better)
                front += [
                    {
                        "config": r["config"],
                        "label": r["label"],
                        "method": r["method"],
                        "cost_metric": cost,
                        "cost": r[cost],
                        "metric": str(ref),
                        "value": r["value"],
                        "on_front": on,
                        "memory_kind": kind,
                    }
                    for r, on in zip(group, marks)
                ]
        return {"efficiency": [{k: r.get(k) for k in self.tables[0].columns} for r in rows], "efficiency_pareto": front}

    @staticmethod
    def _memory_kinds(ctx) -> dict[str, str | None]:
        """{run id: what its peak_memory_mb measures} (``runs.memory_kind``)."""
        frame = ctx.sql("SELECT run_id, memory_kind FROM runs WHERE run_id IN (SELECT unnest(?))", [ctx.run_ids])
        return dict(zip(frame["run_id"].to_list(), frame["memory_kind"].to_list()))

    @staticmethod
    def _recorded(ctx, cost: str) -> bool:
        return bool(
            ctx.sql(
                "SELECT 1 FROM metrics WHERE split = 'cost' AND name = ? AND final AND run_id IN (SELECT unnest(?)) LIMIT 1",
                [cost, ctx.run_ids],
            ).height
        )

    def figures(self, options):
        from specrun.report import charts

        metric = options.metric
        figures = []
        for cost in options.costs:
            log = cost in ("trainable_params", "total_params", "trainable_pct")
            figures.append(
                Figure(
                    f"{metric} against {cost.replace('_', ' ')} (Pareto front in red)",
                    f"SELECT config, label, cost AS {cost}, round(value, 4) AS {_column(metric)}, on_front\n"
                    f"FROM efficiency_pareto WHERE {MINE} AND cost_metric = '{cost}' ORDER BY cost",
                    lambda rows, cost=cost, log=log: charts.scatter(
                        rows,
                        cost,
                        _column(metric),
                        "label",
                        cost.replace("_", " ") + (" (log scale)" if log else ""),
                        metric,
                        x_scale="log" if log else "linear",
                        highlight="on_front",
                        connect="on_front",
                        tooltip=["config", cost, _column(metric), "on_front"],
                    ),
                    caption="A configuration is on the front when no other one reaches at least its value at no more cost (lower cost is better).",
                )
            )
        figures.append(
            Figure(
                "Efficiency per configuration (means over seeds)",
                f"SELECT config, n, round(value, 4) AS {_column(metric)}, trainable_params, round(trainable_pct, 3) AS trainable_pct,\n"
                "       round(train_seconds, 1) AS train_seconds, round(peak_memory_mb, 1) AS peak_memory_mb,\n"
                "       round(model_memory_mb, 1) AS model_memory_mb, round(latency_ms_mean, 2) AS latency_ms\n"
                f"FROM efficiency WHERE {MINE} ORDER BY value DESC",
            )
        )
        return figures


def _column(metric: str) -> str:
    return metric.replace(".", "_")


def _mean(values: dict[str, float], ids: list[str]) -> float | None:
    found = [values[i] for i in ids if i in values]
    return sum(found) / len(found) if found else None


@hookimpl
def register_analyses(register):
    register(Efficiency())
