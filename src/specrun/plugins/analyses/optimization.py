"""Built-in ``optimization`` analysis: a ``[search]``'s trials from the store (``search_trials``): the best
value over trials, each parameter's importance (Optuna's fANOVA evaluator), the objective over one
parameter (slices) and two (contour view), and the learning curves with the points where trials were pruned."""

from __future__ import annotations

import json
import math

from pydantic import Field

from specrun.analysis.common import MINE
from specrun.errors import AnalysisError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import AnalysisPlugin, Figure, PluginOptions, ResultTable
from specrun.spec.schema import selection_split


class OptimizationOptions(PluginOptions):
    curve_metric: str = Field("accuracy", description="the evaluation metric drawn on the learning curves")
    contour: list[str] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="the two parameters of the contour view (default: the two most important)",
    )


class Optimization(AnalysisPlugin):
    name = "optimization"
    description = "a search's trials: best value over trials, parameter importances, slices and contour, pruning points"
    Options = OptimizationOptions
    tables = (
        ResultTable(
            "optimization_trials",
            {
                "trial": "INTEGER",
                "state": "VARCHAR",
                "value": "DOUBLE",
                "best_so_far": "DOUBLE",
                "params": "VARCHAR",
                "pruned_step": "BIGINT",
                "n_runs": "INTEGER",
                "split": "VARCHAR",
            },
            "one row per trial in order: its state, objective and the best objective up to it; split: the split the "
            "objective was measured on ('selection', never a reported split unless the spec allowed it)",
        ),
        ResultTable(
            "optimization_importance",
            {"param": "VARCHAR", "importance": "DOUBLE"},
            "each searched key's importance for the objective (fANOVA over the complete trials; they sum to 1)",
        ),
        ResultTable(
            "optimization_slices",
            {
                "trial": "INTEGER",
                "param": "VARCHAR",
                "x": "VARCHAR",
                "x_num": "DOUBLE",
                "value": "DOUBLE",
                "contour_x": "DOUBLE",
                "contour_y": "DOUBLE",
            },
            "one row per complete trial and key: the key's value against the objective; contour_x/y: the contour view's two keys",
        ),
        ResultTable(
            "optimization_curves",
            {
                "trial": "INTEGER",
                "run_id": "VARCHAR",
                "state": "VARCHAR",
                "step": "BIGINT",
                "value": "DOUBLE",
                "pruned_here": "BOOLEAN",
                "split": "VARCHAR",
            },
            "the learning curve (curve_metric on the split the objective and the pruner read) of each trial's first run; "
            "pruned_here marks where a pruner stopped it",
        ),
    )

    def run(self, options, ctx):
        trials = ctx.sql(
            "SELECT t.trial, t.run_id, t.seed, t.params, t.state, t.value, r.pruned_step, r.eval_set, r.config FROM search_trials t "
            "LEFT JOIN runs r USING (run_id) WHERE t.experiment = $experiment ORDER BY t.trial, t.seed",
            {"experiment": ctx.experiment},
        ).to_dicts()
        if not trials:
            raise AnalysisError(
                f"experiment {ctx.experiment!r} has no search trials in the store: the optimization analysis "
                "goes with a spec's [search]"
            )
        by_trial: dict[int, list[dict]] = {}
        for row in trials:
            config = json.loads(row["config"]) if row["config"] else {}
            row["split"] = selection_split(config.get("train") or {}, row["eval_set"] or "")
            by_trial.setdefault(row["trial"], []).append(row)
        direction = _direction(ctx)
        rows, best = [], None
        for number, runs in sorted(by_trial.items()):
            first = runs[0]
            value = first["value"]
            if value is not None and (best is None or (value > best if direction == "maximize" else value < best)):
                best = value
            rows.append(
                {
                    "trial": number,
                    "state": first["state"],
                    "value": value,
                    "best_so_far": best,
                    "params": first["params"],
                    "pruned_step": first["pruned_step"],
                    "n_runs": len(runs),
                    "split": first["split"],
                }
            )
        complete = [r for r in rows if r["state"] == "complete"]
        params = [(r["trial"], json.loads(r["params"]), r["value"]) for r in complete]
        importance = _importance(params, direction)
        keys = options.contour or [k for k, _ in sorted(importance.items(), key=lambda kv: -kv[1])][:2]
        slices = []
        for number, values, objective in params:
            cx, cy = (_num(values.get(keys[0])), _num(values.get(keys[1]))) if len(keys) == 2 else (None, None)
            for key, x in values.items():
                slices.append(
                    {
                        "trial": number,
                        "param": key,
                        "x": x if isinstance(x, str) else json.dumps(x),
                        "x_num": _num(x),
                        "value": objective,
                        "contour_x": cx,
                        "contour_y": cy,
                    }
                )
        firsts = {number: runs[0] for number, runs in by_trial.items()}
        curve_rows = ctx.sql(
            "SELECT run_id, split, step, value FROM metrics WHERE run_id IN (SELECT unnest($ids)) AND NOT final "
            "AND name = $metric ORDER BY run_id, step",
            {"ids": [r["run_id"] for r in firsts.values()], "metric": options.curve_metric},
        ).to_dicts()
        trial_of = {r["run_id"]: (n, r) for n, r in firsts.items()}
        curves = []
        for c in curve_rows:
            number, run = trial_of[c["run_id"]]
            if c["split"] != run["split"]:  # the objective's split only
                continue
            curves.append(
                {
                    "trial": number,
                    "run_id": c["run_id"],
                    "state": run["state"],
                    "step": c["step"],
                    "value": c["value"],
                    "pruned_here": run["state"] == "pruned" and c["step"] == run["pruned_step"],
                    "split": run["split"],
                }
            )
        return {
            "optimization_trials": rows,
            "optimization_importance": [
                {"param": k, "importance": v} for k, v in sorted(importance.items(), key=lambda kv: -kv[1])
            ],
            "optimization_slices": slices,
            "optimization_curves": curves,
        }

    def figures(self, options):
        from specrun.report import charts

        best = Figure(
            "the search's objective over trials, and the best so far",
            "SELECT trial, 'best so far' AS series, best_so_far AS value FROM optimization_trials WHERE "
            + MINE
            + " AND best_so_far IS NOT NULL\n"
            "UNION ALL SELECT trial, 'trial' AS series, value FROM optimization_trials WHERE "
            + MINE
            + " AND value IS NOT NULL ORDER BY series, trial",
            lambda rows: charts.curves(rows, "trial", "value", "series", None, None, "trial"),
            caption="The objective: the mean of search.metric over a trial's seeds on its selection set (split 'selection', "
            "carved from the training split or train.select_on; the table's split column), never on the split the runs "
            "report unless the spec allowed it. Pruned and failed trials have no objective; the table below lists every trial.",
        )
        importance = Figure(
            "parameter importance (fANOVA over the complete trials)",
            f"SELECT param, round(importance, 4) AS importance FROM optimization_importance WHERE {MINE} ORDER BY importance DESC",
            lambda rows: charts.interval_dots(rows, "importance", "importance", "importance", "param", "importance"),
        )
        slices = Figure(
            "slices: the objective against each parameter",
            f"SELECT trial, param, x, x_num, value FROM optimization_slices WHERE {MINE} AND x_num IS NOT NULL ORDER BY param, x_num",
            lambda rows: charts.curves(
                rows,
                "x_num",
                "value",
                "param",
                None,
                "param",
                "value of the parameter",
                tooltip=["trial", "x", "value"],
            ),
            caption="Each point a complete trial (points joined in the order of the parameter's value).",
        )
        contour = Figure(
            "contour view: the objective over the two most important parameters",
            f"SELECT DISTINCT trial, contour_x, contour_y, round(value, 4) AS value, printf('%.3f', value) AS label FROM optimization_slices "
            f"WHERE {MINE} AND contour_x IS NOT NULL AND contour_y IS NOT NULL ORDER BY trial",
            lambda rows: charts.heatmap(
                rows,
                "contour_x",
                "contour_y",
                "value",
                "label",
                "first parameter",
                "second parameter",
                "objective",
                x_sort="contour_x",
                y_sort="contour_y",
            ),
        )
        curves = Figure(
            f"learning curves ({options.curve_metric} on the objective's split) of each trial's first run; pruned trials end where they were stopped",
            f"SELECT 'trial ' || trial || ' (' || state || ')' AS trial, step, value, pruned_here FROM optimization_curves WHERE {MINE} ORDER BY trial, step",
            lambda rows: charts.curves(
                rows, "step", "value", "trial", None, None, "step", tooltip=["trial", "step", "value", "pruned_here"]
            ),
        )
        table = Figure(
            "trials", f"SELECT * EXCLUDE (experiment, analysis) FROM optimization_trials WHERE {MINE} ORDER BY trial"
        )
        return [best, importance, slices, contour, curves, table]


