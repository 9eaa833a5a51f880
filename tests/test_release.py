"""The release: one version, written in src/specrun/version.py, is what a fresh install's metadata
says and what ``specrun --version`` prints; CHANGELOG.md names it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import specrun

REPO = Path(__file__).resolve().parent.parent


def test_the_version_is_written_once_and_pyproject_reads_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "specrun.version.__version__"}
    assert specrun.__version__ == "0.2.0"


def test_version_command_prints_it(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"specrun {specrun.__version__}"


def test_setuptools_reads_the_version_from_the_source():
    """How the build computes ``dynamic = ["version"]``: setuptools' own reader of ``attr:`` versions."""
    from setuptools.config.expand import read_attr

    assert read_attr("specrun.version.__version__", package_dir={"": "src"}, root_dir=str(REPO)) == specrun.__version__


def test_a_fresh_install_of_the_source_carries_the_version(tmp_path):
    """What ``pip install -e .`` would record (pip's own metadata build, on a copy of the source). Offline,
    pip builds with this environment's setuptools, which must read pyproject's SPDX ``license`` (77+); a
    fresh virtual environment of Python 3.11 has 65, and ``pip install -e .`` builds in isolation instead."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(
            f"setuptools {setuptools.__version__} here cannot build pyproject.toml without build isolation (needs 77+)"
        )
    source = tmp_path / "specrun-src"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--no-build-isolation",
            "--ignore-installed",
            "--quiet",
            "--report",
            "-",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    [item] = json.loads(result.stdout)["install"]
    assert (item["metadata"]["name"], item["metadata"]["version"]) == ("specrun", specrun.__version__)


def test_changelog_names_this_release_first_with_breaking_changes_first():
    text = (REPO / "CHANGELOG.md").read_text()
    releases = [r for r in re.findall(r"^## \[([^\]]+)\]", text, flags=re.M) if r != "Unreleased"]
    assert releases[:2] == [specrun.__version__, "0.1.0"]
    assert re.search(rf"^## \[{re.escape(specrun.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, flags=re.M)
    section = text.split(f"## [{specrun.__version__}]")[1].split("\n## [")[0]
    headings = re.findall(r"^### (.+)$", section, flags=re.M)
    assert headings[0] == "Breaking changes" and set(headings) <= {
        "Breaking changes",
        "Deprecated",
        "Added",
        "Changed",
        "Fixed",
    }
    assert headings == sorted(headings, key=["Breaking changes", "Deprecated", "Added", "Changed", "Fixed"].index)
