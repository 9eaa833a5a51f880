"""Property tests: noise rates, few_shot stratification, label_noise fractions, difficulty quantiles."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specrun.errors import DataError
from specrun.examples import Examples
from specrun.plugins.api import TransformContext
from specrun.plugins.transforms.clean import Clean
from specrun.plugins.transforms.difficulty import Difficulty
from specrun.plugins.transforms.few_shot import FewShot
from specrun.plugins.transforms.label_noise import LabelNoise
from specrun.plugins.transforms.noise import EMOJIS, Noise

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
rates = st.floats(min_value=0.01, max_value=0.6)
seeds = st.integers(min_value=0, max_value=2**31)


def run(
    plugin,
    examples: Examples,
    seed: int = 0,
    split: str = "train",
    labels=("a", "b", "c", "d", "e"),
    scores=None,
    **options,
) -> Examples:
    return plugin.apply(examples, plugin.Options.model_validate(options), TransformContext(seed, split, labels, scores))


def big_text(seed: int, words: int = 1500) -> Examples:
    """One long lower-case text (about 7,500 letters), for measuring rates."""
    rng = random.Random(seed)
    text = " ".join(
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(words)
    )
    return Examples.from_columns(["t"], [text], [0])


def within(observed: float, rate: float, n: int, sigmas: float = 5.0) -> bool:
    """``observed`` is a plausible binomial proportion for ``rate`` over ``n`` trials."""
    return abs(observed - rate) <= sigmas * math.sqrt(rate * (1 - rate) / n) + 1e-9


def letters(text: str) -> int:
    return sum(not c.isspace() for c in text)


# --- noise rates ----------------------------------------------------------------------------------


@PROPERTY
@given(rate=rates, seed=seeds)
def test_substitution_rate_is_the_per_character_rate(rate, seed):
    examples = big_text(seed)
    noisy = run(Noise(), examples, seed, "dev", char_rate=rate, char_ops=["substitute"]).text[0]
    original = examples.text[0]
    assert len(noisy) == len(original)
    assert within(sum(a != b for a, b in zip(original, noisy)) / letters(original), rate, letters(original))


@PROPERTY
@given(rate=rates, seed=seeds, op=st.sampled_from(["insert", "delete"]))
def test_insertion_and_deletion_rates(rate, seed, op):
    original = big_text(seed).text[0]
    noisy = run(Noise(), big_text(seed), seed, "dev", char_rate=rate, char_ops=[op]).text[0]
    edits = abs(len(noisy) - len(original))
    assert within(edits / letters(original), rate, letters(original))


@PROPERTY
@given(rate=rates, seed=seeds)
def test_per_word_rate_edits_that_share_of_words(rate, seed):
    examples = big_text(seed)
    noisy = run(Noise(), examples, seed, "dev", char_rate=rate, char_unit="word", char_ops=["substitute"]).text[0]
    pairs = list(zip(examples.text[0].split(" "), noisy.split(" "), strict=True))
    changed = sum(a != b for a, b in pairs)
    assert all(sum(x != y for x, y in zip(a, b)) <= 1 for a, b in pairs)
    assert within(changed / len(pairs), rate, len(pairs))


@PROPERTY
@given(rate=rates, seed=seeds)
def test_typo_rate_is_per_letter(rate, seed):
    examples = big_text(seed)
    noisy = run(Noise(), examples, seed, "dev", typo_rate=rate).text[0]
    original = examples.text[0]
    assert within(
        sum(a != b for a, b in zip(original, noisy, strict=True)) / letters(original), rate, letters(original)
    )


@PROPERTY
@given(rate=rates, seed=seeds)
def test_word_and_emoji_rates_are_per_word(rate, seed):
    examples = big_text(seed)
    n = len(examples.text[0].split())
    repeated = run(Noise(), examples, seed, "dev", word_rate=rate, word_ops=["repeat"]).text[0]
    assert within((len(repeated.split()) - n) / n, rate, n)
    emoji = run(Noise(), examples, seed, "dev", emoji_rate=rate).text[0]
    assert within(sum(t in EMOJIS for t in emoji.split()) / n, rate, n)


@PROPERTY
@given(rate=rates, seed=seeds, copies=st.integers(1, 3))
def test_augmented_copies_keep_labels_and_originals(rate, seed, copies):
    rng = random.Random(seed)
    examples = Examples.from_columns(
        range(20), [f"text number {i} here" for i in range(20)], [rng.randrange(3) for _ in range(20)]
    )
    out = run(Noise(), examples, seed, "train", char_rate=rate, copies=copies)
    assert len(out) == (copies + 1) * 20 and len(set(out.ids)) == len(out)
    label_of = dict(zip(examples.ids, examples.label))
    assert all(label_of[i.split("~")[0]] == y for i, y in zip(out.ids, out.label))


# --- few_shot -------------------------------------------------------------------------------------

class_sizes = st.lists(st.integers(min_value=0, max_value=40), min_size=2, max_size=5)


def labelled(sizes: list[int], seed: int) -> Examples:
    labels = [y for y, n in enumerate(sizes) for _ in range(n)]
    random.Random(seed).shuffle(labels)
    return Examples.from_columns(
        [f"e{i}" for i in range(len(labels))], [f"text {i}" for i in range(len(labels))], labels
    )


@PROPERTY
@given(sizes=class_sizes, k=st.integers(0, 40), seed=seeds)
def test_few_shot_takes_exactly_k_of_every_class_or_says_which_is_short(sizes, k, seed):
    examples = labelled(sizes, seed)
    names = tuple(f"class{y}" for y in range(len(sizes)))
    if k and min(sizes) < k:
        short = next(y for y, n in enumerate(sizes) if n < k)
        with pytest.raises(DataError, match=f"k={k} but class 'class{short}' has only {sizes[short]} examples"):
            run(FewShot(), examples, seed, labels=names, k=k)
        return
    out = run(FewShot(), examples, seed, labels=names, k=k)
    assert all(out.label.count(y) == k for y in range(len(sizes)))
    assert len(out) == k * len(sizes) and set(out.ids) <= set(examples.ids)


@PROPERTY
@given(sizes=class_sizes, share=st.floats(0, 1), seed=seeds)
def test_few_shot_n_is_proportional_within_one(sizes, share, seed):
    examples = labelled(sizes, seed)
    n = round(share * len(examples))
    out = run(FewShot(), examples, seed, labels=tuple(map(str, range(len(sizes)))), n=n)
    assert len(out) == n
    for y, size in enumerate(sizes):
        assert abs(out.label.count(y) - n * size / max(1, len(examples))) < 1
        assert out.label.count(y) <= size


# --- label_noise ----------------------------------------------------------------------------------


@PROPERTY
@given(n=st.integers(1, 300), classes=st.integers(2, 5), fraction=st.floats(0.001, 1), seed=seeds)
def test_label_noise_flips_the_requested_fraction(n, classes, fraction, seed):
    rng = random.Random(seed)
    examples = Examples.from_columns(range(n), ["x"] * n, [rng.randrange(classes) for _ in range(n)])
    out = run(LabelNoise(), examples, seed, labels=tuple(map(str, range(classes))), fraction=fraction)
    assert sum(a != b for a, b in zip(examples.label, out.label)) == round(fraction * n)
    assert set(out.label) <= set(range(classes)) and out.ids == examples.ids


# --- difficulty -----------------------------------------------------------------------------------


def scored(seed: int, n: int = 400, classes: int = 2):
    """Examples with distinct losses; returns (examples, fake scores, quantile of each id within its label)."""
    rng = random.Random(seed)
    labels = [rng.randrange(classes) for _ in range(n)]
    loss = {f"e{i}": rng.random() * (1 + labels[i]) for i in range(n)}  # labels differ in scale: ranking is per label
    examples = Examples.from_columns(list(loss), [f"t{i}" for i in range(n)], labels)
    quantile = {}
    for _y, indices in examples.indices_by_label().items():
        ranked = sorted(indices, key=lambda i: loss[examples.ids[i]])
        quantile.update({examples.ids[i]: r / (len(ranked) - 1) for r, i in enumerate(ranked)})
    return examples, (lambda teacher, ex: [loss[i] for i in ex.ids]), quantile


def quantiles_by_label(out: Examples, quantile: dict) -> dict[int, list[float]]:
    by: dict[int, list[float]] = {}
    for i, y in zip(out.ids, out.label):
        by.setdefault(y, []).append(quantile[i])
    return by


@PROPERTY
@given(seed=seeds, budget=st.integers(20, 200))
def test_difficulty_easy_hard_middle_take_the_right_quantiles(seed, budget):
    examples, scores, quantile = scored(seed)
    counts = {y: len(ix) for y, ix in examples.indices_by_label().items()}
    picks = {
        s: run(Difficulty(), examples, seed, scores=scores, teacher="t", n=budget, strategy=s)
        for s in ("easy", "hard", "middle")
    }
    for strategy, out in picks.items():
        assert len(out) == budget and len(set(out.ids)) == budget
        for y, qs in quantiles_by_label(out, quantile).items():
            share = len(qs) / counts[y]  # the share of label y that was kept
            tol = 1.5 / counts[y]
            if strategy == "easy":
                assert max(qs) <= share + tol
            elif strategy == "hard":
                assert min(qs) >= 1 - share - tol
            else:
                assert min(qs) >= 0.5 - share / 2 - tol and max(qs) <= 0.5 + share / 2 + tol


def run_length(ranks: list[int], start: int, step: int) -> int:
    """How many of ``ranks`` (sorted) form an unbroken run from ``start`` moving by ``step``."""
    seq = ranks if step > 0 else ranks[::-1]
    n = 0
    while n < len(seq) and seq[n] == start + step * n:
        n += 1
    return n


@PROPERTY
@given(
    seed=seeds, budget=st.integers(20, 120), mix=st.sampled_from([(0.2, 0.6, 0.2), (0.5, 0.0, 0.5), (0.1, 0.3, 0.6)])
)
def test_difficulty_mixed_respects_its_proportions(seed, budget, mix):
    examples, scores, quantile = scored(seed)
    easy, middle, hard = mix
    out = run(
        Difficulty(),
        examples,
        seed,
        scores=scores,
        teacher="t",
        n=budget,
        strategy="mixed",
        mix={"easy": easy, "middle": middle, "hard": hard},
    )
    assert len(out) == budget
    for y, qs in quantiles_by_label(out, quantile).items():
        size = examples.label.count(y)
        ranks = sorted(round(q * (size - 1)) for q in qs)
        k = len(ranks)
        # at most ~half a class is kept, so the three blocks never touch: the easy block runs up from the
        # lowest rank, the hard block down from the highest, and the middle block sits on the median
        n_easy, n_hard = run_length(ranks, 0, 1), run_length(ranks, size - 1, -1)
        assert abs(n_easy - easy * k) < 1 and abs(n_hard - hard * k) < 1
        middle_ranks = ranks[n_easy : k - n_hard]
        assert abs(len(middle_ranks) - middle * k) < 1
        if middle_ranks:
            assert middle_ranks == list(range(middle_ranks[0], middle_ranks[0] + len(middle_ranks)))
            assert abs(statistics.median(middle_ranks) - (size - 1) / 2) <= 1


@PROPERTY
@given(seed=seeds)
def test_difficulty_uniform_spreads_over_difficulty_and_varies_with_the_seed(seed):
    examples, scores, quantile = scored(seed, n=2000)
    out = run(Difficulty(), examples, seed, scores=scores, teacher="t", n=800, strategy="uniform")
    qs = [quantile[i] for i in out.ids]
    for lo in (0, 0.25, 0.5, 0.75):
        share = sum(lo <= q < lo + 0.25 or (lo == 0.75 and q == 1.0) for q in qs) / len(qs)
        assert abs(share - 0.25) < 0.08
    again = run(Difficulty(), examples, seed + 1, scores=scores, teacher="t", n=800, strategy="uniform")
    assert again.ids != out.ids


@PROPERTY
@given(text=st.text(max_size=200))
def test_clean_is_idempotent(text):
    examples = Examples.from_columns(["a"], [text], [0])
    once = run(Clean(), examples)
    assert run(Clean(), once) == once
