"""The plugin host: every hook documented and exercised, duplicates and malformed plugins fail loudly,
third-party plugins arrive through entry points, a broken one is reported by name."""

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from specrun import hookimpl, hookspecs
from specrun.errors import PluginError
from specrun.examples import Dataset, Examples
from specrun.plugins import api
from specrun.plugins.registry import HOOK_FOR_KIND, build_registry, make_plugin_manager
from specrun.plugins.tasks.classification import Classification
from specrun.testing import registry_with

REPO = Path(__file__).resolve().parent.parent
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "specrun_spec")]


#: Hooks that add to something other than the plugin registry, or are told of runs.
OTHER_HOOKS = ["register_commands", "on_run_start", "on_run_end", "on_train_window", "on_evaluation"]


def test_every_hook_has_a_docstring_and_docs_entry():
    docs = (REPO / "docs" / "plugins.md").read_text()
    assert sorted(HOOKS) == sorted([*HOOK_FOR_KIND.values(), *OTHER_HOOKS])
    for name in HOOKS:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hook {name} has no docstring"
        assert f"`{name}`" in docs, f"hook {name} is not documented in docs/plugins.md"


def test_every_hook_is_exercised_by_this_file():
    source = Path(__file__).read_text()
    for name in HOOKS:
        assert f"def {name}(" in source, f"no test implements hook {name}"


class Upper(api.TransformPlugin):
    name = "test-upper"
    description = "upper-cases text"

    def apply(self, examples, options, ctx):
        return examples.replace(text=[t.upper() for t in examples.text])


class Nothing(api.MethodPlugin):
    name = "test-nothing"

    def build(self, options, ctx):
        return ctx.load_backbone()


class Tiny(api.DatasetSource):
    name = "test-tiny"

    def load(self, options, ctx):
        ex = Examples.from_columns([0, 1], ["a", "b"], [0, 1])
        return Dataset(self.name, ("x", "y"), {"train": ex, "validation": ex})


class Nowhere(api.ModelSource):
    name = "test-nowhere"
    priority = 1

    def resolve(self, model_name):
        return "/resolved" if model_name == "special" else None


class Count(api.AnalysisPlugin):
    name = "test-count"
    tables = (api.ResultTable("test_count", {"runs": "INTEGER"}),)

    def run(self, options, ctx):
        return {"test_count": [{"runs": len(ctx.run_ids)}]}


class Smoothed(Classification):
    name = "test-smoothed"


class ThirdParty:
    """A plugin module the way a third party writes one: hook implementations only."""

    @hookimpl
    def register_tasks(self, register):
        register(Smoothed())

    @hookimpl
    def register_methods(self, register):
        register(Nothing())

    @hookimpl
    def register_datasets(self, register):
        register(Tiny())

    @hookimpl
    def register_model_sources(self, register):
        register(Nowhere())

    @hookimpl
    def register_transforms(self, register):
        register(Upper())

    @hookimpl
    def register_analyses(self, register):
        register(Count())


def test_third_party_plugin_registers_every_kind():
    registry = registry_with(ThirdParty())  # specrun.testing's strict registry, as a plugin author's tests build it
    assert registry.get("method", "test-nothing").name == "test-nothing"
    assert registry.get("dataset", "test-tiny").load(None, None).splits["train"].text == ("a", "b")
    assert registry.model_sources()[0].resolve("special") == "/resolved"
    ex = Examples.from_columns([0], ["hi"], [0])
    assert registry.get("transform", "test-upper").apply(ex, None, None).text == ("HI",)
    runs = [api.RunInfo(r, "e", "completed", 0, "lora", {}, {}, "validation", "lora") for r in ("a", "b")]
    assert registry.get("analysis", "test-count").run(None, api.AnalysisContext(None, "e", runs)) == {
        "test_count": [{"runs": 2}]
    }
    assert registry.entries["transform"]["test-upper"].origin != "builtin"
    assert registry.get("task", "test-smoothed").metrics[0] == "accuracy"
    assert registry.entries["task"]["test-smoothed"].origin != "builtin"


class Dup:
    """A plugin module whose method takes a built-in's name."""

    @hookimpl
    def register_methods(self, register):
        register(type("Lora", (api.MethodPlugin,), {"name": "lora"})())
        register(Nothing())


