"""The report opened the way a reader opens it: in a real headless Chromium, offline. Every chart
renders, nothing is logged as an error, no request leaves the file, and a screenshot is kept."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Screenshots and other test artifacts worth looking at (gitignored).
ARTIFACTS = Path(os.environ.get("SPECRUN_TEST_ARTIFACTS", REPO / "test-artifacts"))
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
]


def _find_chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing and this process may (root), else skipped."""
    found = _find_chromium()
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and this test cannot install it (no apt-get, or not root)")
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"chromium is not installed and `apt-get install chromium` failed: {exc}")
    found = _find_chromium()
    if not found:
        pytest.skip("apt-get installed chromium but no chromium executable is on PATH")
    return found


def test_report_renders_offline_in_chromium(built_study, chromium):
    from playwright.sync_api import sync_playwright

    folder, _, _, _ = built_study
    report = folder / "study.html"
    errors, requests, blocked = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=BROWSER_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})

        def only_the_file(route):
            url = route.request.url
            if url.startswith(("file:", "data:", "blob:", "about:")):
                route.continue_()
            else:
                blocked.append(url)
                route.abort()

        context.route("**/*", only_the_file)
        page = context.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(report.as_uri())
        charts = page.locator("figure.chart").count()
        page.wait_for_function(
            "() => [...document.querySelectorAll('figure.chart')].every(f => f.querySelector('svg.marks') || f.classList.contains('failed'))",
            timeout=60_000,
        )
        rendered = page.locator("figure.chart svg.marks").count()
        failed = page.locator("figure.chart.failed").count()
        marks = page.evaluate(
            "() => [...document.querySelectorAll('figure.chart svg.marks')].map(s => s.querySelectorAll('path, circle, rect, line, text').length)"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-study.png"), full_page=True)
        browser.close()
    assert charts >= 12
    assert rendered == charts and failed == 0
    assert min(marks) > 5  # each chart drew axes and marks, not an empty frame
    assert errors == []
    assert blocked == [] and all(url.startswith("file:") for url in requests), requests
    assert (ARTIFACTS / "report-study.png").stat().st_size > 50_000
