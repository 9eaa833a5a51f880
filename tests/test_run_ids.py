"""Run ids of every spec in ``specs/`` (each profile too), pinned.

A run id is the hash of what the run computes; a store treats a planned run whose id it holds as done.
So a change that moves the ids of existing specs makes every user's store train those runs again — it
must be deliberate and announced ("Changed (results: run ids)" in CHANGELOG.md). This test makes it
deliberate: it fails on any id that moved, and says how to record the new ones once they are intended:

    SPECRUN_UPDATE_RUN_IDS=1 .venv/bin/python -m pytest tests/test_run_ids.py
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.toml"))
PINNED = Path(__file__).parent / "data" / "run_ids.json"


def _profiles(spec: Path) -> list[str | None]:
    return [None, *sorted(tomllib.loads(spec.read_text()).get("profiles", {}))]


def _ids(planned) -> list[str]:
    """The planned runs' ids and, depth first, those of the runs they start from (stages, teachers)."""
    out: list[str] = []
    for run in planned:
        out.append(run.run_id)
        out.extend(_ids(run.dependencies))
    return out


def _plan_ids(spec: Path, profile: str | None) -> list[str]:
    from specrun.plugins import get_registry
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec

    registry = get_registry()
    return sorted(set(_ids(plan_runs(load_spec(spec, [], registry, profile), registry))))


def _key(spec: Path, profile: str | None) -> str:
    return spec.name + (f" --profile {profile}" if profile else "")


@pytest.fixture(scope="module")
def current() -> dict[str, list[str]]:
    with pytest.MonkeyPatch.context() as env:  # module scope: set what the per-test `isolated` fixture would
        env.setenv("SPECRUN_DATA_DIR", str(SHARED_DATA))
        env.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        return {_key(spec, profile): _plan_ids(spec, profile) for spec in SPECS for profile in _profiles(spec)}


def test_run_ids_of_every_spec_are_the_pinned_ones(current):
    if os.environ.get("SPECRUN_UPDATE_RUN_IDS"):
        PINNED.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    pinned = json.loads(PINNED.read_text())
    assert sorted(current) == sorted(pinned), (
        "specs or profiles were added or removed: record their ids with SPECRUN_UPDATE_RUN_IDS=1 (see the docstring)"
    )
    moved = {
        key: {"gone": sorted(set(pinned[key]) - set(ids)), "new": sorted(set(ids) - set(pinned[key]))}
        for key, ids in current.items()
        if ids != pinned[key]
    }
    assert not moved, (
        f"run ids moved for {', '.join(moved)}: {json.dumps(moved)[:2000]} — every store would train these runs "
        "again. If that is intended, say so in CHANGELOG.md under 'Changed (results: run ids)' and record the new "
        "ids with SPECRUN_UPDATE_RUN_IDS=1 (see this file's docstring)."
    )


def test_the_pinned_ids_cover_every_run_a_spec_plans(current):
    """The pin is not vacuous: every spec plans at least one run, and ids are the 12-hex-digit hashes."""
    assert len(current) >= len(SPECS) and all(current.values())
    assert all(len(i) == 12 and int(i, 16) >= 0 for ids in current.values() for i in ids)
