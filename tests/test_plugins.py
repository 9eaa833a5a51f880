"""The plugin host: every hook documented and exercised, duplicates and malformed plugins fail loudly,
third-party plugins arrive through entry points, a broken one is reported by name."""

import inspect
import os
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

REPO = Path(__file__).resolve().parent.parent
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "specrun_spec")]


def test_every_hook_has_a_docstring_and_docs_entry():
    docs = (REPO / "docs" / "plugins.md").read_text()
    assert sorted(HOOKS) == sorted(HOOK_FOR_KIND.values())
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


class ThirdParty:
    """A plugin module the way a third party writes one: hook implementations only."""

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
    pm, _ = make_plugin_manager([ThirdParty()], entry_points=False)
    registry = build_registry(pm)
    assert registry.get("method", "test-nothing").name == "test-nothing"
    assert registry.get("dataset", "test-tiny").load(None, None).splits["train"].text == ("a", "b")
    assert registry.model_sources()[0].resolve("special") == "/resolved"
    ex = Examples.from_columns([0], ["hi"], [0])
    assert registry.get("transform", "test-upper").apply(ex, None, None).text == ("HI",)
    runs = [api.RunInfo(r, "e", "completed", 0, "lora", {}, {}, "validation", "lora") for r in ("a", "b")]
    assert registry.get("analysis", "test-count").run(None, api.AnalysisContext(None, "e", runs)) == {"test_count": [{"runs": 2}]}
    assert registry.entries["transform"]["test-upper"].origin != "builtin"


def test_duplicate_name_names_both_origins():
    class Dup:
        @hookimpl
        def register_methods(self, register):
            class Lora(api.MethodPlugin):
                name = "lora"
            register(Lora())

    pm, _ = make_plugin_manager([Dup()], entry_points=False)
    with pytest.raises(PluginError, match=r"two plugins register the method 'lora': builtin and "):
        build_registry(pm)


@pytest.mark.parametrize("tables,message", [
    ((api.ResultTable("other_name", {"x": "DOUBLE"}),), "must be named 'test_stat' or 'test_stat_<suffix>'"),
    ((api.ResultTable("runs", {"x": "DOUBLE"}),), "must be named"),
    ((api.ResultTable("test_stat", {"experiment": "VARCHAR"}),), "other than experiment and analysis"),
    ((api.ResultTable("test_stat", {"Bad Column": "DOUBLE"}),), "lower-case letters"),
    (({"name": "test_stat"},), "must be ResultTable instances"),
])
def test_malformed_analysis_tables_fail_at_registration(tables, message):
    plugin = type("Stat", (api.AnalysisPlugin,), {"name": "test-stat", "tables": tables})()

    class Module:
        @hookimpl
        def register_analyses(self, register):
            register(plugin)

    pm, _ = make_plugin_manager([Module()], entry_points=False)
    with pytest.raises(PluginError, match=message):
        build_registry(pm)


def test_two_analyses_writing_one_table_fail_naming_both():
    first = type("A", (api.AnalysisPlugin,), {"name": "test", "tables": (api.ResultTable("test_stat", {"x": "DOUBLE"}),)})()
    second = type("B", (api.AnalysisPlugin,), {"name": "test-stat", "tables": (api.ResultTable("test_stat", {"y": "DOUBLE"}),)})()

    class Module:
        @hookimpl
        def register_analyses(self, register):
            register(first)
            register(second)

    pm, _ = make_plugin_manager([Module()], entry_points=False)
    with pytest.raises(PluginError, match="analyses 'test' .* and 'test-stat' .* both write table 'test_stat'"):
        build_registry(pm)


@pytest.mark.parametrize("bad,message", [
    ("NotAPlugin", "not a MethodPlugin"),
    ("BadName", "invalid name"),
    ("LooseOptions", "must forbid unknown keys"),
])
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
        build_registry(pm)


def _fake_distribution(root: Path, dist: str, module: str, code: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"  # as wheels name it
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[specrun]\n{module} = {module}\n")


def test_entry_point_plugins_and_broken_ones(tmp_path):
    _fake_distribution(tmp_path, "specrun-shout", "specrun_shout", """
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
    """)
    _fake_distribution(tmp_path, "specrun-broken", "specrun_broken", "raise ImportError('missing dependency xyz')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SPECRUN_DISABLE_PLUGIN_AUTOLOAD": ""}
    result = subprocess.run([sys.executable, "-m", "specrun", "plugins", "--kind", "transform", "-f", "csv"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "transform,shout,specrun-shout 0.3,appends an exclamation mark" in result.stdout
    assert "plugin 'specrun_broken' from specrun-broken failed to load: ImportError: missing dependency xyz" in result.stderr


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
    result = subprocess.run([sys.executable, "-m", "specrun", "plugins", "-f", "csv"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0
    assert "register_methods" in result.stderr
