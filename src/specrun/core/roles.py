"""Roles: the parts of a transformer that methods address, named once per architecture.

A method never spells a module name. It asks for roles — ``query``, ``key``, ``value``, ``attn_out``
(attention output), ``ffn_in``, ``ffn_out``, the list of ``layers``, ``embeddings``, the ``pooler``,
the classification ``head`` — and this module resolves them for the model's architecture
(``config.model_type``) to the module names of its ``AutoModelForSequenceClassification``. An
architecture without a role map, or a map without a role a method needs, is refused before anything
trains, with the architecture named and what it lacks.

Nothing here imports torch at import time: ``validate`` and ``plan`` resolve roles from the config and
from a copy of the model built on the meta device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from specrun.errors import ConfigError

#: The roles inside each layer, in the order placements list them.
LAYER_ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")

#: LoRA placements: the layer roles each adapts. A fused query/key/value projection stands for all
#: three together, so placements asking for only some of them are refused on fused architectures.
PLACEMENTS: dict[str, tuple[str, ...]] = {
    "attn-q": ("query",),
    "attn-v": ("value",),
    "attn-qv": ("query", "value"),
    "attn-qkv": ("query", "key", "value"),
    "attn-full": ("query", "key", "value", "attn_out"),
    "ffn-only": ("ffn_in", "ffn_out"),
    "full-model": LAYER_ROLES,
}


@dataclass(frozen=True)
class RoleMap:
    """Where the roles live in one architecture's sequence classifier (full module names; the layer
    roles relative to one layer)."""

    #: The architecture as people call it (``GPT-Neo``), and the ``config.model_type`` values it covers.
    name: str
    model_types: tuple[str, ...]
    #: Decoder-only (causal) models pool the last token and need a pad token to find it.
    decoder: bool
    #: A regex matching one layer's module name (``bert\.encoder\.layer\.\d+``).
    layer: str
    #: The ``ModuleList`` of layers, lowest first; None when layers share their weights (ALBERT).
    layer_list: str | None
    query: str | None = None
    key: str | None = None
    value: str | None = None
    #: One projection computing query, key and value together (GPT-2's ``attn.c_attn``), if fused.
    qkv: str | None = None
    attn_out: str | None = None
    ffn_in: tuple[str, ...] = ()
    ffn_out: str | None = None
    #: Modules below the first layer (token and position embeddings, their norm and projections).
    embeddings: tuple[str, ...] = ()
    #: The pretrained pooler (dense + tanh over the first token), None when the model has none.
    pooler: str | None = None
    #: The task head the classifier adds on the backbone (trained by every method).
    head: tuple[str, ...] = ("classifier",)
    #: What a reader should know about this map (shown by ``specrun plugins lora``).
    note: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    # --- layer roles ---------------------------------------------------------------------------

    def relative(self, role: str) -> tuple[str, ...]:
        """The module names (relative to a layer) of a layer role; () when the architecture lacks it."""
        value = getattr(self, role)
        if value is None:
            return ()
        return tuple(value) if isinstance(value, tuple) else (value,)

    def missing(self, roles: tuple[str, ...]) -> str | None:
        """Why this architecture cannot address ``roles`` (None when it can)."""
        qkv = {"query", "key", "value"}
        wanted = set(roles)
        if self.qkv and wanted & qkv and not qkv <= wanted:
            return (
                f"{self.name} computes query, key and value in one fused projection ({self.qkv}): "
                f"it cannot adapt {', '.join(sorted(wanted & qkv, key=LAYER_ROLES.index))} alone"
            )
        lacking = [r for r in roles if not self.relative(r) and not (r in qkv and self.qkv)]
        if lacking:
            return f"{self.name} has no {' or '.join(lacking)} module"
        return None

    def relatives(self, roles: tuple[str, ...]) -> tuple[str, ...]:
        """The relative module names of ``roles`` (the fused projection once for query, key and value)."""
        names: list[str] = []
        for role in roles:
            found = self.relative(role) or ((self.qkv,) if role in ("query", "key", "value") and self.qkv else ())
            names += [n for n in found if n not in names]
        return tuple(names)

    def regex(self, roles: tuple[str, ...]) -> str:
        """A regex fully matching the module names of ``roles`` in every layer (peft's ``target_modules``)."""
        alternatives = "|".join(re.escape(n) for n in self.relatives(roles))
        return rf"{self.layer}\.(?:{alternatives})"

    def modules(self, roles: tuple[str, ...], names: list[str]) -> list[str]:
        """Of the module ``names``, those that play ``roles``."""
        pattern = re.compile(self.regex(roles))
        return [n for n in names if pattern.fullmatch(n)]

    # --- whole-model roles ---------------------------------------------------------------------

    def in_head(self, parameter: str) -> bool:
        return _under(parameter, self.head)

    def in_embeddings(self, parameter: str) -> bool:
        return _under(parameter, self.embeddings)

    def in_pooler(self, parameter: str) -> bool:
        return self.pooler is not None and _under(parameter, (self.pooler,))

    def layer_of(self, parameter: str) -> int | None:
        """The index of the layer ``parameter`` belongs to in ``layer_list`` (None: not in a layer)."""
        if self.layer_list is None:
            return None
        prefix = self.layer_list + "."
        if not parameter.startswith(prefix):
            return None
        index = parameter[len(prefix) :].split(".", 1)[0]
        return int(index) if index.isdigit() else None

    def supports(self, placement: str) -> str | None:
        """Why ``placement`` cannot go on this architecture (None when it can)."""
        return self.missing(PLACEMENTS[placement])


def _under(parameter: str, modules: tuple[str, ...]) -> bool:
    return any(parameter == m or parameter.startswith(m + ".") for m in modules)


def _bert_like(name: str, model_types: tuple[str, ...], prefix: str, pooler: bool, **kw) -> RoleMap:
    return RoleMap(
        name=name,
        model_types=model_types,
        decoder=False,
        layer=rf"{prefix}\.encoder\.layer\.\d+",
        layer_list=f"{prefix}.encoder.layer",
        query="attention.self.query",
        key="attention.self.key",
        value="attention.self.value",
        attn_out="attention.output.dense",
        ffn_in=("intermediate.dense",),
        ffn_out="output.dense",
        embeddings=kw.pop("embeddings", (f"{prefix}.embeddings",)),
        pooler=f"{prefix}.pooler" if pooler else None,
        **kw,
    )


_LLAMA = {
    "decoder": True,
    "layer": r"model\.layers\.\d+",
    "layer_list": "model.layers",
    "query": "self_attn.q_proj",
    "key": "self_attn.k_proj",
    "value": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ffn_in": ("mlp.gate_proj", "mlp.up_proj"),
    "ffn_out": "mlp.down_proj",
    "embeddings": ("model.embed_tokens",),
    "head": ("score",),
}

ROLE_MAPS: tuple[RoleMap, ...] = (
    _bert_like("BERT", ("bert",), "bert", pooler=True),
    _bert_like(
        "RoBERTa",
        ("roberta", "xlm-roberta", "camembert"),
        "roberta",
        pooler=False,
        note="no pooler: the classification head's own dense + tanh layer over <s> trains as part of the head",
    ),
    _bert_like(
        "ELECTRA",
        ("electra",),
        "electra",
        pooler=False,
        embeddings=("electra.embeddings", "electra.embeddings_project"),
        note="no pooler: the classification head's dense layer over [CLS] trains as part of the head",
    ),
    RoleMap(
        name="DistilBERT",
        model_types=("distilbert",),
        decoder=False,
        layer=r"distilbert\.transformer\.layer\.\d+",
        layer_list="distilbert.transformer.layer",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        attn_out="attention.out_lin",
        ffn_in=("ffn.lin1",),
        ffn_out="ffn.lin2",
        embeddings=("distilbert.embeddings",),
        head=("pre_classifier", "classifier"),
        note="no pooler: the head's pre_classifier (dense over [CLS]) trains as part of the head",
    ),
    RoleMap(
        name="ALBERT",
        model_types=("albert",),
        decoder=False,
        layer=r"albert\.encoder\.albert_layer_groups\.\d+\.albert_layers\.\d+",
        layer_list=None,
        query="attention.query",
        key="attention.key",
        value="attention.value",
        attn_out="attention.dense",
        ffn_in=("ffn",),
        ffn_out="ffn_output",
        embeddings=("albert.embeddings", "albert.encoder.embedding_hidden_mapping_in"),
        pooler="albert.pooler",
        note="every layer shares one set of weights: an adapter on a role adapts all layers at once",
    ),
    RoleMap(
        name="DeBERTa-v2",
        model_types=("deberta-v2",),
        decoder=False,
        layer=r"deberta\.encoder\.layer\.\d+",
        layer_list="deberta.encoder.layer",
        query="attention.self.query_proj",
        key="attention.self.key_proj",
        value="attention.self.value_proj",
        attn_out="attention.output.dense",
        ffn_in=("intermediate.dense",),
        ffn_out="output.dense",
        embeddings=("deberta.embeddings", "deberta.encoder.rel_embeddings", "deberta.encoder.LayerNorm"),
        head=("pooler", "classifier"),
        note="its context pooler is created with the classifier (not in the checkpoints): it trains as part of the head",
    ),
    RoleMap(
        name="GPT-2",
        model_types=("gpt2",),
        decoder=True,
        layer=r"transformer\.h\.\d+",
        layer_list="transformer.h",
        qkv="attn.c_attn",
        attn_out="attn.c_proj",
        ffn_in=("mlp.c_fc",),
        ffn_out="mlp.c_proj",
        embeddings=("transformer.wte", "transformer.wpe"),
        head=("score",),
        note="query, key and value are one fused projection (attn.c_attn)",
    ),
    RoleMap(
        name="GPT-Neo",
        model_types=("gpt_neo",),
        decoder=True,
        layer=r"transformer\.h\.\d+",
        layer_list="transformer.h",
        query="attn.attention.q_proj",
        key="attn.attention.k_proj",
        value="attn.attention.v_proj",
        attn_out="attn.attention.out_proj",
        ffn_in=("mlp.c_fc",),
        ffn_out="mlp.c_proj",
        embeddings=("transformer.wte", "transformer.wpe"),
        head=("score",),
        note="query, key and value projections have no bias",
    ),
    RoleMap(
        name="GPT-NeoX",
        model_types=("gpt_neox",),
        decoder=True,
        layer=r"gpt_neox\.layers\.\d+",
        layer_list="gpt_neox.layers",
        qkv="attention.query_key_value",
        attn_out="attention.dense",
        ffn_in=("mlp.dense_h_to_4h",),
        ffn_out="mlp.dense_4h_to_h",
        embeddings=("gpt_neox.embed_in",),
        head=("score",),
        note="Pythia; query, key and value are one fused projection (attention.query_key_value)",
    ),
    RoleMap(name="Llama", model_types=("llama",), note="no bias terms", **_LLAMA),
    RoleMap(name="Qwen2", model_types=("qwen2",), note="biases only on query, key and value", **_LLAMA),
    RoleMap(name="Mistral", model_types=("mistral",), note="no bias terms", **_LLAMA),
)

_BY_TYPE = {t: m for m in ROLE_MAPS for t in m.model_types}


def known_architectures() -> list[str]:
    return [m.name for m in ROLE_MAPS]


def role_map_for(model_type: str | None) -> RoleMap | None:
    return _BY_TYPE.get(model_type or "")


def role_map(config, key: str = "model.name", what: str = "this method") -> RoleMap:
    """The role map of the model with transformers ``config``; ConfigError (at ``key``) when specrun has none."""
    found = role_map_for(getattr(config, "model_type", None))
    if found is None:
        model_type = getattr(config, "model_type", "?")
        raise ConfigError(
            f"{what} addresses the model through its roles (query, value, FFN, layers...), and specrun has no role map for "
            f"architecture {model_type!r}; it knows {', '.join(known_architectures())}"
            + (" (LoRA also takes explicit target_modules)" if "lora" in what else ""),
            key=key,
        )
    return found


def arch_name(config) -> str:
    """The architecture's name for messages: the role map's, else ``config.model_type``."""
    found = role_map_for(getattr(config, "model_type", None))
    return found.name if found else repr(getattr(config, "model_type", "?"))


# --- checking a map against a model --------------------------------------------------------------


def check_resolves(roles: RoleMap, module_names: list[str], wanted: tuple[str, ...], key: str) -> list[str]:
    """The modules playing ``wanted`` in a model; ConfigError when a role matches none (a map that no
    longer fits the installed transformers, or a model that differs from its architecture's usual one)."""
    found = []
    for role in wanted:
        names = roles.modules((role,), module_names)
        if not names:
            raise ConfigError(
                f"{roles.name}: role {role!r} ({', '.join(roles.relatives((role,)))}) matches no module of this model",
                key=key,
            )
        found += [n for n in names if n not in found]
    return found


# --- pad tokens for decoders ---------------------------------------------------------------------


def ensure_pad_token(tokenizer) -> str:
    """Give ``tokenizer`` a pad token if it has none: its end-of-sequence token (decoders usually have
    no pad token). Batches are padded on the right, which the classifiers' last-token pooling expects
    (it pools the last token that is not a pad). Returns where the pad token came from: 'tokenizer' or
    'eos'; DataError when there is neither."""
    from specrun.errors import DataError

    if tokenizer.pad_token_id is not None:
        source = "tokenizer"
    elif getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
        source = "eos"
    else:
        raise DataError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has neither a pad token nor an "
            "end-of-sequence token to pad batches with"
        )
    tokenizer.padding_side = "right"
    tokenizer._specrun_pad_from = source
    return source


def pad_kwargs(config, tokenizer) -> dict:
    """``from_pretrained`` kwargs writing the tokenizer's pad token into the classifier's config: always
    for a decoder (its pooling finds the last token that is not this id), else when the config has none.
    ``tokenizer`` may be a function returning it (called only when needed)."""
    found = role_map_for(getattr(config, "model_type", None))
    decoder = found.decoder if found else bool(getattr(config, "is_decoder", False))
    if not decoder and getattr(config, "pad_token_id", None) is not None:
        return {}
    pad = (tokenizer() if callable(tokenizer) else tokenizer).pad_token_id
    if (
        pad is not None
        and (decoder or getattr(config, "pad_token_id", None) is None)
        and getattr(config, "pad_token_id", None) != pad
    ):
        return {"pad_token_id": pad}
    return {}


def padding_info(tokenizer) -> dict:
    """What a run records about padding (``runs.environment``'s ``padding``)."""
    return {
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "padding_side": "right",
        "pad_from": getattr(tokenizer, "_specrun_pad_from", "tokenizer"),
    }
