"""Built-in ``lora`` method: low-rank adapters (peft) on chosen linear layers, plus a trained head.

With ``quantize = "8bit"`` the frozen backbone is loaded in 8 bits through bitsandbytes (LLM.int8);
the k-bit helpers here are shared with ``qlora``.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_serializer, model_validator

from specrun.core.roles import (
    PLACEMENTS,
    ROLE_MAPS,
    RoleMap,
    check_resolves,
    role_map,
    role_map_for,
)
from specrun.errors import ConfigError, MethodUnavailable, SpecrunError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, ModelInfo, PluginOptions

if TYPE_CHECKING:
    import torch

#: Kept in full precision when the backbone is quantized: the new head (``classifier``, and DistilBERT's
#: ``pre_classifier``; ``score`` on decoders), and the pooler it reads (``qa_outputs`` too for QA: ``not_quantized``).
NOT_QUANTIZED = ["classifier", "pooler", "score", "pre_classifier"]


class LoraAdapterOptions(PluginOptions):
    """The adapter's own options, shared by ``lora`` and ``qlora``."""

    rank: int = Field(8, ge=1, description="rank r of the update B·A")
    alpha: float = Field(16, gt=0, description="scaling numerator: updates are scaled by alpha / rank")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the adapter's input")
    placement: Literal["attn-q", "attn-v", "attn-qv", "attn-qkv", "attn-full", "ffn-only", "full-model"] | None = Field(
        None,
        description="where adapters go (default attn-qv; attn-qkv on architectures with a fused query/key/value "
        "projection: GPT-2, GPT-NeoX); or give target_modules",
    )
    target_modules: list[str] | None = Field(None, description="module-name suffixes to adapt, instead of a placement")
    train: Literal["all", "head"] = Field(
        "all",
        description="'head': keep the adapters as model.init_from loaded them, frozen like the backbone, and train only the fresh head",
    )

    #: Options left out of the resolved config at these values, so that runs keep the ids they had
    #: before the option existed.
    OMIT_AT_DEFAULT: ClassVar[dict[str, Any]] = {"train": "all"}

    @model_validator(mode="after")
    def _one_placement(self):
        if self.placement and self.target_modules:
            raise ValueError("give either placement or target_modules, not both")
        return self

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler):
        data = handler(self)
        for name, default in self.OMIT_AT_DEFAULT.items():
            if getattr(self, name) == default:
                data.pop(name, None)
        return data

    def targets(self, roles: RoleMap | None = None) -> list[str] | str:
        """peft's ``target_modules``: the given module-name suffixes, or the placement's roles resolved
        for the architecture (a regex over full module names)."""
        if self.target_modules:
            return self.target_modules
        if roles is None:
            raise SpecrunError(f"placement {self.placement or 'attn-qv'!r} needs the model's role map")
        return roles.regex(PLACEMENTS[self.placement_for(roles)])

    def placement_for(self, roles: RoleMap) -> str:
        """The placement on this architecture: the one given, else attn-qv (attn-qkv where query, key and
        value are one fused projection)."""
        if self.placement:
            return self.placement
        return "attn-qv" if roles.supports("attn-qv") is None else "attn-qkv"


class LoraOptions(LoraAdapterOptions):
    quantize: Literal["8bit"] | None = Field(
        None,
        description="'8bit': load the frozen backbone in 8 bits (bitsandbytes LLM.int8); head and pooler stay full precision",
    )

    OMIT_AT_DEFAULT: ClassVar[dict[str, Any]] = {"train": "all", "quantize": None}


def check_targets(options: LoraAdapterOptions, model: ModelInfo) -> None:
    """Refuse a placement the architecture cannot take, and adapter targets that match no module of the
    model (peft would fail when building it)."""
    names = model.module_names()
    if not options.target_modules:
        roles = role_map(
            model.config, key="method.placement", what=f"lora placement {options.placement or 'attn-qv'!r}"
        )
        placement = options.placement_for(roles)
        why = roles.supports(placement)
        if why:
            usable = [p for p in PLACEMENTS if roles.supports(p) is None]
            raise ConfigError(
                f"placement {placement!r} cannot go on {model.name!r}: {why}; its placements are {', '.join(usable)}",
                key="method.placement",
            )
        check_resolves(roles, names, PLACEMENTS[placement], key="method.placement")
        _check_rank(options, model, roles.regex(PLACEMENTS[placement]))
        return
    targets = options.targets()
    if isinstance(targets, str):
        found = any(re.fullmatch(targets, name) for name in names)
    else:
        found = any(name == t or name.endswith("." + t) for name in names for t in targets)
    if found:
        _check_rank(options, model, targets)
    if not found:
        key = "method.target_modules" if options.target_modules else "method.placement"
        what = (
            f"target_modules {targets}" if options.target_modules else f"placement {options.placement or 'attn-qv'!r}"
        )
        parents = {n.rsplit(".", 1)[0] for n in names if "." in n}
        leaves = sorted(
            {n.rsplit(".", 1)[-1] for n in names if n and n not in parents and not n.rsplit(".", 1)[-1].isdigit()}
        )
        raise ConfigError(
            f"{what} matches no module of {model.name!r}; its innermost modules are named {', '.join(leaves)}", key=key
        )


