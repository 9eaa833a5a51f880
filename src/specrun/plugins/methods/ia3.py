"""Built-in ``ia3`` method: (IA)^3, learned rescaling vectors on keys, values and FFN activations (Liu et al. 2022)."""

from __future__ import annotations

from pydantic import Field

from specrun.core.roles import RoleMap, check_resolves
from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, ModelInfo, PluginOptions
from specrun.plugins.methods.parts import required_roles, roles_of


class IA3Options(PluginOptions):
    ffn: bool = Field(
        True,
        description="also rescale the FFN's intermediate activations (the input of each layer's FFN out projection)",
    )


def attention_roles(roles: RoleMap) -> tuple[str, ...]:
    """Keys and values; on a fused query/key/value projection, that projection's whole output (as
    peft's own default for GPT-2 and GPT-NeoX): queries are rescaled with them."""
    return ("query", "key", "value") if roles.qkv else ("key", "value")


def ia3_config(options: IA3Options, roles: RoleMap, backbone=None):
    """peft's config; ``backbone`` (the model the vectors go on) picks the task type and the head that
    trains with them (a sequence classifier's when None)."""
    from peft import IA3Config, TaskType

    from specrun.plugins.methods.parts import head_modules, peft_task_type

    attention = attention_roles(roles)
    return IA3Config(
        task_type=peft_task_type(backbone) if backbone is not None else TaskType.SEQ_CLS,
        target_modules=roles.regex((*attention, "ffn_out") if options.ffn else attention),
        # (IA)^3 rescales the FFN out projection's input, the intermediate activations (l_ff)
        feedforward_modules=roles.regex(("ffn_out",)) if options.ffn else [],
        modules_to_save=head_modules(backbone, roles) if backbone is not None else list(roles.head),
    )


class IA3(MethodPlugin):
    name = "ia3"
    description = (
        "(IA)^3: learned vectors rescale attention keys, values and FFN activations (Liu et al. 2022), head trained"
    )
    Options = IA3Options

    def check_model(self, options: IA3Options, model: ModelInfo) -> None:
        roles = required_roles(model, "method", "ia3")
        wanted = attention_roles(roles) + (("ffn_out",) if options.ffn else ())
        check_resolves(roles, model.module_names(), wanted, key="method")

    def frozen_prefix_problem(self, options: IA3Options, model) -> str | None:
        return "IA3 trains scaling vectors inside the backbone's layers: no prefix of the model is frozen"

    def build(self, options: IA3Options, ctx: BuildContext):
        from peft import get_peft_model

        backbone = ctx.load_backbone()
        return get_peft_model(backbone, ia3_config(options, roles_of(backbone), backbone))


@hookimpl
def register_methods(register):
    register(IA3())
