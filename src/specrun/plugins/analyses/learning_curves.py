"""Built-in ``learning_curves`` analysis: training loss and accuracy against the evaluation metrics at
every evaluation during training, per run, and how fast each run converged: the first step (epoch,
training seconds) at which it reached a fraction (default 95%) of its final value."""

from __future__ import annotations

from pydantic import Field, field_validator

from specrun.analysis.common import MINE
from specrun.errors import AnalysisError, did_you_mean
from specrun.hookspecs import hookimpl
from specrun.metrics import EVAL_METRICS, LOWER_IS_BETTER
from specrun.plugins.api import AnalysisPlugin, Figure, PluginOptions, ResultTable


class CurveOptions(PluginOptions):
    metrics: list[str] = Field(
        default_factory=lambda: ["loss", "accuracy"],
        description="metrics to draw (train has loss and accuracy; evaluation sets all)",
    )
    convergence_metric: str = Field("accuracy", description="the evaluation metric whose convergence speed is measured")
    fraction: float = Field(
        0.95, gt=0, le=1, description="converged = first evaluation at this fraction of the final value"
    )

    @field_validator("metrics")
    @classmethod
    def _known(cls, metrics: list[str]) -> list[str]:
        return [_eval_metric(m) for m in metrics]

    @field_validator("convergence_metric")
    @classmethod
    def _known_one(cls, metric: str) -> str:
        return _eval_metric(metric)


def _eval_metric(name: str) -> str:
    if name not in EVAL_METRICS:
        raise ValueError(
            f"no evaluation metric {name!r}{did_you_mean(name, EVAL_METRICS)}; metrics: {', '.join(EVAL_METRICS)}"
        )
    return name


class LearningCurves(AnalysisPlugin):
    name = "learning_curves"
    description = (
        "train loss/accuracy vs evaluation metrics over steps; steps and seconds to reach 95% of the final value"
    )
    Options = CurveOptions
    tables = (
        ResultTable(
            "learning_curves",
            {
                "run_id": "VARCHAR",
                "config": "VARCHAR",
                "seed": "INTEGER",
                "step": "INTEGER",
                "epoch": "DOUBLE",
                "seconds": "DOUBLE",
                "split": "VARCHAR",
                "metric": "VARCHAR",
                "value": "DOUBLE",
            },
            "one row per run, evaluation and metric: split 'train' (the training batches since the previous evaluation) or the evaluation set; seconds = training time so far",
        ),
        ResultTable(
            "learning_curves_convergence",
            {
                "run_id": "VARCHAR",
                "config": "VARCHAR",
                "seed": "INTEGER",
                "eval_set": "VARCHAR",
                "metric": "VARCHAR",
                "final_value": "DOUBLE",
                "target": "DOUBLE",
                "step": "INTEGER",
                "epoch": "DOUBLE",
                "seconds": "DOUBLE",
                "total_steps": "INTEGER",
                "total_seconds": "DOUBLE",
            },
            "one row per run: the first evaluation that reached fraction × the last evaluation's value (step, epoch, training seconds)",
        ),
    )

    def run(self, options, ctx):
        frame = ctx.sql(
            """
            SELECT m.run_id, m.step, m.epoch, m.split, m.name, m.value,
                   (SELECT s.value FROM metrics s WHERE s.run_id = m.run_id AND s.step = m.step AND s.split = 'train'
                    AND s.name = 'seconds' AND NOT s.final LIMIT 1) AS seconds
            FROM metrics m WHERE NOT m.final AND m.run_id IN (SELECT unnest(?)) AND m.name IN (SELECT unnest(?))
              AND (m.split = 'train' OR m.split IN (SELECT unnest(?)))
            ORDER BY m.run_id, m.step
            """,
            [
                ctx.run_ids,
                sorted({*options.metrics, options.convergence_metric}),
                sorted({r.eval_set for r in ctx.runs}),
            ],
        )
        if frame.height == 0:
            raise AnalysisError(
                "no run recorded evaluations during training (train.eval_every), so there are no curves"
            )
        runs = {r.run_id: r for r in ctx.runs}
        curves = [
            {
                "run_id": row["run_id"],
                "config": runs[row["run_id"]].config_label,
                "seed": runs[row["run_id"]].seed,
                "step": row["step"],
                "epoch": row["epoch"],
                "seconds": row["seconds"],
                "split": row["split"],
                "metric": row["name"],
                "value": row["value"],
            }
            for row in frame.iter_rows(named=True)
            if row["name"] in options.metrics
        ]
        return {"learning_curves": curves, "learning_curves_convergence": self._convergence(options, frame, runs)}

    def _convergence(self, options, frame, runs) -> list[dict]:
        from specrun.analysis.stats import first_reaching

        rows = []
        higher = options.convergence_metric not in LOWER_IS_BETTER
        for run_id, run in runs.items():
            mine = frame.filter(
                (frame["run_id"] == run_id)
                & (frame["split"] == run.eval_set)
                & (frame["name"] == options.convergence_metric)
            )
            if mine.height == 0:
                continue
            values, steps = mine["value"].to_list(), mine["step"].to_list()
            final = values[-1]
            target = final * options.fraction if higher else final / options.fraction
            hit = first_reaching(steps, values, target, higher)
            seconds = mine["seconds"].to_list()
            rows.append(
                {
                    "run_id": run_id,
                    "config": run.config_label,
                    "seed": run.seed,
                    "eval_set": run.eval_set,
                    "metric": options.convergence_metric,
                    "final_value": final,
                    "target": target,
                    "step": steps[hit],
                    "epoch": mine["epoch"][hit],
                    "seconds": seconds[hit],
                    "total_steps": steps[-1],
                    "total_seconds": seconds[-1],
                }
            )
        return rows

    def figures(self, options):
        from specrun.report import charts

        return [
            Figure(
                "Learning curves: training batches (dashed) against the evaluation set, mean over seeds",
                "SELECT config, CASE WHEN split = 'train' THEN 'train' ELSE 'eval: ' || split END AS curve, metric, step,\n"
                "       round(avg(value), 4) AS value, count(*) AS seeds\n"
                f"FROM learning_curves WHERE {MINE} GROUP BY ALL ORDER BY config, curve, metric, step",
                lambda rows: charts.curves(
                    rows,
                    "step",
                    "value",
                    "config",
                    "curve",
                    "metric",
                    "optimizer step",
                    tooltip=["config", "curve", "metric", "step", "value", "seeds"],
                ),
                caption="Train: the running loss/accuracy of the training batches since the previous evaluation (dropout on); "
                "eval: the evaluation set at that step. A gap that widens is overfitting.",
            ),
            Figure(
                f"Convergence: first evaluation at {options.fraction:.0%} of the final {options.convergence_metric}",
                "SELECT config, seed, round(final_value, 4) AS final_value, round(target, 4) AS target, step, round(epoch, 2) AS epoch,\n"
                "       round(seconds, 1) AS seconds, total_steps, round(total_seconds, 1) AS total_seconds\n"
                f"FROM learning_curves_convergence WHERE {MINE} ORDER BY config, seed",
                caption="seconds: training time (evaluation excluded) until that evaluation; NULL for runs trained before the runner recorded it.",
            ),
        ]


@hookimpl
def register_analyses(register):
    register(LearningCurves())