def _check_rank(options: LoraAdapterOptions, model: ModelInfo, targets) -> None:
    """Refuse a rank beyond the smaller dimension of an adapted matrix: B·A of rank r > min(in, out) is
    no low-rank update (it only adds parameters), and ranks past the hidden size are a slip."""

    def matched(name: str) -> bool:
        if isinstance(targets, str):
            return re.fullmatch(targets, name) is not None
        return any(name == t or name.endswith("." + t) for t in targets)

    shapes = {name: shape for name, shape in model.linear_shapes().items() if matched(name)}
    if not shapes:
        return
    name, (fan_in, fan_out) = min(shapes.items(), key=lambda item: min(item[1]))
    limit = min(fan_in, fan_out)
    if options.rank > limit:
        hidden = getattr(model.config, "hidden_size", None)
        size = f" (hidden size {hidden})" if hidden else ""
        raise ConfigError(
            f"rank {options.rank} exceeds the smaller dimension of the adapted matrix {name} ({fan_in}×{fan_out}) of "
            f"{model.name!r}{size}: an update of rank {options.rank} is not low-rank there; use a rank of {limit} or less",
            key="method.rank",
        )


def check_adapters(options: LoraAdapterOptions, model: ModelInfo) -> None:
    """What ``lora`` and ``qlora`` check before anything trains: targets that exist, and frozen adapters
    that come from somewhere."""
    check_targets(options, model)
    if options.train == "head" and not model.init_from:
        raise ConfigError(
            "'head' trains the head over frozen adapters, which must come from model.init_from (a source run); "
            "without one the adapters stay at their initial zero update: use method head_only for that",
            key="method.train",
        )


def adapters_problem(options: LoraAdapterOptions, method: str) -> str | None:
    """``frozen_prefix_problem`` of ``lora`` and ``qlora``: only frozen adapters (``train = "head"``) qualify."""
    if options.train == "head":
        return None  # the adapters are frozen with the backbone: part of its prefix
    return (
        f'{method} with train = "all" trains the adapters inside the backbone\'s layers; only train = "head" '
        "(frozen adapters from model.init_from, a fresh head) leaves a frozen prefix to compute once"
    )


def adapted(backbone, options: LoraAdapterOptions):
    """The backbone with LoRA adapters; with ``train = "head"`` the adapters are frozen too."""
    from peft import get_peft_model

    roles = role_map_for(getattr(backbone.config, "model_type", None))
    model = get_peft_model(backbone, lora_config(options, roles, backbone))
    if options.train == "head":
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(False)
    return model


def lora_config(options: LoraAdapterOptions, roles: RoleMap | None = None, backbone=None):
    """peft's config of the adapters; ``backbone`` (the model they go on) picks the task type and the
    head that trains with them (a sequence classifier's when None)."""
    from peft import LoraConfig, TaskType

    from specrun.plugins.methods.parts import head_modules, peft_task_type

    return LoraConfig(
        task_type=peft_task_type(backbone) if backbone is not None else TaskType.SEQ_CLS,
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=options.targets(roles),
        bias="none",
        # the architecture's whole head trains (DistilBERT's pre_classifier too; qa_outputs on QA), as in every method
        modules_to_save=head_modules(backbone, roles)
        if backbone is not None
        else (list(roles.head) if roles else None),
    )


def not_quantized(ctx: BuildContext) -> list[str]:
    """The modules a quantized backbone keeps in full precision: the head the run trains (and the pooler)."""
    from specrun.plugins.methods.parts import QA_HEAD

    return NOT_QUANTIZED if ctx.task_name == "classification" else [*NOT_QUANTIZED, QA_HEAD]


