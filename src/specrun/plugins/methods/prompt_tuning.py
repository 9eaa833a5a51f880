"""Built-in ``prompt_tuning`` method: trainable soft-prompt embeddings before the input (Lester et al. 2021)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from specrun.errors import ConfigError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, ModelInfo, PluginOptions


class PromptTuningOptions(PluginOptions):
    num_virtual_tokens: int = Field(20, ge=1, le=256, description="length of the soft prompt prepended to every input")
    init: Literal["random", "text"] = Field(
        "random",
        description="'random': random soft tokens; 'text': the embeddings of init_text's tokens, repeated or cut to length",
    )
    init_text: str | None = Field(None, description="the text whose token embeddings start the prompt (init = 'text')")

    @model_validator(mode="after")
    def _text_iff_text_init(self):
        if self.init == "text" and not self.init_text:
            raise ValueError("init = 'text' needs init_text")
        if self.init != "text" and self.init_text is not None:
            raise ValueError("init_text is used only with init = 'text'")
        return self


def prompt_config(options: PromptTuningOptions, model_path: str, backbone=None):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    from specrun.plugins.methods.parts import roles_of

    text = options.init == "text"
    shape = {}
    if backbone is not None:
        # the prompt lives in the input embeddings' space (narrower than the layers on ALBERT and ELECTRA)
        config = backbone.config
        shape = {
            "token_dim": backbone.get_input_embeddings().embedding_dim,
            "num_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
        }
        roles = roles_of(backbone)
        if roles is not None:
            shape["modules_to_save"] = list(roles.head)
    return PromptTuningConfig(
        **shape,
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=options.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=options.init_text if text else None,
        tokenizer_name_or_path=model_path if text else None,
    )


class PromptTuning(MethodPlugin):
    name = "prompt_tuning"
    description = (
        "prompt tuning: N trainable virtual-token embeddings prepended to the input (Lester et al. 2021), head trained"
    )
    Options = PromptTuningOptions

    def check_model(self, options: PromptTuningOptions, model: ModelInfo) -> None:
        _check_decoder(model.config, model.name)
        _check_positions(options, model.config, model.max_length)

    def frozen_prefix_problem(self, options: PromptTuningOptions, model) -> str | None:
        return (
            "prompt tuning trains the prompt embeddings fed into the backbone's input: no prefix of the model is frozen"
        )

    def build(self, options: PromptTuningOptions, ctx: BuildContext):
        from peft import get_peft_model

        backbone = ctx.load_backbone()
        _check_decoder(backbone.config, ctx.model_path)
        _check_positions(options, backbone.config, ctx.max_length)
        return get_peft_model(backbone, prompt_config(options, ctx.model_path, backbone))


def _check_decoder(config, name: str) -> None:
    """peft hands a decoder the soft prompt and the text as embeddings only; its classifier then cannot
    see where the padding starts and pools the last position, a pad token in all but the longest input."""
    from specrun.core.roles import role_map_for

    roles = role_map_for(getattr(config, "model_type", None))
    if roles is not None and roles.decoder:
        raise ConfigError(
            f"prompt tuning cannot classify with {name!r} ({roles.name}), a decoder: peft passes it the prompt and text as "
            "embeddings, and its classifier then pools the last position, a pad token for every input shorter than the "
            "batch's longest; use lora or ia3 on decoders",
            key="method.name",
        )


def _check_positions(options: PromptTuningOptions, config, max_length: int) -> None:
    """The soft prompt takes positions of its own: with the longest input it must fit the model's."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and max_length + options.num_virtual_tokens > positions:
        raise ConfigError(
            f"{options.num_virtual_tokens} virtual tokens + model.max_length {max_length} exceed the model's {positions} "
            f"positions; lower model.max_length to {positions - options.num_virtual_tokens} or use fewer virtual tokens",
            key="method.num_virtual_tokens",
        )


@hookimpl
def register_methods(register):
    register(PromptTuning())
