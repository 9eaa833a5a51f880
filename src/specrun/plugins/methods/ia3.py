"""Built-in ``ia3`` method: (IA)^3, learned rescaling vectors on keys, values and FFN activations (Liu et al. 2022)."""

from __future__ import annotations

from pydantic import Field

from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, PluginOptions

ATTENTION_KV = r"attention\.self\.(key|value)"
#: The FFN's down-projection: (IA)^3 rescales its input, the intermediate activations (l_ff).
FFN_OUT = r"output\.dense"


class IA3Options(PluginOptions):
    ffn: bool = Field(True, description="also rescale the FFN's intermediate activations (input of each layer's output.dense)")


def ia3_config(options: IA3Options):
    from peft import IA3Config, TaskType

    layer = r".*\.layer\.\d+\."
    targets = f"{layer}({ATTENTION_KV}|{FFN_OUT})$" if options.ffn else f"{layer}{ATTENTION_KV}$"
    return IA3Config(
        task_type=TaskType.SEQ_CLS,
        target_modules=targets,
        feedforward_modules=f"{layer}{FFN_OUT}$" if options.ffn else [],
    )


class IA3(MethodPlugin):
    name = "ia3"
    description = "(IA)^3: learned vectors rescale attention keys, values and FFN activations (Liu et al. 2022), head trained"
    Options = IA3Options

    def build(self, options: IA3Options, ctx: BuildContext):
        from peft import get_peft_model

        return get_peft_model(ctx.load_backbone(), ia3_config(options))


@hookimpl
def register_methods(register):
    register(IA3())
