"""Built-in ``bitfit`` method: train only bias terms and the classifier head (Ben Zaken et al. 2022)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from specrun.errors import ConfigError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, ModelInfo, PluginOptions
from specrun.plugins.methods.parts import (
    describe,
    is_head,
    required_roles,
    roles_of,
    train_only,
)

#: The paper's strongest small subset: the query bias and the FFN's first (intermediate) bias.
QUERY_FFN = ("query", "ffn_in")


class BitFitOptions(PluginOptions):
    subset: Literal["all", "query-ffn"] = Field(
        "all",
        description="'all': every bias (embedding and layer norms, attention, FFN, pooler); "
        "'query-ffn': only the query and intermediate (FFN in) biases. The head trains either way",
    )


def subset_biases(roles, module_names: list[str], parameter_names) -> dict[str, list[str]]:
    """For each role of the query-ffn subset, the bias parameters of its modules."""
    params = set(parameter_names)
    return {
        role: [f"{m}.bias" for m in roles.modules((role,), module_names) if f"{m}.bias" in params] for role in QUERY_FFN
    }


class BitFit(MethodPlugin):
    name = "bitfit"
    description = "BitFit: only bias terms (all, or query+FFN) and the classifier head train (Ben Zaken et al. 2022)"
    Options = BitFitOptions

    def check_model(self, options: BitFitOptions, model: ModelInfo) -> None:
        from specrun.core.models import parameter_names
        from specrun.core.roles import role_map_for

        names = parameter_names(model.path)
        if options.subset == "all":
            roles = role_map_for(getattr(model.config, "model_type", None))
            head = roles.in_head if roles else (lambda n: n.split(".")[0] in ("classifier", "score"))
            biases = [n for n in names if n.endswith(".bias") and not head(n)]
            if not biases:
                raise ConfigError(
                    f"{describe(model)} has no bias terms: BitFit would train only the classifier head "
                    "(use method head_only for that)",
                    key="method.subset",
                )
            return
        roles = required_roles(model, "method.subset", "bitfit's query-ffn subset")
        if roles.qkv:
            raise ConfigError(
                f"{describe(model)} computes query, key and value in one fused projection ({roles.qkv}): "
                "its bias cannot train for the query alone; use subset = 'all'",
                key="method.subset",
            )
        found = subset_biases(roles, model.module_names(), names)
        lacking = [role for role, biases in found.items() if not biases]
        if lacking:
            raise ConfigError(
                f"{describe(model)} has no {' and no '.join(lacking)} biases: the query-ffn subset would train "
                f"{'only the classifier head' if len(lacking) == 2 else 'less than it says'}; use subset = 'all'",
                key="method.subset",
            )

    def frozen_prefix_problem(self, options: BitFitOptions, model) -> str | None:
        return "BitFit trains bias terms inside every layer of the backbone: no prefix of the model is frozen"

    def build(self, options: BitFitOptions, ctx: BuildContext):
        model = ctx.load_backbone()
        if options.subset == "all":
            return train_only(model, lambda name: is_head(model, name) or name.endswith(".bias"))
        roles = roles_of(model)
        found = subset_biases(roles, [n for n, _ in model.named_modules()], (n for n, _ in model.named_parameters()))
        wanted = {b for biases in found.values() for b in biases}
        return train_only(model, lambda name: is_head(model, name) or name in wanted)


@hookimpl
def register_methods(register):
    register(BitFit())
