"""The reliability leftovers of issues 22 and 25: each a located error (file, line, key; exit 2, no
traceback) or correct behaviour."""

from pathlib import Path

from specrun.spec.locate import locate


def assert_clean_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def line_of(path: Path, *key: str) -> int:
    line = locate(path.read_text(), key)
    assert line is not None
    return line


# --- a. values from a sweep, --set or a base are located where they come from ---------------------


def test_problem_with_a_sweep_value_points_at_the_sweep_entry(write_spec, cli):
    spec = write_spec(extra='[sweep]\n"data.max_train_examples" = [100, 1]\n')
    code, _, err = cli("plan", str(spec))
    line = line_of(spec, "sweep", "data.max_train_examples")
    assert_clean_error(
        code, err, f"{spec}:{line}: data.max_train_examples: (from sweep data.max_train_examples = 1)", "only the class"
    )


def test_problem_with_a_set_value_names_the_set_item_and_the_line_it_overrides(write_spec, cli):
    spec = write_spec(train="epochs = 2\nmax_steps = 3")
    code, _, err = cli("plan", str(spec), "--set", "data.train_split=trian")
    assert_clean_error(code, err, f"{spec}: data.train_split: (from --set data.train_split=trian)", "no split 'trian'")
    code, _, err = cli("validate", str(spec), "--set", "train.max_steps=0")
    line = line_of(spec, "train", "max_steps")
    assert_clean_error(code, err, f"{spec}:{line}: train.max_steps: (from --set train.max_steps=0)")
    # found by the checks before training (the data), not by validation
    spec = (
        write_spec(extra="", train="epochs = 1")
        .read_text()
        .replace('eval_split = "validation"', 'eval_split = "validation"\nmax_train_examples = 200')
    )
    path = Path(write_spec(spec))
    code, _, err = cli("plan", str(path), "--set", "data.max_train_examples=1")
    line = line_of(path, "data", "max_train_examples")
    assert_clean_error(
        code, err, f"{path}:{line}: data.max_train_examples: (from --set data.max_train_examples=1)", "only the class"
    )


def test_problem_with_a_base_value_points_at_the_base_file(write_spec, cli, tmp_path):
    base = write_spec(name="base")
    base.write_text(base.read_text().replace("train.tsv", "nope.tsv"))
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n\n[experiment]\nname = "child"\n')
    code, _, err = cli("plan", str(child))
    line = line_of(base, "data", "options", "files")
    assert_clean_error(code, err, f"{base}:{line}: data.options.files.train: data file not found", "nope.tsv")


# --- j. a dataset plugin's error about one of its options is located at that option -------------


def test_dataset_option_error_is_located_at_the_option(write_spec, cli):
    spec = write_spec()
    spec.write_text(spec.read_text().replace("[data.options]\n", '[data.options]\ntext_column = "texte"\n'))
    code, _, err = cli("plan", str(spec))
    line = line_of(spec, "data", "options", "text_column")
    assert_clean_error(code, err, f"{spec}:{line}: data.options.text_column:", "texte")
    code, _, err = cli("plan", str(spec), "--set", "data.options.text_column=txt")
    assert_clean_error(code, err, f"{spec}:{line}: data.options.text_column: (from --set data.options.text_column=txt)")


def test_dataset_plugin_error_with_an_option_key(tmp_path):
    from specrun.errors import DataError
    from specrun.runner.data import option_key

    assert option_key("files.train", "x", {"files": {"train": "a"}}) == "data.options.files.train"
    assert option_key("data.options.files", "x", {}) == "data.options.files"
    assert (
        option_key(None, "data file not found: /d/a.tsv", {"files": {"train": "/d/a.tsv"}, "format": "tsv"})
        == "data.options.files.train"
    )
    assert option_key(None, "cannot read", {"format": "tsv"}) == "data.options"
    assert option_key(None, "cannot read", {}) == "data.dataset"
    assert DataError("m", key="data.options.x").key == "data.options.x"


# --- g. a spec whose runs start from itself is a cycle naming the key -------------------------------


