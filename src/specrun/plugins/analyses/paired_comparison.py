"""Built-in ``paired_comparison`` analysis: configurations (or evaluation sets) compared on the same
evaluation examples. For each pair: the accuracy difference with a paired bootstrap CI (resampling
examples), McNemar's exact test on the examples only one of the two gets right, p-values adjusted for
the number of pairs, and a ranking that says which differences are significant.

Runs are paired by seed: configuration A's seed-0 run against B's seed-0 run, and so on, over the
examples both were evaluated on. With several seeds, the per-example difference is averaged over
seeds before resampling, and the test takes the example as its unit (``stats.paired_seeds_p``: an exact
sign test of the seed-averaged differences, McNemar's exact test with one seed); ``only_a_right`` and
``only_b_right`` still count (seed, example) pairs, as a description.
"""

from __future__ import annotations

import json
from itertools import combinations
from typing import Literal

from pydantic import Field

from specrun.analysis.common import MINE, ResamplingOptions, by_config
from specrun.errors import AnalysisError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import AnalysisPlugin, Figure, ResultTable


class PairedOptions(ResamplingOptions):
    eval_sets: list[str] | None = Field(None, description="evaluation sets to compare on (default: the primary one); with several, each configuration on each set is an arm")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level after adjustment")
    correction: Literal["holm", "bonferroni", "none"] = Field("holm", description="adjustment of p-values for the number of pairs")