def test_duplicate_name_is_skipped_naming_both_origins():
    pm, problems = make_plugin_manager([Dup()], entry_points=False)
    registry = build_registry(pm, problems)
    assert registry.entries["method"]["lora"].origin == "builtin"  # the built-in stays
    assert registry.get("method", "test-nothing").name == "test-nothing"  # the module's other plugin too
    [problem] = registry.load_errors
    assert str(problem).startswith("two plugins register the method 'lora': builtin and ")
    assert "the built-in is used and the one from" in str(problem) and "SPECRUN_DISABLE_PLUGINS=" in str(problem)


def test_duplicate_name_fails_in_strict_mode():
    pm, _ = make_plugin_manager([Dup()], entry_points=False)
    with pytest.raises(PluginError, match=r"two plugins register the method 'lora': builtin and "):
        build_registry(pm, strict=True)


class HalfThenRaise:
    """A plugin module whose register hook registers one transform, then raises."""

    @hookimpl
    def register_transforms(self, register):
        register(Upper())
        raise RuntimeError("cannot find my config file")

    @hookimpl
    def register_datasets(self, register):
        register(Tiny())


def test_a_raising_register_hook_is_skipped_whole():
    pm, problems = make_plugin_manager([HalfThenRaise()], entry_points=False)
    registry = build_registry(pm, problems)
    assert "test-upper" not in registry.names("transform"), "what the hook registered before it raised is taken back"
    assert "test-tiny" in registry.names("dataset"), "the module's other hooks still count"
    [problem] = registry.load_errors
    assert "failed in register_transforms: RuntimeError: cannot find my config file" in str(problem)
    assert "its transforms are skipped" in str(problem)
    with pytest.raises(PluginError, match="failed in register_transforms: RuntimeError"):
        build_registry(make_plugin_manager([HalfThenRaise()], entry_points=False)[0], strict=True)


@pytest.mark.parametrize(
    "tables,message",
    [
        ((api.ResultTable("other_name", {"x": "DOUBLE"}),), "must be named 'test_stat' or 'test_stat_<suffix>'"),
        ((api.ResultTable("runs", {"x": "DOUBLE"}),), "must be named"),
        ((api.ResultTable("test_stat", {"experiment": "VARCHAR"}),), "other than experiment and analysis"),
        ((api.ResultTable("test_stat", {"Bad Column": "DOUBLE"}),), "lower-case letters"),
        (({"name": "test_stat"},), "must be ResultTable instances"),
    ],
)
def test_malformed_analysis_tables_fail_at_registration(tables, message):
    plugin = type("Stat", (api.AnalysisPlugin,), {"name": "test-stat", "tables": tables})()

    class Module:
        @hookimpl
        def register_analyses(self, register):
            register(plugin)

    pm, _ = make_plugin_manager([Module()], entry_points=False)
    with pytest.raises(PluginError, match=message):
        build_registry(pm, strict=True)
    registry = build_registry(pm)  # as specrun loads plugins: the analysis is skipped with the same reason
    assert "test-stat" not in registry.names("analysis")
    assert re.search(message, str(registry.load_errors[0])) and "it is skipped" in str(registry.load_errors[0])


def test_two_analyses_writing_one_table_fail_naming_both():
    first = type(
        "A", (api.AnalysisPlugin,), {"name": "test", "tables": (api.ResultTable("test_stat", {"x": "DOUBLE"}),)}
    )()
    second = type(
        "B", (api.AnalysisPlugin,), {"name": "test-stat", "tables": (api.ResultTable("test_stat", {"y": "DOUBLE"}),)}
    )()

    class Module:
        @hookimpl
        def register_analyses(self, register):
            register(first)
            register(second)

    pm, _ = make_plugin_manager([Module()], entry_points=False)
    with pytest.raises(PluginError, match=r"analyses 'test' .* and 'test-stat' .* both write table 'test_stat'"):
        build_registry(pm, strict=True)


@pytest.mark.parametrize(
    "bad,message",
    [
        ("NotAPlugin", "not a MethodPlugin"),
        ("BadName", "invalid name"),
        ("LooseOptions", "must forbid unknown keys"),
    ],
)
def test_malformed_plugins_fail_loudly(bad, message):
    from pydantic import BaseModel

    class LooseOpts(BaseModel):
        x: int = 1

    plugins = {
        "NotAPlugin": object(),
        "BadName": type("B", (api.MethodPlugin,), {"name": "Bad Name"})(),
        "LooseOptions": type("L", (api.MethodPlugin,), {"name": "loose", "Options": LooseOpts})(),
    }

    class Module:
        @hookimpl
        def register_methods(self, register):
            register(plugins[bad])

    pm, _ = make_plugin_manager([Module()], entry_points=False)
    with pytest.raises(PluginError, match=message):
        build_registry(pm, strict=True)
    registry = build_registry(pm)
    assert [message in str(p) for p in registry.load_errors] == [True]


