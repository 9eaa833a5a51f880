"""``plan`` counts trainable parameters from models built on the meta device: the same counts as the
real models the runs build, for every built-in method on tiny models of several architectures."""

from __future__ import annotations

import pytest

from specrun.errors import ConfigError

#: Architectures of different shapes: BERT, DistilBERT (other names, pre_classifier), ALBERT (shared
#: layers, factorized embeddings), DeBERTa-v2 (relative attention), GPT-2 (fused Conv1D projections),
#: Llama (grouped-query attention, no biases).
ARCHS = ("bert", "distilbert", "albert", "deberta-v2", "gpt2", "llama")

#: (method, options) cases: every built-in method, LoRA in each placement and quantized.
CASES = [
    ("full", {}),
    ("lora", {"rank": 4}),
    ("lora", {"rank": 2, "placement": "attn-full"}),
    ("lora", {"rank": 2, "placement": "ffn-only"}),
    ("lora", {"rank": 3, "placement": "full-model"}),
    ("lora", {"rank": 4, "quantize": "8bit"}),
    ("qlora", {"rank": 4, "compute_dtype": "fp32"}),
    ("bitfit", {}),
    ("bitfit", {"subset": "query-ffn"}),
    ("ia3", {}),
    ("ia3", {"ffn": False}),
    ("freeze", {"layers": 1}),
    ("head_only", {}),
    ("head_only", {"train_pooler": True}),
    ("prompt_tuning", {"num_virtual_tokens": 4}),
    ("prompt_tuning", {"num_virtual_tokens": 3, "init": "text", "init_text": "movie"}),
]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """``backbones(model_type)``: a tiny random backbone of that architecture and its tokenizer, saved
    (untrained: only the shapes matter here)."""
    import torch
    from transformers import AutoModel

    from specrun.testing.architectures import make_tokenizer, tiny_config

    made = {}

    def get(model_type: str):
        if model_type not in made:
            folder = tmp_path_factory.mktemp(f"shape-{model_type}")
            tokenizer = make_tokenizer(model_type)
            torch.manual_seed(0)
            AutoModel.from_config(tiny_config(model_type, tokenizer)).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            made[model_type] = folder
        return made[model_type]

    return get


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory):
    """A resolved run config of the toy task (the model and method are set per case)."""
    from specrun.testing import registry_with
    from specrun.testing.contracts import _toy_config

    config, _ = _toy_config(registry_with(), tmp_path_factory.mktemp("toy"), "unused", "max_steps = 1")
    return config


def settings(base: dict, model_dir, method: str, options: dict) -> dict:
    return {
        **base,
        "model": {**base["model"], "name": str(model_dir), "max_length": 16},
        "method": {"name": method, **options},
        "train": {**base["train"], "precision": "fp32"},
    }


def counts(registry, base, model_dir, method: str, options: dict, labels=("neg", "pos"), monkeypatch=None):
    """(count from the meta device, count of the real model the run builds)."""
    import torch

    from specrun.runner import build
    from specrun.runner.modeling import count_parameters

    config = settings(base, model_dir, method, options)
    real_build = build.build_model
    if monkeypatch is not None:  # the meta count must not fall back to building the real model

        def refuse(*args, **kwargs):
            raise AssertionError(f"{method} {options}: the meta count built a real model")

        monkeypatch.setattr(build, "build_model", refuse)
    planned = build.trainable_parameters(config, registry, len(labels), labels)
    if monkeypatch is not None:
        monkeypatch.setattr(build, "build_model", real_build)
    model, _ = real_build(config, registry, len(labels), labels, torch.device("cpu"))
    return planned, count_parameters(model)[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_meta_counts_equal_the_real_models_counts(arch, backbones, toy_config, specrun_registry, monkeypatch):
    from specrun.plugins.api import ModelInfo
    from specrun.runner.modeling import load_config
    from specrun.testing.toy import single_thread

    folder = backbones(arch)
    info = ModelInfo(name=f"tiny-{arch}", path=str(folder), config=load_config(str(folder)), max_length=16)
    compared = []
    with single_thread():
        for method, options in CASES:
            plugin = specrun_registry.get("method", method)
            validated = plugin.Options.model_validate(options)
            try:
                plugin.check_model(validated, info)
            except ConfigError:  # this architecture refuses the case (tests/test_architectures.py checks why)
                continue
            planned, real = counts(specrun_registry, toy_config, folder, method, options, monkeypatch=monkeypatch)
            assert planned == real, (arch, method, options, planned, real)
            compared.append((method, options, real))
    # every architecture here takes most cases, and they count differently
    assert len(compared) >= 11, compared
    assert len({real for *_, real in compared}) >= 8, compared


def test_counts_follow_the_number_of_labels(backbones, toy_config, specrun_registry, monkeypatch):
    folder = backbones("bert")
    for labels in (("a", "b"), ("a", "b", "c", "d", "e")):
        planned, real = counts(specrun_registry, toy_config, folder, "lora", {"rank": 4}, labels, monkeypatch)
        assert planned == real
    two, _ = counts(specrun_registry, toy_config, folder, "head_only", {}, ("a", "b"))
    five, _ = counts(specrun_registry, toy_config, folder, "head_only", {}, ("a", "b", "c", "d", "e"))
    assert five - two == 3 * (32 + 1)  # the classifier: 3 more rows of weights (hidden 32) and biases


@pytest.mark.parametrize(
    "method,options,free",
    [
        ("lora", {"rank": 4}, {"alpha": 64, "dropout": 0.3}),
        (
            "qlora",
            {"rank": 4, "compute_dtype": "fp32"},
            {"alpha": 3, "dropout": 0.0, "compute_dtype": "bf16", "double_quant": False},
        ),
        ("prompt_tuning", {"num_virtual_tokens": 3}, {"init": "text", "init_text": "movie"}),
    ],
)
def test_options_declared_count_free_leave_the_real_count_alone(
    method, options, free, backbones, toy_config, specrun_registry
):
    """``count_free_options`` lets plan share one count between runs that differ in those options: true
    of the real models."""
    folder = backbones("bert")
    assert set(free) == set(specrun_registry.get("method", method).count_free_options)
    _, before = counts(specrun_registry, toy_config, folder, method, options)
    _, after = counts(specrun_registry, toy_config, folder, method, {**options, **free})
    assert before == after


def test_plan_of_a_budget_counts_each_configuration_on_the_meta_device(write_spec, cli, monkeypatch):
    """The budget in a spec: runs over it are listed with the count they reach, and no real model is
    built for it."""
    from specrun.runner import build

    def refuse(*args, **kwargs):
        raise AssertionError("plan built a real model")

    monkeypatch.setattr(build, "build_model", refuse)
    spec = write_spec(
        method='name = "lora"\nrank = 4',
        extra='[sweep]\n"method.rank" = [2, 64]\n"method.alpha" = [8, 16]\n\n'
        '[constraints]\nmax_trainable_params = 5000\non_violation = "skip"\n',
    )
    code, out, err = cli("plan", str(spec))
    assert code == 0, err
    assert "over constraints.max_trainable_params" in out + err
