"""Every method on a tiny random model of every architecture specrun has a role map for, without the hub.

- the role maps name the modules transformers builds today (a release that renames one fails here,
  instead of training the wrong thing);
- every method x architecture passes ``check_method`` (builds, trains, trains exactly the tensors its
  roles name, saves, reloads and predicts the same, also through plain transformers/peft), or is
  refused before training with the architecture named and what it lacks.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from specrun.core.roles import PLACEMENTS, ROLE_MAPS, role_map_for
from specrun.errors import ConfigError
from specrun.plugins.api import ModelInfo
from specrun.testing.architectures import (
    ARCHITECTURES,
    DECODERS,
    make_tokenizer,
    tiny_config,
)

# --- role maps: the modules of layer 0 each role names, written out ---------------------------------

_BERT = {
    "query": "encoder.layer.0.attention.self.query",
    "key": "encoder.layer.0.attention.self.key",
    "value": "encoder.layer.0.attention.self.value",
    "attn_out": "encoder.layer.0.attention.output.dense",
    "ffn_in": "encoder.layer.0.intermediate.dense",
    "ffn_out": "encoder.layer.0.output.dense",
}
_LLAMA = {
    "query": "model.layers.0.self_attn.q_proj",
    "key": "model.layers.0.self_attn.k_proj",
    "value": "model.layers.0.self_attn.v_proj",
    "attn_out": "model.layers.0.self_attn.o_proj",
    "ffn_in": ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"],
    "ffn_out": "model.layers.0.mlp.down_proj",
}
_ALBERT = "albert.encoder.albert_layer_groups.0.albert_layers.0."
_NEO = "transformer.h.0.attn.attention."

#: architecture -> role -> module name(s) in layer 0 ("qkv": one fused projection for query, key, value).
LAYER0: dict[str, dict] = {
    "bert": {k: f"bert.{v}" for k, v in _BERT.items()},
    "roberta": {k: f"roberta.{v}" for k, v in _BERT.items()},
    "xlm-roberta": {k: f"roberta.{v}" for k, v in _BERT.items()},
    "camembert": {k: f"roberta.{v}" for k, v in _BERT.items()},
    "electra": {k: f"electra.{v}" for k, v in _BERT.items()},
    "distilbert": {
        "query": "distilbert.transformer.layer.0.attention.q_lin",
        "key": "distilbert.transformer.layer.0.attention.k_lin",
        "value": "distilbert.transformer.layer.0.attention.v_lin",
        "attn_out": "distilbert.transformer.layer.0.attention.out_lin",
        "ffn_in": "distilbert.transformer.layer.0.ffn.lin1",
        "ffn_out": "distilbert.transformer.layer.0.ffn.lin2",
    },
    "albert": {
        "query": _ALBERT + "attention.query",
        "key": _ALBERT + "attention.key",
        "value": _ALBERT + "attention.value",
        "attn_out": _ALBERT + "attention.dense",
        "ffn_in": _ALBERT + "ffn",
        "ffn_out": _ALBERT + "ffn_output",
    },
    "deberta-v2": {
        "query": "deberta.encoder.layer.0.attention.self.query_proj",
        "key": "deberta.encoder.layer.0.attention.self.key_proj",
        "value": "deberta.encoder.layer.0.attention.self.value_proj",
        "attn_out": "deberta.encoder.layer.0.attention.output.dense",
        "ffn_in": "deberta.encoder.layer.0.intermediate.dense",
        "ffn_out": "deberta.encoder.layer.0.output.dense",
    },
    "gpt2": {
        "qkv": "transformer.h.0.attn.c_attn",
        "attn_out": "transformer.h.0.attn.c_proj",
        "ffn_in": "transformer.h.0.mlp.c_fc",
        "ffn_out": "transformer.h.0.mlp.c_proj",
    },
    "gpt_neo": {
        "query": _NEO + "q_proj",
        "key": _NEO + "k_proj",
        "value": _NEO + "v_proj",
        "attn_out": _NEO + "out_proj",
        "ffn_in": "transformer.h.0.mlp.c_fc",
        "ffn_out": "transformer.h.0.mlp.c_proj",
    },
    "gpt_neox": {
        "qkv": "gpt_neox.layers.0.attention.query_key_value",
        "attn_out": "gpt_neox.layers.0.attention.dense",
        "ffn_in": "gpt_neox.layers.0.mlp.dense_h_to_4h",
        "ffn_out": "gpt_neox.layers.0.mlp.dense_4h_to_h",
    },
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "mistral": _LLAMA,
}
#: architecture -> (layer list, pooler, head modules)
WHOLE: dict[str, tuple] = {
    "bert": ("bert.encoder.layer", "bert.pooler", ("classifier",)),
    "roberta": ("roberta.encoder.layer", None, ("classifier",)),
    "xlm-roberta": ("roberta.encoder.layer", None, ("classifier",)),
    "camembert": ("roberta.encoder.layer", None, ("classifier",)),
    "electra": ("electra.encoder.layer", None, ("classifier",)),
    "distilbert": ("distilbert.transformer.layer", None, ("pre_classifier", "classifier")),
    "albert": (None, "albert.pooler", ("classifier",)),
    "deberta-v2": ("deberta.encoder.layer", None, ("pooler", "classifier")),
    "gpt2": ("transformer.h", None, ("score",)),
    "gpt_neo": ("transformer.h", None, ("score",)),
    "gpt_neox": ("gpt_neox.layers", None, ("score",)),
    "llama": ("model.layers", None, ("score",)),
    "qwen2": ("model.layers", None, ("score",)),
    "mistral": ("model.layers", None, ("score",)),
}


@functools.cache
def meta_classifier(arch: str):
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(tiny_config(arch, make_tokenizer(arch)))


def expected_layer0(arch: str, placement: str) -> set[str] | None:
    """The layer-0 modules ``placement`` adapts, from the literal table (None: refused)."""
    table = LAYER0[arch]
    roles = PLACEMENTS[placement]
    names: set[str] = set()
    qkv = {"query", "key", "value"}
    if "qkv" in table and set(roles) & qkv:
        if not qkv <= set(roles):
            return None
        names.add(table["qkv"])
    for role in roles:
        if role in qkv and "qkv" in table:
            continue
        found = table[role]
        names.update([found] if isinstance(found, str) else found)
    return names


#: Mapped architectures whose modules are another's (CamemBERT's are RoBERTa's): role maps checked, no contract run.
MAP_ONLY = ("camembert",)


def test_every_architecture_has_a_map_and_a_tiny_model():
    assert (
        {t for m in ROLE_MAPS for t in m.model_types} == set(ARCHITECTURES) | set(MAP_ONLY) == set(LAYER0) == set(WHOLE)
    )


@pytest.mark.parametrize("arch", ARCHITECTURES + MAP_ONLY)
def test_role_map_names_the_modules_each_placement_adapts(arch):
    model = meta_classifier(arch)
    names = [n for n, _ in model.named_modules()]
    roles = role_map_for(model.config.model_type)
    for placement in PLACEMENTS:
        expected = expected_layer0(arch, placement)
        if expected is None:
            assert "fused" in roles.supports(placement) and roles.name in roles.supports(placement)
            continue
        assert roles.supports(placement) is None, placement
        got = roles.modules(PLACEMENTS[placement], names)
        layer0 = {n for n in got if re.search(r"\.0\.", n)}
        assert layer0 == expected, (placement, sorted(layer0))
        assert len(got) == len(expected) * (1 if arch == "albert" else model.config.num_hidden_layers), (placement, got)
    layer_list, pooler, head = WHOLE[arch]
    assert roles.layer_list == layer_list and roles.pooler == pooler and roles.head == head
    if layer_list:
        assert len(model.get_submodule(layer_list)) == model.config.num_hidden_layers
    for module in (pooler, *head, *roles.embeddings[:1]):
        if module:
            model.get_submodule(module)  # raises when transformers renamed it


# --- tiny models and the method contract -------------------------------------------------------------


def _plain(name: str) -> str:
    """A peft parameter name as the classifier's own: prefix and trained copies stripped."""
    for prefix in ("base_model.model.", "base_model."):  # LoRA and IA3; prompt tuning
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name.replace(".modules_to_save.default", "")


