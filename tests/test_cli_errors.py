"""Every class of bad input gets one clear message and exit code 2, never a traceback, and writes nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SPECRUN = [sys.executable, "-m", "specrun"]


def specrun(*args, env=None):
    """The real command in a subprocess (what a user sees)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*SPECRUN, *args], capture_output=True, text=True, env=full_env, timeout=120)


def assert_clean_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_syntax_error_subprocess(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('[experiment]\nname = "x"\n[data\ndataset = "glue/sst2"\n')
    result = specrun("apply", str(spec), "--store", str(tmp_path / "s.duckdb"))
    assert_clean_error(result.returncode, result.stderr, f"{spec}:3", "TOML syntax error")
    assert not (tmp_path / "s.duckdb").exists()  # a spec that fails validation writes nothing


def test_unknown_key_subprocess(write_spec, tmp_path):
    spec = write_spec(method='name = "lora"\nrnak = 4')
    result = specrun("apply", str(spec), "--store", str(tmp_path / "s.duckdb"))
    assert_clean_error(result.returncode, result.stderr, "method.rnak", "did you mean 'rank'", ":")
    assert not (tmp_path / "s.duckdb").exists()


def test_validation_errors_in_process(write_spec, cli, tmp_path):
    code, _, err = cli("apply", str(write_spec(method='name = "loar"')))
    assert_clean_error(code, err, "method.name", "did you mean 'lora'")
    code, _, err = cli("validate", str(write_spec(train="epochs = 0")))
    assert_clean_error(code, err, "train.epochs", "greater than 0")
    code, _, err = cli("plan", str(tmp_path / "missing.toml"))
    assert_clean_error(code, err, "spec file not found")
    assert not Path(os.environ["SPECRUN_STORE"]).exists()


def test_bad_set(write_spec, cli):
    code, _, err = cli("apply", str(write_spec()), "--set", "train.epochs")
    assert_clean_error(code, err, "expected KEY=VALUE")
    code, _, err = cli("apply", str(write_spec()), "--set", "train.batch_size=0")
    assert_clean_error(code, err, "toy.toml:21: train.batch_size", "(from --set train.batch_size=0)")


def test_missing_data_file_names_path(write_spec, cli, tmp_path):
    spec = write_spec()
    spec.write_text(spec.read_text().replace("train.tsv", "nope.tsv"))
    code, _, err = cli("apply", str(spec))
    assert_clean_error(code, err, "data file not found", "nope.tsv")


def test_missing_data_dir_for_glue(tmp_path):
    spec = tmp_path / "g.toml"
    spec.write_text('[experiment]\nname = "g"\n[data]\ndataset = "glue/rte"\n[method]\nname = "full"\n')
    result = specrun("plan", str(spec), env={"SPECRUN_DATA_DIR": str(tmp_path / "nowhere")})
    assert_clean_error(result.returncode, result.stderr, "glue/rte", "nowhere")


def test_bad_split_name(write_spec, cli):
    spec = write_spec()
    spec.write_text(spec.read_text().replace('eval_split = "validation"', 'eval_split = "valdation"'))
    code, _, err = cli("plan", str(spec))
    assert_clean_error(code, err, "no split 'valdation'", "did you mean 'validation'")


def test_store_and_sql_errors(cli, tmp_path, write_spec):
    code, _, err = cli("sql", "SELECT 1", "--store", str(tmp_path / "none.duckdb"))
    assert_clean_error(code, err, "no store at")
    code, _, err = cli("apply", str(write_spec(train="max_steps = 2")))
    assert code == 0, err
    code, _, err = cli("sql", "SELEC nonsense")
    assert_clean_error(code, err, "SQL error")
    code, _, err = cli("sql", "DELETE FROM runs")
    assert_clean_error(code, err, "read-only")
    code, out, _ = cli("sql", "SELECT count(*) AS n FROM runs", "-f", "csv")
    assert out.splitlines() == ["n", "1"]  # the refused DELETE changed nothing
    code, out, _ = cli("sql", "SELECT 'a|b' AS text, 0.5 AS x, NULL AS y", "-f", "markdown")
    assert out.splitlines() == ["| text | x | y |", "| --- | --- | --- |", "| a\\|b | 0.5 |  |"]
    code, _, err = cli("runs", "--format", "xml")
    assert_clean_error(code, err, "Invalid value for '--format'")
    code, _, err = cli("predict", "deadbeef", "hello")
    assert_clean_error(code, err, "no run 'deadbeef'")


@pytest.mark.parametrize("args,needle", [(["frobnicate"], "No such command"), (["apply"], "Missing argument")])
def test_usage_errors(cli, args, needle):
    code, _, err = cli(*args)
    assert code == 2 and needle in err


def test_library_warnings_are_hidden_unless_verbose_and_ours_always_show():
    """Filtering is by the module that warns: transformers' advisories are noise by default and shown
    once with -v; a warning issued from specrun's own code is never filtered."""
    import warnings

    from specrun import logs

    try:
        with warnings.catch_warnings(record=True) as caught:
            logs.configure()
            warnings.warn_explicit(
                "advisory", UserWarning, "modeling_utils.py", 1, module="transformers.modeling_utils"
            )
            warnings.warn_explicit("ours", UserWarning, "train.py", 1, module="specrun.runner.train")
            logs.configure(verbose=True)
            for line in (2, 3):  # the same warning from two places: shown once
                warnings.warn_explicit(
                    "advisory again", UserWarning, "modeling_utils.py", line, module="transformers.modeling_utils"
                )
    finally:
        logs.configure()
    assert [str(w.message) for w in caught] == ["ours", "advisory again"]


def test_library_log_records_go_to_the_debug_log_only(capsys):
    """A library's log chatter (kernels' offline trust note, printed by logging's last-resort handler on
    every apply that imports bitsandbytes) reaches neither stdout nor stderr unless -v; with -v it is a
    debug note naming the library. A library's error still shows, as a warning."""
    import io
    import logging

    from rich.console import Console

    from specrun import console, logs

    note = "Skipping publisher trust check for 'kernels-community/x' because Hugging Face Hub is in offline mode."
    verbose_err, old_err = io.StringIO(), console.err
    try:
        logs.configure()
        logging.getLogger("kernels._internals.hf_hub").warning(note)
        logging.getLogger("transformers.modeling_utils").error("weights could not be read")
        quiet = capsys.readouterr()
        console.err = Console(file=verbose_err, soft_wrap=True, markup=False, highlight=False, width=400)
        logs.configure(verbose=True)
        logging.getLogger("kernels._internals.hf_hub").warning(note)
    finally:
        console.err = old_err
        logs.configure()
    assert note not in quiet.out + quiet.err
    assert "weights could not be read" in quiet.err and "weights could not be read" not in quiet.out
    assert f"debug: [kernels._internals.hf_hub] {note}" in verbose_err.getvalue()


def test_quiet_hides_notes_and_verbose_is_accepted(cli, write_spec, tmp_path):
    spec = write_spec(train="max_steps = 1")
    assert cli("apply", str(spec))[0] == 0
    code, _, err = cli("snapshot", str(tmp_path / "a.duckdb"))
    assert code == 0 and "snapshot of" in err
    code, _, err = cli("-q", "snapshot", str(tmp_path / "b.duckdb"))
    assert code == 0 and err == "" and (tmp_path / "b.duckdb").exists()
    code, out, err = cli("-v", "runs", "-f", "csv")
    assert code == 0 and out.count("\n") == 2


def test_snapshot_is_a_readable_copy(cli, write_spec, tmp_path):
    spec = write_spec(train="max_steps = 1")
    assert cli("apply", str(spec))[0] == 0
    assert cli("snapshot", str(tmp_path / "copy.duckdb"))[0] == 0
    code, out, _ = cli("runs", "--store", str(tmp_path / "copy.duckdb"), "-f", "json")
    code2, out2, _ = cli("runs", "-f", "json")
    assert code == code2 == 0 and out == out2


def test_deprecations_from_specrun_and_its_libraries_fail_the_suite():
    """The warnings policy (pyproject.toml, specrun.logs): a DeprecationWarning or FutureWarning raised from
    specrun's code or inside transformers, peft or datasets is an error, also after a command has quieted
    the libraries in-process; the known exceptions pass; specrun's own deprecations for plugin authors show."""
    import warnings

    from specrun import logs
    from specrun.errors import SpecrunDeprecationWarning

    def warn(message, category, module):
        warnings.warn_explicit(message, category, "somewhere.py", 1, module=module)

    try:
        logs.configure()  # what every command does: library warnings hidden
        for module in (
            "specrun.runner.train",
            "transformers.modeling_utils",
            "peft.tuners.lora.model",
            "datasets.load",
        ):
            for category in (DeprecationWarning, FutureWarning):
                with pytest.raises(category):
                    warn("this will be removed", category, module)
        message, category, module, _ = logs.KNOWN_LIBRARY_DEPRECATIONS[0]
        warn(message.replace("\\", "") + " and will be removed in v6.", category, module.replace("\\", ""))
        with pytest.warns(SpecrunDeprecationWarning):
            warn("write tables = [...] instead", SpecrunDeprecationWarning, "specrun.plugins.registry")
        warn("advisory", UserWarning, "transformers.modeling_utils")  # library advice: hidden, not an error
    finally:
        logs.configure()