class PairedComparison(AnalysisPlugin):
    name = "paired_comparison"
    description = "paired bootstrap of accuracy differences and McNemar's test between configurations on the same examples; a significance ranking"
    Options = PairedOptions
    tables = (
        ResultTable("paired_comparison", {
            "a": "VARCHAR", "b": "VARCHAR", "n_seeds": "INTEGER", "n_examples": "INTEGER", "accuracy_a": "DOUBLE",
            "accuracy_b": "DOUBLE", "diff": "DOUBLE", "ci_low": "DOUBLE", "ci_high": "DOUBLE", "only_a_right": "INTEGER",
            "only_b_right": "INTEGER", "p_value": "DOUBLE", "p_adjusted": "DOUBLE", "significant": "BOOLEAN",
        }, "one row per pair of arms: accuracy of each on their common examples, the difference a − b with a paired bootstrap CI, McNemar's test"),
        ResultTable("paired_comparison_ranking", {
            "arm": "VARCHAR", "config": "VARCHAR", "eval_set": "VARCHAR", "accuracy": "DOUBLE", "n_seeds": "INTEGER",
            "rank": "INTEGER", "significantly_better_than": "INTEGER", "beats": "VARCHAR",
        }, "one row per arm: rank = 1 + the number of arms significantly better than it (ties share a rank)"),
    )

    def check(self, options, spec):
        unknown = [name for name in options.eval_sets or [] if name not in spec.eval_sets]
        if unknown:
            return [("eval_sets", f"no evaluation set {unknown[0]!r}; this spec has: {', '.join(spec.eval_sets)}")]
        return []

    def run(self, options, ctx):
        arms = self._arms(options, ctx)
        if len(arms) < 2:
            raise AnalysisError(f"needs two or more configurations (or evaluation sets) to compare; found {len(arms)}: {', '.join(arms) or 'none'}")
        pairs = [row for a, b in combinations(sorted(arms), 2) if (row := self._pair(options, a, arms[a], b, arms[b]))]
        if not pairs:
            raise AnalysisError("no two arms share a seed and evaluation examples to pair")
        from specrun.analysis.stats import adjust_pvalues

        for row, adjusted in zip(pairs, adjust_pvalues([r["p_value"] for r in pairs], options.correction)):
            row["p_adjusted"] = adjusted
            row["significant"] = adjusted < options.alpha
        return {"paired_comparison": pairs, "paired_comparison_ranking": self._ranking(arms, pairs)}

    def _arms(self, options, ctx) -> dict[str, dict]:
        """{arm label: {config, eval_set, dataset, seeds: {seed: {example id: correct}}}}."""
        names = options.eval_sets or [None]
        arms = {}
        for name in names:
            frame = ctx.predictions(name)
            for config, runs in by_config(ctx.runs).items():
                seeds = {}
                for run in runs:
                    mine = frame.filter(frame["run_id"] == run.run_id)
                    if mine.height:
                        seeds[run.seed] = dict(zip(mine["example_id"].to_list(), (mine["label"] == mine["prediction"]).to_list()))
                if seeds:
                    label = config if len(names) == 1 else f"{config} @ {name or runs[0].eval_set}"
                    arms[label] = {"config": config, "eval_set": name or runs[0].eval_set, "seeds": seeds,
                                   "dataset": _dataset(runs[0])}
        return arms

    def _pair(self, options, a: str, arm_a: dict, b: str, arm_b: dict) -> dict | None:
        import numpy as np

        from specrun.analysis.stats import bootstrap_interval, paired_seeds_p

        seeds = sorted(set(arm_a["seeds"]) & set(arm_b["seeds"]))
        if not seeds or arm_a["dataset"] != arm_b["dataset"]:  # example ids of different datasets name different examples
            return None
        examples = sorted(set.intersection(*(set(arm_a["seeds"][s]) & set(arm_b["seeds"][s]) for s in seeds)))
        if not examples:
            return None
        ca = np.array([[arm_a["seeds"][s][e] for e in examples] for s in seeds], dtype=float)
        cb = np.array([[arm_b["seeds"][s][e] for e in examples] for s in seeds], dtype=float)
        d = (ca - cb).mean(axis=0)
        low, high = bootstrap_interval((d,), np.mean, options.confidence, options.n_resamples, "percentile", options.seed)
        only_a, only_b = int(((ca == 1) & (cb == 0)).sum()), int(((ca == 0) & (cb == 1)).sum())
        return {
            "a": a, "b": b, "n_seeds": len(seeds), "n_examples": len(examples), "accuracy_a": float(ca.mean()),
            "accuracy_b": float(cb.mean()), "diff": float(d.mean()), "ci_low": low, "ci_high": high,
            "only_a_right": only_a, "only_b_right": only_b, "p_value": paired_seeds_p(ca, cb),
        }

    def _ranking(self, arms: dict, pairs: list[dict]) -> list[dict]:
        beats: dict[str, list[str]] = {arm: [] for arm in arms}
        for row in pairs:
            if row["significant"]:
                winner, loser = (row["a"], row["b"]) if row["diff"] > 0 else (row["b"], row["a"])
                beats[winner].append(loser)
        rows = []
        for arm, info in arms.items():
            accuracy = sum(sum(v.values()) / len(v) for v in info["seeds"].values()) / len(info["seeds"])
            better = sum(arm in losers for losers in beats.values())
            rows.append({
                "arm": arm, "config": info["config"], "eval_set": info["eval_set"], "accuracy": accuracy,
                "n_seeds": len(info["seeds"]), "rank": 1 + better, "significantly_better_than": len(beats[arm]),
                "beats": ", ".join(sorted(beats[arm])),
            })
        return sorted(rows, key=lambda r: (r["rank"], -r["accuracy"]))

    def figures(self, options):
        from specrun.report import charts

        level = f"{options.confidence:.0%}"
        return [
            Figure(
                f"Accuracy difference a − b on the same examples, {level} paired bootstrap CI",
                "SELECT a || '  −  ' || b AS pair, round(diff, 4) AS diff, round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high,\n"
                f"       p_adjusted, significant\nFROM paired_comparison WHERE {MINE} ORDER BY diff DESC",
                lambda rows: charts.interval_dots(rows, "diff", "ci_low", "ci_high", "pair", f"accuracy difference ({level} CI)",
                                                  color="significant", tooltip=["pair", "diff", "ci_low", "ci_high", "p_adjusted"], reference=0.0),
                caption=f"Red: significant at α = {options.alpha} after {options.correction} adjustment (exact sign test over examples, seeds averaged: McNemar's with one seed).",
            ),
            Figure("Ranking", f"SELECT rank, arm, round(accuracy, 4) AS accuracy, n_seeds, significantly_better_than, beats\n"
                              f"FROM paired_comparison_ranking WHERE {MINE} ORDER BY rank, accuracy DESC",
                   caption="rank = 1 + the number of arms significantly better; arms that no test separates share a rank."),
            Figure("Pairs", "SELECT a, b, n_seeds, n_examples, round(accuracy_a, 4) AS accuracy_a, round(accuracy_b, 4) AS accuracy_b,\n"
                            "       round(diff, 4) AS diff, round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high, only_a_right, only_b_right,\n"
                            f"       p_value, p_adjusted, significant\nFROM paired_comparison WHERE {MINE} ORDER BY p_value"),
        ]


def _dataset(run) -> str:
    """What an arm's example ids refer to: the dataset, its options and the primary evaluation split."""
    data = run.config.get("data", {})
    return json.dumps([data.get("dataset"), data.get("options"), data.get("eval_split"), data.get("max_eval_examples")], sort_keys=True)


@hookimpl
def register_analyses(register):
    register(PairedComparison())
