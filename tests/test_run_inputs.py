"""A run's identity covers what changes its result: a re-saved local model folder, another hub revision
or bitsandbytes version make a completed run stale (``runs.inputs_fingerprint``), while run ids stay
what they were, so stores made before keep serving their runs."""

from __future__ import annotations

import json
import os
import shutil

import duckdb
import torch

from specrun.runner.plan import hub_revision, inputs_fingerprint, model_folder_digest
from specrun.testing import registry_with
from tests.test_runner_store import sql


def _copy_model(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def _resave_with_other_weights(folder):
    from transformers import BertModel

    model = BertModel.from_pretrained(folder)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.add_(0.5)
    model.save_pretrained(folder)


def _plan(cli, spec) -> list[dict]:
    code, out, err = cli("plan", str(spec), "-f", "json")
    assert code == 0, err
    return json.loads(out)


def test_a_resaved_model_folder_makes_its_runs_stale(tiny_model_dir, tmp_path, write_spec, cli):
    folder = _copy_model(tiny_model_dir, tmp_path)
    spec = write_spec(train="max_steps = 2")
    spec.write_text(spec.read_text().replace(str(tiny_model_dir), str(folder)))
    assert cli("apply", str(spec))[0] == 0
    [before] = _plan(cli, spec)
    assert before["status"] == "cached"
    first = sql(cli, "SELECT run_id, inputs_fingerprint, finished_at FROM runs")[0]
    assert json.loads(first["inputs_fingerprint"])["model_files"] == model_folder_digest(folder)

    _resave_with_other_weights(folder)
    [after] = _plan(cli, spec)
    assert after["run_id"] == before["run_id"]  # the id hashes the model's name: unchanged
    assert after["status"] == "stale: will retrain (the model folder's files changed since it trained)"
    code, _, err = cli("apply", str(spec))
    assert code == 0 and "1 completed" in err, err
    second = sql(cli, "SELECT run_id, inputs_fingerprint, finished_at, attempts FROM runs")[0]
    assert (
        second["run_id"] == first["run_id"] and second["attempts"] == 2 and second["finished_at"] > first["finished_at"]
    )
    assert json.loads(second["inputs_fingerprint"])["model_files"] == model_folder_digest(folder)
    [again] = _plan(cli, spec)
    assert again["status"] == "cached"


def test_the_folder_digest_follows_contents_not_timestamps(tiny_model_dir, tmp_path):
    folder = _copy_model(tiny_model_dir, tmp_path)
    digest = model_folder_digest(folder)
    (folder / "config.json").touch()  # a new modification time, the same contents
    (folder / "README.md").write_text("notes")  # not read by from_pretrained
    assert model_folder_digest(folder) == digest
    _resave_with_other_weights(folder)
    assert model_folder_digest(folder) != digest


def test_runs_from_before_fingerprints_stay_cached_and_get_one(tiny_model_dir, tmp_path, write_spec, cli):
    """A store made before migration m012: its runs have no fingerprint. Same inputs: still cached (same
    ids), and the apply that finds them records today's fingerprint, so a later change is noticed."""
    folder = _copy_model(tiny_model_dir, tmp_path)
    spec = write_spec(train="max_steps = 2")
    spec.write_text(spec.read_text().replace(str(tiny_model_dir), str(folder)))
    assert cli("apply", str(spec))[0] == 0
    with duckdb.connect(os.environ["SPECRUN_STORE"]) as db:
        db.execute("UPDATE runs SET inputs_fingerprint = NULL")
    [planned] = _plan(cli, spec)
    assert planned["status"] == "cached"
    code, _, err = cli("apply", str(spec))
    assert code == 0 and "1 cached" in err, err
    assert json.loads(sql(cli, "SELECT inputs_fingerprint FROM runs")[0]["inputs_fingerprint"])[
        "model_files"
    ] == model_folder_digest(folder)
    _resave_with_other_weights(folder)
    assert _plan(cli, spec)[0]["status"].startswith("stale: will retrain")


def test_quantized_runs_record_the_bitsandbytes_version(tiny_model_dir):
    registry = registry_with()
    config = {"model": {"name": str(tiny_model_dir)}, "method": {"name": "lora", "quantize": "8bit"}}
    assert "bitsandbytes" in inputs_fingerprint(config, registry)
    assert "bitsandbytes" not in inputs_fingerprint({**config, "method": {"name": "lora"}}, registry)
    assert "bitsandbytes" in inputs_fingerprint({**config, "method": {"name": "qlora"}}, registry)


def test_a_hub_model_records_the_revision_it_resolved_to(tmp_path, monkeypatch):
    """The commit is the snapshot folder the HF cache holds the model's config.json in."""
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("0123abcd")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_revision("org/tiny") == "0123abcd"
    assert hub_revision("org/absent") is None
    fingerprint = inputs_fingerprint({"model": {"name": "org/tiny"}, "method": {"name": "full"}}, registry_with())
    assert fingerprint == {"model_revision": "0123abcd"}