def test_spec_that_starts_from_itself_is_a_cycle(write_spec, cli, tmp_path):
    spec = write_spec(name="selfref")
    spec.write_text(spec.read_text().replace("max_length = 32", 'max_length = 32\ninit_from = "selfref.toml"'))
    code, _, err = cli("plan", str(spec))
    line = line_of(spec, "model", "init_from")
    assert_clean_error(
        code,
        err,
        f"{spec}:{line}: model.init_from: init_from specs refer to each other in a cycle: selfref.toml → selfref.toml",
    )
    assert "deeper" not in err
    # a longer cycle, through another spec's stage
    other = write_spec(name="other")
    other.write_text(
        other.read_text().replace("max_length = 32", 'max_length = 32\ninit_from = "stage:s"')
        + '\n[stages.s]\nmodel = { init_from = "selfref.toml" }\n'
    )
    spec.write_text(spec.read_text().replace('init_from = "selfref.toml"', 'init_from = "other.toml"'))
    code, _, err = cli("plan", str(spec))
    assert_clean_error(
        code,
        err,
        "model.init_from: init_from specs refer to each other in a cycle: selfref.toml → other.toml → selfref.toml",
    )
    assert "deeper" not in err


# --- b. a LoRA rank beyond the adapted matrices' size fails at plan, located ------------------------


def test_lora_rank_beyond_the_hidden_size_fails_at_plan(write_spec, cli):
    spec = write_spec(method='name = "lora"\nrank = 33')  # the tiny model's hidden size is 32
    code, _, err = cli("plan", str(spec))
    line = line_of(spec, "method", "rank")
    assert_clean_error(
        code,
        err,
        f"{spec}:{line}: method.rank: rank 33 exceeds the smaller dimension",
        "(32×32)",
        "use a rank of 32 or less",
    )
    code, _, err = cli("plan", str(spec), "--set", "method.rank=32")
    assert code == 0, err
    # the feed-forward output (64 -> 32) bounds the rank by 32 as well
    code, _, err = cli("plan", str(spec), "--set", 'method.target_modules=["intermediate.dense"]')
    assert_clean_error(code, err, "method.rank", "intermediate.dense (32×64)")


# --- c. mixed JSON label types make no extra classes ------------------------------------------------


def _jsonl_spec(write_spec, tmp_path, odd_label):
    import json

    rows = [{"text": f"good film {i}" if i % 2 else f"bad film {i}", "label": i % 2} for i in range(20)]
    rows[7]["label"] = odd_label
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:8] if r["label"] in (0, 1)))
    spec = write_spec()
    text = spec.read_text()
    start = text.index("files = ")
    end = text.index("\n", start)
    spec.write_text(
        text[:start]
        + f'files = {{ train = "{tmp_path / "train.jsonl"}", validation = "{tmp_path / "dev.jsonl"}" }}'
        + text[end:]
    )
    return spec


def test_mixed_json_label_types_are_a_located_data_error(write_spec, cli, tmp_path):
    train = tmp_path / "train.jsonl"
    for odd, needle in [(1.5, "is the number 1.5"), (True, "is the JSON true"), ("pos", "is the name 'pos'")]:
        spec = _jsonl_spec(write_spec, tmp_path, odd)
        code, _, err = cli("plan", str(spec))
        assert_clean_error(code, err, f"{train}:8: the label in column 'label' {needle}", "data.options.files")
    # a whole number written as a float is the same class as the integer
    spec = _jsonl_spec(write_spec, tmp_path, 1.0)
    code, _, err = cli("plan", str(spec))
    assert code == 0, err
    from specrun.plugins.api import DataContext
    from specrun.plugins.datasets.local import LocalFiles, LocalOptions

    dataset = LocalFiles().load(
        LocalOptions(files={"train": str(train), "validation": str(tmp_path / "dev.jsonl")}), DataContext(None, None)
    )
    assert list(dataset.label_names) == ["0", "1"]


# --- d. a truncated model.safetensors in a local model folder is caught by plan ---------------------


def test_truncated_safetensors_is_caught_by_plan(write_spec, cli, tiny_model_dir, tmp_path):
    import os
    import shutil

    folder = tmp_path / "truncated-model"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 100)
    spec = write_spec()
    code, _, err = cli("plan", str(spec), "--set", f'model.name="{folder}"')
    assert_clean_error(code, err, "model.name", f"{weights}: truncated")
    os.truncate(weights, 5)  # not even a header
    code, _, err = cli("plan", str(spec), "--set", f'model.name="{folder}"')
    assert_clean_error(code, err, "model.name", f"{weights}: truncated")


