"""Built-in ``paired_comparison`` analysis: configurations (or evaluation sets) compared on the same
evaluation examples. For each pair: the accuracy difference with a paired bootstrap CI (resampling
examples), McNemar's exact test on the examples only one of the two gets right, p-values adjusted for
the number of pairs tested, and a ranking that says which differences are significant.

Which pairs follows the study's design: ``vary = "KEY"`` compares the values of one swept key within
each group of the other keys (``init_from`` within each placement: one pair per placement);
``baseline = {KEY = VALUE}`` compares every other arm with the baseline arm of its group; with one key
varying (or ``pairs = "all"``) every pair is compared. The correction counts the pairs tested, and the
result says how many and which correction.

Runs are paired by seed: configuration A's seed-0 run against B's seed-0 run, and so on, over the
examples both were evaluated on. With several seeds, the per-example difference is averaged over
seeds before resampling, and the test takes the example as its unit (``stats.paired_seeds_p``: an exact
sign test of the seed-averaged differences, McNemar's exact test with one seed); ``only_a_right`` and
``only_b_right`` still count (seed, example) pairs, as a description.

On extractive-QA runs (``qa_predictions``) an example is a question and "right" means an exact match
(SQuAD v1.1): the accuracy columns are exact-match rates.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, model_validator

from specrun.analysis.common import (
    MINE,
    ResamplingOptions,
    by_config,
    correct_by_seed,
    design_problems,
    resolve_design,
)
from specrun.errors import AnalysisError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import AnalysisPlugin, Figure, ResultTable


class PairedOptions(ResamplingOptions):
    eval_sets: list[str] | None = Field(
        None,
        description="evaluation sets to compare on (default: the primary one); with several, each configuration on each set is an arm",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level after adjustment")
    correction: Literal["holm", "bonferroni", "none"] = Field(
        "holm", description="adjustment of p-values for the number of pairs tested"
    )
    vary: str | None = Field(
        None,
        description='compare the values of this swept key (or eval_set) within each group of the other keys, e.g. "init_from": one pair per placement',
    )
    baseline: dict[str, Any] | None = Field(
        None,
        description='the arm every other arm of its group is compared with, by swept key: {init_from = ""}, {method = "full"}',
    )
    pairs: Literal["design", "all"] = Field(
        "design",
        description='"design": the pairs vary or baseline define (every pair when one key varies); "all": every pair of arms',
    )

    @model_validator(mode="after")
    def _one_design(self):
        if self.vary is not None and self.baseline is not None:
            raise ValueError("give vary or baseline, not both")
        if self.pairs == "all" and (self.vary is not None or self.baseline is not None):
            raise ValueError('pairs = "all" compares every pair: leave out vary and baseline')
        if self.baseline is not None and not self.baseline:
            raise ValueError('baseline names no key: write e.g. baseline = { init_from = "" }')
        return self


class PairedComparison(AnalysisPlugin):
    name = "paired_comparison"
    version = "2"
    description = "paired bootstrap of accuracy differences and McNemar's test between configurations on the same examples, pairs chosen by the study's design; a significance ranking"
    Options = PairedOptions
    tables = (
        ResultTable(
            "paired_comparison",
            {
                "a": "VARCHAR",
                "b": "VARCHAR",
                "pair": "VARCHAR",
                "grp": "VARCHAR",
                "n_seeds": "INTEGER",
                "n_examples": "INTEGER",
                "accuracy_a": "DOUBLE",
                "accuracy_b": "DOUBLE",
                "diff": "DOUBLE",
                "ci_low": "DOUBLE",
                "ci_high": "DOUBLE",
                "only_a_right": "INTEGER",
                "only_b_right": "INTEGER",
                "p_value": "DOUBLE",
                "p_adjusted": "DOUBLE",
                "significant": "BOOLEAN",
                "design": "VARCHAR",
                "n_tests": "INTEGER",
                "correction": "VARCHAR",
            },
            "one row per pair of arms the design compares: accuracy of each on their common examples, the difference a − b with a paired "
            "bootstrap CI, the paired test over examples; n_tests pairs share the correction",
        ),
        ResultTable(
            "paired_comparison_ranking",
            {
                "arm": "VARCHAR",
                "config": "VARCHAR",
                "eval_set": "VARCHAR",
                "accuracy": "DOUBLE",
                "n_seeds": "INTEGER",
                "rank": "INTEGER",
                "significantly_better_than": "INTEGER",
                "beats": "VARCHAR",
            },
            "one row per arm: rank = 1 + the number of arms significantly better than it (ties share a rank)",
        ),
    )

    def check(self, options, spec):
        unknown = [name for name in options.eval_sets or [] if name not in spec.eval_sets]
        if unknown:
            return [("eval_sets", f"no evaluation set {unknown[0]!r}; this spec has: {', '.join(spec.eval_sets)}")]
        return design_problems(spec, options.vary, options.baseline, eval_sets=len(options.eval_sets or []) > 1)

    def run(self, options, ctx):
        arms = self._arms(options, ctx)
        if len(arms) < 2:
            raise AnalysisError(
                f"needs two or more configurations (or evaluation sets) to compare; found {len(arms)}: {', '.join(arms) or 'none'}"
            )
        design = resolve_design(
            {arm: info["factors"] for arm, info in arms.items()},
            options.vary,
            options.baseline,
            options.pairs,
            [r for r in ctx.runs if r.role == "run"],
        )
        pairs = []
        for a, b, group in design.pairs:
            row = self._pair(options, a, arms[a], b, arms[b])
            if row:
                pairs.append({**row, "pair": design.pair_label(a, b, arms, group), "grp": group})
        if not pairs:
            raise AnalysisError(
                f"no two arms the design compares ({design.text}) share a seed and evaluation examples to pair"
            )
        from specrun.analysis.stats import adjust_pvalues

        for row, adjusted in zip(pairs, adjust_pvalues([r["p_value"] for r in pairs], options.correction)):
            row |= {
                "p_adjusted": adjusted,
                "significant": adjusted < options.alpha,
                "design": design.text,
                "n_tests": len(pairs),
                "correction": options.correction,
            }
        return {"paired_comparison": pairs, "paired_comparison_ranking": self._ranking(arms, pairs)}

    def _arms(self, options, ctx) -> dict[str, dict]:
        """{arm label: {config, eval_set, dataset, factors, seeds: {seed: {example id: correct}}}}, in configuration order."""
        names = options.eval_sets or [None]
        arms = {}
        # every run's predictions on each set, read once (not once per configuration: 80 reads of 209k rows
        # over a 240-run study)
        frames: dict = {}
        qa_frames: dict = {}

        def predictions(name):
            if name not in frames:
                frames[name] = ctx.predictions(name)
            return frames[name]

        def qa_predictions(name):
            if name not in qa_frames:
                qa_frames[name] = ctx.qa_predictions(name)
            return qa_frames[name]

        for config, runs in by_config(r for r in ctx.runs if r.role == "run").items():
            for name in names:
                seeds = correct_by_seed(predictions(name), runs)
                if not seeds:  # extractive QA: right = exact match, per question id
                    qa = qa_predictions(name)
                    for run in runs:
                        answered = qa.filter(qa["run_id"] == run.run_id)
                        if answered.height:
                            seeds[run.seed] = dict(
                                zip(answered["question_id"].to_list(), (answered["exact_match"] == 1.0).to_list())
                            )
                if seeds:
                    eval_set = name or runs[0].eval_set
                    label = config if len(names) == 1 else f"{config} @ {eval_set}"
                    factors = dict(runs[0].factors) | ({"eval_set": eval_set} if len(names) > 1 else {})
                    arms[label] = {
                        "config": config,
                        "eval_set": eval_set,
                        "seeds": seeds,
                        "dataset": _dataset(runs[0]),
                        "factors": factors,
                    }
        return arms

    def _pair(self, options, a: str, arm_a: dict, b: str, arm_b: dict) -> dict | None:
        import numpy as np

        from specrun.analysis.stats import bootstrap_interval, counted_interval, paired_seeds_p, weighted_mean

        seeds = sorted(set(arm_a["seeds"]) & set(arm_b["seeds"]))
        if (
            not seeds or arm_a["dataset"] != arm_b["dataset"]
        ):  # example ids of different datasets name different examples
            return None
        examples = sorted(set.intersection(*(set(arm_a["seeds"][s]) & set(arm_b["seeds"][s]) for s in seeds)))
        if not examples:
            return None
        ca = np.array([[arm_a["seeds"][s][e] for e in examples] for s in seeds], dtype=float)
        cb = np.array([[arm_b["seeds"][s][e] for e in examples] for s in seeds], dtype=float)
        d = (ca - cb).mean(axis=0)
        # d takes few values (2 x seeds + 1): drawn by counts, the same bootstrap as scipy's at a fraction of the cost
        resampling = (options.confidence, options.n_resamples, "percentile", options.seed)
        found = counted_interval((d,), weighted_mean, *resampling)
        low, high = found if found is not None else bootstrap_interval((d,), np.mean, *resampling)
        only_a, only_b = int(((ca == 1) & (cb == 0)).sum()), int(((ca == 0) & (cb == 1)).sum())
        return {
            "a": a,
            "b": b,
            "n_seeds": len(seeds),
            "n_examples": len(examples),
            "accuracy_a": float(ca.mean()),
            "accuracy_b": float(cb.mean()),
            "diff": float(d.mean()),
            "ci_low": low,
            "ci_high": high,
            "only_a_right": only_a,
            "only_b_right": only_b,
            "p_value": paired_seeds_p(ca, cb),
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
            rows.append(
                {
                    "arm": arm,
                    "config": info["config"],
                    "eval_set": info["eval_set"],
                    "accuracy": accuracy,
                    "n_seeds": len(info["seeds"]),
                    "rank": 1 + better,
                    "significantly_better_than": len(beats[arm]),
                    "beats": ", ".join(sorted(beats[arm])),
                }
            )
        return sorted(rows, key=lambda r: (r["rank"], -r["accuracy"]))

    def figures(self, options):
        from specrun.report import charts

        level = f"{options.confidence:.0%}"
        return [
            Figure(
                "Design",
                "SELECT any_value(design) AS design, count(*) AS n_tests, any_value(correction) AS correction,\n"
                f"       count(*) FILTER (WHERE significant) AS significant\nFROM paired_comparison WHERE {MINE}",
                caption=f"n_tests: the pairs compared, all counted by the correction; significant at α = {options.alpha} after it.",
            ),
            Figure(
                f"Accuracy difference a − b on the same examples, {level} paired bootstrap CI",
                "SELECT pair, a, b, round(diff, 4) AS diff, round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high,\n"
                f"       p_adjusted, significant, n_tests, correction\nFROM paired_comparison WHERE {MINE} ORDER BY diff DESC",
                lambda rows: charts.interval_dots(
                    rows,
                    "diff",
                    "ci_low",
                    "ci_high",
                    "pair",
                    f"accuracy difference ({level} CI)",
                    color="significant",
                    tooltip=["pair", "a", "b", "diff", "ci_low", "ci_high", "p_adjusted", "n_tests"],
                    reference=0.0,
                ),
                caption=f"Red: significant at α = {options.alpha} after {options.correction} adjustment over the pairs tested "
                "(exact sign test over examples, seeds averaged: McNemar's with one seed).",
            ),
            Figure(
                "Ranking",
                f"SELECT rank, arm, round(accuracy, 4) AS accuracy, n_seeds, significantly_better_than, beats\n"
                f"FROM paired_comparison_ranking WHERE {MINE} ORDER BY rank, accuracy DESC",
                caption="rank = 1 + the number of arms significantly better among the pairs compared; arms that no test separates share a rank.",
            ),
            Figure(
                "Pairs",
                "SELECT a, b, n_seeds, n_examples, round(accuracy_a, 4) AS accuracy_a, round(accuracy_b, 4) AS accuracy_b,\n"
                "       round(diff, 4) AS diff, round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high, only_a_right, only_b_right,\n"
                f"       p_value, p_adjusted, significant, n_tests, correction\nFROM paired_comparison WHERE {MINE} ORDER BY p_value",
            ),
        ]


def _dataset(run) -> str:
    """What an arm's example ids refer to: the dataset, its options and the primary evaluation split."""
    data = run.config.get("data", {})
    return json.dumps(
        [data.get("dataset"), data.get("options"), data.get("eval_split"), data.get("max_eval_examples")],
        sort_keys=True,
    )


@hookimpl
def register_analyses(register):
    register(PairedComparison())
