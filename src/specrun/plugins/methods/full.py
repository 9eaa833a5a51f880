"""Built-in ``full`` method: fine-tune every parameter of the model."""

from __future__ import annotations

from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, NoOptions


class FullFineTuning(MethodPlugin):
    name = "full"
    description = "full fine-tuning: every parameter trains (fp32, bf16 autocast, or fp16 on CUDA)"
    Options = NoOptions

    def frozen_prefix_problem(self, options: NoOptions, model) -> str | None:
        return "full fine-tuning trains every parameter: no part of the model is frozen"

    def build(self, options: NoOptions, ctx: BuildContext):
        model = ctx.load_backbone()
        for param in model.parameters():
            param.requires_grad_(True)
        return model


@hookimpl
def register_methods(register):
    register(FullFineTuning())
