"""Built-in ``transfer`` analysis: what starting from another run's weights (``model.init_from``, e.g. a
stage's source adapters) gains over starting from the pretrained model.

Each transferred run (a run of the experiment whose ``model.init_from`` is set) is matched with the run
from the pretrained model that has the same values of every other swept key and the same seed: the
keys swept together with ``model.init_from`` (its training recipe) are what the comparison is about.
Per configuration (e.g. per placement): both arms' accuracy, the gain with a paired bootstrap CI over
the evaluation examples and the p-value of the paired test ``paired_comparison`` uses (``stats.paired_seeds_p``), the source
run's score on its own task and its LoRA adapters' mean stable rank; across configurations, the
correlation of the gain with the source's stable rank (and a note when too few distinct values leave
no interval).
"""

from __future__ import annotations

from pydantic import Field

from specrun.analysis.common import (
    MINE,
    ResamplingOptions,
    correct_by_seed,
    mean_of_present,
)
from specrun.analysis.correlate import CORRELATION_COLUMNS
from specrun.errors import AnalysisError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import AnalysisPlugin, Figure, ResultTable


class TransferOptions(ResamplingOptions):
    alpha: float = Field(
        0.05, gt=0, lt=1, description="significance level of the gains after Holm's adjustment over the configurations"
    )
    source_metric: str = Field("accuracy", description="the source run's final metric on its own evaluation set")


def _init_from(run) -> str:
    return (run.config.get("model") or {}).get("init_from") or ""


