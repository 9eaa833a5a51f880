"""`specrun app` used the way a person uses it: the command starts on a free localhost port against a
store with two tiny runs, and a real headless Chromium picks a model, classifies a sentence, uploads a
labelled CSV, compares the two runs and opens the efficiency view. Every request the page makes must
stay on localhost (no CDN fonts or scripts); screenshots are kept in test-artifacts/."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest
from app_support import assert_cells_keep_words_whole, build_two_runs, header_lines, page_text, serving
from conftest import toy_rows
from test_report_browser import ARTIFACTS, BROWSER_ARGS, chromium  # noqa: F401 - the chromium fixture

pytest.importorskip("gradio")
pytest.importorskip("playwright")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    return build_two_runs(tmp_path_factory.mktemp("app-browser"), tiny_model_dir)


@pytest.fixture
def served(two_runs, tmp_path):
    """`specrun app` in its own process: (url, seconds from the command to the first page served)."""
    with serving(two_runs, tmp_path) as found:
        yield found


def _labelled_csv(path, n: int = 40):
    """Held-out toy sentences with their labels; a comma inside each quoted text checks CSV quoting."""
    lines = ["text,label"] + [f'"{text}, honestly",{label}' for text, label in toy_rows(n, seed=7)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_app_in_chromium(served, two_runs, chromium, tmp_path):  # noqa: F811 - chromium is a fixture
    from playwright.sync_api import sync_playwright

    from specrun.store import Store
    from specrun.store.catalog import stored_models

    url, cold_start = served
    run_ids = [m.run_id for m in stored_models(Store(two_runs))]
    before = hashlib.sha256(two_runs.read_bytes()).hexdigest()
    origin = url.rstrip("/")
    requests, blocked, errors = [], [], []
    csv_file = _labelled_csv(tmp_path / "reviews.csv")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings = {"cold_start_s": round(cold_start, 2)}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=BROWSER_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})

        def only_localhost(route):
            if route.request.url.startswith((origin, "data:", "blob:", "about:")):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", only_localhost)
        page = context.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(url)
            assert "2 trained models" in page_text(page, "#intro", "trained model")
            # the models table's headers stay readable: no header is broken inside a word ("accura|cy")
            page.wait_for_function("document.querySelectorAll('#models-table th').length >= 14", timeout=60_000)
            lines = header_lines(page)
            assert len(lines) >= 14 and all(n <= len(text.split()) for text, n in lines if text), lines
            assert_cells_keep_words_whole(page, "#models-table")  # and so do its cells ("0.604|7")

            # pick the full fine-tuning run (the one that learned the toy task)
            page.locator("#picker input").click()
            page.get_by_role("option", name=re.compile(r" full .*acc 1\.000")).click()
            card = page_text(page, "#model-card", r"method\s+full")
            assert "trainable · total parameters" in card and "ms mean" in card

            # one sentence: label and confidence
            page.locator("#single-text textarea").fill("the acting was really wonderful")
            started = time.perf_counter()
            page.locator("#single-go").click()
            single = page_text(page, "#single-result", r"confidence")
            timings["single_round_trip_s"] = round(time.perf_counter() - started, 3)
            found = re.search(r"^(\S+) · confidence (\d\.\d+) · latency (\d+\.\d+) ms", single)
            assert found, single
            label, confidence, latency = found.group(1), float(found.group(2)), float(found.group(3))
            assert label == "1" and 0.5 < confidence <= 1.0 and latency > 0
            timings["single_model_latency_ms"] = latency
            page_text(page, "#single-label", r"1\s+\d+%[\s\S]*0\s+\d+%")  # a bar per class, with its probability
            page.screenshot(path=str(ARTIFACTS / "app-single.png"), full_page=True)

            # a labelled CSV: accuracy, F1, latency, confusion matrix, a download
            page.get_by_role("tab", name="Batch file").click()
            page.locator("#batch-file input[type=file]").set_input_files(str(csv_file))
            page.wait_for_function(
                "() => document.querySelector('#batch-file').innerText.includes('reviews.csv')", timeout=30_000
            )
            page.locator("#batch-go").click()
            batch = page_text(page, "#batch-result", r"accuracy \d")
            found = re.search(
                r"reviews\.csv: 40 labelled rows: accuracy (\d\.\d+), F1 (\d\.\d+).*mean latency (\d+\.\d+) ms, p95 (\d+\.\d+) ms",
                batch,
            )
            assert found, batch
            accuracy = float(found.group(1))
            assert accuracy >= 0.9  # the full run learned the task (dev accuracy 1.0)
            timings["batch_mean_latency_ms"] = float(found.group(3))
            page_text(page, "#batch-confusion", r"true 0[\s\S]*true 1")
            assert "predicted 1" in page.locator("#batch-confusion").inner_text()
            page_text(page, "#batch-rows", r", honestly")  # the whole quoted text, comma and all
            page.locator("#batch-download").wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "app-batch.png"), full_page=True)

            # a file without a text column: one clear sentence on the page
            bad = tmp_path / "notes.csv"
            bad.write_text("review,label\nfine,1\n")
            page.locator("#batch-file button[aria-label=Clear]").click()
            page.locator("#batch-file input[type=file]").set_input_files(str(bad))
            page.wait_for_function(
                "() => document.querySelector('#batch-file').innerText.includes('notes.csv')", timeout=30_000
            )
            page.locator("#batch-go").click()
            assert "notes.csv: needs a 'text' column; columns are ['review', 'label']" in page_text(
                page, "#batch-result", "needs a 'text' column"
            )

            # both runs side by side
            page.get_by_role("tab", name="Compare").click()
            page.locator("#compare-text textarea").fill("the plot was dreadful")
            page.locator("#compare-go").click()
            compared = page_text(page, "#compare-result", r"2 models")
            assert re.search(r"2 models: they (agree on|disagree: \w+ \S+, \w+ \S+)", compared), compared
            page_text(page, "#compare-table", "".join(f"(?=[\\s\\S]*{run_id[:12]})" for run_id in run_ids))  # both rows
            assert_cells_keep_words_whole(page, "#compare-table")
            page.screenshot(path=str(ARTIFACTS / "app-compare.png"), full_page=True)

            # accuracy against trainable parameters, drawn by Altair
            page.get_by_role("tab", name="Efficiency").click()
            page.get_by_label("trainable parameters").check()
            page_text(
                page,
                "#efficiency-result",
                r"duo: accuracy \(the headline metric of task 'classification'\) on validation \(each run's primary "
                r"evaluation set, its final evaluation\) against trainable parameters: 2 configuration\(s\); on the Pareto front",
            )
            page.wait_for_function(
                "() => document.querySelector('#efficiency-plot svg, #efficiency-plot canvas')", timeout=30_000
            )
            page.wait_for_function(
                "document.querySelectorAll('#efficiency-table .body-cell').length > 0", timeout=30_000
            )
            assert_cells_keep_words_whole(page, "#efficiency-table")
            page.screenshot(path=str(ARTIFACTS / "app-efficiency.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "app-failure.png"), full_page=True)
            raise
        browser.close()

    (ARTIFACTS / "app-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    assert hashlib.sha256(two_runs.read_bytes()).hexdigest() == before  # browsing wrote nothing
    with Store(two_runs, timeout=5).write() as db:  # and holds nothing open: an apply could write now
        db.execute("SELECT 1")
    assert blocked == [], f"the page asked for resources off localhost: {blocked}"
    assert requests and all(u.startswith((origin, "data:", "blob:")) for u in requests), requests
    assert errors == [], errors
    for name in ("app-single", "app-batch", "app-compare", "app-efficiency"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 20_000
