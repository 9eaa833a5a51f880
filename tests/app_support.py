"""What the app's tests share: stores of tiny trained runs, and `specrun app` served in its own process
for a real browser.

``build_two_runs``: LoRA and full fine-tuning of the tiny random BERT on the toy sentiment task (label 1:
the sentence holds a positive word), one seed each. Full fine-tuning learns the task (dev accuracy 1.0);
LoRA on a random 2-layer model stays near chance: a contrast for comparing and for the efficiency view.
``build_qa_run``: one extractive-QA run on toy SQuAD; ``add_classification_run`` adds a two-step
classification run beside it (a store of both tasks)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from test_report_browser import ARTIFACTS

from specrun.testing import run_cli, toy_spec, write_toy_data

SPEC = """
[experiment]
name = "duo"
seeds = [0]

[model]
name = "{model}"
max_length = 32

[data]
dataset = "local"
eval_split = "validation"
[data.options]
files = {{ train = "{data}/train.tsv", validation = "{data}/dev.tsv" }}

[method]
name = "lora"

[train]
batch_size = 16
precision = "fp32"
epochs = {epochs}

[sweep]
"method, train.learning_rate" = [
    [{{ name = "lora", rank = 4 }}, {lora_lr}],
    [{{ name = "full" }}, {full_lr}],
]
"""


EPOCHS, LORA_LR, FULL_LR = 8, 5e-2, 3e-3


def apply_spec(spec: Path, store: Path) -> Path:
    """`specrun apply` ``spec`` into ``store``, its weights in the store's folder's ``artifacts``; returns
    the store. Run before the per-test `isolated` fixture (module fixtures): it sets what that would."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPECRUN_ARTIFACTS", str(store.parent / "artifacts"))
        env.setenv("SPECRUN_DATA_DIR", str(SHARED_DATA))
        env.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        code, _, err = run_cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    return store


def build_two_runs(folder: Path, model_dir: Path) -> Path:
    """Train the two runs into ``folder``/store.duckdb (weights in ``folder``/artifacts); returns the store."""
    data = write_toy_data(folder / "toy")
    spec = folder / "duo.toml"
    spec.write_text(SPEC.format(model=model_dir, data=data, epochs=EPOCHS, lora_lr=LORA_LR, full_lr=FULL_LR))
    return apply_spec(spec, folder / "store.duckdb")


def build_qa_run(folder: Path, model_dir: Path, steps: int = 80) -> Path:
    """Full fine-tuning of the tiny BERT on the toy extractive-QA task ("what color is the car ?" over
    "the car is red . the boat is blue ..."), one run, into ``folder``/store.duckdb; returns the store."""
    from specrun.testing.qa import qa_spec, write_toy_squad

    data = write_toy_squad(folder / "squad")
    spec = folder / "toyqa.toml"
    spec.write_text(qa_spec(model_dir, data, train=f"max_steps = {steps}", name="toyqa"))
    return apply_spec(spec, folder / "store.duckdb")


def add_classification_run(store: Path, model_dir: Path, name: str = "cls") -> Path:
    """A two-step classification run on the toy task (experiment ``name``) added to ``store``; returns it."""
    data = write_toy_data(store.parent / "toy")
    spec = store.parent / f"{name}.toml"
    spec.write_text(
        toy_spec(model=str(model_dir), train="max_steps = 2", name=name)
        .replace("{toy_train}", str(data / "train.tsv"))
        .replace("{toy_dev}", str(data / "dev.tsv"))
    )
    return apply_spec(spec, store)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(store: Path, folder: Path, timeout: float = 180) -> Iterator[tuple[str, float]]:
    """`specrun app --store STORE` in its own process on a free localhost port, its log in
    ``folder``/app.log: (url, seconds from the command to the first page served); stopped on exit."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(folder / "gradio")}
    log = (folder / "app.log").open("w")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "specrun", "app", "--store", str(store), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"specrun app exited with {proc.returncode}: {(folder / 'app.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - started > timeout:
                pytest.fail(f"specrun app served nothing within {timeout:.0f} s: {(folder / 'app.log').read_text()}")
            time.sleep(0.1)
        yield url, time.perf_counter() - started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def page_text(page, selector: str, pattern: str, timeout: float = 60_000) -> str:
    """The text of ``selector`` once it matches ``pattern`` (a screenshot of the page if it never does)."""
    try:
        page.wait_for_function(
            "([sel, pat]) => { const el = document.querySelector(sel); return el && new RegExp(pat).test(el.innerText); }",
            arg=[selector, pattern],
            timeout=timeout,
        )
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "app-failure.png"), full_page=True)
        shown = page.locator(selector).inner_text() if page.locator(selector).count() else "(absent)"
        pytest.fail(
            f"{selector} never matched {pattern!r}; it shows {shown!r} (screenshot: {ARTIFACTS / 'app-failure.png'})"
        )
    return page.locator(selector).inner_text()


def cell_words(page, selector: str) -> list[tuple[str, int, str, str]]:
    """Each text in the body cells (Gradio 6's ``.body-cell``) of the table under ``selector``: (the text,
    on how many lines it is drawn, and its element's computed ``word-break`` and ``overflow-wrap``). A
    word broken inside ("0.604|7") is drawn on more lines than the text has words."""
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel + ' .body-cell')].flatMap(cell => {
            const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT), found = [];
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                if (!node.textContent.trim()) continue;
                const range = document.createRange(); range.selectNodeContents(node);
                const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
                const style = getComputedStyle(node.parentElement);
                found.push([node.textContent.trim(), tops.size, style.wordBreak, style.overflowWrap]);
            }
            return found;
        })""",
        selector,
    )


def assert_cells_keep_words_whole(page, selector: str) -> None:
    """Every text in the table's body cells is set to break between words only, and none is drawn on
    more lines than it has words."""
    cells = cell_words(page, selector)
    assert cells, f"no body cells under {selector}"
    assert all((wb, ow) == ("keep-all", "normal") for _, _, wb, ow in cells), cells
    assert all(n <= len(text.split()) for text, n, _, _ in cells), cells


def header_lines(page, selector: str = "#models-table") -> list[tuple[str, int]]:
    """Each header of the table under ``selector``: (its longest text, on how many lines that text is
    drawn). A header broken inside a word ("accura|cy") is drawn on more lines than it has words."""
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel + ' th')].map(th => {
            const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
            let text = '', most = 0;
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                if (!node.textContent.trim()) continue;
                const range = document.createRange(); range.selectNodeContents(node);
                const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
                if (tops.size > most) { most = tops.size; text = node.textContent.trim(); }
            }
            return [text, most];
        })""",
        selector,
    )
