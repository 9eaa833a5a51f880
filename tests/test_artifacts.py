"""Saved runs are folders plain peft and transformers load; specrun reloads them exactly, and still reads
runs saved as ``trained.safetensors``; the store records their paths relative to its folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
import torch
from safetensors.torch import save_file

from specrun.runner.artifacts import read_run

TEXTS = ["a really good film", "the acting was awful", "quite a nice story", "a dreadful plot"]


def _rows(store: Path, query: str, params=None) -> list[tuple]:
    with duckdb.connect(str(store), read_only=True) as db:
        return db.execute(query, params or []).fetchall()


def _apply(cli, spec: Path, *args: str) -> str:
    code, _, err = cli("apply", str(spec), *args)
    assert code == 0, err
    return err


def _labels(predicted: list[dict]) -> list[tuple[str, float]]:
    return [(p["label"], p["confidence"]) for p in predicted]


def _predict(cli, run_id: str, *args: str) -> list[dict]:
    code, out, err = cli("predict", run_id, *TEXTS, "-f", "json", *args)
    assert code == 0, err
    return json.loads(out)


def _probabilities(model, tokenizer) -> list[tuple[str, float]]:
    """(label, confidence) for TEXTS, as ``specrun predict`` shows them."""
    with torch.inference_mode():
        probs = model(
            **tokenizer(TEXTS, truncation=True, max_length=32, padding=True, return_tensors="pt")
        ).logits.softmax(-1)
    return [(model.config.id2label[int(p.argmax())], float(p.max())) for p in probs]


def _same(got: list[tuple[str, float]], predicted: list[dict]) -> None:
    assert [label for label, _ in got] == [p["label"] for p in predicted]
    assert [c for _, c in got] == pytest.approx([p["confidence"] for p in predicted], abs=1e-5)


def _run(store: Path, experiment: str) -> tuple[str, Path]:
    """(run id, weights file) of the experiment's run."""
    [(run_id, path)] = _rows(
        store,
        "SELECT r.run_id, a.path FROM runs r JOIN artifacts a USING (run_id) WHERE r.experiment = ?",
        [experiment],
    )
    return run_id, store.parent / path


