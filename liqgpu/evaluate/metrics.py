"""Rank correlations and top-decile shares with exact tie handling (the figures every
predictor is scored by)."""

from __future__ import annotations

import math

import numpy as np


TIMING_SIDES = ("long", "short", "total")
TOP = 0.10
TIMING_BASELINES = ("range_oi", "absret_oi")
NS = np.timedelta64(1, "ns")
DAY = np.timedelta64(1, "D")
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0
BOOTSTRAP_MIN_DAYS = 5
DAILY_MIN_DAYS = 3


# ---------------------------------------------------------------------------------------------
# metrics
def average_ranks(x) -> np.ndarray:
    """Ranks 1..n of ``x`` with ties given their average rank (as Spearman needs).

    Examples
    --------
    >>> average_ranks([10, 20, 20, 5]).tolist()
    [2.0, 3.5, 3.5, 1.0]
    """
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = xs.size
    # start of each run of equal values
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]]) if n else np.zeros(0, int)
    ends = np.r_[starts[1:], n]
    avg = (starts + ends + 1) / 2.0  # ranks are 1-based: mean of starts+1 .. ends
    ranks = np.empty(n)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def pearson(x, y) -> float:
    """Pearson correlation; NaN when either side is constant or has fewer than 3 points."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 3:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if den == 0 or not math.isfinite(den):
        return math.nan
    return float(np.clip((dx @ dy) / den, -1.0, 1.0))


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson of average ranks).

    Examples
    --------
    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40])
    1.0
    """
    return pearson(average_ranks(x), average_ranks(y))


def pearson_log1p(x, y) -> float:
    """Pearson correlation of log(1 + x) and log(1 + y) (amounts >= 0)."""
    return pearson(np.log1p(np.maximum(x, 0.0)), np.log1p(np.maximum(y, 0.0)))


def top_membership(score, frac: float = TOP) -> np.ndarray:
    """Probability that each element is among the top ``ceil(frac * n)`` scores.

    Ties at the boundary are split evenly (the expectation over random tie-breaks), so a
    constant score gives every element ``k / n``.

    Examples
    --------
    >>> top_membership([1, 5, 3, 5], frac=0.25).tolist()
    [0.0, 0.5, 0.0, 0.5]
    """
    s = np.asarray(score, dtype=np.float64)
    n = s.size
    if n == 0:
        return np.zeros(0)
    k = max(1, math.ceil(frac * n - 1e-9))
    srt = np.sort(s)
    greater = n - np.searchsorted(srt, s, side="right")
    equal = np.searchsorted(srt, s, side="right") - np.searchsorted(srt, s, side="left")
    return np.clip((k - greater) / equal, 0.0, 1.0)


def top_share(score, realized, frac: float = TOP) -> float:
    """Share of realized notional in the elements the score ranks in its top ``frac``."""
    r = np.asarray(realized, dtype=np.float64)
    tot = r.sum()
    if tot <= 0:
        return math.nan
    return float(top_membership(score, frac) @ r / tot)


def timing_figures(score, realized, frac: float = TOP) -> dict:
    """Spearman, Pearson of log1p and top-``frac`` share of one predictor on one side."""
    return {
        "spearman": spearman(score, realized),
        "pearson_log1p": pearson_log1p(score, realized),
        "top10_share": top_share(score, realized, frac),
    }


def profile_figures(profile, event_bin, notional, frac: float = TOP) -> tuple[float, float]:
    """(top-decile credit, lift) of events in one profile; per-event arrays are returned summed.

    Parameters
    ----------
    profile : ndarray (n,)
        Estimated intensity over the n bins of a price range (>= 0).
    event_bin : ndarray of int
        Bin of each event within the range, 0..n-1.
    notional : ndarray
        Notional of each event.

    Returns
    -------
    (float, float)
        Σ notional × P(event bin in top decile) and Σ notional × n·p(bin) where p is the
        profile normalised to 1 (a zero profile counts as uniform).
    """
    prof = np.asarray(profile, dtype=np.float64)
    n = prof.size
    tot = prof.sum()
    if not tot > 0:
        prof = np.ones(n)
        tot = float(n)
    member = top_membership(prof, frac)
    w = np.asarray(notional, dtype=np.float64)
    return float(member[event_bin] @ w), float((n * prof[event_bin] / tot) @ w)
