"""Every example spec in specs/, at paper scale and under each of its profiles, passes `validate` and `plan`
(plan checks data, models, stages and constraints before anything trains)."""

from __future__ import annotations

import json
import tomllib

import pytest
from conftest import REPO

SPECS = sorted((REPO / "specs").glob("*.toml"))


def _profiles(path) -> list[str | None]:
    return [None, *tomllib.loads(path.read_text()).get("profiles", {})]


#: Specs whose paper scale trains hub models this machine does not have (the cpu profile runs here):
#: offline, ``plan`` at paper scale must refuse them with the located missing-model error, and nothing else.
HUB_MODELS = {"imdb_methods": ("roberta-base", "EleutherAI/gpt-neo-125m")}

CASES = [(path, profile) for path in SPECS for profile in _profiles(path)]


def test_the_studies_are_there():
    names = {path.stem for path in SPECS}
    assert {
        "transfer_mrpc",
        "efficiency",
        "sensitivity",
        "freezing",
        "glue",
        "ag_news_budget",
        "ag_news_lora_grid",
    } <= names


@pytest.mark.parametrize(
    "path, profile", CASES, ids=[f"{path.stem}{'-' + profile if profile else ''}" for path, profile in CASES]
)
def test_spec_validates_and_plans(path, profile, cli):
    extra = ["--profile", profile] if profile else []
    code, out, err = cli("validate", str(path), *extra)
    assert code == 0, err
    assert "ok" in out
    code, out, err = cli("plan", str(path), *extra, "-f", "json")
    if code != 0 and profile is None and path.stem in HUB_MODELS:
        problems = [line for line in err.splitlines() if ".toml:" in line]
        assert (
            code == 2
            and problems
            and all("model.name:" in line and "HF_HUB_OFFLINE is set" in line for line in problems)
        ), err
        assert all(any(repr(m) in line for m in HUB_MODELS[path.stem]) for line in problems), err
        return
    assert code == 0, err
    runs = json.loads(out)
    assert runs, f"{path.name} plans no run"
    statuses = [r["status"] for r in runs]
    assert "new" in statuses, f"{path.name}: no run would train"  # a fresh store: nothing cached
    assert all(s == "new" or s.startswith("left out: ") for s in statuses), set(statuses)
    if path.stem == "ag_news_budget":  # the 1M budget leaves the large placements × ranks out, with their counts
        assert any(s.startswith("left out: ") and "1,000,000" in s for s in statuses), set(statuses)


def test_every_study_has_a_cpu_profile_analyses_and_a_report():
    """The seed studies run here in minutes (profile cpu) and end in analyses and an HTML report."""
    for path in SPECS:
        tree = tomllib.loads(path.read_text())
        if path.stem in ("sst2_lora_base", "difficulty_teacher"):
            continue  # bases that other specs extend or depend on
        assert tree.get("analyses"), f"{path.name} declares no analyses"
        assert "report" in tree, f"{path.name} has no [report]"
        if path.stem not in ("quickstart", "methods", "few_shot", "noise_robustness", "difficulty"):
            assert "cpu" in tree.get("profiles", {}), f"{path.name} has no cpu profile"