def _module(name: str, marker: str) -> str:
    return _plain(name).split(marker)[0]


def predicate(arch: str, method: str, options: dict):
    """The parameters ``method`` must train on ``arch``, from the role map's modules."""
    roles = role_map_for(arch)
    names = [n for n, _ in meta_classifier(arch).named_modules()]

    def head(n: str) -> bool:
        return ".original_module." not in n and roles.in_head(_plain(n))

    if method == "full":
        return lambda n: True
    if method in ("lora", "qlora"):
        default = "attn-qv" if roles.supports("attn-qv") is None else "attn-qkv"
        adapted = set(roles.modules(PLACEMENTS[options.get("placement", default)], names))
        return lambda n: head(n) or ((".lora_A." in n or ".lora_B." in n) and _module(n, ".lora_") in adapted)
    if method == "ia3":
        attention = ("query", "key", "value") if roles.qkv else ("key", "value")
        adapted = set(roles.modules((*attention, "ffn_out"), names))
        return lambda n: head(n) or (".ia3_l." in n and _module(n, ".ia3_l") in adapted)
    if method == "bitfit":
        if options.get("subset") == "query-ffn":
            biases = {f"{m}.bias" for m in roles.modules(("query", "ffn_in"), names)}
            return lambda n: head(n) or n in biases
        return lambda n: head(n) or n.endswith(".bias")
    if method == "freeze":
        return lambda n: not roles.in_embeddings(n) and roles.layer_of(n) != 0
    if method == "head_only":
        return lambda n: head(n) or (options.get("train_pooler", False) and roles.in_pooler(n))
    if method == "prompt_tuning":
        return lambda n: n.startswith("prompt_encoder.") or head(n)
    raise AssertionError(method)


