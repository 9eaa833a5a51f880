"""docs/architecture.md and the import contracts in pyproject.toml stay one thing, and the contracts hold."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "specrun"


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _contract(contract_id: str) -> dict:
    found = [c for c in _config()["contracts"] if c.get("id") == contract_id]
    assert len(found) == 1, f"pyproject.toml has {len(found)} import contracts with id {contract_id!r}"
    return found[0]


def _doc_layers() -> list[str]:
    """The layer expressions of the page's layer list (the first ```text block after its heading)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## The layers, top to bottom", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    # a line is the layer expression, then two or more spaces, then what the layer holds
    return [" ".join(re.split(r"\s{2,}", line.strip())[0].split()) for line in block.splitlines() if line.strip()]


def _names(expression: str) -> list[str]:
    return [part.strip() for part in re.split(r"[|:]", expression)]


def _module_exists(dotted: str) -> bool:
    path = SRC.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_the_import_contract_config_parses_and_names_the_promised_contracts():
    config = _config()
    assert config["root_package"] == "specrun"
    assert {c["type"] for c in config["contracts"]} >= {"layers", "forbidden", "acyclic_siblings"}
    builtins = _contract("builtins")
    assert set(builtins["forbidden_modules"]) == {
        f"specrun.plugins.{p}" for p in ("methods", "datasets", "models", "transforms", "analyses", "tasks")
    }
    store = _contract("runs-without-store")
    assert set(store["source_modules"]) == {"specrun.runner", "specrun.executors"}
    assert store["forbidden_modules"] == ["specrun.store"]


def test_the_documented_layers_are_the_contract_layers_in_order():
    contract = _contract("layers")
    assert contract["containers"] == ["specrun"]
    documented = _doc_layers()
    declared = [" ".join(layer.split()) for layer in contract["layers"]]
    missing = [layer for layer in declared if layer not in documented]
    extra = [layer for layer in documented if layer not in declared]
    assert not missing, f"layers in pyproject.toml but not in docs/architecture.md: {missing}"
    assert not extra, f"layers in docs/architecture.md but not in pyproject.toml: {extra}"
    assert documented == declared, "docs/architecture.md lists the layers in another order than the contract"


def test_every_layer_names_a_module_that_exists_once():
    names = [name for layer in _contract("layers")["layers"] for name in _names(layer)]
    assert len(names) == len(set(names)), "a module stands in two layers"
    assert [n for n in names if not _module_exists(n)] == []


def test_every_top_level_part_of_specrun_stands_in_a_layer():
    """A new module or package under src/specrun is placed in a layer (or named here as outside them)."""
    outside = {
        "__init__",
        "__main__",
        "py",
        "plugins",
        "spec",
    }  # the package's faces; plugins/spec place their modules one by one
    layered = {name.split(".")[0] for layer in _contract("layers")["layers"] for name in _names(layer)}
    present = {p.stem for p in SRC.iterdir() if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert present - layered - outside == set()
    plugin_modules = {p.stem for p in (SRC / "plugins").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    spec_modules = {p.stem for p in (SRC / "spec").iterdir() if p.suffix == ".py"}
    named = {name for layer in _contract("layers")["layers"] for name in _names(layer)}
    assert {f"plugins.{m}" for m in plugin_modules if m != "__init__"} - named == set()
    assert {f"spec.{m}" for m in spec_modules if m != "__init__"} - named == set()


def test_the_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
