"""A plugin package written against the previous release's plugin API keeps working: installed with pip
from tests/plugins_0_1/, it passes ``validate``, ``apply`` and ``analyze`` with a deprecation warning
that says what to change, and its results are right."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from specrun.errors import SpecrunDeprecationWarning
from specrun.plugins import api

PACKAGE = Path(__file__).resolve().parent / "plugins_0_1" / "specrun-seed-spread"
WARNING = (
    "warning: analysis 'seed-spread' from specrun-seed-spread 0.1.0 is written against plugin API 0.1 (it declares no "
    "result tables), deprecated since specrun 0.2 and removed in 0.4"
)
ADVICE = "tables = (ResultTable('seed_spread', {column: DuckDB type}),) and return {'seed_spread': rows} from run()"


@pytest.fixture
def seed_spread_installed(tmp_path, monkeypatch):
    """The package pip-installed into a folder on sys.path (built from a copy: the repository stays clean),
    with entry-point plugins loaded again; forgotten afterwards."""
    from specrun.plugins import set_registry

    source, site = tmp_path / "src-copy", tmp_path / "site"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    if importlib.util.find_spec("setuptools") is not None:  # offline: pip builds it with this environment's setuptools
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--no-build-isolation",
                "--quiet",
                "--target",
                str(site),
                str(source),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
    else:  # no build backend here: the metadata a wheel would install, from the package's own pyproject.toml
        project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
        info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
        )
        entry_points = project["entry-points"]["specrun"]
        (info / "entry_points.txt").write_text("[specrun]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
        shutil.copytree(source / "src" / "specrun_seed_spread", site / "specrun_seed_spread")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "")
    set_registry(None)
    yield
    set_registry(None)
    for name in [m for m in sys.modules if m.startswith("specrun_seed_spread")]:
        sys.modules.pop(name)


def sql(cli, store, query):
    code, out, err = cli("sql", query, "--store", str(store), "-f", "json")
    assert code == 0, err
    return json.loads(out)


def test_a_0_1_analysis_package_validates_applies_and_analyzes_with_a_deprecation_warning(
    seed_spread_installed, write_spec, cli
):
    from specrun.plugins import set_registry

    code, out, err = cli("plugins", "--check")
    assert code == 0, err
    assert err.count(WARNING) == 1 and ADVICE in err and "docs/plugins.md#changes-for-plugin-authors" in err
    assert "1 uses a deprecated form of the plugin API (the warnings above say what to change); none failed" in out

    spec = write_spec(train="max_steps = 3", extra='[[analyses]]\nname = "seed-spread"\n')
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    for command in ("validate", "apply"):
        set_registry(None)  # each command is a process of its own: it loads the plugins and warns again, once
        code, _, err = cli(command, str(spec))
        assert code == 0, err
        assert err.count(WARNING) == 1, err
    assert "seed-spread: computed over 2 runs" in err

    store = Path(__import__("os").environ["SPECRUN_STORE"])
    accuracy = sql(
        cli,
        store,
        "SELECT m.value FROM metrics m JOIN runs r USING (run_id) "
        "WHERE m.final AND m.name = 'accuracy' AND m.split = r.eval_set ORDER BY r.seed",
    )
    values = [r["value"] for r in accuracy]
    assert len(values) == 2
    rows = sql(
        cli,
        store,
        "SELECT key, item, value FROM seed_spread WHERE experiment = 'toy' AND analysis = 'seed-spread' ORDER BY key, item",
    )
    assert [(r["key"], r["item"]) for r in rows] == [("analysis", 0), ("runs", 0)]
    table, count = (json.loads(r["value"]) for r in rows)
    assert count == 2
    assert table["method"] == "lora" and table["runs"] == 2 and table["metric"] == "accuracy"
    assert table["mean"] == pytest.approx(sum(values) / 2)
    assert table["spread"] == pytest.approx(max(values) - min(values))

    set_registry(None)
    code, _, err = cli("analyze", str(spec))
    assert code == 0, err
    assert err.count(WARNING) == 1 and "seed-spread: cached" in err
    set_registry(None)
    code, _, err = cli("analyze", "toy", "--only", "seed-spread", "--force")
    assert code == 0 and "seed-spread: computed over 2 runs" in err, err
    assert sql(cli, store, "SELECT key, item, value FROM seed_spread ORDER BY key, item") == rows

    set_registry(None)
    html = spec.parent / "report.html"
    code, _, err = cli("report", "toy", "-o", str(html), "--no-analyze")
    assert code == 0, err
    text = html.read_text()
    assert (
        "seed-spread" in text
        and "FROM seed_spread WHERE" in text
        and "spread" in text
        and "This analysis failed" not in text
    )


def test_its_0_1_context_takes_run_ids_with_a_deprecation_warning(study, monkeypatch):
    """``AnalysisContext(connection, experiment, run_ids)``, as the package's helper builds it, works on a
    real store: its ``run_ids`` are the ones given, its ``runs`` read from the store."""
    import duckdb

    monkeypatch.syspath_prepend(str(PACKAGE / "src"))
    from specrun_seed_spread.plugin import spread_of

    _, store = study
    with duckdb.connect(str(store), read_only=True) as db:
        ids = [r[0] for r in db.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
        with pytest.warns(
            SpecrunDeprecationWarning,
            match=r"AnalysisContext\(connection, experiment, run_ids\) is the plugin API 0.1 form.*pass runs=",
        ):
            result = spread_of(db, "study", ids)
        assert result["runs"] == 4 and [r["runs"] for r in result["analysis"]] == [4]
        with pytest.warns(SpecrunDeprecationWarning):
            ctx = api.AnalysisContext(db, "study", run_ids=ids[:2])
        assert ctx.run_ids == ids[:2]
        assert [r.run_id for r in ctx.runs] == ids[:2] and all(
            r.method == "lora" and r.status == "completed" for r in ctx.runs
        )
        assert all(
            r.weights and Path(r.weights).exists() for r in ctx.runs
        )  # relative artifact paths resolved at the store
        assert ctx.final_metric("accuracy").keys() == set(ids[:2])
    sys.modules.pop("specrun_seed_spread.plugin", None)
    sys.modules.pop("specrun_seed_spread", None)

    from specrun.errors import AnalysisError

    with pytest.warns(SpecrunDeprecationWarning):
        bare = api.AnalysisContext(None, "e", ["a", "b"])  # as 0.1's own tests built one: no store at all
    assert bare.run_ids == ["a", "b"]
    with pytest.raises(AnalysisError, match="given run ids and no store connection"):
        _ = bare.runs


def test_the_authors_own_tests_hear_of_the_deprecation(monkeypatch):
    from specrun.testing import registry_with

    monkeypatch.syspath_prepend(str(PACKAGE / "src"))
    with pytest.warns(SpecrunDeprecationWarning) as caught:
        registry = registry_with("specrun_seed_spread.plugin")
    [message] = [str(w.message) for w in caught if issubclass(w.category, SpecrunDeprecationWarning)]
    assert (
        "analysis 'seed-spread' from specrun_seed_spread.plugin is written against plugin API 0.1" in message
        and ADVICE in message
    )
    [table] = registry.get("analysis", "seed-spread").tables
    assert (table.name, table.columns) == ("seed_spread", api.LEGACY_RESULT_COLUMNS)
    with (
        warnings.catch_warnings()
    ):  # a second registry from the same module warns again (the plugin is marked, not fixed)
        warnings.simplefilter("error", SpecrunDeprecationWarning)
        with pytest.raises(SpecrunDeprecationWarning):
            registry_with("specrun_seed_spread.plugin")
    sys.modules.pop("specrun_seed_spread.plugin", None)
    sys.modules.pop("specrun_seed_spread", None)


def test_current_plugins_use_no_deprecated_form():
    from specrun.testing import registry_with

    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecrunDeprecationWarning)
        registry = registry_with()
    assert registry.deprecations == []
    assert api.PLUGIN_API_VERSION == "0.2" and api.OLDEST_SUPPORTED_API == "0.1"
    assert all(hasattr(api, name) for name in api.__all__)


def test_ported_as_the_notes_say_it_passes_the_contract_and_agrees_with_its_0_1_self(tmp_path, monkeypatch):
    """The migration notes followed: tables declared, rows returned under the table's name. On one
    hand-made store the ported analysis passes check_analysis, and its rows are what the 0.1 form stored as JSON."""
    from specrun import hookimpl
    from specrun.analysis.engine import AnalysisEntry, run_analyses
    from specrun.plugins.api import ResultTable
    from specrun.store.analyses import query_frame
    from specrun.testing import HandRun, analysis_store, check_analysis, registry_with

    monkeypatch.syspath_prepend(str(PACKAGE / "src"))
    from specrun_seed_spread.plugin import SeedSpread

    class Ported(SeedSpread):
        name = "seed-spread-2"
        tables = (
            ResultTable(
                "seed_spread_2",
                {
                    "method": "VARCHAR",
                    "metric": "VARCHAR",
                    "runs": "INTEGER",
                    "mean": "DOUBLE",
                    "min": "DOUBLE",
                    "max": "DOUBLE",
                    "spread": "DOUBLE",
                },
            ),
        )

        def run(self, options, ctx):
            return {"seed_spread_2": super().run(options, ctx)["analysis"]}

    class Both:
        @hookimpl
        def register_analyses(self, register):
            register(Ported())

    runs = [
        HandRun(method=m, seed=s, metrics={"accuracy": a})
        for m, values in (("full", (0.8, 0.9)), ("lora", (0.7, 0.75, 0.8)))
        for s, a in enumerate(values)
    ]
    store = analysis_store(tmp_path / "s.duckdb", runs)
    with pytest.warns(SpecrunDeprecationWarning):
        registry = registry_with(Both(), "specrun_seed_spread.plugin")
    ported = check_analysis(registry, "seed-spread-2", store=store)["seed_spread_2"]
    assert ported["method"].to_list() == ["full", "lora"] and ported["runs"].to_list() == [2, 3]
    assert ported["spread"].to_list() == pytest.approx([0.1, 0.1])
    [outcome] = run_analyses(
        store, registry, "exp", [AnalysisEntry("seed-spread", "seed-spread", {"metric": "accuracy"})]
    )
    assert outcome.status == "computed", outcome.error
    with store.read() as db:
        stored = query_frame(db, "SELECT value FROM seed_spread WHERE key = 'analysis' ORDER BY item")
    assert [json.loads(v) for v in stored["value"]] == ported.to_dicts()  # the same numbers, to the last bit
    sys.modules.pop("specrun_seed_spread.plugin", None)
    sys.modules.pop("specrun_seed_spread", None)


def test_a_0_1_analysis_that_cannot_be_honoured_fails_at_plugins_check_not_after_training(write_spec, cli):
    """Its results would go to a table named after it: under a name that is specrun's own table, or
    another analysis's, it is refused when the plugins load, and a spec that uses it fails validation."""
    from specrun import hookimpl
    from specrun.plugins import set_registry
    from specrun.plugins.api import AnalysisPlugin
    from specrun.plugins.registry import build_registry, make_plugin_manager

    class Runs(AnalysisPlugin):
        name = "runs"

        def run(self, options, ctx):
            return {"analysis": []}

    class Module:
        @hookimpl
        def register_analyses(self, register):
            register(Runs())

    registry = build_registry(*make_plugin_manager([Module()], entry_points=False))
    [problem] = registry.load_errors
    assert (
        "result table 'runs' is one of specrun's own tables: a plugin API 0.1 analysis (it declares no result tables) "
        "cannot be honoured under this name"
    ) in str(problem) and "declare its tables instead" in str(problem)
    assert registry.deprecations == []
    set_registry(registry)
    code, _, err = cli("validate", str(write_spec(train="max_steps = 2", extra='[[analyses]]\nname = "runs"\n')))
    assert (
        code == 2
        and "analyses.0.name: analysis 'runs' is not available: it comes from a plugin that failed to load" in err
    ), err
