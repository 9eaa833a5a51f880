"""Commands that train or predict nothing answer at once: they never import torch, transformers, peft or
bitsandbytes (seconds of start-up). And what keeps ``plan`` quick on a spec the store holds — the
parsed-dataset cache — gives the same run ids as parsing again, and notices a changed file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "datasets")

#: Runs a CLI command in a fresh interpreter and reports which heavy libraries it imported.
PROBE = f"""
import json, sys
args = json.loads(sys.argv[1])
code = 0
if args:
    from specrun.cli import main
    sys.argv = ["specrun", *args]
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
else:
    import specrun.cli
heavy = [m for m in {HEAVY!r} if m in sys.modules]
print("PROBE " + json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def probe(*args: str, env: dict | None = None) -> tuple[int, list[str], str, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("PROBE "))
    result = json.loads(line[len("PROBE ") :])
    return result["code"], result["heavy"], done.stdout, done.stderr


def test_import_of_the_cli_imports_no_heavy_library():
    code, heavy, _, err = probe()
    assert code == 0, err
    assert heavy == []


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["sql", "SELECT count(*) AS n FROM runs"],
        ["runs"],
        ["plugins"],
        ["plugins", "lora"],
        ["validate", "{spec}"],
        ["plan", "{spec}"],
        ["snapshot", "{copy}"],
    ],
)
def test_commands_that_train_nothing_import_no_heavy_library(study, command):
    spec, store = study
    args = [a.format(spec=spec, copy=store.with_name("copy.duckdb")) for a in command]
    if args[0] in ("sql", "runs", "plan", "snapshot"):
        args += ["--store", str(store)]
    code, heavy, out, err = probe(*args)
    assert code == 0, err
    assert heavy == [], f"`specrun {' '.join(command)}` imported {heavy}"
    if args[0] == "plan":  # the store holds every run: the cached path is what was measured
        assert out.count("cached") == 4, out
    if args[0] == "sql":
        assert "4" in out


def test_plan_of_new_runs_still_checks_the_model(write_spec):
    """The other side: planning runs that would train loads the model's config (and so transformers)."""
    spec = write_spec()
    code, heavy, out, err = probe("plan", str(spec))
    assert code == 0, err
    assert "new" in out
    assert "transformers" in heavy


def _plan_ids(spec: Path, env: dict) -> list[str]:
    code, _, out, err = probe("plan", str(spec), "--format", "json", env=env)
    assert code == 0, err
    return [row["run_id"] for row in json.loads(out)]


def test_parsed_datasets_are_cached_and_a_changed_file_is_noticed(write_spec, toy_data, tmp_path):
    spec = write_spec()
    cache = Path(os.environ["SPECRUN_CACHE_DIR"])
    first = _plan_ids(spec, {})
    entries = sorted((cache / "datasets").glob("*.pickle"))
    assert len(entries) == 1
    assert _plan_ids(spec, {}) == first  # from the cache: the same ids
    assert _plan_ids(spec, {"SPECRUN_CACHE_DIR": "off"}) == first  # and the same as parsing again

    # one label changed, the file's size and modification time kept: still a different dataset
    train = toy_data / "train.tsv"
    stat = train.stat()
    lines = train.read_text().splitlines(keepends=True)
    text, label = lines[1].rstrip("\n").rsplit("\t", 1)
    lines[1] = f"{text}\t{1 - int(label)}\n"
    train.write_text("".join(lines))
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert train.stat().st_size == stat.st_size
    changed = _plan_ids(spec, {})
    assert changed != first
    assert _plan_ids(spec, {"SPECRUN_CACHE_DIR": "off"}) == changed
    assert len(list((cache / "datasets").glob("*.pickle"))) == 2


def test_a_damaged_cache_entry_is_a_miss(write_spec):
    spec = write_spec()
    cache = Path(os.environ["SPECRUN_CACHE_DIR"])
    first = _plan_ids(spec, {})
    (entry,) = (cache / "datasets").glob("*.pickle")
    entry.write_bytes(entry.read_bytes()[:100])
    assert _plan_ids(spec, {}) == first
    assert entry.stat().st_size > 100  # written again


def test_an_unwritable_cache_never_fails_a_command(write_spec, tmp_path):
    spec = write_spec()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    code, _, out, err = probe("plan", str(spec), env={"SPECRUN_CACHE_DIR": str(blocker)})
    assert code == 0, err
    assert "new" in out
