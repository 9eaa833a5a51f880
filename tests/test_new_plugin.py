"""`specrun new-plugin KIND NAME` writes a package whose own tests pass as written, for every kind."""

import os
import subprocess
import sys
import tomllib

import pytest

from specrun.plugins.registry import HOOK_FOR_KIND


@pytest.mark.parametrize("kind", list(HOOK_FOR_KIND))
def test_a_new_plugin_package_passes_its_own_tests(kind, cli, tmp_path):
    folder = tmp_path / "pkg"
    code, _, err = cli("new-plugin", kind, f"my-{kind.replace('_', '-')}", "-o", str(folder))
    assert code == 0, err
    assert f"next: pip install -e {folder} && pytest {folder}" in err
    module = f"specrun_my_{kind}"
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["specrun"] == {module: f"{module}.plugin"}
    assert project["tool"]["pytest"]["ini_options"]["specrun_plugins"] == [f"{module}.plugin"]
    # as an author runs them: pytest in the package folder, specrun.testing found through its pytest11 entry point
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECRUN_")} | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_new_plugin_refuses_bad_names_and_full_folders(cli, tmp_path):
    code, _, err = cli("new-plugin", "method", "My Method", "-o", str(tmp_path / "x"))
    assert code == 2 and "error: plugin name 'My Method': use lower-case letters" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    code, _, err = cli("new-plugin", "method", "mine", "-o", str(tmp_path / "full"))
    assert code == 2 and "already exists and is not an empty folder" in err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    code, _, err = cli("new-plugin", "gadget", "x")
    assert code == 2 and "Invalid value for 'KIND'" in err
