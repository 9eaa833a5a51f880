"""Rough edges a new user hit trying every command (session 29): each keeps a clear message, exit code 2
and the store whole."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import duckdb
import pytest

from specrun.testing import run_cli, toy_spec, write_toy_data


def trial_spec(model, data, extra: str = "") -> str:
    """A two-step LoRA run of the toy task on the tiny model, experiment 'trial'."""
    return toy_spec(
        name="trial",
        method='name = "lora"\nrank = 4',
        model=str(model),
        data_options=f'files = {{ train = "{data}/train.tsv", validation = "{data}/dev.tsv" }}',
        train="max_steps = 2",
        extra=extra,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A store holding one completed run of the 'trial' experiment: (folder, spec, store, run id)."""
    folder = tmp_path_factory.mktemp("trial")
    data = write_toy_data(folder / "toy")
    spec = folder / "trial.toml"
    spec.write_text(trial_spec(tiny_model_dir, data))
    store = folder / "store.duckdb"
    with pytest.MonkeyPatch.context() as env:  # before the per-test `isolated` fixture: set what it would
        env.setenv("SPECRUN_ARTIFACTS", str(folder / "artifacts"))
        env.setenv("SPECRUN_CACHE_DIR", str(folder / "cache"))
        env.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        code, _, err = run_cli("apply", str(spec), "--store", str(store))
    assert code == 0, err
    with duckdb.connect(str(store), read_only=True) as db:
        (run_id,) = db.execute("SELECT run_id FROM runs").fetchone()
    return folder, spec, store, run_id


@pytest.fixture
def store_copy(trained, tmp_path):
    """A copy of the trained store for one test, beside a link to its artifacts."""
    folder, spec, store, run_id = trained
    mine = tmp_path / "store.duckdb"
    shutil.copy(store, mine)
    (tmp_path / "artifacts").symlink_to(folder / "artifacts")
    return spec, mine, run_id


def _runs(store: Path) -> list:
    with duckdb.connect(str(store), read_only=True) as db:
        return db.execute("SELECT run_id, status FROM runs").fetchall()


def test_report_never_writes_over_the_store_or_a_spec(store_copy, tmp_path):
    spec, store, run_id = store_copy
    before = store.read_bytes()
    code, _, err = run_cli("report", "trial", "--store", str(store), "-o", str(store))
    assert code == 2, err
    assert "is the store itself" in err and "Traceback" not in err
    assert store.read_bytes() == before
    assert _runs(store) == [(run_id, "completed")]

    text = spec.read_text()
    code, _, err = run_cli("report", "trial", "--store", str(store), "-o", str(spec))
    assert code == 2, err
    assert "not an HTML report" in err
    assert spec.read_text() == text

    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    code, _, err = run_cli("report", "trial", "--store", str(store), "-o", str(other))
    assert code == 2, err
    assert "not an HTML report" in err
    assert other.read_text() == "my notes\n"

    report = tmp_path / "r.html"
    report.write_text("<!DOCTYPE html>\n<html><body>an earlier report</body></html>\n")
    code, _, err = run_cli("report", "trial", "--store", str(store), "-o", str(report))
    assert code == 0, err  # a report replaces an earlier report
    assert "an earlier report" not in report.read_text()


def test_apply_refuses_a_report_path_onto_the_store_before_training(trained, tiny_model_dir, tmp_path):
    folder = trained[0]
    store = tmp_path / "new.duckdb"
    spec = tmp_path / "s.toml"
    spec.write_text(trial_spec(tiny_model_dir, folder / "toy", f'[report]\npath = "{store}"\n'))
    code, _, err = run_cli("apply", str(spec), "--store", str(store))
    assert code == 2, err
    assert "is the store itself" in err
    assert not store.exists()  # refused before anything trained or was written


def test_ambiguous_run_prefix_names_the_runs_it_matches(store_copy, tmp_path):
    from specrun.store import Store
    from specrun.store.runs import claim

    _, store, _ = store_copy
    for run_id in ("abc1000000aa", "abc2000000bb"):
        run = SimpleNamespace(
            run_id=run_id,
            experiment="trial",
            method="lora",
            dataset="local",
            seed=0,
            eval_set="validation",
            config={"model": {"name": "m"}},
            sweep_values={},
        )
        claim(Store(store), run, "s.toml", {}, force=False)
    for command in (["export", "abc", "-o", str(tmp_path / "out")], ["predict", "abc", "a text"]):
        code, _, err = run_cli(*command, "--store", str(store))
        assert code == 2, err
        assert "matches 2 runs" in err and "abc1000000aa" in err and "abc2000000bb" in err, err
        assert "no run" not in err


