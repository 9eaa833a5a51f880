"""Built-in ``label_noise`` transform: flip a fraction of the labels, to any other class or to a named one."""

from __future__ import annotations

from pydantic import Field

from specrun.errors import did_you_mean
from specrun.examples import Examples
from specrun.hookspecs import hookimpl
from specrun.plugins.api import PluginOptions, TransformContext, TransformPlugin
from specrun.plugins.transforms.common import fail, rng_for


class LabelNoiseOptions(PluginOptions):
    fraction: float = Field(
        gt=0, le=1, description="fraction of the split's examples whose label is changed (rounded to a count)"
    )
    to: str | None = Field(
        None,
        description="flip to this class (a label name); default: symmetric noise, each flip to a uniformly random other class",
    )


class LabelNoise(TransformPlugin):
    name = "label_noise"
    description = "flip a fraction of the training labels (symmetric, or to a named class); ids and texts unchanged"
    Options = LabelNoiseOptions
    applies_to = "train"

    def apply(self, examples: Examples, options: LabelNoiseOptions, ctx: TransformContext) -> Examples:
        count = round(options.fraction * len(examples))
        target = self._target(options, ctx)
        classes = list(range(len(ctx.label_names))) or sorted(set(examples.label))
        if target is None and len(classes) < 2:
            raise fail(self.name, ctx, "symmetric label noise needs at least two classes")
        candidates = [i for i, y in enumerate(examples.label) if y != target]
        if count > len(candidates):
            raise fail(
                self.name,
                ctx,
                f"fraction={options.fraction} asks for {count} flips to {options.to!r}, "
                f"but only {len(candidates)} of {len(examples)} examples have another label",
            )
        rng = rng_for(ctx, self.name)
        labels = list(examples.label)
        for i in rng.sample(candidates, count):
            labels[i] = target if target is not None else rng.choice([c for c in classes if c != labels[i]])
        return examples.replace(label=labels)

    def _target(self, options: LabelNoiseOptions, ctx: TransformContext) -> int | None:
        if options.to is None:
            return None
        if options.to not in ctx.label_names:
            known = ", ".join(map(repr, ctx.label_names))
            raise fail(
                self.name,
                ctx,
                f"to={options.to!r} is not a class{did_you_mean(options.to, ctx.label_names)}; classes: {known}",
            )
        return ctx.label_names.index(options.to)


@hookimpl
def register_transforms(register):
    register(LabelNoise())
