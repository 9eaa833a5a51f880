"""Built-in ``sensitivity`` analysis: a metric over one or two config keys (learning rate × LoRA rank),
seeds averaged and their spread kept: a heatmap for two keys, a line with a ±1 sd band for one."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from specrun.analysis.common import MINE, key_problems, metric_problems
from specrun.errors import AnalysisError
from specrun.hookspecs import hookimpl
from specrun.metrics import MetricRef
from specrun.plugins.api import AnalysisPlugin, Figure, PluginOptions, ResultTable


class SensitivityOptions(PluginOptions):
    x: str = Field(description="dotted config key on the x axis, e.g. train.learning_rate")
    y: str | None = Field(None, description="a second dotted config key (a heatmap), e.g. method.rank")
    metric: str = Field("accuracy", description="the final metric")


class Sensitivity(AnalysisPlugin):
    name = "sensitivity"
    description = "a metric over one or two swept keys (e.g. learning rate × rank), mean over seeds with the spread"
    Options = SensitivityOptions
    tables = (
        ResultTable(
            "sensitivity",
            {
                "x_key": "VARCHAR",
                "x": "VARCHAR",
                "x_num": "DOUBLE",
                "y_key": "VARCHAR",
                "y": "VARCHAR",
                "y_num": "DOUBLE",
                "metric": "VARCHAR",
                "n_runs": "INTEGER",
                "n_configs": "INTEGER",
                "mean": "DOUBLE",
                "sd": "DOUBLE",
                "min": "DOUBLE",
                "max": "DOUBLE",
            },
            "one row per value (pair) of the keys: the metric over the runs there; n_configs > 1 when other swept keys vary within it",
        ),
    )

    def check(self, options, spec):
        return metric_problems(spec, metric=options.metric) + key_problems(spec, x=options.x, y=options.y)

    def run(self, options, ctx):
        from specrun.analysis.stats import summarize

        ref = MetricRef.parse(options.metric)
        values = ctx.final_metric(ref)
        cells: dict[tuple[str, str], dict[str, Any]] = {}
        for run in ctx.runs:
            if run.run_id not in values:
                continue
            try:
                x = run.value(options.x)
                y = run.value(options.y) if options.y else None
            except KeyError:  # e.g. a baseline arm of another method: not on this axis
                continue
            cell = cells.setdefault((_text(x), _text(y)), {"x": x, "y": y, "values": [], "configs": set()})
            cell["values"].append(values[run.run_id])
            cell["configs"].add(run.config_label)
        if not cells:
            raise AnalysisError(
                f"no run with {options.metric!r} has {options.x!r}" + (f" and {options.y!r}" if options.y else "")
            )
        rows = []
        for (x_text, y_text), cell in cells.items():
            summary = summarize(cell["values"], n_resamples=100)
            rows.append(
                {
                    "x_key": options.x,
                    "x": x_text,
                    "x_num": _number(cell["x"]),
                    "y_key": options.y,
                    "y": y_text if options.y else None,
                    "y_num": _number(cell["y"]),
                    "metric": str(ref),
                    "n_runs": summary["n"],
                    "n_configs": len(cell["configs"]),
                    "mean": summary["mean"],
                    "sd": summary["sd"],
                    "min": summary["min"],
                    "max": summary["max"],
                }
            )
        return {"sensitivity": sorted(rows, key=lambda r: (r["y_num"] or 0, r["y"] or "", r["x_num"] or 0, r["x"]))}

    def figures(self, options):
        from specrun.report import charts

        x, y, metric = options.x, options.y, options.metric
        sql = (
            "SELECT x AS {xk}, x_num, {ysel}round(mean, 4) AS mean, round(sd, 4) AS sd, n_runs, n_configs,\n"
            "       round(mean - coalesce(sd, 0), 4) AS low, round(mean + coalesce(sd, 0), 4) AS high,\n"
            "       printf('%.3f', mean) || CASE WHEN sd IS NULL THEN '' ELSE printf(' ±%.3f', sd) END AS label\n"
            f"FROM sensitivity WHERE {MINE} ORDER BY y_num, y, x_num, x"
        )
        xk, yk = _column(x), _column(y) if y else None
        if y:
            figure = Figure(
                f"{metric} over {x} × {y} (mean ± sd over seeds)",
                sql.format(xk=xk, ysel=f"y AS {yk}, y_num, "),
                lambda rows: charts.heatmap(
                    rows, xk, yk, "mean", "label", x, y, metric, x_sort="x_num", y_sort="y_num"
                ),
                caption="Each cell: the mean over the runs there, ± their sample standard deviation.",
            )
        else:
            figure = Figure(
                f"{metric} over {x} (mean, band: ± 1 sd over seeds)",
                sql.format(xk=xk, ysel=""),
                lambda rows: charts.line_with_band(
                    rows,
                    "x_num",
                    "mean",
                    "low",
                    "high",
                    None,
                    x,
                    metric,
                    x_scale=_scale(rows),
                    tooltip=[xk, "mean", "sd", "n_runs"],
                ),
            )
        return [
            figure,
            Figure(
                f"{metric} by {x}" + (f" and {y}" if y else ""),
                f"SELECT * EXCLUDE (experiment, analysis) FROM sensitivity WHERE {MINE} ORDER BY y_num, y, x_num, x",
            ),
        ]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _column(key: str) -> str:
    return key.replace(".", "_")


def _scale(rows: list[dict]) -> str:
    xs = [r["x_num"] for r in rows if r.get("x_num") is not None]
    return "log" if xs and min(xs) > 0 and max(xs) / min(xs) >= 10 else "linear"


@hookimpl
def register_analyses(register):
    register(Sensitivity())
