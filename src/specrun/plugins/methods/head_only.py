"""Built-in ``head_only`` method: a linear probe, only the classifier head trains."""

from __future__ import annotations

from pydantic import Field

from specrun.errors import ConfigError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, ModelInfo, PluginOptions
from specrun.plugins.methods.parts import describe, is_head, roles_of, train_only


class HeadOnlyOptions(PluginOptions):
    train_pooler: bool = Field(
        False,
        description="also train the pooler (dense + tanh over [CLS]); off, the head is a linear probe of "
        "the frozen pooled features. Refused on models without a pooler",
    )


class HeadOnly(MethodPlugin):
    name = "head_only"
    description = (
        "linear probe: the backbone (pooler included, unless train_pooler) is frozen, only the classifier head trains"
    )
    Options = HeadOnlyOptions

    def check_model(self, options: HeadOnlyOptions, model: ModelInfo) -> None:
        if not options.train_pooler:
            return
        from specrun.core.roles import role_map_for

        roles = role_map_for(getattr(model.config, "model_type", None))
        if roles is not None and roles.pooler is None:
            why = f" ({roles.note})" if roles.note else ""
            raise ConfigError(
                f"train_pooler = true, but {describe(model)} has no pooler{why}; set train_pooler = false",
                key="method.train_pooler",
            )
        if roles is None:
            from specrun.core.models import parameter_names

            if not any(".pooler." in n for n in parameter_names(model.path)):
                raise ConfigError(
                    f"train_pooler = true, but {describe(model)} has no pooler; set train_pooler = false",
                    key="method.train_pooler",
                )

    def frozen_prefix_problem(self, options: HeadOnlyOptions, model: ModelInfo | None) -> str | None:
        return None  # the head (and with train_pooler the pooler) reads the frozen backbone's output

    def build(self, options: HeadOnlyOptions, ctx: BuildContext):
        model = ctx.load_backbone()
        roles = roles_of(model)

        def pooler(name: str) -> bool:
            if roles is not None:
                return roles.in_pooler(name)
            return name.startswith(f"{model.base_model_prefix}.pooler.")

        return train_only(model, lambda name: is_head(model, name) or (options.train_pooler and pooler(name)))


@hookimpl
def register_methods(register):
    register(HeadOnly())