# --- k-bit backbones (bitsandbytes) ---------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def bitsandbytes_problem(bits: int, device_type: str) -> str | None:
    """Why bitsandbytes cannot run a ``bits``-bit linear layer on ``device_type`` here, or None if it can.

    Probes with a tiny layer rather than guessing from versions: CPU support depends on the build."""
    import torch

    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        return f"the bitsandbytes package is not installed ({exc})"
    try:
        if bits == 4:
            layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        layer = layer.to(device_type)
        layer(torch.randn(2, 64, device=device_type))
    except Exception as exc:  # any failure means: not on this machine
        return f"bitsandbytes {getattr(bnb, '__version__', '?')} cannot run {bits}-bit layers on {device_type}: {type(exc).__name__}: {exc}"
    return None


def check_kbit(method: str, bits: int, device: torch.device) -> None:
    """Raise MethodUnavailable when a ``bits``-bit backbone cannot run on ``device``."""
    problem = bitsandbytes_problem(bits, device.type)
    if problem:
        raise MethodUnavailable(f"method {method!r} needs a {bits}-bit backbone, but {problem}")


def load_kbit_backbone(ctx: BuildContext, quantization_config: Any) -> torch.nn.Module:
    """The backbone quantized by bitsandbytes on ``ctx.device``, prepared for k-bit training by peft
    (every weight frozen, non-quantized weights in fp32). No gradient checkpointing: these encoders are
    small and activations are not what quantization is meant to save here."""
    from peft import prepare_model_for_kbit_training

    model = ctx.load_backbone(quantization_config=quantization_config, device_map={"": str(ctx.device)})
    if ctx.device.type == "cpu":
        keep_4bit_weights_trainable(model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    round_8bit_biases(model, ctx.precision)
    return model


def round_8bit_biases(model: torch.nn.Module, precision: str) -> None:
    """Round the frozen biases of 8-bit layers to what autocast will make of them, once, at build.

    ``Linear8bitLt`` casts its bias in place to the dtype of each input, and under autocast that is
    fp32 for some calls and bf16/fp16 for others: the bias then drifts through rounding with the order
    of calls, and a rebuilt model (a reloaded run) would not match the trained one. Rounded up front,
    every later cast is exact."""
    import bitsandbytes as bnb
    import torch

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if half is None:
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt) and module.bias is not None:
            module.bias.data = module.bias.data.to(half).to(module.bias.dtype)


def keep_4bit_weights_trainable(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, a ``Linear4bit`` run in eval mode without grad rewrites its weight in
    place into an inference-only layout (bitsandbytes 0.50): training after an evaluation then fails,
    layers narrower than a quantization block (64) crash, and without the optional ``kernels`` package
    the repacked path was slower than the plain one here anyway."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def placement_table() -> tuple[str, list[str], list[tuple]]:
    """(title, columns, rows): which placements each architecture takes (``specrun plugins lora``)."""
    rows = []
    for roles in ROLE_MAPS:
        usable = [p for p in PLACEMENTS if roles.supports(p) is None]
        refused = [p for p in PLACEMENTS if p not in usable]
        rows.append(
            (roles.name, ", ".join(roles.model_types), ", ".join(usable), ", ".join(refused) or "-", roles.note)
        )
    return "placements by architecture", ["architecture", "model_type", "placements", "refused", "note"], rows


class LoRA(MethodPlugin):
    name = "lora"
    description = "LoRA: trainable low-rank updates on frozen linear layers (Hu et al. 2021), head trained; optionally an 8-bit backbone"
    Options = LoraOptions

    def check(self, options: LoraOptions, device: torch.device, precision: str) -> None:
        if options.quantize == "8bit":
            check_kbit(self.name, 8, device)

    def check_model(self, options: LoraOptions, model: ModelInfo) -> None:
        check_adapters(options, model)

    def details(self) -> tuple[str, list[str], list[tuple]]:
        return placement_table()

    def frozen_prefix_problem(self, options: LoraOptions, model) -> str | None:
        return adapters_problem(options, "lora")

    def build(self, options: LoraOptions, ctx: BuildContext):
        if options.quantize == "8bit":
            from transformers import BitsAndBytesConfig

            backbone = load_kbit_backbone(
                ctx, BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=not_quantized(ctx))
            )
        else:
            backbone = ctx.load_backbone()
        return adapted(backbone, options)


@hookimpl
def register_methods(register):
    register(LoRA())
