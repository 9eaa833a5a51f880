"""What the built-in transforms share: seeded randomness, stratified quotas, and "augment vs replace" copying.

Not a plugin module (it registers nothing); the transform modules import it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

from pydantic import Field

from specrun.errors import DataError
from specrun.examples import Examples
from specrun.plugins.api import PluginOptions, TransformContext


def rng_for(ctx: TransformContext, transform: str, *keys: Hashable, seed: int | None = None) -> random.Random:
    """A ``random.Random`` determined by (seed, split, transform, keys) alone.

    Keying by an example's id (rather than its position) makes an example's noise independent of which
    other examples are in the set, so a subsample sees the same corruption as the full split.
    """
    material = "\x1f".join(str(x) for x in (ctx.seed if seed is None else seed, ctx.split, transform, *keys))
    return random.Random(int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "big"))


def fail(transform: str, ctx: TransformContext, message: str) -> DataError:
    """A DataError that says which transform and which split."""
    return DataError(f"transform {transform!r} on split {ctx.split!r}: {message}")


def label_name(ctx: TransformContext, label: int) -> str:
    return repr(ctx.label_names[label]) if 0 <= label < len(ctx.label_names) else str(label)


# --- stratified selection ------------------------------------------------------------------------


def proportional_quotas(total: int, counts: dict[int, int]) -> dict[int, int]:
    """Split ``total`` over labels in proportion to ``counts`` (largest remainder; ties to the smaller label).

    Never gives a label more than it has, provided ``total <= sum(counts)``.
    """
    size = sum(counts.values())
    if size == 0:
        return dict.fromkeys(counts, 0)
    exact = {label: total * n / size for label, n in counts.items()}
    quotas = {label: int(x) for label, x in exact.items()}
    order = sorted(counts, key=lambda label: (-(exact[label] - quotas[label]), label))
    for label in order[: total - sum(quotas.values())]:
        quotas[label] += 1
    return quotas


def split_by_proportions(total: int, proportions: Sequence[float]) -> list[int]:
    """Split ``total`` into integer parts in the given proportions (largest remainder; ties to earlier parts)."""
    weight = sum(proportions)
    exact = [total * p / weight for p in proportions]
    parts = [int(x) for x in exact]
    order = sorted(range(len(parts)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def pick_per_label(
    examples: Examples, quotas: dict[int, int], order_within: Callable[[int, list[int]], list[int]]
) -> Examples:
    """The first ``quotas[label]`` indices of ``order_within(label, indices)`` for each label, in input order."""
    chosen: list[int] = []
    for label, indices in examples.indices_by_label().items():
        q = quotas.get(label, 0)
        if q:
            chosen += order_within(label, indices)[:q]
    return examples.select(sorted(chosen))


# --- augment vs replace --------------------------------------------------------------------------


class CopyOptions(PluginOptions):
    """Options of transforms that rewrite texts: whether to add copies or replace, and which side of a pair."""

    mode: Literal["auto", "augment", "replace"] = Field(
        "auto",
        description="augment: keep the originals and add `copies` rewritten copies (ids '<id>~<transform><n>'); "
        "replace: rewrite each example in place (same ids); auto: augment on the training split, replace on eval sets",
    )
    copies: int = Field(1, ge=1, le=100, description="rewritten copies per example in augment mode")
    sides: Literal["both", "text", "pair"] = Field(
        "both", description="for text pairs: rewrite both texts, only the first, or only the second"
    )
    seed: int | None = Field(
        None,
        description="fixed seed for the rewriting instead of the run's seed (e.g. the same corrupted eval set for every run)",
    )

    def resolved_mode(self, ctx: TransformContext) -> Literal["augment", "replace"]:
        if self.mode != "auto":
            return self.mode
        return "augment" if ctx.split == "train" else "replace"


Rewrite = Callable[[str, random.Random], str]


def rewrite_examples(
    examples: Examples, options: CopyOptions, ctx: TransformContext, transform: str, rewrite: Rewrite
) -> Examples:
    """Apply ``rewrite`` to every text (per ``options.sides``), as copies or in place (per ``options.mode``).

    Each (example, copy) gets its own generator from ``rng_for``, keyed by the example's id and the copy
    number. Augmented copies keep their source's label; their ids are ``<id>~<transform><n>``, made unique
    against every id already present.
    """
    if options.resolved_mode(ctx) == "replace":
        return _rewritten(examples, options, ctx, transform, rewrite, copy=0)
    out = examples
    taken = set(examples.ids)
    for copy in range(1, options.copies + 1):
        rewritten = _rewritten(examples, options, ctx, transform, rewrite, copy)
        ids = [_fresh_id(f"{i}~{transform}{copy}", taken) for i in examples.ids]
        out = out.concat(rewritten.replace(ids=ids))
    return out


def _rewritten(
    examples: Examples, options: CopyOptions, ctx: TransformContext, transform: str, rewrite: Rewrite, copy: int
) -> Examples:
    texts, pairs = [], []
    has_pair = examples.text_pair is not None
    for k, example_id in enumerate(examples.ids):
        rng = rng_for(ctx, transform, copy, example_id, seed=options.seed)
        text = examples.text[k]
        texts.append(rewrite(text, rng) if not has_pair or options.sides in ("both", "text") else text)
        if has_pair:
            pair = examples.text_pair[k]
            pairs.append(rewrite(pair, rng) if options.sides in ("both", "pair") else pair)
    return examples.replace(text=texts, text_pair=pairs if has_pair else None)


def _fresh_id(candidate: str, taken: set[str]) -> str:
    new, n = candidate, 1
    while new in taken:
        n += 1
        new = f"{candidate}.{n}"
    taken.add(new)
    return new
