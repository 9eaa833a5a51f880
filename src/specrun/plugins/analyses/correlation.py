"""Built-in ``correlation`` analysis: one per-run quantity against another across runs, with Pearson's
r (Fisher-z CI) and Spearman's ρ (bootstrap CI), and their p-values (scipy.stats).

A quantity is one of:

- a final metric: ``accuracy``, ``noisy.f1``, ``cost.train_seconds`` (``metric:`` may prefix it);
- ``config:<dotted key>``: a numeric config value, e.g. ``config:method.rank``;
- ``table:<result table>.<column>``: a column of another analysis's per-run table (one with a ``run_id``
  column) for this experiment, e.g. ``table:lora_svd_runs.mean_stable_rank`` — list that analysis first;
- ``sql:<query>``: any query returning ``run_id`` and ``value`` (``$experiment`` is this experiment).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from specrun.analysis.common import MINE, ResamplingOptions, key_problems, metric_problems
from specrun.analysis.correlate import CORRELATION_COLUMNS
from specrun.errors import AnalysisError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import AnalysisPlugin, Figure, ResultTable

_TABLE = re.compile(r"^table:(?P<table>[a-z][a-z0-9_]*)\.(?P<column>[a-z][a-z0-9_]*)$")


class CorrelationOptions(ResamplingOptions):
    x: str = Field(description="per-run quantity on the x axis (a metric, config:KEY, table:TABLE.COLUMN or sql:QUERY)")
    y: str = Field(description="per-run quantity on the y axis")

    @field_validator("x", "y")
    @classmethod
    def _form(cls, text: str) -> str:
        kind = text.split(":", 1)[0] if ":" in text else "metric"
        if kind not in ("metric", "config", "table", "sql"):
            raise ValueError(
                f"unknown quantity kind {kind!r}: use a metric, config:KEY, table:TABLE.COLUMN or sql:QUERY"
            )
        if kind == "table" and not _TABLE.match(text):
            raise ValueError(
                f"{text!r}: write table:<result table>.<column>, e.g. table:lora_svd_runs.mean_stable_rank"
            )
        return text


class Correlation(AnalysisPlugin):
    name = "correlation"
    description = (
        "one per-run quantity against another (e.g. source stable rank vs transfer gain): Pearson and Spearman with CIs"
    )
    Options = CorrelationOptions
    version = "2"
    tables = (
        ResultTable(
            "correlation",
            CORRELATION_COLUMNS,
            "one row: the two coefficients over the runs that have both quantities; note: why an interval is missing",
        ),
        ResultTable(
            "correlation_points",
            {
                "run_id": "VARCHAR",
                "config": "VARCHAR",
                "seed": "INTEGER",
                "x": "DOUBLE",
                "y": "DOUBLE",
            },
            "one row per run with both quantities",
        ),
    )

    def check(self, options, spec):
        problems = []
        for option in ("x", "y"):
            text = getattr(options, option)
            if text.startswith("config:"):
                problems += key_problems(spec, **{option: text.removeprefix("config:")})
            elif ":" not in text or text.startswith("metric:"):
                problems += metric_problems(spec, **{option: text.removeprefix("metric:")})
        return problems

    def run(self, options, ctx):
        from specrun.analysis.correlate import correlate

        xs, ys = self._quantity(ctx, options.x), self._quantity(ctx, options.y)
        points = [
            {"run_id": r.run_id, "config": r.config_label, "seed": r.seed, "x": xs[r.run_id], "y": ys[r.run_id]}
            for r in ctx.runs
            if xs.get(r.run_id) is not None and ys.get(r.run_id) is not None
        ]
        if len(points) < 3:
            raise AnalysisError(f"needs at least 3 runs with both {options.x!r} and {options.y!r}; found {len(points)}")
        x, y = [p["x"] for p in points], [p["y"] for p in points]
        if len(set(x)) == 1 or len(set(y)) == 1:
            raise AnalysisError(
                f"{options.x if len(set(x)) == 1 else options.y!r} is the same for every run: no correlation to measure"
            )
        row = {"x": options.x, "y": options.y, **correlate(x, y, options.confidence, options.n_resamples, options.seed)}
        return {"correlation": [row], "correlation_points": points}

    def _quantity(self, ctx, text: str) -> dict[str, float]:
        """{run id: value} of one quantity."""
        if text.startswith("config:"):
            key, found = text.removeprefix("config:"), {}
            for run in ctx.runs:
                try:
                    value = run.value(key)
                except KeyError:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise AnalysisError(f"{text}: run {run.run_id} has {value!r}, not a number")
                found[run.run_id] = float(value)
            return found
        if text.startswith(("table:", "sql:")):
            match = _TABLE.match(text)
            query = (
                f'SELECT run_id, avg("{match["column"]}") AS value FROM "{match["table"]}" WHERE experiment = $experiment GROUP BY run_id'
                if match
                else text.removeprefix("sql:")
            )
            try:
                frame = ctx.sql(query, {"experiment": ctx.experiment} if "$experiment" in query else None)
            except Exception as exc:
                raise AnalysisError(f"{text}: {str(exc).splitlines()[0]}") from None
            if "run_id" not in frame.columns or "value" not in frame.columns:
                raise AnalysisError(
                    f"{text}: the query must return columns run_id and value; it returned {frame.columns}"
                )
            return {r: float(v) for r, v in zip(frame["run_id"], frame["value"]) if v is not None}
        return ctx.final_metric(text.removeprefix("metric:"))

    def figures(self, options):
        from specrun.report import charts

        return [
            Figure(
                f"{options.y} against {options.x}",
                f"SELECT config, seed, run_id, x, y FROM correlation_points WHERE {MINE} ORDER BY x",
                lambda rows: charts.scatter(
                    rows, "x", "y", "config", options.x, options.y, tooltip=["config", "seed", "x", "y"]
                ),
            ),
            Figure(
                "Coefficients",
                "SELECT n, round(pearson_r, 3) AS pearson_r, round(pearson_low, 3) AS pearson_low,\n"
                "       round(pearson_high, 3) AS pearson_high, pearson_p, round(spearman_rho, 3) AS spearman_rho,\n"
                "       round(spearman_low, 3) AS spearman_low, round(spearman_high, 3) AS spearman_high, spearman_p,\n"
                "       distinct_x, distinct_y, note\n"
                f"FROM correlation WHERE {MINE}",
                caption="Pearson: Fisher-z interval; Spearman: bootstrap over runs. Runs of one configuration are not independent of each other.",
            ),
        ]


@hookimpl
def register_analyses(register):
    register(Correlation())
