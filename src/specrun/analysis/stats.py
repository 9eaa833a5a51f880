"""Statistics the built-in analyses share. The estimators come from scipy.stats (bootstrap, binomtest);
this module only adapts them to runs and seeds and handles the degenerate cases honestly (one seed:
no interval, reported as NULL, never a made-up one)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_interval(
    data: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: str = "percentile",
    seed: int = 0,
    paired: bool = False,
    vectorized: bool = True,
) -> tuple[float | None, float | None]:
    """A bootstrap confidence interval of ``statistic`` (vectorized over ``axis=-1``) with
    ``scipy.stats.bootstrap``; (None, None) when the data cannot give one (fewer than two observations)."""
    from scipy import stats

    n = len(data[0])
    if n < 2:
        return None, None
    samples = [np.asarray(d, dtype=float) for d in data]
    if all(np.all(s == s[0]) for s in samples):  # every resample is the same: the interval is that point
        point = float(statistic(*samples, axis=-1))
        return point, point
    # resamples of few values repeat values: scipy warns of constant or degenerate resamples, which the
    # interval already accounts for (NaN bounds are reported as None below)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            tuple(samples),
            statistic,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method=method,
            vectorized=vectorized,
            paired=paired,
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return (None if math.isnan(low) else low), (None if math.isnan(high) else high)


#: Above this many distinct observations ``counted_interval`` leaves the bootstrap to scipy.
MAX_DISTINCT = 64


def counted_interval(
    data: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: str = "percentile",
    seed: int = 0,
) -> tuple[float | None, float | None] | None:
    """The percentile (or basic) bootstrap interval of ``statistic`` over paired observations ``data``
    (columns of one length n) that take few distinct values — a 0/1 "correct" column, (label, prediction)
    pairs — drawn by counts: a resample of n observations with replacement is a multinomial draw of how
    often each distinct observation occurs, so ``statistic(*distinct, weights=counts)`` over those draws
    has exactly the bootstrap distribution ``scipy.stats.bootstrap(..., paired=True)`` samples one
    observation at a time, at a cost of resamples × distinct values instead of resamples × n (per-run CIs
    over a 240-run study: seconds instead of minutes). The interval is read off that distribution as scipy
    reads it (linear quantiles; ``basic``: reflected about the statistic). The draws differ from scipy's,
    so the bounds agree with scipy's to Monte Carlo precision, not to the last digit.

    ``statistic(*columns, weights=..., axis=-1)`` takes the distinct observations' columns and a
    (resamples × distinct) array of counts. Returns None where this does not apply (BCa, fewer than two
    observations, more than ``MAX_DISTINCT`` distinct ones): use ``bootstrap_interval`` then."""
    n = len(data[0])
    if method not in ("percentile", "basic") or n < 2:
        return None
    rows = np.stack([np.asarray(d, dtype=float) for d in data], axis=1)
    distinct, inverse = np.unique(rows, axis=0, return_inverse=True)
    if len(distinct) > MAX_DISTINCT:
        return None
    columns = [distinct[:, j] for j in range(distinct.shape[1])]
    frequencies = np.bincount(inverse.reshape(-1), minlength=len(distinct)) / n
    if len(distinct) == 1:  # every resample is the same: the interval is that point
        point = float(statistic(*columns, weights=np.array([n]), axis=-1))
        return point, point
    counts = np.random.default_rng(seed).multinomial(n, frequencies, size=n_resamples)
    theta = np.asarray(statistic(*columns, weights=counts, axis=-1), dtype=float)
    alpha = (1 - confidence) / 2
    low, high = (float(q) for q in np.quantile(theta, [alpha, 1 - alpha]))
    if method == "basic":
        point = float(statistic(*columns, weights=np.bincount(inverse.reshape(-1), minlength=len(distinct)), axis=-1))
        low, high = 2 * point - high, 2 * point - low
    return (None if math.isnan(low) else low), (None if math.isnan(high) else high)


def weighted_mean(values: np.ndarray, weights: np.ndarray, axis: int = -1) -> np.ndarray:
    """The mean of ``values`` each counted ``weights`` times (``counted_interval``'s form of the accuracy
    statistic: the mean of a 0/1 column)."""
    weights = np.asarray(weights, dtype=float)
    return (weights * values).sum(axis=axis) / weights.sum(axis=axis)


def summarize(
    values: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: str = "percentile",
    seed: int = 0,
) -> dict:
    """n, mean, sample sd, min, max and a bootstrap CI of the mean of ``values`` (e.g. one metric over seeds)."""
    x = np.asarray(values, dtype=float)
    found = counted_interval((x,), weighted_mean, confidence, n_resamples, method, seed) if len(x) else None
    low, high = found if found is not None else bootstrap_interval((x,), np.mean, confidence, n_resamples, method, seed)
    return {
        "n": len(x),
        "mean": float(x.mean()) if len(x) else None,
        "sd": float(x.std(ddof=1)) if len(x) > 1 else None,
        "min": float(x.min()) if len(x) else None,
        "max": float(x.max()) if len(x) else None,
        "ci_low": low,
        "ci_high": high,
    }


def accuracy_statistic(correct: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(correct, axis=axis)


def f1_statistic(num_labels: int) -> Callable[..., np.ndarray]:
    """F1 as specrun records it (binary: of label 1; more classes: macro), vectorized for bootstrap over
    paired (labels, predictions); with ``weights``, each pair counted that many times (``counted_interval``)."""

    def f1(
        labels: np.ndarray, predictions: np.ndarray, axis: int = -1, weights: np.ndarray | None = None
    ) -> np.ndarray:
        scores = []
        w = 1 if weights is None else np.asarray(weights, dtype=float)
        for c in [1] if num_labels == 2 else range(num_labels):
            tp = np.sum(w * ((predictions == c) & (labels == c)), axis=axis)
            fp = np.sum(w * ((predictions == c) & (labels != c)), axis=axis)
            fn = np.sum(w * ((predictions != c) & (labels == c)), axis=axis)
            denom = 2 * tp + fp + fn
            scores.append(np.divide(2 * tp, denom, out=np.zeros(np.shape(denom), dtype=float), where=denom > 0))
        return np.mean(scores, axis=0)

    return f1


def mcnemar_p(b: int, c: int) -> float:
    """Exact McNemar test: two-sided binomial test of the discordant pairs (b: only the first right,
    c: only the second right) against p = 0.5. No discordant pairs: no evidence of a difference (p = 1)."""
    from scipy import stats

    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5).pvalue)


def paired_seeds_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """A paired test of two configurations evaluated on the same examples with several seeds each
    (``correct_*``: seeds × examples, 1 where the run got the example right; seed ``i`` of one against
    seed ``i`` of the other), that respects seeds: the example is the unit. Each example's difference is
    averaged over seeds, and an exact sign test (two-sided binomial, p = 0.5) counts the examples on which
    ``a`` does better on average against those on which ``b`` does; examples with no difference carry
    no evidence. With one seed this is McNemar's exact test (``mcnemar_p``).

    Why not McNemar on every (seed, example) pair: the seeds' runs evaluate the same examples, and an
    example one configuration finds easy it finds easy with every seed, so pooling counts one example's
    evidence once per seed and gives p-values too small (by up to a factor that grows with the seeds).

    Assumptions: examples are independent draws (the seeds' outcomes on one example are not); under the
    null hypothesis the two configurations are exchangeable on each example (its mean difference is as
    likely positive as negative). The seeds are the ones run, not a sample of training randomness: with
    few seeds a difference that one lucky seed drives can still be significant (read it next to the
    per-seed accuracies)."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    d = (a - b).mean(axis=0)
    return mcnemar_p(int((d > 0).sum()), int((d < 0).sum()))


def pooled_mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """McNemar's exact test on every (seed, example) pair as if independent: what ``paired_comparison``
    reported before issue 22, kept to show (tests) that it overstates the evidence. Do not use it for
    several seeds."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    return mcnemar_p(int((a & ~b).sum()), int((~a & b).sum()))


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """p-values adjusted for multiple comparisons: ``holm`` (step-down, controls the family-wise error),
    ``bonferroni``, or ``none``."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if method == "none" or m == 0:
        return p.tolist()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0).tolist()
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p[index])
        adjusted[index] = min(running, 1.0)
    return adjusted.tolist()


