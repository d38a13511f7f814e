"""The reference implementation of model v1: MODEL.md's "One step", literally.

It walks the steps in order and keeps every live position (level, bin, tier, side, birth step,
amount). It is slow on purpose and meant to be read side by side with MODEL.md; the fast
backends are tested against it. Only the formulas (levels, entry, shares, notional) are shared
with the other backends, from :mod:`liqgpu.model.formulas`.
"""

from __future__ import annotations

import numpy as np

from ...series import Series
from ..formulas import entry_price, liquidation_level, notional, side_shares
from ..grid import Grid
from .params import Params

LONG, SHORT = 0, 1


def reference_estimate(series: Series, params: Params, grid: Grid, every: int = 1) -> dict:
    """Run model v1 on one series, step by step.

    Parameters
    ----------
    series : Series
    params : Params
    grid : Grid
    every : int
        Output step in model steps (n >= 1).

    Returns
    -------
    dict of ndarray (float64)
        ``intensity``, ``liquidated`` of shape (n_buckets, P, K, 2); ``added``, ``closed``,
        ``expired``, ``outside``, ``outside_liquidated`` of shape (n_buckets, K, 2).
    """
    T, K, P = len(series), params.n_tiers, grid.n_bins
    n_buckets = -(-T // every)
    out = {
        "intensity": np.zeros((n_buckets, P, K, 2)),
        "liquidated": np.zeros((n_buckets, P, K, 2)),
    }
    for name in ("added", "closed", "expired", "outside", "outside_liquidated"):
        out[name] = np.zeros((n_buckets, K, 2))

    factors = params.level_factors(series.kind)  # (K, 2)
    entry = entry_price(params.entry, series["open"], series["high"], series["low"],
                        series["close"], series.get("volume"), series.get("quote_volume"))
    shares = side_shares(params.side_split, series.get("volume"), series.get("taker_buy_volume"),
                         n=T)
    if series.has_mark:
        low, high = series["mark_low"], series["mark_high"]
    else:
        low, high = series["low"], series["high"]
    oi = series["oi"]
    max_age = params.max_age_steps(series.step)

    # live positions
    level = np.zeros(0)
    tier = np.zeros(0, dtype=np.int64)
    side = np.zeros(0, dtype=np.int64)
    birth = np.zeros(0, dtype=np.int64)
    amount = np.zeros(0)
    oi_prev = np.nan  # last valid OI before step t

    def remove(mask):
        nonlocal level, tier, side, birth, amount
        keep = ~mask
        level, tier, side, birth, amount = (a[keep] for a in (level, tier, side, birth, amount))

    for t in range(T):
        b = t // every
        delta = oi[t] - oi_prev if (np.isfinite(oi[t]) and np.isfinite(oi_prev)) else 0.0

        # 1. expiry
        if max_age is not None:
            old = birth <= t - max_age
            np.add.at(out["expired"][b], (tier[old], side[old]), amount[old])
            remove(old)

        # 2. closure
        if params.closure == "proportional" and delta < 0 and oi_prev > 0:
            c = min(1.0, -delta / oi_prev)
            np.add.at(out["closed"][b], (tier, side), c * amount)
            amount = amount * (1.0 - c)

        # 3. liquidation (only positions opened before t are in the live set here)
        if np.isfinite(low[t]) and np.isfinite(high[t]):
            hit = ((side == LONG) & (level >= low[t])) | ((side == SHORT) & (level <= high[t]))
            j = grid.bin_index(level[hit])
            inside = j < P
            np.add.at(out["liquidated"][b], (j[inside], tier[hit][inside], side[hit][inside]),
                      amount[hit][inside])
            np.add.at(out["outside_liquidated"][b], (tier[hit][~inside], side[hit][~inside]),
                      amount[hit][~inside])
            remove(hit)

        # 4. addition
        if delta > 0 and np.isfinite(entry[t]):
            new_notional = notional(delta, entry[t], series.kind, series.contract_size)
            for k in range(K):
                for d in (LONG, SHORT):
                    a = shares[t, d] * params.weights[k] * new_notional
                    level = np.append(level, liquidation_level(entry[t], factors[k, d]))
                    tier = np.append(tier, k)
                    side = np.append(side, d)
                    birth = np.append(birth, t)
                    amount = np.append(amount, a)
                    out["added"][b, k, d] += a

        if np.isfinite(oi[t]):
            oi_prev = oi[t]

        # 5. snapshot at the end of each output bucket
        if (t + 1) % every == 0 or t == T - 1:
            j = grid.bin_index(level)
            inside = j < P
            np.add.at(out["intensity"][b], (j[inside], tier[inside], side[inside]), amount[inside])
            np.add.at(out["outside"][b], (tier[~inside], side[~inside]), amount[~inside])
    return out
