"""Transfer: `model.init_from` names a spec (trained first) or a run id; the new run starts from the
source run's trained weights, except the classification head."""

import json

import torch
from safetensors.torch import load_file


def test_init_from_spec_trains_source_first_and_loads_its_adapters(write_spec, cli, tmp_path):
    source = write_spec(name="source", train="max_steps = 5\nlearning_rate = 0.01")
    target = write_spec(name="target", train="max_steps = 1\nlearning_rate = 1e-12\nwarmup_ratio = 0.5")
    target.write_text(target.read_text().replace("max_length = 32", f'max_length = 32\ninit_from = "{source.name}"'))
    code, _, err = cli("apply", str(target))
    assert code == 0, err
    assert "[required first]" in err

    code, out, _ = cli(
        "sql",
        "SELECT r.experiment, r.config->'model'->>'init_from' AS init_from, a.path FROM runs r JOIN artifacts a USING (run_id) ORDER BY experiment",
        "-f",
        "json",
    )
    src, tgt = json.loads(out)
    assert src["experiment"] == "source" and tgt["experiment"] == "target"
    source_id = json.loads(cli("sql", "SELECT run_id FROM runs WHERE experiment = 'source'", "-f", "json")[1])[0][
        "run_id"
    ]
    assert tgt["init_from"] == source_id

    a, b = load_file(tmp_path / src["path"]), load_file(tmp_path / tgt["path"])  # relative to the store's folder
    lora = [k for k in a if "lora_" in k]
    assert lora and set(a) == set(b)
    for k in lora:  # a learning rate of 1e-12 for one step: the adapters are the source's
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    head = [k for k in a if "classifier" in k]
    assert any(not torch.allclose(a[k], b[k], atol=1e-3) for k in head)  # the head started fresh


def test_init_from_unknown_run_fails_before_training(write_spec, cli, tmp_path):
    spec = write_spec(train="max_steps = 1")
    spec.write_text(spec.read_text().replace("max_length = 32", 'max_length = 32\ninit_from = "0123456789ab"'))
    line = spec.read_text().splitlines().index('init_from = "0123456789ab"') + 1
    code, _, err = cli("apply", str(spec))
    assert code == 2
    assert f"{spec}:{line}: model.init_from: run '0123456789ab' is not a completed run in" in err
    assert not (tmp_path / "store.duckdb").exists()