def test_ctrl_c_note_fits_the_command(store_copy, monkeypatch):
    from specrun import api
    from specrun.store import query

    _, store, _ = store_copy

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(query, "run_queries", interrupted)
    code, _, err = run_cli("sql", "SELECT 1", "--store", str(store))
    assert code == 130
    assert "interrupted" in err and "run in progress" not in err  # sql trains nothing

    monkeypatch.setattr(api, "apply", interrupted)
    code, _, err = run_cli("apply", "any.toml", "--store", str(store))
    assert code == 130
    assert "the next apply resumes it" in err


def test_predict_table_clips_long_texts_but_csv_keeps_them(store_copy):
    _, store, run_id = store_copy
    long = "word " * 2000
    code, out, err = run_cli("predict", run_id, long, "short text", "--store", str(store))
    assert code == 0, err
    assert "short text" in out
    assert "10,000 characters" in out
    assert out.count("word") < 100
    code, out, err = run_cli("predict", run_id, long, "--store", str(store), "--format", "csv")
    assert code == 0, err
    assert out.count("word") == 2000


def test_new_plugin_help_names_every_kind():
    import typer

    from specrun import cli

    command = typer.main.get_command(cli.app).commands["new-plugin"]
    kind = next(p for p in command.params if p.name == "kind")
    for name in get_args(cli.Kind):
        assert name in kind.help, name


def test_refused_choice_reads_without_pydantic_prefix(tmp_path):
    code, _, err = run_cli("runs", "--format", "xml", "--store", str(tmp_path / "s.duckdb"))
    assert code == 2
    assert "'xml' is not one of" in err
    assert "Value error" not in err


def test_set_with_a_broken_toml_value_says_so(write_spec, cli):
    spec = str(write_spec())
    code, _, err = cli("validate", spec, "--set", "experiment.seeds=[0,")
    assert code == 2
    assert "experiment.seeds" in err and "is not a TOML value" in err
    code, _, err = cli("validate", spec, "--set", "train.epochs=")
    assert code == 2
    assert "no value after '='" in err
    code, _, err = cli("validate", spec, "--set", "train.device=cpu")  # a bare word is still a string
    assert code == 0, err


def test_global_option_after_the_command_says_where_it_goes(tmp_path):
    code, _, err = run_cli("runs", "-q", "--store", str(tmp_path / "s.duckdb"))
    assert code == 2
    assert "global options go before the command: specrun -q runs" in err
    code, _, err = run_cli("runs", "--bogus")
    assert code == 2 and "No such option: --bogus" in err and "global options" not in err


def test_bad_experiment_name_says_what_a_name_is(write_spec, cli):
    code, _, err = cli("validate", str(write_spec()), "--set", 'experiment.name="my study"')
    assert code == 2
    assert "experiment.name" in err and "'my study' is not a name: use letters, digits, _ . -" in err
    assert "pattern" not in err  # not the regular expression


def test_predict_file_read_with_the_wrong_separator_says_why(tmp_path):
    from specrun.errors import DataError
    from specrun.runner.predict import read_questions, read_texts

    commas = tmp_path / "texts.txt"
    commas.write_text("text,label\na fine film,1\n")
    with pytest.raises(DataError, match=r"read as tab-separated: name a comma-separated file \.csv"):
        read_texts(commas)
    tabs = tmp_path / "questions.csv"
    tabs.write_text("question\tcontext\nwho?\tme\n")
    with pytest.raises(DataError, match=r"read as comma-separated: name a tab-separated file \.tsv"):
        read_questions(tabs)
    other = tmp_path / "other.csv"
    other.write_text("review\na fine film\n")
    with pytest.raises(DataError) as found:
        read_texts(other)
    assert "separated" not in str(found.value)  # one real column: nothing to hint


