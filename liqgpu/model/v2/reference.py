"""The reference implementation of model v2: MODEL.md's "One step (v2)", literally.

Like the v1 reference it walks the steps in order and keeps every live position (level, tier,
band, side, birth, amount), never retiring any. It is the oracle the fast engine is tested
against. Formulas (levels, entries, shares, notional, entry points) come from the params
modules, written once.
"""

from __future__ import annotations

import numpy as np

from ...series import Series
from ..grid import Grid
from ..formulas import entry_price, liquidation_level, notional, side_shares
from .params import ParamsV2, entry_points

LONG, SHORT = 0, 1


def reference_estimate_v2(series: Series, params: ParamsV2, grid: Grid, every: int = 1) -> dict:
    """Run model v2 on one series, step by step.

    Returns
    -------
    dict of ndarray (float64)
        ``intensity``, ``liquidated`` of shape (n_buckets, P, B, 2) (B bands); ``added``,
        ``closed``, ``churned``, ``expired``, ``outside``, ``outside_liquidated`` of shape
        (n_buckets, B, 2).
    """
    T, K, P, B = len(series), params.n_tiers, grid.n_bins, params.n_out
    n_buckets = -(-T // every)
    out = {"intensity": np.zeros((n_buckets, P, B, 2)),
           "liquidated": np.zeros((n_buckets, P, B, 2))}
    for name in ("added", "closed", "churned", "expired", "outside", "outside_liquidated"):
        out[name] = np.zeros((n_buckets, B, 2))

    band = params.band_of
    factors = params.level_factors(series.kind)  # (K, 2)
    mode, n_points = params.entry_mode
    o, h, lo_, c = series["open"], series["high"], series["low"], series["close"]
    # e_t: v1's entry (hlc3 for range:N), used for the notional of ΔOI
    e = entry_price("hlc3" if mode == "range" else mode, o, h, lo_, c,
                    series.get("volume"), series.get("quote_volume"))
    x_pts, w_pts = entry_points(mode, n_points, o, h, lo_, c, e)
    shares = side_shares(params.side_split, series.get("volume"), series.get("taker_buy_volume"),
                         n=T)
    low, high = (series["mark_low"], series["mark_high"]) if series.has_mark else (lo_, h)
    oi = series["oi"]
    max_age = params.max_age_steps(series.step)
    phi = params.churn_per_step(series.step)

    level = np.zeros(0)
    bnd = np.zeros(0, dtype=np.int64)
    side = np.zeros(0, dtype=np.int64)
    birth = np.zeros(0, dtype=np.int64)
    amount = np.zeros(0)
    oi_prev = np.nan

    def remove(mask):
        nonlocal level, bnd, side, birth, amount
        keep = ~mask
        level, bnd, side, birth, amount = (a[keep] for a in (level, bnd, side, birth, amount))

    for t in range(T):
        b = t // every
        delta = oi[t] - oi_prev if (np.isfinite(oi[t]) and np.isfinite(oi_prev)) else 0.0
        range_ok = np.isfinite(low[t]) and np.isfinite(high[t])

        # 1. expiry
        if max_age is not None:
            old = birth <= t - max_age
            np.add.at(out["expired"][b], (bnd[old], side[old]), amount[old])
            remove(old)

        # 2. closure
        if params.closure == "proportional" and delta < 0 and oi_prev > 0:
            frac = min(1.0, -delta / oi_prev)
            np.add.at(out["closed"][b], (bnd, side), frac * amount)
            amount = amount * (1.0 - frac)

        # 3. liquidation
        if range_ok:
            hit = ((side == LONG) & (level >= low[t])) | ((side == SHORT) & (level <= high[t]))
            j = grid.bin_index(level[hit])
            inside = j < P
            np.add.at(out["liquidated"][b], (j[inside], bnd[hit][inside], side[hit][inside]),
                      amount[hit][inside])
            np.add.at(out["outside_liquidated"][b], (bnd[hit][~inside], side[hit][~inside]),
                      amount[hit][~inside])
            remove(hit)

        # 4. churn
        churn_ok = np.isfinite(oi[t]) and range_ok and np.isfinite(c[t]) and phi > 0
        if churn_ok:
            np.add.at(out["churned"][b], (bnd, side), phi * amount)
            amount = amount * (1.0 - phi)

        # 5. addition
        new = 0.0
        if churn_ok:
            new += notional(phi * oi[t], c[t], series.kind, series.contract_size)
        if delta > 0 and np.isfinite(e[t]):
            new += notional(delta, e[t], series.kind, series.contract_size)
        if new > 0:
            for i in range(x_pts.shape[1]):
                x = x_pts[t, i]
                if not (np.isfinite(x) and w_pts[t, i] > 0):
                    continue
                for k in range(K):
                    for d in (LONG, SHORT):
                        a = shares[t, d] * new * w_pts[t, i] * params.weights[k]
                        if a <= 0:
                            continue
                        level = np.append(level, liquidation_level(x, factors[k, d]))
                        bnd = np.append(bnd, band[k])
                        side = np.append(side, d)
                        birth = np.append(birth, t)
                        amount = np.append(amount, a)
                        out["added"][b, band[k], d] += a

        if np.isfinite(oi[t]):
            oi_prev = oi[t]

        # 6. snapshot
        if (t + 1) % every == 0 or t == T - 1:
            j = grid.bin_index(level)
            inside = j < P
            np.add.at(out["intensity"][b], (j[inside], bnd[inside], side[inside]),
                      amount[inside])
            np.add.at(out["outside"][b], (bnd[~inside], side[~inside]), amount[~inside])
    return out
