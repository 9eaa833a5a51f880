"""Spec composition: extends (deep merge, chains, cycles and missing bases located), profiles
(--profile, their own experiment, every profile validated), and constraints checked before training."""

from __future__ import annotations

import json

import pytest

from specrun.spec.compose import deep_merge


def test_deep_merge_merges_tables_and_replaces_the_rest():
    base = {
        "train": {"epochs": 3, "batch_size": 16},
        "method": {"name": "lora", "rank": 8},
        "seeds": [0, 1],
        "data": {"dataset": "local", "options": {"files": {}}},
    }
    assert deep_merge(base, {"train": {"epochs": 1}, "seeds": [5]}) == {
        **base,
        "train": {"epochs": 1, "batch_size": 16},
        "seeds": [5],
    }
    assert deep_merge(base, {"method": {"rank": 4}})["method"] == {"name": "lora", "rank": 4}
    assert deep_merge(base, {"method": {"name": "full"}})["method"] == {
        "name": "full"
    }  # another plugin: its own options
    assert deep_merge(base, {"data": {"dataset": "glue/sst2"}})["data"] == {"dataset": "glue/sst2"}
    assert base["train"] == {"epochs": 3, "batch_size": 16}  # inputs untouched


def test_extends_merges_a_chain_of_bases(write_spec, cli, tmp_path):
    base = write_spec(name="base", method='name = "lora"\nrank = 4', train="max_steps = 3")
    middle = tmp_path / "middle.toml"
    middle.write_text('extends = "base.toml"\n\n[method]\nrank = 2\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "middle.toml"\n\n[experiment]\nname = "child"\n\n[train]\nmax_steps = 2\n')
    code, _, err = cli("plan", str(child), "-f", "json")
    assert code == 0, err
    code, _out, _ = cli("apply", str(child))
    assert code == 0
    config = json.loads(cli("sql", "SELECT config FROM runs", "-f", "json")[1])[0]["config"]
    config = json.loads(config) if isinstance(config, str) else config
    assert (config["method"]["rank"], config["train"]["max_steps"], config["train"]["batch_size"]) == (2, 2, 16)
    assert base.exists()


def test_extends_problems_are_located(tmp_path, cli, write_spec):
    write_spec(name="base", method='name = "lora"\nrnak = 4', train="max_steps = 3")
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n\n[experiment]\nname = "child"\n')
    code, _, err = cli("validate", str(child))
    base_line = (tmp_path / "base.toml").read_text().splitlines().index("rnak = 4") + 1
    assert code == 2 and f"{tmp_path / 'base.toml'}:{base_line}: method.rnak: unknown key 'rnak'" in err, err
    child.write_text('extends = "nothere.toml"\n')
    code, _, err = cli("validate", str(child))
    assert code == 2 and f"{child}:1: extends: no spec file 'nothere.toml'" in err
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('\nextends = "a.toml"\n')
    code, _, err = cli("validate", str(tmp_path / "a.toml"))
    assert (
        code == 2
        and f"{tmp_path / 'b.toml'}:2: extends: specs extend each other in a cycle: a.toml → b.toml → a.toml" in err
    ), err


PROFILE = """
[profiles.quick.train]
max_steps = 2

[profiles.quick.experiment]
seeds = [0]
"""


def test_a_profile_overrides_keys_and_names_its_own_experiment(write_spec, cli):
    spec = write_spec(train="max_steps = 5", extra=PROFILE)
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1]", 1))
    code, out, err = cli("plan", str(spec), "--profile", "quick", "-f", "json")
    assert code == 0, err
    assert len(json.loads(out)) == 1
    code, _, err = cli("apply", str(spec), "--profile", "quick")
    assert code == 0, err
    rows = json.loads(
        cli("sql", "SELECT experiment, config->'train'->>'max_steps' AS steps FROM runs", "-f", "json")[1]
    )
    assert rows == [{"experiment": "toy-quick", "steps": "2"}]
    applied = json.loads(cli("sql", "SELECT experiment, profile FROM applies", "-f", "json")[1])
    assert applied == [{"experiment": "toy-quick", "profile": "quick"}]
    code, _, err = cli("plan", str(spec), "--profile", "qiuck")
    assert code == 2 and "--profile: no profile 'qiuck' (did you mean 'quick'?); the spec's profiles: quick" in err


def test_validate_checks_every_profile(write_spec, cli):
    spec = write_spec(train="max_steps = 5", extra=PROFILE + "\n[profiles.broken.train]\nmax_stpes = 1\n")
    code, _, err = cli("validate", str(spec))
    line = spec.read_text().splitlines().index("max_stpes = 1") + 1
    assert code == 2 and f"{spec}:{line}: train.max_stpes: (profile broken) unknown key 'max_stpes'" in err, err
    spec.write_text(spec.read_text().replace("max_stpes", "max_steps"))
    code, out, err = cli("validate", str(spec))
    assert code == 0 and "profile broken: 1 run(s)" in out and "profile quick: 1 run(s)" in out


def test_analyze_by_name_reads_the_profiled_spec_it_was_applied_with(write_spec, cli):
    spec = write_spec(
        method='name = "full"', train="max_steps = 5", extra=PROFILE + '\n[[analyses]]\nname = "bootstrap_ci"\n'
    )
    assert cli("apply", str(spec), "--profile", "quick")[0] == 0
    spec.unlink()
    code, _, err = cli("analyze", "toy-quick", "--force")
    assert code == 0 and "bootstrap_ci: computed over 1 runs" in err, err


CONSTRAINED = """
[sweep]
"method.rank" = [1, 8]

[constraints]
max_trainable_params = {limit}
on_violation = "{mode}"
"""


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_constraints_count_trainable_parameters_before_training(write_spec, cli, mode):
    # tiny BERT (hidden 32, 2 layers), LoRA on query and value: 2·2·(32·r + r·32) adapter weights + a 32·2+2 head
    rank1, rank8 = 4 * 64 * 1 + 66, 4 * 64 * 8 + 66
    spec = write_spec(train="max_steps = 2", extra=CONSTRAINED.format(limit=(rank1 + rank8) // 2, mode=mode))
    code, out, err = cli("plan", str(spec), "-f", "json")
    if mode == "error":
        line = spec.read_text().splitlines().index(f"max_trainable_params = {(rank1 + rank8) // 2}") + 1
        assert code == 2 and f"{spec}:{line}: constraints.max_trainable_params: 1 run(s) train more than" in err, err
        assert f"lora rank=8: {rank8:,}" in err
        assert cli("apply", str(spec))[0] == 2
        return
    assert code == 0, err
    rows = json.loads(out)
    left = [r for r in rows if r["status"].startswith("left out")]
    assert len(rows) == 2 and len(left) == 1 and f"{rank8:,} trainable" in left[0]["status"]
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    done = json.loads(
        cli(
            "sql",
            "SELECT r.config->'method'->>'rank' AS rank, s.trainable_params FROM run_summary s JOIN runs r USING (run_id)",
            "-f",
            "json",
        )[1]
    )
    assert done == [{"rank": "1", "trainable_params": rank1}]