class Transfer(AnalysisPlugin):
    name = "transfer"
    description = "per configuration: transferred run vs the matched run from the pretrained model, gain with a paired CI, the source's score and stable rank; gain vs rank"
    Options = TransferOptions
    include_sources = True
    tables = (
        ResultTable(
            "transfer",
            {
                "configuration": "VARCHAR",
                "transfer_config": "VARCHAR",
                "scratch_config": "VARCHAR",
                "n_seeds": "INTEGER",
                "n_examples": "INTEGER",
                "transfer": "DOUBLE",
                "scratch": "DOUBLE",
                "gain": "DOUBLE",
                "ci_low": "DOUBLE",
                "ci_high": "DOUBLE",
                "p_value": "DOUBLE",
                "p_adjusted": "DOUBLE",
                "significant": "BOOLEAN",
                "source_config": "VARCHAR",
                "source_score": "DOUBLE",
                "source_stable_rank": "DOUBLE",
                "n_tests": "INTEGER",
            },
            "one row per configuration the transfer is matched on: accuracy transferred and from the pretrained model, the gain with a "
            "paired bootstrap CI over examples, the paired test's p (Holm over the n_tests configurations), the source's own score and stable rank",
        ),
        ResultTable(
            "transfer_runs",
            {
                "configuration": "VARCHAR",
                "seed": "INTEGER",
                "transfer_run": "VARCHAR",
                "scratch_run": "VARCHAR",
                "source_run": "VARCHAR",
                "transfer": "DOUBLE",
                "scratch": "DOUBLE",
                "gain": "DOUBLE",
                "source_score": "DOUBLE",
                "source_stable_rank": "DOUBLE",
            },
            "one row per transferred run and its matched run from the pretrained model (same keys but the initialisation, same seed)",
        ),
        ResultTable(
            "transfer_correlation",
            CORRELATION_COLUMNS,
            "one row: the gain against the source's stable rank across configurations; note: why a coefficient or interval is missing",
        ),
    )

    def check(self, options, spec):
        problems = []
        if not any(_init_from_config(c) for c in spec.configs):
            problems.append(
                (
                    "name",
                    "no run of this spec starts from another run (model.init_from): there is no transfer to measure",
                )
            )
        if not any(not _init_from_config(c) for c in spec.configs):
            problems.append(
                (
                    "name",
                    (
                        'every run of this spec starts from another run: sweep model.init_from against "" '
                        "(the pretrained model) to have runs to compare with"
                    ),
                )
            )
        return problems

    def run(self, options, ctx):
        from specrun.analysis.stats import adjust_pvalues
        from specrun.spec.labels import label

        runs = [r for r in ctx.runs if r.role == "run"]
        sources = {r.run_id: r for r in ctx.runs if r.role == "source"}
        transferred = [r for r in runs if _init_from(r)]
        if not transferred:
            raise AnalysisError(
                "no run of this experiment starts from another run (model.init_from): nothing was transferred"
            )
        init_dim = next((name for name in transferred[0].factors if name == "init_from"), None)

        def matched_on(run) -> str:
            return label({k: v for k, v in run.factors.items() if k != init_dim})

        scratch = {(matched_on(r), r.seed): r for r in runs if not _init_from(r)}
        if not scratch:
            raise AnalysisError(
                'no run of this experiment starts from the pretrained model: sweep model.init_from against ""'
            )
        accuracy = ctx.final_metric("accuracy")
        source_score = ctx.final_metric(options.source_metric) if sources else {}
        ranks = {run_id: _stable_rank(source) for run_id, source in sources.items()}
        frame = ctx.predictions()

        groups: dict[str, list[tuple]] = {}
        per_run = []
        for run in transferred:
            key = matched_on(run)
            other = scratch.get((key, run.seed))
            if other is None:
                continue
            source = sources.get(_init_from(run))
            groups.setdefault(key, []).append((run, other, source))
            per_run.append(
                {
                    "configuration": key or run.config_label,
                    "seed": run.seed,
                    "transfer_run": run.run_id,
                    "scratch_run": other.run_id,
                    "source_run": _init_from(run),
                    "transfer": accuracy.get(run.run_id),
                    "scratch": accuracy.get(other.run_id),
                    "gain": _minus(accuracy.get(run.run_id), accuracy.get(other.run_id)),
                    "source_score": source_score.get(source.run_id) if source else None,
                    "source_stable_rank": ranks.get(source.run_id) if source else None,
                }
            )
        if not groups:
            raise AnalysisError(
                "no transferred run has a run from the pretrained model with the same keys and seed to compare with"
            )
        from specrun.plugins.analyses.paired_comparison import PairedComparison

        paired = PairedComparison()
        rows = []
        for key, members in groups.items():
            arm_t = {"seeds": correct_by_seed(frame, [m[0] for m in members]), "dataset": ""}
            arm_s = {"seeds": correct_by_seed(frame, [m[1] for m in members]), "dataset": ""}
            test = paired._pair(
                options, "transfer", arm_t, "scratch", arm_s
            )  # the same paired test as paired_comparison
            found = [m[2] for m in members if m[2] is not None]
            rows.append(
                {
                    "configuration": key or members[0][0].config_label,
                    "transfer_config": members[0][0].config_label,
                    "scratch_config": members[0][1].config_label,
                    "n_seeds": len(members),
                    "n_examples": test["n_examples"] if test else None,
                    "transfer": mean_of_present(accuracy.get(m[0].run_id) for m in members),
                    "scratch": mean_of_present(accuracy.get(m[1].run_id) for m in members),
                    "gain": test["diff"]
                    if test
                    else mean_of_present(_minus(accuracy.get(m[0].run_id), accuracy.get(m[1].run_id)) for m in members),
                    "ci_low": test["ci_low"] if test else None,
                    "ci_high": test["ci_high"] if test else None,
                    "p_value": test["p_value"] if test else None,
                    "source_config": found[0].config_label if found else None,
                    "source_score": mean_of_present(source_score.get(s.run_id) for s in found),
                    "source_stable_rank": mean_of_present(ranks.get(s.run_id) for s in found),
                }
            )
        tested = [r for r in rows if r["p_value"] is not None]
        for row, adjusted in zip(tested, adjust_pvalues([r["p_value"] for r in tested], "holm")):
            row |= {"p_adjusted": adjusted, "significant": adjusted < options.alpha}
        for row in rows:
            row["n_tests"] = len(tested)
            row.setdefault("p_adjusted", None)
            row.setdefault("significant", None)
        return {"transfer": rows, "transfer_runs": per_run, "transfer_correlation": [self._correlation(options, rows)]}

    def _correlation(self, options, rows: list[dict]) -> dict:
        from specrun.analysis.correlate import correlate

        both = [r for r in rows if r["gain"] is not None and r["source_stable_rank"] is not None]
        out = {"x": "source_stable_rank", "y": "gain"}
        if not both:
            return out | {
                "n": 0,
                "confidence": options.confidence,
                "note": "no correlation: no source run has LoRA adapters whose stable rank could be measured",
            }
        return out | correlate(
            [r["source_stable_rank"] for r in both],
            [r["gain"] for r in both],
            options.confidence,
            options.n_resamples,
            options.seed,
        )

    def figures(self, options):
        from specrun.report import charts

        level = f"{options.confidence:.0%}"
        return [
            Figure(
                "Transfer against training from the pretrained model",
                "SELECT configuration, round(transfer, 4) AS transfer, round(scratch, 4) AS scratch, round(gain, 4) AS gain,\n"
                "       round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high, p_adjusted, significant,\n"
                "       round(source_score, 4) AS source_score, round(source_stable_rank, 3) AS source_stable_rank, n_seeds, n_tests\n"
                f"FROM transfer WHERE {MINE} ORDER BY gain DESC",
                caption=f"transfer, scratch: accuracy of the transferred run and of the run from the pretrained model (mean over seeds); "
                f"gain = transfer − scratch with a {level} paired bootstrap CI over the evaluation examples; p_adjusted: the paired sign test over examples (McNemar's with one seed), "
                f"Holm over the n_tests configurations; source_score: the source run's {options.source_metric} on its own task.",
            ),
            Figure(
                f"Gain against the source adapters' stable rank ({level} CI)",
                "SELECT configuration, round(source_stable_rank, 4) AS source_stable_rank, round(gain, 4) AS gain,\n"
                "       round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high, significant\n"
                f"FROM transfer WHERE {MINE} AND source_stable_rank IS NOT NULL ORDER BY source_stable_rank",
                lambda rows: charts.interval_scatter(
                    rows,
                    "source_stable_rank",
                    "gain",
                    "ci_low",
                    "ci_high",
                    "configuration",
                    "source adapters' mean stable rank",
                    f"gain in accuracy ({level} CI)",
                    reference=0.0,
                    tooltip=["configuration", "source_stable_rank", "gain", "ci_low", "ci_high"],
                ),
                caption="One point per configuration; the dashed line is no gain.",
            ),
            Figure(
                "Gain and stable rank: correlation across configurations",
                "SELECT n, distinct_x, round(pearson_r, 3) AS pearson_r, round(pearson_low, 3) AS pearson_low, round(pearson_high, 3) AS pearson_high,\n"
                "       pearson_p, round(spearman_rho, 3) AS spearman_rho, round(spearman_low, 3) AS spearman_low,\n"
                f"       round(spearman_high, 3) AS spearman_high, spearman_p, note\nFROM transfer_correlation WHERE {MINE}",
            ),
            Figure(
                "Matched runs",
                "SELECT configuration, seed, round(transfer, 4) AS transfer, round(scratch, 4) AS scratch, round(gain, 4) AS gain,\n"
                "       round(source_score, 4) AS source_score, round(source_stable_rank, 3) AS source_stable_rank,\n"
                f"       transfer_run, scratch_run, source_run\nFROM transfer_runs WHERE {MINE} ORDER BY configuration, seed",
            ),
        ]


def _init_from_config(config: dict) -> str:
    return (config.get("model") or {}).get("init_from") or ""


def _stable_rank(run) -> float | None:
    """The mean stable rank of a run's LoRA updates (None: no saved LoRA adapters)."""
    from specrun.plugins.analyses.lora_svd import LoraSvd, LoraSvdOptions

    if not run.weights:
        return None
    return mean_of_present(m["stable_rank"] for m in LoraSvd()._run_modules(run, LoraSvdOptions(), []))


def _minus(a, b):
    return None if a is None or b is None else a - b


@hookimpl
def register_analyses(register):
    register(Transfer())
