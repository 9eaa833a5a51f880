"""The Python API: the notebook-style script of docs/api.md runs as written (on the tiny model), and the
functions behave as the CLI does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def doc_script() -> str:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return code


def test_the_documented_notebook_script_runs(write_spec, tmp_path, monkeypatch, capsys):
    """docs/api.md's script, with specs/quickstart.toml swapped for a tiny-model spec of the same shape
    (named quickstart, a LoRA rank to sweep, a max_train_examples to set)."""
    spec = write_spec(name="quickstart", train="epochs = 1")
    spec.write_text(
        spec.read_text().replace('eval_split = "validation"', 'eval_split = "validation"\nmax_train_examples = 100')
    )
    monkeypatch.chdir(tmp_path)
    script = doc_script().replace('"specs/quickstart.toml"', repr(str(spec)))
    namespace: dict = {}
    exec(compile(script, str(DOC), "exec"), namespace)
    result, by_rank, everything = namespace["result"], namespace["by_rank"], namespace["everything"]
    assert result.counts == {"completed": 2}
    assert sorted(by_rank["rank"].to_list()) == ["4", "8"]
    assert (
        by_rank.filter(by_rank["rank"] == "4")["trainable_params"][0]
        < by_rank.filter(by_rank["rank"] == "8")["trainable_params"][0]
    )
    assert set(result.runs["run_id"]) <= set(everything["run_id"])
    printed = capsys.readouterr().out
    assert "a gorgeous, heartfelt film" in printed and "ms" in printed

    import specrun

    again = specrun.apply(
        str(spec),
        overrides=namespace["result"]
        and [
            "data.max_train_examples=200",
            "train.epochs=1",
            "train.eval_every='epoch'",
            "experiment.seeds=[0]",
            'sweep."method.rank"=[4, 8]',
        ],
        store="api-demo.duckdb",
        progress=False,
    )
    assert again.counts == {"cached": 2}


def test_api_errors_are_specrun_errors(tmp_path, write_spec):
    import specrun
    from specrun.errors import SpecError, SpecrunError, StoreError

    spec = write_spec(name="bad", train="epochs = 0")
    with pytest.raises(SpecError) as raised:
        specrun.apply(spec, store=tmp_path / "s.duckdb", progress=False)
    assert "train.epochs" in str(raised.value)
    assert not (tmp_path / "s.duckdb").exists()
    with pytest.raises(SpecrunError):
        specrun.sql("SELEC 1", store=tmp_path / "s.duckdb")
    with pytest.raises(StoreError):
        specrun.load_run("nosuchrun", store=tmp_path / "s.duckdb")
