"""Built-in ``freeze`` method: freeze the embeddings and the lowest layers, train the rest."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from specrun.errors import ConfigError, SpecrunError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, ModelInfo, PluginOptions
from specrun.plugins.methods.parts import (
    describe,
    encoder_layers,
    required_roles,
    roles_of,
    train_only,
)


class FreezeOptions(PluginOptions):
    layers: int | None = Field(
        None, ge=0, description="how many of the lowest layers to freeze (give this or fraction)"
    )
    fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="the share of layers to freeze, lowest first, rounded to the nearest layer, halves up (give this or layers)",
    )

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.layers is None) == (self.fraction is None):
            raise ValueError("give exactly one of layers or fraction")
        return self

    def frozen_layers(self, total: int) -> int:
        if self.layers is not None:
            if self.layers > total:
                raise SpecrunError(f"method.layers = {self.layers}, but the model has only {total} layers")
            return self.layers
        return math.floor(self.fraction * total + 0.5)


class Freeze(MethodPlugin):
    name = "freeze"
    description = "layer freezing: embeddings and the lowest N layers frozen; upper layers, pooler and head train"
    Options = FreezeOptions

    def check_model(self, options: FreezeOptions, model: ModelInfo) -> None:
        key = "method.layers" if options.layers is not None else "method.fraction"
        roles = required_roles(model, key, "layer freezing")
        if roles.layer_list is None:
            raise ConfigError(
                f"{describe(model)}: {roles.note}, so there are no lowest layers to freeze on their own", key=key
            )
        layers = getattr(model.config, "num_hidden_layers", None)
        if options.layers is not None and layers is not None and options.layers > layers:
            kind = "decoder" if roles.decoder else "encoder"
            raise ConfigError(
                f"{options.layers} layers to freeze, but {model.name!r} has {layers} {kind} layers", key="method.layers"
            )

    def frozen_prefix_problem(self, options: FreezeOptions, model: ModelInfo | None) -> str | None:
        """Only freezing every layer leaves nothing trainable inside the backbone (the pooler and head train)."""
        key = "layers" if options.layers is not None else "fraction"
        value = options.layers if options.layers is not None else options.fraction
        if options.fraction is not None and options.fraction < 0.5:
            return f"{key} = {value} leaves the upper layers training, inside the backbone; freeze every layer (fraction = 1.0)"
        layers = getattr(model.config, "num_hidden_layers", None) if model is not None else None
        if layers is None:
            return None  # known once the model is (plan and apply ask again with it)
        if options.frozen_layers(layers) < layers:
            return (
                f"{key} = {value} freezes {options.frozen_layers(layers)} of the {layers} layers of {model.name!r}: "
                f"the others train, inside the backbone; freeze every layer (layers = {layers} or fraction = 1.0)"
            )
        return None

    def build(self, options: FreezeOptions, ctx: BuildContext):
        model = ctx.load_backbone()
        roles = roles_of(model)
        _, layers = encoder_layers(model)
        frozen = options.frozen_layers(len(layers))

        def trains(name: str) -> bool:
            if roles.in_embeddings(name):
                return False
            index = roles.layer_of(name)
            return index is None or index >= frozen  # upper layers, the pooler, final norms and the head

        return train_only(model, trains)


@hookimpl
def register_methods(register):
    register(Freeze())
