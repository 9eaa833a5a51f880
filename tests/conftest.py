"""Shared fixtures, on ``specrun.testing`` (the kit plugin authors use, a pytest plugin installed with
specrun): an isolated store and registry per test, a tiny random BERT, a learnable toy dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from specrun.testing import run_cli, toy_rows, write_toy_data  # noqa: F401  (tests import run_cli, toy_rows from here)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

os.environ.setdefault("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "")  # tests decide per test (see `registry`)
os.environ["SPECRUN_STRICT_WARNINGS"] = "1"  # commands run in-process keep the suite's warnings policy (specrun.logs)


def pytest_configure(config):
    """The known library deprecations (specrun.logs, each with its reason) are the only ones allowed."""
    from specrun.logs import KNOWN_LIBRARY_DEPRECATIONS

    for message, category, module, _reason in KNOWN_LIBRARY_DEPRECATIONS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}:{module}")


@pytest.fixture(autouse=True)
def isolated(specrun_env, monkeypatch):
    """Each test gets specrun.testing's isolation (its own store and artifacts, no installed plugins, a
    fresh registry) and real data from ../shared/data."""
    monkeypatch.setenv("SPECRUN_DATA_DIR", str(SHARED_DATA))
    yield


@pytest.fixture
def registry():
    """A registry of the built-in plugins only."""
    from specrun.testing import registry_with

    return registry_with()


@pytest.fixture
def write_spec(tmp_path, tiny_model_dir, toy_data):
    """Write a spec for the tiny model and toy data; keyword sections override or extend the defaults."""

    def write(
        text: str | None = None,
        *,
        method: str = 'name = "lora"\nrank = 4',
        train: str = "",
        extra: str = "",
        name: str = "toy",
    ) -> Path:
        body = (
            text
            or f"""
[experiment]
name = "{name}"
seeds = [0]

[model]
name = "{tiny_model_dir}"
max_length = 32

[data]
dataset = "local"
eval_split = "validation"
[data.options]
files = {{ train = "{toy_data / "train.tsv"}", validation = "{toy_data / "dev.tsv"}" }}

[method]
{method}

[train]
batch_size = 16
precision = "fp32"
{train or "epochs = 2"}

{extra}
"""
        )
        path = tmp_path / f"{name}.toml"
        path.write_text(body)
        return path

    return write


@pytest.fixture
def cli():
    return run_cli


# --- a study for analyses and reports: 4 LoRA runs on the tiny model, every built-in analysis ------

ANALYSES = """
[[analyses]]
name = "bootstrap_ci"

[[analyses]]
name = "paired_comparison"
eval_sets = ["validation", "noisy"]
pairs = "all"

[[analyses]]
name = "efficiency"

[[analyses]]
name = "learning_curves"

[[analyses]]
name = "sensitivity"
x = "data.max_train_examples"
y = "seed"

[[analyses]]
name = "scaling"

[[analyses]]
name = "lora_svd"

[[analyses]]
name = "correlation"
x = "cost.train_examples"
y = "accuracy"
"""


def study_spec(model: Path, data: Path, analyses: str = ANALYSES, name: str = "study") -> str:
    return f"""
[experiment]
name = "{name}"
description = "LoRA on the toy task at two training-set sizes"
seeds = [0, 1]

[model]
name = "{model}"
max_length = 32

[data]
dataset = "local"
eval_split = "validation"
[data.options]
files = {{ train = "{data / "train.tsv"}", validation = "{data / "dev.tsv"}" }}

[data.eval_sets.noisy]
transforms = [{{ name = "noise", mode = "replace", char_rate = 0.1, seed = 5 }}]

[method]
name = "lora"
rank = 4

[train]
batch_size = 16
precision = "fp32"
epochs = 3
learning_rate = 2e-2
eval_every = 8

[sweep]
"data.max_train_examples" = [120, 240]
{analyses}
[report]
path = "{data.parent / "study.html"}"
"""


@pytest.fixture(scope="session")
def built_study(tmp_path_factory, tiny_model_dir):
    """A store where the 4-run study was applied, its analyses run at its end: (folder, spec, store, apply's stderr)."""
    folder = tmp_path_factory.mktemp("study")
    data = write_toy_data(folder / "toy")
    spec = folder / "study.toml"
    spec.write_text(study_spec(tiny_model_dir, data))
    store = folder / "store.duckdb"
    with pytest.MonkeyPatch.context() as env:  # before the per-test `isolated` fixture: set what it would
        env.setenv("SPECRUN_ARTIFACTS", str(folder / "artifacts"))
        env.setenv("SPECRUN_CACHE_DIR", str(folder / "cache"))
        env.setenv("SPECRUN_DATA_DIR", str(SHARED_DATA))
        env.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        code, _, err = run_cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    return folder, spec, store, err


@pytest.fixture
def study(built_study, tmp_path):
    """A copy of the built store for one test, beside a link to its artifacts folder (shared: nothing here
    retrains; the store records artifact paths relative to its folder)."""
    folder, spec, store, _ = built_study
    mine = tmp_path / "store.duckdb"
    shutil.copy(store, mine)
    (tmp_path / "artifacts").symlink_to(folder / "artifacts")
    return spec, mine
