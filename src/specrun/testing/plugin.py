"""The pytest plugin specrun installs (entry point ``pytest11``): the fixtures of ``specrun.testing``.

Nothing here is autouse: a project that merely has specrun installed sees no change in its tests."""

from __future__ import annotations

from pathlib import Path

import pytest

INI = "specrun_plugins"
MARK = "specrun_plugins"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        INI,
        type="linelist",
        default=[],
        help="modules with specrun hook implementations that the specrun_registry fixture registers",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARK}(*modules): also register these plugin modules (objects or dotted names) "
        "in the specrun_registry fixture",
    )


@pytest.fixture
def specrun_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An isolated specrun: its store, artifacts and cache under ``tmp_path``, no installed plugins leaking in
    (``SPECRUN_DISABLE_PLUGIN_AUTOLOAD``), offline, and a process registry rebuilt for the test."""
    from specrun.plugins import set_registry

    monkeypatch.setenv("SPECRUN_STORE", str(tmp_path / "store.duckdb"))
    monkeypatch.setenv("SPECRUN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SPECRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("SPECRUN_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    set_registry(None)
    yield tmp_path
    set_registry(None)


@pytest.fixture
def specrun_registry(request: pytest.FixtureRequest, specrun_env):
    """The built-in plugins and the modules under test (the ``specrun_plugins`` ini option, then
    ``@pytest.mark.specrun_plugins(...)``), built strictly and installed as the process registry, so
    the CLI and ``run_spec`` use it too."""
    from specrun.plugins import set_registry
    from specrun.testing.registry import registry_with

    modules = list(request.config.getini(INI))
    for mark in request.node.iter_markers(MARK):
        modules += [m for m in mark.args if m not in modules]
    registry = registry_with(*modules)
    set_registry(registry)
    return registry


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (2 layers, hidden 32) with a real uncased WordPiece tokenizer, saved to a folder."""
    from specrun.testing.toy import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tuned_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT after a short fine-tuning on toy sentences (no head): a backbone with features, for
    method contracts."""
    from specrun.testing.toy import make_tuned_model

    return make_tuned_model(tmp_path_factory.mktemp("tuned-bert"), tiny_model_dir)


@pytest.fixture(scope="session")
def arch_model(tmp_path_factory: pytest.TempPathFactory):
    """``arch_model(model_type)``: the folder of a tiny backbone of that architecture (``bert``, ``roberta``,
    ``gpt_neo``, ``llama``... see ``specrun.testing.architectures``), fine-tuned a little on toy sentences,
    with its own tokenizer; each built once per session."""
    from specrun.testing.architectures import make_arch_model

    built: dict[str, Path] = {}

    def get(model_type: str) -> Path:
        if model_type not in built:
            built[model_type] = make_arch_model(model_type, tmp_path_factory.mktemp(f"tiny-{model_type}"))
        return built[model_type]

    return get


@pytest.fixture
def toy_data(tmp_path: Path) -> Path:
    """A folder with ``train.tsv`` (240 rows) and ``dev.tsv`` (80 rows) of the toy sentiment task."""
    from specrun.testing.toy import write_toy_data

    return write_toy_data(tmp_path / "toy")


@pytest.fixture
def run_spec(specrun_registry, tiny_model_dir: Path, toy_data: Path, tmp_path: Path):
    """``run_spec(toml_text, *args, check=True)``: ``specrun apply`` on a spec in-process; returns a
    ``SpecResult``. ``{tiny_model}``, ``{toy_train}`` and ``{toy_dev}`` in the text are filled in;
    ``specrun.testing.toy_spec(...)`` writes such a spec."""
    from specrun.testing.toy import run_spec as run

    def apply(text: str, *args: str, check: bool = True, command: str = "apply"):
        return run(text, tmp_path, *args, model_dir=tiny_model_dir, toy_data=toy_data, check=check, command=command)

    return apply


@pytest.fixture
def method_contract(specrun_registry, tuned_model_dir: Path, tmp_path: Path):
    """``method_contract(name, options, trains=..., learning_rate=...)``: ``check_method`` on the tuned
    tiny model with the registry under test."""
    from specrun.testing.contracts import check_method

    def check(name: str, options: dict | None = None, **kwargs):
        workdir = tmp_path / f"contract-{name.replace('/', '_')}"
        workdir.mkdir(exist_ok=True)
        return check_method(specrun_registry, name, options, model_dir=tuned_model_dir, workdir=workdir, **kwargs)

    return check


@pytest.fixture
def specrun_cli(specrun_registry):
    """``specrun_cli(*args)``: a ``specrun`` command in-process with the registry under test: (exit
    code, stdout, stderr)."""
    from specrun.testing.toy import run_cli

    return run_cli
