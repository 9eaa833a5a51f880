"""Built-in ``lora`` method: low-rank adapters (peft) on chosen linear layers, plus a trained head."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, PluginOptions

#: Placement presets for BERT-family encoders (module names as in transformers' BertModel).
PLACEMENTS: dict[str, list[str] | str] = {
    "attn-qv": ["query", "value"],
    "attn-qkv": ["query", "key", "value"],
    "attn-full": r".*\.attention\.(self\.(query|key|value)|output\.dense)$",
    "ffn-only": r".*\.layer\.\d+\.(intermediate\.dense|output\.dense)$",
    "full-model": r".*\.layer\.\d+\.(attention\.(self\.(query|key|value)|output\.dense)|intermediate\.dense|output\.dense)$",
}


class LoraOptions(PluginOptions):
    rank: int = Field(8, ge=1, description="rank r of the update B·A")
    alpha: float = Field(16, gt=0, description="scaling numerator: updates are scaled by alpha / rank")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the adapter's input")
    placement: Literal["attn-qv", "attn-qkv", "attn-full", "ffn-only", "full-model"] | None = Field(
        None, description="where adapters go (default attn-qv); or give target_modules"
    )
    target_modules: list[str] | None = Field(None, description="module-name suffixes to adapt, instead of a placement")

    @model_validator(mode="after")
    def _one_placement(self):
        if self.placement and self.target_modules:
            raise ValueError("give either placement or target_modules, not both")
        return self

    def targets(self) -> list[str] | str:
        return self.target_modules or PLACEMENTS[self.placement or "attn-qv"]


def lora_config(options: LoraOptions):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=options.targets(),
        bias="none",
    )


class LoRA(MethodPlugin):
    name = "lora"
    description = "LoRA: trainable low-rank updates on frozen linear layers (Hu et al. 2021), head trained"
    Options = LoraOptions

    def build(self, options: LoraOptions, ctx: BuildContext):
        from peft import get_peft_model

        return get_peft_model(ctx.load_backbone(), lora_config(options))


@hookimpl
def register_methods(register):
    register(LoRA())