#: (id, method, options, learning rate)
METHODS = [
    ("full", "full", {}, 1e-2),
    ("lora", "lora", {"rank": 4}, 1e-2),
    ("qlora", "qlora", {"rank": 4, "compute_dtype": "fp32"}, 1e-2),
    ("bitfit", "bitfit", {}, 1e-2),
    ("bitfit-query-ffn", "bitfit", {"subset": "query-ffn"}, 3e-2),
    ("ia3", "ia3", {}, 3e-2),
    ("freeze", "freeze", {"layers": 1}, 1e-2),
    ("head_only", "head_only", {}, 3e-2),
    ("head_only-pooler", "head_only", {"train_pooler": True}, 3e-2),
    # starting from the words "[CLS] movie [SEP] [CLS]": the classifiers pool position 0, now the prompt's first token
    ("prompt_tuning", "prompt_tuning", {"num_virtual_tokens": 4, "init": "text", "init_text": "movie"}, 3e-2),
]

#: (architecture, case id) -> the words its refusal must contain.
REFUSED: dict[tuple[str, str], list[str]] = {}
for _arch in ARCHITECTURES:
    _roles = role_map_for(_arch)
    if _roles.pooler is None:
        REFUSED[(_arch, "head_only-pooler")] = [_roles.name, "has no pooler"]
    if _arch in DECODERS:
        REFUSED[(_arch, "prompt_tuning")] = [_roles.name, "decoder", "pools the last position"]
    if _roles.layer_list is None:
        REFUSED[(_arch, "freeze")] = [_roles.name, "share", "no lowest layers"]
REFUSED[("gpt2", "bitfit-query-ffn")] = ["GPT-2", "fused", "attn.c_attn"]
REFUSED[("gpt_neox", "bitfit-query-ffn")] = ["GPT-NeoX", "fused"]
REFUSED[("gpt_neo", "bitfit-query-ffn")] = ["GPT-Neo", "no query biases"]
for _arch in ("llama", "qwen2", "mistral"):
    REFUSED[(_arch, "bitfit-query-ffn")] = [role_map_for(_arch).name, "no ffn_in biases"]
for _arch in ("llama", "mistral"):
    REFUSED[(_arch, "bitfit")] = [role_map_for(_arch).name, "has no bias terms", "head_only"]


def model_info(arch: str, folder: Path, max_length: int = 32) -> ModelInfo:
    from specrun.runner.modeling import load_config

    return ModelInfo(name=f"tiny-{arch}", path=str(folder), config=load_config(str(folder)), max_length=max_length)