# --- f. integers beyond what the store's columns hold are refused by validation ---------------------


def test_integers_beyond_the_store_columns_are_refused_by_validation(write_spec, cli, tmp_path):
    import os

    spec = write_spec()
    store = Path(os.environ["SPECRUN_STORE"])
    code, _, err = cli("apply", str(spec), "--set", "train.max_steps=1000000000000")
    assert_clean_error(
        code, err, "train.max_steps: (from --set train.max_steps=1000000000000)", "more than the store can record"
    )
    code, _, err = cli("apply", str(spec), "--set", "experiment.seeds=[3000000000]")
    assert_clean_error(code, err, "experiment.seeds.0", "less than or equal to 2147483647")
    code, _, err = cli("validate", str(spec), "--set", "method.rank=100000000000000000000")
    assert_clean_error(code, err, "method.rank", "beyond a 64-bit integer")
    sweep = write_spec(extra='[sweep]\n"train.eval_every" = [2, 4000000000]\n')
    code, _, err = cli("validate", str(sweep))
    assert_clean_error(
        code,
        err,
        f"{sweep}:{line_of(sweep, 'sweep', 'train.eval_every')}: sweep.train.eval_every",
        "more than the store can record",
    )
    assert not store.exists()  # nothing was written


# --- k. analyze --only X, then a plain analyze: X is cached -----------------------------------------


def test_analyze_only_then_plain_analyze_reports_it_cached(write_spec, cli):
    spec = write_spec(
        train="max_steps = 2", extra='[[analyses]]\nname = "bootstrap_ci"\n\n[[analyses]]\nname = "efficiency"\n'
    )
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    code, _, err = cli("analyze", str(spec), "--only", "efficiency", "--force")
    assert code == 0 and "efficiency: computed" in err, err
    code, _, err = cli("analyze", str(spec))
    assert code == 0, err
    assert "efficiency: cached" in err and "bootstrap_ci: cached" in err, err
    code, _, err = cli("analyze", str(spec), "--only", "efficiency")
    assert code == 0 and "efficiency: cached" in err, err


# --- i. an existing store whose folder cannot hold DuckDB's write-ahead log --------------------------


def _in_read_only_folder(folder: Path, store: Path, args: list[str], env: dict) -> tuple[int, str]:
    """Run specrun with ``folder`` read-only but ``store`` (inside it) writable: chmod for a normal user;
    for root, a read-only bind mount of the folder with a writable bind mount of the store file on top
    (in a private mount namespace)."""
    import os
    import shutil
    import subprocess
    import sys

    import pytest

    command = [sys.executable, "-m", "specrun", *args]
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
        finally:
            folder.chmod(0o755)
        return result.returncode, result.stderr
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a folder read-only")
    writable = folder.parent / "writable-store.duckdb"
    shutil.move(store, writable)
    store.touch()
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && mount --bind "$1" "$2" && shift 2 && exec "$@"'
    try:
        result = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, str(folder), str(writable), str(store), *command],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        shutil.move(writable, store)
    if "mount:" in result.stderr or "unshare:" in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    return result.returncode, result.stderr


def test_store_in_a_folder_without_room_for_the_write_ahead_log(write_spec, cli, tmp_path):
    import hashlib
    import os

    folder = tmp_path / "stores"
    folder.mkdir()
    store = folder / "s.duckdb"
    spec = write_spec(train="max_steps = 1")
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    code, err = _in_read_only_folder(
        folder, store, ["apply", str(spec), "--store", str(store), "--force"], dict(os.environ)
    )
    assert_clean_error(
        code,
        err,
        f"cannot write store {store}: DuckDB keeps a write-ahead log (s.duckdb.wal)",
        f"in {folder}",
        "Make that folder writable",
    )
    assert err.count("error") == 1, err
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before


# --- e. a second, overlapping apply waits for the runs another apply holds ---------------------------