def test_a_profile_value_is_located_in_the_profile_and_validate_reports_every_profile(write_spec, cli):
    spec = write_spec(extra='[profiles.gpu]\nmethod = { name = "lroa" }\n[profiles.big]\ntrain = { batch_size = 0 }\n')
    lines = spec.read_text().splitlines()
    gpu = next(n for n, line in enumerate(lines, 1) if "lroa" in line)
    big = next(n for n, line in enumerate(lines, 1) if "batch_size = 0" in line)
    code, _, err = cli("validate", str(spec), "--profile", "big")
    assert code == 2
    assert f"{spec}:{big}: train.batch_size:" in err  # the profile's inline table, not the base's batch_size = 16
    code, _, err = cli("validate", str(spec))  # every profile's problem, each named
    assert code == 2
    assert f"{spec}:{big}: train.batch_size: (profile big)" in err
    assert f"{spec}:{gpu}: method.name: (profile gpu) unknown method 'lroa'" in err


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_texts_a_terminal_cannot_encode_are_escaped_not_a_traceback(store_copy, fmt):
    import os
    import subprocess
    import sys

    _, store, _ = store_copy
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    query = "SELECT 'h\u00e9llo \U0001f600' AS text"
    result = subprocess.run(
        [sys.executable, "-m", "specrun", "sql", query, "--store", str(store), "--format", fmt],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert b"h\\xe9llo \\U0001f600" in result.stdout


def test_json_output_keeps_texts_as_written(capsys):
    import json

    from specrun.console import print_rows

    print_rows(["text"], [("h\u00e9llo \U0001f600 \u65e5\u672c",)], "json")
    out = capsys.readouterr().out
    assert "h\u00e9llo \U0001f600 \u65e5\u672c" in out  # not \\u00e9 escapes
    assert json.loads(out) == [{"text": "h\u00e9llo \U0001f600 \u65e5\u672c"}]


def test_snapshot_makes_its_folder_and_names_a_file_in_the_way(store_copy, tmp_path):
    _, store, run_id = store_copy
    copy = tmp_path / "backups" / "today" / "copy.duckdb"
    code, _, err = run_cli("snapshot", str(copy), "--store", str(store))
    assert code == 0, err
    assert _runs(copy) == [(run_id, "completed")]
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    code, _, err = run_cli("snapshot", str(blocker / "copy.duckdb"), "--store", str(store))
    assert code == 2
    assert f"{blocker} is a file, not a folder" in err and ".partial" not in err


def test_a_stage_no_run_starts_from_is_refused(write_spec, cli):
    spec = write_spec(extra="[stages.source]\ndata = { max_train_exmples = 5 }\n")
    line = spec.read_text().splitlines().index("[stages.source]") + 1
    code, _, err = cli("validate", str(spec))
    assert code == 2
    assert f"{spec}:{line}: stages.source: no run starts from stage 'source'" in err
    assert 'model.init_from = "stage:source"' in err
    spec.write_text(spec.read_text().replace("max_length = 32", 'max_length = 32\ninit_from = "stage:source"'))
    code, _, err = cli("validate", str(spec))  # used: its own tables are checked
    assert code == 2 and "stages.source.data.max_train_exmples" in err


def test_sql_with_several_statements_shows_each_result_in_order(store_copy):
    """`SELECT 1; SELECT 2` used to print only the last result, silently: now each statement runs in
    order and each result is shown; a format that holds one table refuses before running anything."""
    _, store, _ = store_copy
    code, out, err = run_cli("sql", "SELECT 41 AS first; SET threads = 1; SELECT 42 AS second", "--store", str(store))
    assert code == 0, err
    assert "first" in out and "41" in out and "second" in out and "42" in out
    assert out.index("41") < out.index("42")
    code, out, err = run_cli("sql", "SELECT 1 AS a; SELECT 2 AS b", "-f", "markdown", "--store", str(store))
    assert code == 0, err
    assert "| a |\n| --- |\n| 1 |" in out and "| b |\n| --- |\n| 2 |" in out
    code, out, err = run_cli("sql", "SET threads = 1; SELECT 2 AS b;", "-f", "csv", "--store", str(store))
    assert (code, out.splitlines()) == (0, ["b", "2"])  # one result: csv takes it
    for fmt in ("csv", "json"):
        code, out, err = run_cli("sql", "SELECT 1 AS a; SELECT 2 AS b", "-f", fmt, "--store", str(store))
        assert code == 2 and out == "" and "one at a time" in err and "Traceback" not in err
    code, out, err = run_cli("sql", "SELECT 1 AS a; SELEC 2", "--store", str(store))
    assert code == 2 and "SQL error" in err and "Traceback" not in err
    code, out, err = run_cli("sql", "SELECT 1 AS a; DELETE FROM runs", "--store", str(store))
    assert code == 2 and "statement 2 of 2" in err and "read" in err
    from specrun import api

    with pytest.raises(Exception, match="one at a time"):
        api.sql("SELECT 1; SELECT 2", store=store)
    assert api.sql("SET threads = 1; SELECT 2 AS b", store=store)["b"].to_list() == [2]


def test_runs_and_plan_show_a_run_outside_any_sweep_alike(store_copy):
    """`runs` printed the store's `{}` for a run with no swept value where `plan` shows a blank cell."""
    import csv
    import io

    spec, store, run_id = store_copy
    sweeps = {}
    for command in (["runs"], ["plan", str(spec)]):
        code, out, err = run_cli(*command, "-f", "csv", "--store", str(store))
        assert code == 0, err
        (row,) = [r for r in csv.DictReader(io.StringIO(out)) if r["run_id"] == run_id]
        sweeps[command[0]] = row["sweep"]
    assert sweeps == {"runs": "", "plan": ""}
    code, out, err = run_cli("runs", "--store", str(store))
    assert code == 0 and "{}" not in out
