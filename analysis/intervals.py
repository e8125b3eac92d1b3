"""95% bootstrap confidence intervals over seed pairs, and deciding "connected" on them.

Each seed pair of a cell is one independent draw of the barrier (its own init and its own
noise), so the interval resamples pairs: ``scipy.stats.bootstrap`` of the mean, seeded through
``lmc.seeds`` (purpose "bootstrap"), so a table is the same every time it is rebuilt.

Why the percentile method, not BCa (scipy's default): BCa corrects the percentile interval with
a bias term and an acceleration estimated by the jackknife; with the 2 to 5 pairs a sweep
affords, that jackknife of 2 to 5 values is itself noise, and for identical values (a cell
whose pairs all have barrier 0, common for connected cells) BCa's acceleration is 0/0 and
scipy returns NaN with a DegenerateDataWarning. The percentile interval is defined for every
sample, never leaves the range of the data, and for identical values is the value itself.
Be aware of what it is at such sizes: with 2 or 3 pairs the 2.5% and 97.5% quantiles of the
resampled means are the smallest and largest barrier seen (each extreme alone is resampled with
probability ≥ 1/27 > 2.5%), so the interval is the range of the data. It says what the seeds
showed, and it is narrower than a t-interval would be; add seeds for more than that.

A cell is "connected" when its whole interval lies below the 2% line, "not connected" when it
lies at or above it, and "undecided" when it straddles it.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from lmc import seeds

CONFIDENCE = 0.95
RESAMPLES = 9999
METHOD = "percentile"
BOOTSTRAP_SEED = 0  # one fixed seed: rebuilding a table gives the same intervals
LMC_LINE_PCT = 2.0
CONNECTED, NOT_CONNECTED, UNDECIDED = "connected", "not connected", "undecided"


def bootstrap_interval(values: Iterable[float], *, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE,
                       resamples: int = RESAMPLES) -> tuple[float, float]:
    """(low, high) of the ``confidence`` percentile-bootstrap interval of the mean; NaNs for fewer than
    two finite values (no interval from one pair); (v, v) when every value is v."""
    from scipy.stats import bootstrap

    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(data) < 2:
        return math.nan, math.nan
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seeds.derive(seed, "bootstrap"))
    result = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples, method=METHOD,
                       vectorized=True, rng=rng)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def verdict(low: float, high: float, threshold: float = LMC_LINE_PCT) -> str | None:
    """connected (high < threshold), not connected (low >= threshold), undecided (straddles); None
    without an interval."""
    if math.isnan(low) or math.isnan(high):
        return None
    if high < threshold:
        return CONNECTED
    if low >= threshold:
        return NOT_CONNECTED
    return UNDECIDED


def contains(low: float, high: float, value: float | None) -> bool | None:
    """Whether ``value`` (the paper's number) lies inside [low, high]; None when either is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or math.isnan(low) or math.isnan(high):
        return None
    return bool(low <= value <= high)


def fmt_interval(low: float, high: float, digits: int = 2) -> str:
    return "" if math.isnan(low) or math.isnan(high) else f"[{low:.{digits}f}, {high:.{digits}f}]"
