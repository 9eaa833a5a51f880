"""An analysis plugin as docs/plugins.md of specrun 0.1 described one, unchanged since:

    ### Analyses (`AnalysisPlugin`)
    - `run(options, ctx) -> dict`: `ctx.connection` is a read-only DuckDB connection to the store,
      `ctx.run_ids` the experiment's runs.

It declares no result tables and returns a table named ``analysis`` (and a count) from ``run``.
"""

from pydantic import Field

from specrun import hookimpl
from specrun.plugins.api import AnalysisContext, AnalysisPlugin, PluginOptions


class SeedSpreadOptions(PluginOptions):
    metric: str = Field("accuracy", description="the final metric on each run's evaluation split")


class SeedSpread(AnalysisPlugin):
    name = "seed-spread"
    description = "mean, min, max and spread (max - min) of a final metric over the seeds of each method"
    Options = SeedSpreadOptions
    version = "1"

    def run(self, options, ctx):
        rows = ctx.connection.execute(
            """
            SELECT r.method, count(*), avg(m.value), min(m.value), max(m.value)
            FROM metrics m JOIN runs r ON r.run_id = m.run_id
            WHERE m.final AND m.name = ? AND m.split = r.eval_set AND m.run_id IN (SELECT unnest(?))
            GROUP BY r.method ORDER BY r.method
            """,
            [options.metric, ctx.run_ids],
        ).fetchall()
        table = [
            {
                "method": method,
                "metric": options.metric,
                "runs": n,
                "mean": mean,
                "min": low,
                "max": high,
                "spread": high - low,
            }
            for method, n, mean, low, high in rows
        ]
        return {"analysis": table, "runs": len(ctx.run_ids)}


def spread_of(connection, experiment, run_ids, metric="accuracy"):
    """The analysis on given runs, as the package's own tests call it (the 0.1 context takes run ids)."""
    ctx = AnalysisContext(connection, experiment, run_ids)
    return SeedSpread().run(SeedSpreadOptions(metric=metric), ctx)


@hookimpl
def register_analyses(register):
    register(SeedSpread())