CASES = [(arch, case) for arch in ARCHITECTURES for case in METHODS]


@pytest.mark.parametrize("arch,case", CASES, ids=[f"{a}-{c[0]}" for a, c in CASES])
def test_method_on_architecture(arch, case, arch_model, specrun_registry, tmp_path):
    from specrun.testing.contracts import check_method
    from specrun.testing.toy import single_thread

    case_id, method, options, lr = case
    folder = arch_model(arch)
    plugin = specrun_registry.get("method", method)
    validated = plugin.Options.model_validate(options)
    refusal = REFUSED.get((arch, case_id))
    if refusal:
        with pytest.raises(ConfigError) as caught:
            plugin.check_model(validated, model_info(arch, folder))
        assert caught.value.key and caught.value.key.startswith("method")
        for words in refusal:
            assert words in str(caught.value), (words, str(caught.value))
        return
    plugin.check_model(validated, model_info(arch, folder))
    with single_thread():
        report = check_method(
            specrun_registry,
            method,
            options,
            model_dir=folder,
            workdir=tmp_path,
            trains=predicate(arch, method, options),
            learning_rate=lr,
            steps=12,
        )
    assert report.loss_after < report.loss_before


# --- what users see ----------------------------------------------------------------------------------


def test_plugins_lora_lists_the_placements_of_each_architecture(specrun_cli):
    code, out, err = specrun_cli("plugins", "lora")
    assert code == 0, err
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 4}
    assert {
        "BERT",
        "RoBERTa",
        "DistilBERT",
        "ALBERT",
        "DeBERTa-v2",
        "ELECTRA",
        "GPT-2",
        "GPT-Neo",
        "GPT-NeoX",
        "Llama",
        "Qwen2",
        "Mistral",
    } <= set(rows)
    placements, refused = (cell.strip() for cell in rows["GPT-2"].split("│")[3:5])
    assert placements == "attn-qkv, attn-full, ffn-only, full-model" and refused == "attn-q, attn-v, attn-qv"
    assert rows["GPT-Neo"].split("│")[4].strip() == "-"


@pytest.mark.parametrize(
    "arch, method, key, words",
    [
        ("roberta", 'name = "head_only"\ntrain_pooler = true', "method.train_pooler", ["(RoBERTa)", "has no pooler"]),
        (
            "gpt2",
            'name = "lora"\nplacement = "attn-v"',
            "method.placement",
            [
                "GPT-2 computes query, key and value in one fused",
                "its placements are attn-qkv, attn-full, ffn-only, full-model",
            ],
        ),
        (
            "distilbert",
            'name = "bitfit"\nsubset = "query-ffn"',
            None,
            None,
        ),  # DistilBERT's q_lin and ffn.lin1 biases: it works
    ],
    ids=["roberta-train_pooler", "gpt2-attn-v", "distilbert-query-ffn"],
)
def test_plan_refuses_what_an_architecture_lacks_with_file_line_and_key(arch, method, key, words, arch_model, run_spec):
    from specrun.testing.toy import toy_spec

    result = run_spec(toy_spec(model=str(arch_model(arch)), method=method), check=False, command="plan")
    if key is None:
        assert result.exit_code == 0, result.stderr
        return
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    line = next(
        n for n, text in enumerate(toy_spec(method=method).splitlines(), 1) if text.startswith(key.split(".")[1])
    )
    assert f"toy.toml:{line}: {key}: " in result.stderr
    for w in words:
        assert w in result.stderr


@pytest.mark.parametrize("arch", ["gpt_neo", "llama"])
def test_8bit_lora_on_decoders(arch, arch_model, specrun_registry, tmp_path):
    """LoRA over an 8-bit decoder behaves as over an 8-bit encoder (tests/test_methods.py): the contract holds."""
    from specrun.testing.contracts import check_method
    from specrun.testing.toy import single_thread

    options = {"rank": 4, "quantize": "8bit"}
    with single_thread():
        report = check_method(
            specrun_registry,
            "lora",
            options,
            model_dir=arch_model(arch),
            workdir=tmp_path,
            trains=predicate(arch, "lora", options),
            learning_rate=1e-2,
            precision="bf16",
            steps=12,
        )
    assert report.loss_after < report.loss_before
