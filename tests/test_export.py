"""``specrun export``: a folder plain transformers loads and predicts with as ``specrun predict`` does;
clear errors for what cannot be exported."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

TEXTS = ["a really good film", "the acting was awful", "quite a nice story", "a dreadful plot"]


def _apply(cli, spec: Path) -> str:
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    [(run_id,)] = (
        duckdb.connect(str(spec.parent / "store.duckdb"), read_only=True)
        .execute("SELECT run_id FROM runs WHERE experiment = ?", [spec.stem])
        .fetchall()
    )
    return run_id


def _predict(cli, run_id: str) -> list[tuple[str, float]]:
    code, out, err = cli("predict", run_id, *TEXTS, "-f", "json")
    assert code == 0, err
    return [(p["label"], p["confidence"]) for p in json.loads(out)]


def _pipeline(folder: Path) -> list[tuple[str, float]]:
    from transformers import pipeline

    return [(p["label"], p["score"]) for p in pipeline("text-classification", model=str(folder), device="cpu")(TEXTS)]


def _auto(folder: Path) -> list[tuple[str, float]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    with torch.inference_mode():
        probs = model(**tokenizer(TEXTS, truncation=True, padding=True, return_tensors="pt")).logits.softmax(-1)
    return [(model.config.id2label[int(p.argmax())], float(p.max())) for p in probs]


def _same(got, expected) -> None:
    assert [label for label, _ in got] == [label for label, _ in expected]
    assert [c for _, c in got] == pytest.approx([c for _, c in expected], abs=1e-5)


@pytest.mark.parametrize(
    "method, merge, kind, files",
    [
        ('name = "lora"\nrank = 4', True, "merged", {"config.json", "model.safetensors"}),
        (
            'name = "lora"\nrank = 4',
            False,
            "model+adapter",
            {"config.json", "model.safetensors", "adapter_config.json", "adapter_model.safetensors"},
        ),
        ('name = "full"', False, "model", {"config.json", "model.safetensors"}),
    ],
    ids=["lora-merged", "lora", "full"],
)
def test_an_export_loads_with_plain_transformers_and_predicts_like_specrun(
    method, merge, kind, files, write_spec, cli, tmp_path, tiny_model_dir, tuned_model_dir
):
    spec = write_spec(method=method, train="max_steps = 30\nlearning_rate = 0.02")
    spec.write_text(
        spec.read_text().replace(str(tiny_model_dir), str(tuned_model_dir))
    )  # a backbone with features: LoRA learns fast
    run_id = _apply(cli, spec)
    expected = _predict(cli, run_id)
    assert len({label for label, _ in expected}) == 2, "the run should tell the texts apart"
    out = tmp_path / "exported"
    code, stdout, err = cli("export", run_id[:6], "-o", str(out), *(["--merge"] if merge else []))
    assert code == 0, err
    assert f"exported run {run_id}" in stdout and "checked: loaded that way, it predicts what the run does" in stdout
    assert files | {"tokenizer.json", "tokenizer_config.json", "run.json"} == {p.name for p in out.iterdir()}
    assert json.loads((out / "run.json").read_text())["export"] == kind
    _same(_auto(out), expected)
    _same(_pipeline(out), expected)


def test_prompt_tuning_exports_an_adapter_folder_peft_loads_and_cannot_merge(write_spec, cli, tmp_path):
    import torch
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    run_id = _apply(
        cli,
        write_spec(
            method='name = "prompt_tuning"\nnum_virtual_tokens = 4', train="max_steps = 10\nlearning_rate = 0.03"
        ),
    )
    code, out, err = cli("export", run_id, "-o", str(tmp_path / "merged"), "--merge")
    assert code == 2
    assert (
        f"error: run {run_id}: method 'prompt_tuning' cannot be merged: prompt_tuning adds virtual tokens to "
        "the input, which no weight of the model can hold; export without --merge"
    ) in err and "Traceback" not in err
    assert not (tmp_path / "merged").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]

    code, out, err = cli("export", run_id, "-o", str(tmp_path / "adapter"))
    assert code == 0, err
    assert "AutoPeftModelForSequenceClassification.from_pretrained" in out
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        str(tmp_path / "adapter"), num_labels=2, id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1}
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "adapter"))
    with torch.inference_mode():
        probs = model(**tokenizer(TEXTS[:1], return_tensors="pt")).logits.softmax(-1)[0]
    _same([(str(int(probs.argmax())), float(probs.max()))], _predict(cli, run_id)[:1])


def test_a_quantized_run_cannot_merge(write_spec, cli, tmp_path):
    run_id = _apply(cli, write_spec(method='name = "lora"\nrank = 4\nquantize = "8bit"', train="max_steps = 2"))
    code, _, err = cli("export", run_id, "-o", str(tmp_path / "merged"), "--merge")
    assert code == 2
    assert "cannot be merged: its base model is quantized to 8 bits" in err and "Traceback" not in err


def test_export_errors_exit_2_with_one_message(write_spec, cli, tmp_path):
    run_id = _apply(cli, write_spec(train="max_steps = 2"))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    (tmp_path / "a-file").write_text("mine")
    store = tmp_path / "store.duckdb"
    cases = [
        (["export", "0000dead", "-o", str(tmp_path / "x")], f"error: no run '0000dead' in {store}"),
        (
            ["export", run_id, "-o", str(taken)],
            f"error: {taken} exists and is not an empty folder: give a new folder to export into",
        ),
        (
            ["export", run_id, "-o", str(tmp_path / "a-file")],
            f"error: {tmp_path / 'a-file'} exists and is not an empty folder: give a new folder to export into",
        ),
        (["export", run_id], "Missing option '--output'"),
    ]
    for args, message in cases:
        code, _, err = cli(*args)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err, err
    assert (taken / "notes.txt").read_text() == "mine"
    with duckdb.connect(str(store)) as db:
        db.execute("UPDATE runs SET status = 'failed'")
    code, _, err = cli("export", run_id, "-o", str(tmp_path / "y"))
    assert code == 2
    assert (
        err.strip().splitlines()[-1]
        == f"error: run {run_id} is failed: only completed runs with saved weights can be exported"
    )
    assert not (tmp_path / "y").exists()
