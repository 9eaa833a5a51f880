"""Correlation of two per-run (or per-configuration) quantities, shared by the ``correlation`` and
``transfer`` analyses: Pearson's r with its Fisher-z interval, Spearman's ρ with a bootstrap interval,
and a note saying why an interval or coefficient is missing (too few points or distinct values) rather
than leaving it empty without a word."""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Fewer distinct values than this on either axis: a bootstrap interval of Spearman's ρ is not given
#: (most resamples repeat the same few values, ρ is undefined or ±1 in them).
MIN_DISTINCT_FOR_INTERVAL = 5

#: The columns of a table of ``correlate`` rows (with the two quantities' names, x and y): the
#: ``correlation`` and ``transfer_correlation`` tables declare them through this one mapping.
CORRELATION_COLUMNS = {
    "x": "VARCHAR",
    "y": "VARCHAR",
    "n": "INTEGER",
    "pearson_r": "DOUBLE",
    "pearson_low": "DOUBLE",
    "pearson_high": "DOUBLE",
    "pearson_p": "DOUBLE",
    "spearman_rho": "DOUBLE",
    "spearman_low": "DOUBLE",
    "spearman_high": "DOUBLE",
    "spearman_p": "DOUBLE",
    "confidence": "DOUBLE",
    "distinct_x": "INTEGER",
    "distinct_y": "INTEGER",
    "note": "VARCHAR",
}


def correlate(
    x: Sequence[float], y: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> dict:
    """n, distinct values, Pearson (r, interval, p), Spearman (ρ, interval, p) and ``note``; coefficients
    that cannot be computed are None, and the note says why."""
    import numpy as np
    from scipy import stats

    from specrun.analysis.stats import bootstrap_interval

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n, dx, dy = len(xs), len(set(xs.tolist())), len(set(ys.tolist()))
    row = {
        "n": n,
        "distinct_x": dx,
        "distinct_y": dy,
        "pearson_r": None,
        "pearson_low": None,
        "pearson_high": None,
        "pearson_p": None,
        "spearman_rho": None,
        "spearman_low": None,
        "spearman_high": None,
        "spearman_p": None,
        "confidence": confidence,
    }
    notes = []
    if n < 3 or dx < 2 or dy < 2:
        which = "points" if n < 3 else ("distinct x values" if dx < 2 else "distinct y values")
        row["note"] = (
            f"no correlation: {min(n, dx, dy)} {which} (at least 3 points and 2 distinct values on each axis are needed)"
        )
        return row
    pearson = stats.pearsonr(xs, ys)
    row |= {"pearson_r": float(pearson.statistic), "pearson_p": float(pearson.pvalue)}
    if n > 3:
        interval = pearson.confidence_interval(confidence_level=confidence)
        row |= {"pearson_low": float(interval.low), "pearson_high": float(interval.high)}
    else:
        notes.append("no Pearson interval from 3 points (the Fisher-z interval needs 4)")
    spearman = stats.spearmanr(xs, ys)
    row |= {"spearman_rho": _number(spearman.statistic), "spearman_p": _number(spearman.pvalue)}
    if min(dx, dy) < MIN_DISTINCT_FOR_INTERVAL:
        notes.append(
            f"no Spearman interval: {min(dx, dy)} distinct {'x' if dx <= dy else 'y'} values "
            f"(a bootstrap over so few repeats them; {MIN_DISTINCT_FOR_INTERVAL} are needed)"
        )
    else:
        low, high = bootstrap_interval(
            (xs, ys),
            lambda a, b: stats.spearmanr(a, b).statistic,
            confidence,
            n_resamples,
            "percentile",
            seed,
            paired=True,
            vectorized=False,
        )
        row |= {"spearman_low": low, "spearman_high": high}
        if low is None:
            notes.append("no Spearman interval: too many bootstrap resamples had constant values")
    if n < 10:
        notes.append(f"only {n} points: read the coefficients as descriptive")
    row["note"] = "; ".join(notes)
    return row


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