def test_overlapping_apply_waits_for_the_other_then_takes_the_run_as_it_was_left(write_spec, cli, tmp_path):
    import os
    import subprocess
    import sys
    import time

    import duckdb

    from specrun.store.runs import HOST

    spec = write_spec(train="max_steps = 2")
    store = tmp_path / "overlap.duckdb"
    code, _, err = cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    (run_id,) = duckdb.connect(str(store), read_only=True).execute("SELECT run_id FROM runs").fetchone()

    def hold(pid: int, status: str = "running") -> None:
        """What another apply's claim leaves in the store: the run 'running' in a live process."""
        db = duckdb.connect(str(store))
        db.execute(
            "UPDATE runs SET status = ?, pid = ?, host = ?, started_at = now()::TIMESTAMP WHERE run_id = ?",
            [status, pid, HOST, run_id],
        )
        db.close()

    def second_apply(release) -> tuple[int, str]:
        log = tmp_path / "second.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "specrun", "apply", str(spec), "--store", str(store)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while "being trained by another apply" not in log.read_text():
            assert proc.poll() is None, log.read_text()  # it must wait, not finish with the run skipped
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1.5)
        assert proc.poll() is None, log.read_text()  # still waiting
        release()
        return proc.wait(timeout=300), log.read_text()

    holder = subprocess.Popen(["sleep", "300"])
    try:
        hold(holder.pid)

        def other_finishes():
            db = duckdb.connect(str(store))
            db.execute("UPDATE runs SET status = 'completed' WHERE run_id = ?", [run_id])
            db.close()

        code, out = second_apply(other_finishes)
        assert code == 0, out
        assert f"PID {holder.pid} on {HOST}" in out and "cached" in out and "skipped" not in out, out

        hold(holder.pid)  # the other apply dies with the run unfinished: this one trains it
        code, out = second_apply(lambda: (holder.kill(), holder.wait()))
        assert code == 0, out
        assert "1 completed" in out and "skipped" not in out, out
    finally:
        holder.kill()
    status = duckdb.connect(str(store), read_only=True).execute("SELECT status, pid FROM runs").fetchone()
    assert status[0] == "completed" and status[1] != os.getpid()


# --- h. a Ctrl-C after the training loop is never lost ----------------------------------------------


class _LostCtrlC:
    """A Ctrl-C that arrives while garbage collection runs a finalizer: Python drops an exception raised
    there (it prints "Exception ignored"), which is how a Ctrl-C during evaluation or saving went unnoticed."""

    def __del__(self):
        import signal

        signal.raise_signal(signal.SIGINT)


def _ctrl_c_in_a_finalizer():
    _LostCtrlC()  # freed at once: its __del__ runs here


def _statuses(store):
    import duckdb

    with duckdb.connect(str(store), read_only=True) as db:
        return db.execute("SELECT status FROM runs").fetchall()


def test_ctrl_c_while_saving_records_the_run_interrupted(write_spec, cli, monkeypatch, tmp_path):
    from specrun.runner import artifacts

    save_run = artifacts.save_run

    def saving(*args, **kwargs):
        _ctrl_c_in_a_finalizer()
        return save_run(*args, **kwargs)

    monkeypatch.setattr(artifacts, "save_run", saving)
    store = tmp_path / "ctrl-c.duckdb"
    code, _, err = cli("apply", str(write_spec(train="max_steps = 2")), "--store", str(store))
    assert code == 130, err
    assert "interrupted" in err
    assert _statuses(store) == [("interrupted",)]


def test_ctrl_c_while_recording_exits_130_after_recording_atomically(write_spec, cli, monkeypatch, tmp_path):
    from specrun.store import runs as store_runs

    complete = store_runs.complete

    def recording(*args, **kwargs):
        complete(*args, **kwargs)
        _ctrl_c_in_a_finalizer()

    monkeypatch.setattr(store_runs, "complete", recording)
    store = tmp_path / "ctrl-c.duckdb"
    code, _, err = cli("apply", str(write_spec(train="max_steps = 2")), "--store", str(store))
    assert code == 130, err
    assert _statuses(store) == [("completed",)]  # recorded whole before the command stopped


def test_problem_with_a_stage_value_points_at_the_stage_table(write_spec, cli):
    spec = write_spec(extra="[stages.source]\ndata = { max_train_examples = 1 }\n")
    spec.write_text(spec.read_text().replace("max_length = 32", 'max_length = 32\ninit_from = "stage:source"'))
    code, _, err = cli("plan", str(spec))
    line = line_of(spec, "stages", "source", "data")
    assert_clean_error(code, err, f"{spec}:{line}: data.max_train_examples:", "only the class")