def _fake_distribution(root: Path, dist: str, module: str, code: str, version: str = "0.3") -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"  # as wheels name it
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[specrun]\n{module} = {module}\n")


def test_entry_point_plugins_and_broken_ones(tmp_path):
    _fake_distribution(
        tmp_path,
        "specrun-shout",
        "specrun_shout",
        """
        from specrun import hookimpl
        from specrun.plugins.api import TransformPlugin

        class Shout(TransformPlugin):
            name = "shout"
            description = "appends an exclamation mark"
            def apply(self, examples, options, ctx):
                return examples.replace(text=[t + "!" for t in examples.text])

        @hookimpl
        def register_transforms(register):
            register(Shout())
    """,
    )
    _fake_distribution(tmp_path, "specrun-broken", "specrun_broken", "raise ImportError('missing dependency xyz')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SPECRUN_DISABLE_PLUGIN_AUTOLOAD": ""}
    result = subprocess.run(
        [sys.executable, "-m", "specrun", "plugins", "--kind", "transform", "-f", "csv"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "transform,shout,specrun-shout 0.3,appends an exclamation mark" in result.stdout
    assert (
        "plugin 'specrun_broken' from specrun-broken 0.3 failed to load: ImportError: missing dependency xyz"
        in result.stderr
    )


def test_plugins_command_lists_builtins_with_options(cli):
    code, out, _ = cli("plugins", "-f", "csv")
    assert code == 0
    assert "method,lora,builtin," in out and "rank=8" in out
    assert "dataset,glue/sst2,builtin" in out and "model_source,bundled-minilm,builtin" in out
    # defaults built by a factory show their value; only options without a default are "(required)"
    assert 'char_ops=[""substitute"", ""insert"", ""delete"", ""swap""]' in out
    assert "teacher=(required), n=(required), strategy=(required), mix=null" in out
    code, _, err = cli("plugins", "--kind", "gadget")
    assert code == 2 and "Invalid value for '--kind'" in err


def test_trace_plugins_env(tmp_path):
    env = {**os.environ, "SPECRUN_TRACE_PLUGINS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "specrun", "plugins", "-f", "csv"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0
    assert "register_methods" in result.stderr


# --- resilient loading of installed plugins, in-process ---------------------------------------------

CLASH = """
    from specrun import hookimpl
    from specrun.plugins.api import MethodPlugin, TransformPlugin

    class Lora(MethodPlugin):
        name = "lora"

    class Shout(TransformPlugin):
        name = "shout"
        description = "appends an exclamation mark"
        version = "2"
        def apply(self, examples, options, ctx):
            return examples.replace(text=[t + "!" for t in examples.text])

    class Whisper(TransformPlugin):
        name = "whisper"
        def apply(self, examples, options, ctx):
            return examples.replace(text=[t.lower() for t in examples.text])

    @hookimpl
    def register_methods(register):
        register(Lora())

    @hookimpl
    def register_transforms(register):
        register(Shout())
        register(Whisper())
"""
RAISES = """
    from specrun import hookimpl

    @hookimpl
    def register_methods(register):
        raise RuntimeError("no licence key")
"""


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Install fake plugin distributions on sys.path for this test: ``installed(dist, module, code)``;
    entry points load again (autoload on) and the modules are forgotten afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "")
    modules = []

    def install(dist: str, module: str, code: str, version: str = "0.3") -> None:
        folder = root / f"{module}-{version}"
        folder.mkdir()
        monkeypatch.syspath_prepend(str(folder))
        _fake_distribution(folder, dist, module, code, version)
        modules.append(module)

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def test_colliding_and_raising_plugins_are_skipped_and_other_specs_work(installed, write_spec, cli):
    from specrun.plugins import set_registry

    installed("specrun-clash", "specrun_clash", CLASH)
    installed("specrun-raises", "specrun_raises", RAISES)
    installed("specrun-loha", "specrun_loha", "raise ImportError('No module named lycoris')\n")
    spec = write_spec(train="max_steps = 2", extra='[[data.transforms]]\nname = "shout"\n')
    code, out, err = cli("validate", str(spec))
    assert code == 0, err
    assert "ok (1 run(s))" in out
    assert (
        "warning: two plugins register the method 'lora': builtin and specrun-clash 0.3; the built-in is used and the one "
        "from specrun-clash 0.3 is skipped (rename the plugin in specrun-clash, or set SPECRUN_DISABLE_PLUGINS=specrun_clash "
        "to leave it out)"
    ) in err
    assert (
        "warning: plugin specrun-raises 0.3 failed in register_methods: RuntimeError: no licence key (its methods are "
        "skipped: fix or uninstall it, or set SPECRUN_DISABLE_PLUGINS=specrun_raises)"
    ) in err
    assert (
        "warning: plugin 'specrun_loha' from specrun-loha 0.3 failed to load: ImportError: No module named lycoris"
        in err
    )

    set_registry(None)  # each command is a process of its own: it loads the plugins and warns again
    code, _, err = cli("apply", str(spec))  # the clashing package's other plugins work
    assert code == 0, err
    assert err.count("warning: two plugins register the method 'lora'") == 1
    [(run_id, environment)] = run_rows("SELECT run_id, environment FROM runs")
    assert json.loads(environment)["plugins"] == {"specrun-clash": "0.3"}  # the package whose shout the run used
    set_registry(None)
    code, out, err = cli("predict", run_id, "a great film")
    assert code == 0, err
    assert "failed to load: ImportError: No module named lycoris" in err and "failed in register_methods" in err

    set_registry(None)
    code, out, err = cli("plugins", "--check")
    assert code == 1
    assert "error: 39 plugins loaded; 3 failed to load (the warnings above say which and what to do)" in err


def run_rows(query: str) -> list[tuple]:
    from specrun.store import Store
    from specrun.store.query import run_query

    return run_query(Store(Path(os.environ["SPECRUN_STORE"])), query)[1]


def test_an_unknown_name_from_a_plugin_that_failed_to_load_says_so(installed, write_spec, cli):
    installed("specrun-loha", "specrun_loha", "raise ImportError('No module named lycoris')\n")
    code, _, err = cli("validate", str(write_spec(method='name = "loha"')))
    assert code == 2
    assert (
        "method.name: method 'loha' is not available: it comes from a plugin that failed to load: plugin 'specrun_loha' "
        "from specrun-loha 0.3 failed to load: ImportError: No module named lycoris"
    ) in err
    assert "did you mean" not in err
    code, _, err = cli("plugins", "loha")
    assert code == 2 and "it comes from a plugin that failed to load: plugin 'specrun_loha'" in err
    # a name no failed plugin explains still gets the failure first, and the suggestion after it
    code, _, err = cli("validate", str(write_spec(method='name = "lorra"')))
    assert code == 2
    assert "unknown method 'lorra'; it may come from a plugin that failed to load: plugin 'specrun_loha'" in err
    assert err.index("failed to load") < err.index("did you mean 'lora'?")


def test_disable_plugins_by_package_entry_point_or_name(installed, write_spec, cli, monkeypatch):
    from specrun.plugins import set_registry

    installed("specrun-clash", "specrun_clash", CLASH)
    installed("specrun-raises", "specrun_raises", RAISES)
    monkeypatch.setenv("SPECRUN_DISABLE_PLUGINS", "specrun-clash, specrun_raises,bitfit")
    code, out, err = cli("plugins", "--check")
    assert code == 0, err
    assert "warning" not in err and "36 plugins loaded; none failed" in out  # the 37 built-ins less bitfit
    code, _, err = cli("validate", str(write_spec(method='name = "bitfit"')))
    assert code == 2 and "method.name: method 'bitfit' is disabled by SPECRUN_DISABLE_PLUGINS" in err
    monkeypatch.setenv("SPECRUN_DISABLE_PLUGINS", "specrun-clsh")
    set_registry(None)
    code, _, err = cli("validate", str(write_spec()))
    assert code == 0
    assert (
        "warning: SPECRUN_DISABLE_PLUGINS names 'specrun-clsh', which is no installed plugin, entry point or package"
        in err
    )


def test_plugin_versions_in_run_ids(installed, write_spec, registry):
    """A plugin's own ``version`` enters run ids (a new package release leaves its runs cached); one
    without falls back to its package's version; built-ins keep <specrun results version>/<plugin version>,
    so a specrun release that keeps results (specrun.version.RESULTS_VERSION) keeps a store's runs cached."""
    from specrun.plugins.registry import module_version
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec
    from specrun.version import RESULTS_VERSION

    lora = registry.get("method", "lora")
    assert registry.code_version("method", "lora") == f"{module_version(lora)}/{lora.version}" == f"{RESULTS_VERSION}/1"

    def planned(version: str) -> tuple[dict, dict]:
        installed("specrun-clash", "specrun_clash", CLASH, version)
        from specrun.plugins import get_registry, set_registry

        set_registry(None)
        found = get_registry()
        ids = {}
        for transform in ("shout", "whisper"):
            spec = write_spec(extra=f'[[data.transforms]]\nname = "{transform}"\n', name=transform)
            ids[transform] = plan_runs(load_spec(spec, registry=found), found)[0].run_id
        sys.modules.pop("specrun_clash")
        return ids, {t: found.code_version("transform", t) for t in ids}

    first, versions = planned("0.3")
    assert versions == {"shout": "2", "whisper": "0.3"}
    second, versions = planned("0.4")
    assert versions == {"shout": "2", "whisper": "0.4"}
    assert first["shout"] == second["shout"], "a release that does not bump shout's version keeps its runs"
    assert first["whisper"] != second["whisper"], "a plugin without a version of its own follows its package"


def test_plugins_name_shows_options_with_types_defaults_and_descriptions(cli):
    code, out, err = cli("plugins", "few_shot")
    assert code == 0, err
    assert out.startswith("few_shot (transform) from builtin, version ")
    rows = [line for line in out.splitlines() if line.startswith("│ ")]
    assert any(" k " in r and "int | None" in r and "null" in r and "examples per class" in r for r in rows), out
    code, out, _ = cli("plugins", "lora", "-f", "csv")
    assert code == 0 and out.startswith("option,type,default,description\nrank,int,8,")
    code, _, err = cli("plugins", "lorra")
    assert code == 2 and "no plugin is called 'lorra' (did you mean 'lora'?)" in err
    code, _, err = cli("plugins", "rank", "--kind", "method")
    assert code == 2 and "unknown method 'rank'" in err


COMMANDS = """
    import typer
    from specrun import hookimpl
    from specrun.errors import UsageError

    @hookimpl
    def register_commands(app):
        @app.command()
        def hello(name: str = typer.Option("world", help="who to greet")):
            \"\"\"Say hello.\"\"\"
            if name == "nobody":
                raise UsageError("nobody to greet")
            typer.echo(f"hello {name}")

        @app.command("apply")
        def my_apply():
            typer.echo("not specrun's apply")
"""


def test_plugins_add_commands(installed, cli):
    installed("specrun-hello", "specrun_hello", COMMANDS)
    installed(
        "specrun-badcmd",
        "specrun_badcmd",
        """
        from specrun import hookimpl

        @hookimpl
        def register_commands(app):
            @app.command()
            def half():
                pass
            raise ValueError("typo in my plugin")
    """,
    )
    code, out, err = cli("hello", "--name", "Ada")
    assert (code, out) == (0, "hello Ada\n"), err
    assert (
        "warning: plugin specrun-hello 0.3 adds the command 'apply', which specrun or another plugin already has; it is "
        "skipped (rename it in specrun-hello, or set SPECRUN_DISABLE_PLUGINS=specrun_hello)"
    ) in err
    assert "warning: plugin specrun-badcmd 0.3 failed in register_commands: ValueError: typo in my plugin" in err
    code, _, err = cli("half")
    assert code == 2 and "No such command 'half'" in err
    code, _, err = cli("hello", "--name", "nobody")
    assert (code, err.strip().splitlines()[-1]) == (2, "error: nobody to greet")
    code, out, _ = cli("apply", "--help")
    assert code == 0 and "Run every run of SPEC" in out  # specrun's own apply
    code, _, err = cli("plugins", "--check")
    assert code == 1 and "2 failed to load" in err


def test_plugin_commands_do_not_outlive_the_command_line(installed, cli):
    from specrun.cli import app

    own = list(app.registered_commands)
    installed("specrun-hello", "specrun_hello", COMMANDS)
    assert cli("hello")[:2] == (0, "hello world\n")
    assert app.registered_commands == own


def register_commands(app):  # a plugin module's hook, registered by the test below
    @app.command("kit-hello")
    def kit_hello():
        import typer

        typer.echo("hello from a module under test")


register_commands = hookimpl(register_commands)


@pytest.mark.specrun_plugins(sys.modules[__name__])
def test_the_kit_registers_commands_of_the_modules_under_test(specrun_cli):
    assert specrun_cli("kit-hello")[:2] == (0, "hello from a module under test\n")


def test_environment_names_the_plugin_packages_a_run_config_uses(installed, write_spec):
    """``plugin_packages`` with a run's config: only the packages of its method, dataset, transforms and
    the model source that resolves its model (``environment_info`` takes the config for it)."""
    import torch

    from specrun.plugins import get_registry
    from specrun.plugins.registry import plugin_packages
    from specrun.runner.execute import environment_info
    from specrun.spec.load import load_spec

    installed("specrun-clash", "specrun_clash", CLASH)
    installed(
        "specrun-models",
        "specrun_models",
        """
        from specrun import hookimpl
        from specrun.plugins.api import ModelSource

        class Aliases(ModelSource):
            name = "aliases"
            priority = 5
            def resolve(self, model_name):
                return "/models/bert" if model_name == "my-bert" else None

        @hookimpl
        def register_model_sources(register):
            register(Aliases())
    """,
        version="1.2",
    )
    registry = get_registry()
    plain = load_spec(write_spec(), registry=registry).runs[0].config
    shouting = (
        load_spec(write_spec(extra='[[data.transforms]]\nname = "shout"\n', name="shouting"), registry=registry)
        .runs[0]
        .config
    )
    assert plugin_packages(registry) == {"specrun-clash": "0.3", "specrun-models": "1.2"}
    assert plugin_packages(registry, plain) == {}
    assert plugin_packages(registry, shouting) == {"specrun-clash": "0.3"}
    aliased = {**plain, "model": {**plain["model"], "name": "my-bert"}}
    assert plugin_packages(registry, aliased) == {"specrun-models": "1.2"}
    assert environment_info(torch.device("cpu"), None, shouting)["plugins"] == {"specrun-clash": "0.3"}


def test_a_name_taken_by_another_plugin_is_not_offered_as_the_cause_of_an_unknown_name():
    registry = build_registry(*make_plugin_manager([Dup()], entry_points=False))
    with pytest.raises(PluginError) as info:
        registry.get("method", "top-layers")
    assert str(info.value).startswith("unknown method 'top-layers'; known: ") and "two plugins" not in str(info.value)


# --- run lifecycle hooks -------------------------------------------------------------------------


class RunLog:
    """A plugin object that records what the run lifecycle hooks are told, and what the store holds then."""

    def __init__(self, store):
        self.store = store
        self.calls = []

    @hookimpl
    def on_run_start(self, task):
        self.calls.append(("start", task, None, self._status(task.run_id)))

    @hookimpl
    def on_run_end(self, task, record):
        self.calls.append(("end", task, record, self._status(task.run_id)))

    def _status(self, run_id):
        from specrun.store import Store
        from specrun.store.runs import statuses

        return statuses(Store(self.store), [run_id]).get(run_id)


def test_lifecycle_hooks_are_told_of_each_run_with_its_task_and_record(write_spec, cli, tmp_path):
    from specrun.plugins import set_registry
    from specrun.runner.task import RunRecord, RunTask

    log = RunLog(tmp_path / "store.duckdb")
    set_registry(registry_with(log))
    spec = write_spec(train="max_steps = 2")
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    [(start, task, _, claimed), (end, same_task, record, written)] = log.calls
    assert (start, end, claimed, written) == (
        "start",
        "end",
        "running",
        "completed",
    )  # the end comes once the store has it
    assert isinstance(task, RunTask) and same_task is task and task.kind == "train" and task.experiment == "toy"
    assert isinstance(record, RunRecord) and record.status == "completed" and record.run_id == task.run_id
    accuracy = json.loads(cli("sql", "SELECT accuracy FROM run_summary", "-f", "json")[1])[0]["accuracy"]
    assert record.final()[("validation", "accuracy")] == accuracy
    assert [Path(a.path).is_file() and Path(a.path).is_absolute() for a in record.artifacts] == [True]

    assert cli("apply", str(spec))[0] == 0
    assert len(log.calls) == 2, "a cached run does not execute: no hooks"
    spec.write_text(spec.read_text().replace("[method]", "[data.eval_sets.again]\n\n[method]"))
    assert cli("apply", str(spec))[0] == 0
    assert [(c[0], c[1].kind, c[2] and c[2].status) for c in log.calls[2:]] == [
        ("start", "evaluate", None),
        ("end", "evaluate", "evaluated"),
    ]


class LiveLog:
    """A plugin object that records what the live tracking hooks hear, in order, with the lifecycle's."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def on_run_start(self, task):
        self.calls.append(("start", task.run_id, None, None))

    @hookimpl
    def on_train_window(self, task, step, metrics):
        self.calls.append(("window", task.run_id, step, [(m.step, m.split, m.name, m.value) for m in metrics]))

    @hookimpl
    def on_evaluation(self, task, step, metrics):
        self.calls.append(("evaluation", task.run_id, step, [(m.step, m.split, m.name, m.value) for m in metrics]))

    @hookimpl
    def on_run_end(self, task, record):
        self.calls.append(
            ("end", task.run_id, None, [(m.step, m.split, m.name, m.value) for m in record.metrics if not m.final])
        )


def test_live_hooks_hear_each_window_and_evaluation_before_the_run_ends(write_spec, cli, tmp_path):
    from specrun.plugins import set_registry

    live = LiveLog()
    set_registry(registry_with(live))
    spec = write_spec(train="max_steps = 5\neval_every = 2", extra="[tracking]\nevery = 2")
    code, _, err = cli("apply", str(spec), "--store", str(tmp_path / "s.duckdb"))
    assert code == 0, err
    kinds = [(c[0], c[2]) for c in live.calls]
    assert kinds == [
        ("start", None),
        ("window", 2),
        ("evaluation", 2),
        ("window", 4),
        ("evaluation", 4),
        ("evaluation", 5),
        ("end", None),
    ]
    windows = [c[3] for c in live.calls if c[0] == "window"]
    assert [[(step, split, name) for step, split, name, _ in w] for w in windows] == [
        [(s, "train", "loss"), (s, "train", "learning_rate")] for s in (2, 4)
    ]
    assert all(v > 0 for w in windows for *_, v in w)
    heard = [row for c in live.calls if c[0] == "evaluation" for row in c[3]]
    assert heard == live.calls[-1][3], "the evaluations heard live are the learning curve the record carries"
    assert {name for _, split, name, _ in heard if split == "validation"} >= {"accuracy", "f1", "loss"}


def test_tracking_settings_do_not_change_run_ids(write_spec, cli, tmp_path):
    ids = []
    for extra in ("", '[tracking]\nevery = 3\ntrackers = ["tensorboard"]\ntensorboard_dir = "tb"'):
        path = write_spec(train="max_steps = 2", extra=extra)
        code, out, err = cli("plan", str(path), "--store", str(tmp_path / "p.duckdb"), "-f", "json")
        assert code == 0, err
        ids.append(sorted(r["run_id"] for r in json.loads(out)))
    assert ids[0] == ids[1] and len(ids[0]) == 1


def _module(name: str, source: str):
    """A plugin module made from ``source`` (named like an installed one)."""
    import types

    module = types.ModuleType(name)
    exec(textwrap.dedent(source), module.__dict__)
    return module


def test_a_raising_lifecycle_hook_is_a_warning_naming_its_plugin_and_the_run_completes(write_spec, cli, tmp_path):
    from specrun.plugins import set_registry

    broken = _module(
        "specrun_broken_tracker",
        """
        from specrun import hookimpl

        @hookimpl
        def on_run_start(task):
            raise ConnectionError("tracking server down")

        @hookimpl
        def on_run_end(task, record):
            raise ConnectionError("still down")
    """,
    )
    log = RunLog(tmp_path / "store.duckdb")
    set_registry(registry_with(broken, log))
    code, _, err = cli("apply", str(write_spec(train="max_steps = 2")))
    assert code == 0, err
    [run_id] = [c[1].run_id for c in log.calls if c[0] == "start"]
    assert (
        f"plugin specrun_broken_tracker failed in on_run_start for run {run_id}: ConnectionError: tracking server down "
        "(the run is not affected; fix or uninstall the plugin)"
    ) in err
    assert f"plugin specrun_broken_tracker failed in on_run_end for run {run_id}: ConnectionError: still down" in err
    assert [(c[0], c[3]) for c in log.calls] == [("start", "running"), ("end", "completed")], (
        "the other plugin is still told"
    )
    assert "1 completed" in err