def pareto_front(costs: Sequence[float], values: Sequence[float], higher_is_better: bool = True) -> list[bool]:
    """For each point, whether no other point is at least as good in value at no more cost and strictly
    better in one of the two (lower cost is better)."""
    sign = 1.0 if higher_is_better else -1.0
    points = [(float(c), sign * float(v)) for c, v in zip(costs, values)]
    front = []
    for i, (ci, vi) in enumerate(points):
        dominated = any(cj <= ci and vj >= vi and (cj < ci or vj > vi) for j, (cj, vj) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


def first_reaching(
    steps: Sequence[float], values: Sequence[float], target: float, higher_is_better: bool = True
) -> int | None:
    """The index of the first value that reaches ``target`` (at or above it; at or below it for lower-is-better)."""
    for i, v in enumerate(values):
        if (v >= target) if higher_is_better else (v <= target):
            return i
    return None


def singular_value_summary(sigma: np.ndarray) -> dict[str, float | None]:
    """Norms and ranks of a matrix from its singular values: Frobenius and spectral norm, stable rank
    Σσᵢ²/σ₁², and the entropy-based effective rank exp(H(p)), pᵢ = σᵢ/Σσⱼ (Roy & Vetterli 2007).
    A zero matrix has no rank to speak of: both ranks are None."""
    sigma = np.asarray(sigma, dtype=float)
    top = float(sigma.max(initial=0.0))
    squares = float(np.sum(sigma**2))
    if top <= 0.0:
        return {"frobenius_norm": 0.0, "spectral_norm": 0.0, "stable_rank": None, "effective_rank": None}
    p = sigma[sigma > 0] / float(np.sum(sigma))
    return {
        "frobenius_norm": math.sqrt(squares),
        "spectral_norm": top,
        "stable_rank": squares / top**2,
        "effective_rank": float(np.exp(-np.sum(p * np.log(p)))),
    }