def test_an_adapter_run_is_a_peft_folder_that_peft_loads_over_the_base_model(write_spec, cli, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _apply(cli, write_spec(train="max_steps = 20\nlearning_rate = 0.02"))
    run_id, weights = _run(tmp_path / "store.duckdb", "toy")
    folder = weights.parent
    assert weights.name == "adapter_model.safetensors"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "run.json"]
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and "classifier" in adapter["modules_to_save"]
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)
    meta = json.loads((folder / "run.json").read_text())
    assert meta["format"] == "peft" and meta["label_names"] == ["0", "1"]

    labels = meta["label_names"]
    base = AutoModelForSequenceClassification.from_pretrained(
        adapter["base_model_name_or_path"],
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    _same(_probabilities(model, AutoTokenizer.from_pretrained(str(tiny_model_dir))), _predict(cli, run_id))


def test_a_whole_model_run_is_a_transformers_folder_with_labels_and_tokenizer(write_spec, cli, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _apply(cli, write_spec(method='name = "bitfit"', train="max_steps = 20\nlearning_rate = 0.02"))
    run_id, weights = _run(tmp_path / "store.duckdb", "toy")
    folder = weights.parent
    assert weights.name == "model.safetensors"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "run.json"} <= {
        p.name for p in folder.iterdir()
    }
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert model.config.id2label == {0: "0", 1: "1"} and tokenizer.model_max_length == 32  # the run's max_length
    _same(_probabilities(model, tokenizer), _predict(cli, run_id))
    # the folder holds every weight; run.json lists the ones bitfit trained (biases and head), which specrun reloads
    saved = read_run(folder)
    assert set(saved.tensors) == {
        n for n, p in model.named_parameters() if n.endswith(".bias") or n.startswith("classifier.")
    }
    [(artifact_bytes,)] = _rows(tmp_path / "store.duckdb", "SELECT value FROM metrics WHERE name = 'artifact_bytes'")
    assert artifact_bytes == saved.trained_bytes() < weights.stat().st_size / 10


def _to_old_format(store: Path, run_id: str) -> Path:
    """Rewrite a run's folder as specrun saved runs before portable folders (``trained.safetensors`` under
    parameter names, ``run.json`` without format or tensors) and its artifact row as it was (absolute)."""
    [(path,)] = _rows(store, "SELECT path FROM artifacts WHERE run_id = ?", [run_id])
    saved = read_run(store.parent / path)
    tensors = {name: t.contiguous() for name, t in saved.tensors_by_parameter().items()}
    for path in saved.folder.iterdir():
        path.unlink()
    save_file(tensors, str(saved.folder / "trained.safetensors"))
    old_meta = {k: saved.meta[k] for k in ("run_id", "config", "label_names")}
    (saved.folder / "run.json").write_text(json.dumps(old_meta))
    with duckdb.connect(str(store)) as db:
        db.execute(
            "UPDATE artifacts SET path = ? WHERE run_id = ?", [str(saved.folder / "trained.safetensors"), run_id]
        )
    return saved.folder


def test_runs_saved_as_trained_safetensors_keep_working(write_spec, cli, tmp_path):
    """An old run predicts as it did, is a transfer source, is evaluated on a set added later, and exports."""
    spec = write_spec(train="max_steps = 20\nlearning_rate = 0.02")
    _apply(cli, spec)
    store = tmp_path / "store.duckdb"
    run_id, _ = _run(store, "toy")
    before = _predict(cli, run_id)
    folder = _to_old_format(store, run_id)
    assert sorted(p.name for p in folder.iterdir()) == ["run.json", "trained.safetensors"]

    assert _labels(_predict(cli, run_id)) == _labels(before)
    target = write_spec(name="target", train="max_steps = 2")
    target.write_text(target.read_text().replace("max_length = 32", f'max_length = 32\ninit_from = "{run_id}"'))
    _apply(cli, target)
    [(loaded, source_tensors)] = _rows(store, "SELECT loaded, source_tensors FROM transfers")
    assert loaded == source_tensors == 8  # the adapters of two layers' query and value
    spec.write_text(spec.read_text().replace("[method]", "[data.eval_sets.again]\n\n[method]"))
    assert "evaluated" in _apply(cli, spec)
    assert _rows(store, "SELECT count(*) FROM predictions WHERE run_id = ? AND split = 'again'", [run_id])[0][0] == 80
    code, _out, err = cli("export", run_id, "-o", str(tmp_path / "exported"), "--merge")
    assert code == 0, err
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    exported = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "exported")).eval()
    _same(_probabilities(exported, AutoTokenizer.from_pretrained(str(tmp_path / "exported"))), before)


def test_a_store_moved_with_its_artifacts_still_finds_its_weights(write_spec, cli, tmp_path, monkeypatch):
    monkeypatch.delenv("SPECRUN_ARTIFACTS")  # the default: specrun-artifacts/ beside the store
    first = tmp_path / "first"
    first.mkdir()
    _apply(cli, write_spec(train="max_steps = 4"), "--store", str(first / "results.duckdb"))
    [(run_id, path)] = _rows(first / "results.duckdb", "SELECT run_id, path FROM artifacts")
    assert path == f"specrun-artifacts/{run_id}/adapter_model.safetensors"
    before = _predict(cli, run_id, "--store", str(first / "results.duckdb"))
    shutil.move(first, tmp_path / "moved")
    after = _predict(cli, run_id, "--store", str(tmp_path / "moved" / "results.duckdb"))
    assert _labels(after) == _labels(before)
    alone = tmp_path / "alone"  # the store without its artifacts: one message naming where it looked
    alone.mkdir()
    shutil.copy(tmp_path / "moved" / "results.duckdb", alone)
    code, _, err = cli("predict", run_id, "a film", "--store", str(alone / "results.duckdb"))
    assert code == 2
    assert (
        err.strip()
        == f"error: run {run_id}: saved weights not found: {alone / 'specrun-artifacts' / run_id / 'adapter_model.safetensors'}"
    )
