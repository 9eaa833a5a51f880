"""Built-in ``head_only`` method: a linear probe, only the classifier head trains."""

from __future__ import annotations

from pydantic import Field

from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, PluginOptions
from specrun.plugins.methods.parts import is_head, train_only


class HeadOnlyOptions(PluginOptions):
    train_pooler: bool = Field(
        False,
        description="also train the pooler (dense + tanh over [CLS]); off, the head is a linear probe of "
        "the frozen pooled features",
    )


class HeadOnly(MethodPlugin):
    name = "head_only"
    description = "linear probe: the backbone (pooler included, unless train_pooler) is frozen, only the classifier head trains"
    Options = HeadOnlyOptions

    def build(self, options: HeadOnlyOptions, ctx: BuildContext):
        model = ctx.load_backbone()
        pooler = f"{model.base_model_prefix}.pooler."
        return train_only(model, lambda name: is_head(model, name) or (options.train_pooler and name.startswith(pooler)))


@hookimpl
def register_methods(register):
    register(HeadOnly())
