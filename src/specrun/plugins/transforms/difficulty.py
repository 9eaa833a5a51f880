"""Built-in ``difficulty`` transform: a budget of training examples chosen by a teacher's per-example loss."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from specrun.examples import Examples
from specrun.hookspecs import hookimpl
from specrun.plugins.api import PluginOptions, TransformContext, TransformPlugin
from specrun.plugins.transforms.common import (
    fail,
    pick_per_label,
    proportional_quotas,
    rng_for,
    split_by_proportions,
)

Strategy = Literal["uniform", "easy", "hard", "middle", "mixed"]


class Mix(PluginOptions):
    """Shares of the budget for ``strategy = "mixed"`` (they must sum to 1)."""

    easy: float = Field(0.2, ge=0, le=1, description="share taken from the lowest teacher losses")
    middle: float = Field(0.6, ge=0, le=1, description="share taken around the median loss")
    hard: float = Field(0.2, ge=0, le=1, description="share taken from the highest teacher losses")

    @model_validator(mode="after")
    def _sums_to_one(self):
        if not math.isclose(self.easy + self.middle + self.hard, 1.0, abs_tol=1e-6):
            raise ValueError(f"easy + middle + hard must be 1, not {self.easy + self.middle + self.hard:g}")
        return self


class DifficultyOptions(PluginOptions):
    teacher: str = Field(
        description="the teacher run: a run id, or the path of a spec (.toml, relative to this spec's folder) whose single run is the teacher"
    )
    n: int = Field(
        ge=1,
        description="budget: how many training examples to keep (split over labels in proportion to their frequency)",
    )
    strategy: Strategy = Field(
        description="uniform: random within each label; easy / hard: lowest / highest teacher loss within each label; "
        "middle: around each label's median loss; mixed: easy, middle and hard shares (see mix)"
    )
    mix: Mix | None = Field(None, description="shares for strategy = 'mixed' (default easy 0.2, middle 0.6, hard 0.2)")

    @model_validator(mode="after")
    def _mix_only_when_mixed(self):
        if self.mix is not None and self.strategy != "mixed":
            raise ValueError(f"mix only applies to strategy = 'mixed', not {self.strategy!r}")
        return self


def rank_order(strategy: Strategy, ranked: list[int], mix: Mix, rng_order: list[int], quota: int) -> list[int]:
    """The ``quota`` picks of ``strategy`` from ``ranked`` (indices sorted by ascending loss)."""
    m = len(ranked)
    if strategy == "easy":
        return ranked[:quota]
    if strategy == "hard":
        return ranked[m - quota :]
    if strategy == "middle":
        start = (m - quota) // 2
        return ranked[start : start + quota]
    if strategy == "uniform":
        return rng_order[:quota]
    n_easy, n_middle, n_hard = split_by_proportions(quota, [mix.easy, mix.middle, mix.hard])
    # middle: centred on the median, kept clear of the easy and hard picks at both ends
    start = min(max((m - n_middle) // 2, n_easy), m - n_hard - n_middle)
    return ranked[:n_easy] + ranked[start : start + n_middle] + ranked[m - n_hard :]


class Difficulty(TransformPlugin):
    name = "difficulty"
    description = "keep a budget of n training examples by teacher loss, ranked within each label (easy/middle/hard/mixed/uniform)"
    Options = DifficultyOptions
    applies_to = "train"

    def apply(self, examples: Examples, options: DifficultyOptions, ctx: TransformContext) -> Examples:
        if ctx.scores is None:
            raise fail(
                self.name,
                ctx,
                f"difficulty needs a teacher's per-example losses (teacher={options.teacher!r}), "
                "but this runner provides no teacher scores",
            )
        if options.n > len(examples):
            raise fail(self.name, ctx, f"budget n={options.n} but the split has only {len(examples)} examples")
        losses = [float(x) for x in ctx.scores(options.teacher, examples)]
        if len(losses) != len(examples):
            raise fail(
                self.name, ctx, f"teacher {options.teacher!r} gave {len(losses)} scores for {len(examples)} examples"
            )
        bad = [examples.ids[i] for i, x in enumerate(losses) if not math.isfinite(x)]
        if bad:
            raise fail(
                self.name, ctx, f"teacher {options.teacher!r} gave non-finite losses, e.g. for example {bad[0]!r}"
            )

        quotas = proportional_quotas(options.n, {y: len(ix) for y, ix in examples.indices_by_label().items()})
        mix = options.mix or Mix()

        def choose(label: int, indices: list[int]) -> list[int]:
            ranked = sorted(indices, key=lambda i: (losses[i], examples.ids[i]))
            shuffled = (
                rng_for(ctx, self.name, label).sample(indices, len(indices)) if options.strategy == "uniform" else []
            )
            return rank_order(options.strategy, ranked, mix, shuffled, quotas[label])

        return pick_per_label(examples, quotas, choose)


@hookimpl
def register_transforms(register):
    register(Difficulty())
