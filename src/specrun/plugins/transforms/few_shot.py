"""Built-in ``few_shot`` transform: a seeded, stratified subset of k per class, n in total, or a fraction."""

from __future__ import annotations

from pydantic import Field, model_validator

from specrun.examples import Examples
from specrun.hookspecs import hookimpl
from specrun.plugins.api import PluginOptions, TransformContext, TransformPlugin
from specrun.plugins.transforms.common import fail, label_name, pick_per_label, proportional_quotas, rng_for


class FewShotOptions(PluginOptions):
    k: int | None = Field(
        None,
        ge=0,
        description="examples per class (exactly k of every class); 0 = no training: the pretrained model with a randomly initialised head, a chance-level reference, not a zero-shot classifier",
    )
    n: int | None = Field(
        None, ge=0, description="examples in total, split over classes in proportion to their frequency"
    )
    fraction: float | None = Field(None, gt=0, le=1, description="a fraction of the split, stratified like n")

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [name for name in ("k", "n", "fraction") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of k, n, fraction (got {', '.join(given) or 'none'})")
        return self


class FewShot(TransformPlugin):
    name = "few_shot"
    description = (
        "a seeded stratified subset: k per class, n in total or a fraction; k = 0 trains nothing and evaluates the pretrained "
        "model with a randomly initialised head (a chance-level reference, not a zero-shot classifier)"
    )
    Options = FewShotOptions
    applies_to = "train"

    def apply(self, examples: Examples, options: FewShotOptions, ctx: TransformContext) -> Examples:
        by_label = examples.indices_by_label()
        counts = {label: len(indices) for label, indices in by_label.items()}
        if options.k is not None:
            quotas = self._per_class(options.k, counts, ctx)
        else:
            total = options.n if options.n is not None else round(options.fraction * len(examples))
            if total > len(examples):
                raise fail(self.name, ctx, f"n={total} but the split has only {len(examples)} examples")
            quotas = proportional_quotas(total, counts)

        def permuted(label: int, indices: list[int]) -> list[int]:
            # One permutation per class, whatever the k: the examples for k=8 are among those for k=32.
            return rng_for(ctx, self.name, label).sample(indices, len(indices))

        return pick_per_label(examples, quotas, permuted)

    def _per_class(self, k: int, counts: dict[int, int], ctx: TransformContext) -> dict[int, int]:
        classes = range(len(ctx.label_names)) if ctx.label_names else sorted(counts)
        if k:
            for label in classes:
                if counts.get(label, 0) < k:
                    raise fail(
                        self.name,
                        ctx,
                        f"k={k} but class {label_name(ctx, label)} has only {counts.get(label, 0)} examples",
                    )
        return dict.fromkeys(counts, k)


@hookimpl
def register_transforms(register):
    register(FewShot())