def _direction(ctx) -> str:
    found = ctx.sql(
        "SELECT spec_tree FROM applies WHERE experiment = $experiment AND NOT variant ORDER BY started_at DESC LIMIT 1",
        {"experiment": ctx.experiment},
    ).to_dicts()
    tree = json.loads(found[0]["spec_tree"]) if found and found[0]["spec_tree"] else {}
    return (tree.get("search") or {}).get("direction", "maximize")


def _num(value):
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _importance(trials: list[tuple[int, dict, float]], direction: str) -> dict[str, float]:
    """Optuna's fANOVA importances over the complete trials (a study rebuilt from them); {} with fewer than two."""
    if len(trials) < 2 or len({value for _, _, value in trials}) < 2:
        return {}  # no variation of the objective: no importance to measure
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    keys = sorted({k for _, p, _ in trials for k in p})
    dists = {}
    for key in keys:
        seen = [p.get(key) for _, p, _ in trials]
        nums = [v for v in seen if _num(v) is not None]
        if len(nums) == len(seen):
            low, high = min(nums), max(nums)
            if low == high:
                continue  # no variation: no importance to measure
            dists[key] = FloatDistribution(low, high, log=low > 0 and high / low >= 10)
        else:
            dists[key] = CategoricalDistribution(sorted({json.dumps(v) for v in seen}))
    if not dists:
        return {}
    study = optuna.create_study(direction=direction)
    for _, p, value in trials:
        values = {k: (float(p[k]) if isinstance(d, FloatDistribution) else json.dumps(p[k])) for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=values, distributions=dists, value=value))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) if math.isfinite(v) else 0.0 for k, v in found.items()}


@hookimpl
def register_analyses(register):
    register(Optimization())
