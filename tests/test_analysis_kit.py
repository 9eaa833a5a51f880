"""specrun.testing for analysis authors: a hand-made store, a context over it, and check_analysis, which
every built-in analysis that needs no saved weights passes on it."""

from __future__ import annotations

import pytest

from specrun.testing import HandRun, analysis_context, analysis_store, check_analysis, spec_facts


def hand_runs() -> list[HandRun]:
    runs = []
    for rank, base in ((4, 0.70), (8, 0.80)):
        for seed in range(3):
            accuracy = base + 0.01 * seed
            runs.append(
                HandRun(
                    method="lora",
                    seed=seed,
                    sweep={"method.rank": rank},
                    metrics={
                        "accuracy": accuracy,
                        "f1": accuracy - 0.05,
                        "loss": 1 - accuracy,
                        "noisy.accuracy": accuracy - 0.1,
                        "cost.train_seconds": 10.0 * rank,
                        "cost.trainable_params": 1000.0 * rank,
                        "cost.train_examples": 100.0 * rank,
                        "cost.peak_memory_mb": 50.0 * rank,
                    },
                    curve=[
                        {"step": s, "name": n, "value": v, **({"split": "train"} if n == "train_accuracy" else {})}
                        for s in (5, 10)
                        for n, v in (("accuracy", accuracy * s / 10), ("loss", 1 - accuracy * s / 10))
                    ],
                    predictions=[(f"ex{i}", i % 2, (i + seed + rank) % 2, 0.9, 0.1) for i in range(12)],
                )
            )
    runs.append(HandRun(method="lora", seed=0, sweep={"method.rank": 16}, status="failed", error="out of memory"))
    return runs


def test_a_hand_made_store_gives_the_context_analyze_would(tmp_path):
    store = analysis_store(tmp_path / "s.duckdb", hand_runs(), experiment="ranks")
    with analysis_context(store, "ranks") as ctx:
        assert len(ctx.runs) == 6 and [r.status for r in ctx.left_out] == ["failed"]
        assert {r.config_label for r in ctx.runs} == {"rank=4", "rank=8"}  # labelled by the keys that vary
        assert all(r.value("method.rank") in (4, 8) for r in ctx.runs)
        accuracy = ctx.final_metric("accuracy")
        assert sorted(accuracy.values()) == pytest.approx([0.70, 0.71, 0.72, 0.80, 0.81, 0.82])
        assert sorted(ctx.final_metric("noisy.accuracy").values())[0] == pytest.approx(0.60)
        assert ctx.predictions().height == 6 * 12
        assert ctx.sql("SELECT count(*) AS n FROM current_runs WHERE experiment = $e", {"e": "ranks"})["n"][0] == 7
    facts = spec_facts(store, "ranks")
    assert facts.eval_sets == ("validation", "noisy") and facts.sweep_keys == ("method.rank",)
    assert (
        facts.key_problem("method.rnak")
        == "no run's config has key 'method.rnak' (did you mean 'method.rank'?); swept keys: method.rank"
    )


@pytest.mark.parametrize(
    "name,options,table,rows",
    [
        ("bootstrap_ci", {"n_resamples": 200}, "bootstrap_ci", 2),
        ("scaling", {"x": "method.rank", "n_resamples": 200}, "scaling", 2),
        ("sensitivity", {"x": "method.rank", "y": "seed"}, "sensitivity", 6),
        ("efficiency", {"costs": ["trainable_params", "train_seconds", "peak_memory_mb"]}, "efficiency", 2),
        ("correlation", {"x": "cost.train_seconds", "y": "accuracy"}, "correlation", 1),
        ("paired_comparison", {"n_resamples": 200}, "paired_comparison", 1),
        ("learning_curves", {}, "learning_curves", None),
    ],
)
def test_builtin_analyses_pass_the_contract_on_a_hand_made_store(tmp_path, registry, name, options, table, rows):
    store = analysis_store(tmp_path / "s.duckdb", hand_runs(), experiment="ranks")
    results = check_analysis(registry, name, options, store=store, experiment="ranks")
    assert table in results and results[table].height > 0
    if rows is not None:
        assert results[table].height == rows, results[table]


def test_the_contract_catches_an_analysis_that_breaks_it(tmp_path):
    from specrun import hookimpl
    from specrun.plugins.api import AnalysisPlugin, Figure, ResultTable
    from specrun.testing import registry_with

    class Drifting(AnalysisPlugin):
        name = "drifting"
        tables = (ResultTable("drifting", {"n": "INTEGER"}),)
        calls = 0

        def run(self, options, ctx):
            Drifting.calls += 1
            return {"drifting": [{"n": Drifting.calls}]}

    class BadFigure(AnalysisPlugin):
        name = "bad_figure"
        tables = (ResultTable("bad_figure", {"n": "INTEGER"}),)

        def run(self, options, ctx):
            return {"bad_figure": [{"n": len(ctx.runs)}]}

        def figures(self, options):
            return [Figure("n", "SELECT m FROM bad_figure WHERE experiment = $experiment")]

    class Undeclared(AnalysisPlugin):
        name = "undeclared"
        tables = (ResultTable("undeclared", {"n": "INTEGER"}),)

        def run(self, options, ctx):
            return {"undeclared_extra": [{"n": 1}]}

    class Module:
        @hookimpl
        def register_analyses(self, register):
            for plugin in (Drifting(), BadFigure(), Undeclared()):
                register(plugin)

    registry = registry_with(Module())
    store = analysis_store(tmp_path / "s.duckdb", hand_runs(), experiment="ranks")
    with pytest.raises(AssertionError, match="drifting: table 'drifting' differs between two computations"):
        check_analysis(registry, "drifting", store=store, experiment="ranks")
    with pytest.raises(AssertionError, match="bad_figure: figure 'n': its query failed"):
        check_analysis(registry, "bad_figure", store=store, experiment="ranks")
    with pytest.raises(
        AssertionError,
        match=r"undeclared: the analysis failed: .*returned table 'undeclared_extra', which it does not declare",
    ):
        check_analysis(registry, "undeclared", store=store, experiment="ranks")
