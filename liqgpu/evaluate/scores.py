"""Timing, daily and level figures of the estimate and its baselines, per window."""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._time import iso, td64_str
from ..errors import InputError
from ..events import Realized
from ..jsonsafe import json_safe
from ..schema import SIDES

from .metrics import (BOOTSTRAP_DRAWS, BOOTSTRAP_MIN_DAYS, BOOTSTRAP_SEED, DAILY_MIN_DAYS, DAY,
                      TIMING_SIDES, TOP, average_ranks, pearson, profile_figures, spearman,
                      timing_figures)
from .table import Table, bar_span, bin_sum, bucket_step, build_table, covered
from .windows import Window


# ---------------------------------------------------------------------------------------------
def timing(table: Table, window: Window, frac: float = TOP, *, draws: int = BOOTSTRAP_DRAWS,
           seed: int = BOOTSTRAP_SEED) -> dict:
    """Timing figures of the estimate and each baseline in one window (see module doc).

    Per side also ``daily`` (Spearman of per-day sums over complete UTC days) and
    ``bootstrap`` (:func:`bootstrap_vs_best`, ``draws`` resamples of days; 0 turns it off).
    """
    m = window.contains(table.time)
    out = {"n_buckets": int(m.sum())}
    for j, side in enumerate(TIMING_SIDES):
        real = table.realized[m, j]

        def pick(x):
            return x[m].sum(axis=1) if side == "total" else x[m, j]

        d = {"realized_notional": float(real.sum()),
             "estimated_notional": float(pick(table.estimate).sum()),
             "estimate": timing_figures(pick(table.estimate), real, frac)}
        for name, b in table.baselines.items():
            d[name] = timing_figures(pick(b), real, frac)
        k = max(1, math.ceil(frac * real.size - 1e-9)) if real.size else 0
        d["uniform"] = {"spearman": None, "pearson_log1p": None,
                        "top10_share": (k / real.size) if real.size else None}
        d["daily"] = daily_figures(table, m, j)
        d["bootstrap"] = (bootstrap_vs_best(table, m, j, draws=draws, seed=seed)
                          if draws > 0 else None)
        out[side] = d
    return out


def daily_sums(time, step, x) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``x`` (n, ...) per UTC day over the days whose every bucket is present.

    Returns ``(days, sums)``; empty when the buckets are a day or longer (nothing to sum).

    Examples
    --------
    >>> t = np.datetime64("2026-01-01T00") + np.arange(48) * np.timedelta64(1, "h")
    >>> daily_sums(t, np.timedelta64(1, "h"), np.ones(48))[1].tolist()
    [24.0, 24.0]
    """
    t = np.asarray(time).astype("datetime64[ns]")
    step = np.timedelta64(step, "ns")
    x = np.asarray(x, dtype=np.float64)
    if t.size == 0 or step >= DAY or DAY % step:
        return np.zeros(0, "datetime64[D]"), np.zeros((0,) + x.shape[1:])
    days, inv, cnt = np.unique(t.astype("datetime64[D]"), return_inverse=True,
                               return_counts=True)
    full = cnt == DAY // step
    return days[full], bin_sum(inv.reshape(-1), x, days.size)[full]


def daily_figures(table: Table, m: np.ndarray, j: int) -> dict:
    """Spearman of per-day sums (complete UTC days of the window) of each predictor, side ``j``
    (0 long, 1 short, 2 total = long + short)."""
    def col(x):
        return x[m].sum(axis=1) if j == 2 else x[m, j]

    preds = {"estimate": col(table.estimate),
             **{k: col(v) for k, v in table.baselines.items()}}
    real = table.realized[m, j]
    names = list(preds)
    days, sums = daily_sums(table.time[m], table.step,
                            np.stack([real] + [preds[k] for k in names], axis=1))
    out = {"n_days": int(days.size)}
    for i, k in enumerate(names):
        out[k] = spearman(sums[:, i + 1], sums[:, 0]) if days.size >= DAILY_MIN_DAYS else None
    return out


def bootstrap_days(score, best, realized, day, *, draws: int = BOOTSTRAP_DRAWS,
                   seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> dict | None:
    """Bootstrap over days of Spearman(score, realized) − Spearman(best, realized).

    Days (blocks of buckets, ``day`` one label per bucket) are resampled with replacement; each
    draw takes every bucket of every drawn day (a day drawn twice counts twice, ties ranked as
    ties) and computes the difference of the two per-bucket Spearman correlations. Returns the
    point difference (all buckets once), the mean and the central ``level`` interval of the
    draws, and the share of draws at or below zero; None with fewer than
    ``BOOTSTRAP_MIN_DAYS`` days.

    Examples
    --------
    >>> r = np.arange(240.0); d = np.repeat(np.arange(10), 24)
    >>> b = bootstrap_days(r, -r, r, d, draws=50)
    >>> b["point"], b["lo"], b["hi"]
    (2.0, 2.0, 2.0)
    """
    score = np.asarray(score, np.float64)
    best = np.asarray(best, np.float64)
    realized = np.asarray(realized, np.float64)
    codes = np.unique(np.asarray(day), return_inverse=True)[1].reshape(-1)
    n_days = int(codes.max()) + 1 if codes.size else 0
    if n_days < BOOTSTRAP_MIN_DAYS:
        return None
    rng = np.random.default_rng(seed)
    diffs = np.full(draws, np.nan)
    for i in range(draws):
        k = np.bincount(rng.integers(0, n_days, n_days), minlength=n_days)
        idx = np.repeat(np.arange(codes.size), k[codes])
        rr = average_ranks(realized[idx])
        diffs[i] = (pearson(average_ranks(score[idx]), rr)
                    - pearson(average_ranks(best[idx]), rr))
    ok = diffs[np.isfinite(diffs)]
    point = spearman(score, realized) - spearman(best, realized)
    a = (1.0 - level) / 2.0
    return {"point": point, "mean": float(ok.mean()) if ok.size else None,
            "lo": float(np.quantile(ok, a)) if ok.size else None,
            "hi": float(np.quantile(ok, 1.0 - a)) if ok.size else None,
            "share_le_0": float((ok <= 0).mean()) if ok.size else None,
            "level": level, "n_days": n_days, "draws": int(draws), "valid_draws": int(ok.size),
            "seed": int(seed)}


def bootstrap_vs_best(table: Table, m: np.ndarray, j: int, **kw) -> dict | None:
    """:func:`bootstrap_days` of the estimate against the baseline with the highest
    per-bucket Spearman on the window (side ``j``; 2 = total); None without baselines."""
    def col(x):
        return x[m].sum(axis=1) if j == 2 else x[m, j]

    real = table.realized[m, j]
    sp = {k: spearman(col(v), real) for k, v in table.baselines.items()}
    sp = {k: v for k, v in sp.items() if math.isfinite(v)}
    if not sp:
        return None
    best = max(sp, key=sp.get)
    day = table.time[m].astype("datetime64[D]")
    res = bootstrap_days(col(table.estimate), col(table.baselines[best]), real, day, **kw)
    if res is not None:
        res = {"vs": best, **res}
    return res


def levels(ds, realized: Realized, window: Window, frac: float = TOP,
           intensity_at=None) -> dict | None:
    """Level figures of events with prices in one window, or None when there are none.

    ``intensity_at(idx)`` may supply the (len(idx), P, 2) profiles summed over series and
    leverage; by default they are read from ``ds['intensity']``.
    """
    if realized.kind != "events":
        return None
    f = realized.frame
    t = ds["time"].values.astype("datetime64[ns]")
    every = bucket_step(ds)
    rt = f["time"].to_numpy().astype("datetime64[ns]")
    price = f["price"].to_numpy()
    sel = (window.contains(rt) & np.isfinite(price) & (rt >= t[0] + every)
           & (rt < t[-1] + every))
    cov = covered(t, every, bar_span(ds))  # a bucket the bars do not fill is not scored
    sel[sel] = cov[((rt[sel] - t[0]) // every).astype(np.int64)]
    if not sel.any():
        return None
    b = ((rt[sel] - t[0]) // every).astype(np.int64)
    price, side, w = price[sel], f["side"].to_numpy()[sel], f["notional"].to_numpy()[sel]
    edges = np.asarray(ds["price_edges"].values, dtype=np.float64)
    with warnings.catch_warnings():  # buckets without a bar are all-NaN: skipped below
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanmin(np.asarray(ds["low"].values, np.float64), axis=0)
        high = np.nanmax(np.asarray(ds["high"].values, np.float64), axis=0)
    ub = np.unique(b)
    if intensity_at is None:
        prof = np.asarray(ds["intensity"].isel(time=ub - 1).sum(["series", "leverage"])
                          .transpose("time", "price", "side").values, dtype=np.float64)
    else:
        prof = np.asarray(intensity_at(ub - 1), dtype=np.float64)
    groups = {"long": side == "long", "short": side == "short", "all": np.ones(side.size, bool)}
    acc = {g: {"n_events": 0, "notional": 0.0, "in_range_notional": 0.0, "n_in_range": 0,
               "est_top": 0.0, "est_lift": 0.0, "uni_top": 0.0} for g in groups}
    ev_bin = np.searchsorted(edges, price, side="right") - 1
    for i, bb in enumerate(ub):
        lo_, hi_ = low[bb], high[bb]
        here = b == bb
        if not (np.isfinite(lo_) and np.isfinite(hi_)):
            for g, gm in groups.items():
                acc[g]["n_events"] += int((here & gm).sum())
                acc[g]["notional"] += float(w[here & gm].sum())
            continue
        # the bins the bar range [low, high] touches: the profile scored; which events count
        # is decided by the true range, so it does not depend on the store's grid
        j0 = max(0, int(np.searchsorted(edges, lo_, side="right")) - 1)
        j1 = min(edges.size - 1, int(np.searchsorted(edges, hi_, side="right")))  # exclusive
        nbin = max(j1 - j0, 0)
        for g, gm in groups.items():
            m = here & gm
            a = acc[g]
            a["n_events"] += int(m.sum())
            a["notional"] += float(w[m].sum())
            inr = m & (price >= lo_) & (price <= hi_) & (ev_bin >= j0) & (ev_bin < j1)
            if not inr.any() or nbin == 0:
                continue
            if g == "all":
                p = prof[i, j0:j1, :].sum(axis=1)
                # events of a known side are scored against their own side's profile
                top_e = lift_e = 0.0
                for s_i, s in enumerate(SIDES):
                    ms = inr & (side == s)
                    if ms.any():
                        tt, ll = profile_figures(prof[i, j0:j1, s_i], ev_bin[ms] - j0, w[ms], frac)
                        top_e, lift_e = top_e + tt, lift_e + ll
                mu = inr & (side == "unknown")
                if mu.any():
                    tt, ll = profile_figures(p, ev_bin[mu] - j0, w[mu], frac)
                    top_e, lift_e = top_e + tt, lift_e + ll
            else:
                top_e, lift_e = profile_figures(prof[i, j0:j1, SIDES.index(g)], ev_bin[inr] - j0,
                                                w[inr], frac)
            k = max(1, math.ceil(frac * nbin - 1e-9))
            a["n_in_range"] += int(inr.sum())
            a["in_range_notional"] += float(w[inr].sum())
            a["est_top"] += top_e
            a["est_lift"] += lift_e
            a["uni_top"] += k / nbin * float(w[inr].sum())
    out = {"price_kind": realized.price_kind}
    for g, a in acc.items():
        if a["n_events"] == 0:
            continue
        tot = a["in_range_notional"]
        out[g] = {
            "n_events": a["n_events"], "n_in_range": a["n_in_range"],
            "realized_notional": a["notional"],
            "in_range_share": a["in_range_notional"] / a["notional"] if a["notional"] else None,
            "estimate": {"top10_share": a["est_top"] / tot if tot else None,
                         "lift": a["est_lift"] / tot if tot else None},
            "uniform": {"top10_share": a["uni_top"] / tot if tot else None,
                        "lift": 1.0 if tot else None},
        }
    return out


def evaluate(ds, realized: Realized, windows: list[Window] | None = None, *, frac: float = TOP,
             table: Table | None = None, draws: int = BOOTSTRAP_DRAWS,
             seed: int = BOOTSTRAP_SEED) -> dict:
    """Accuracy figures of a dataset against realized liquidations, per window.

    Parameters
    ----------
    ds : xarray.Dataset
        A store (:func:`liqgpu.open_store`) or the result of :func:`liqgpu.estimate`.
    realized : Realized
        From :func:`load_realized`.
    windows : list of Window, optional
        Default one window ``all`` over the whole overlap.
    frac : float
        The top share (0.1: top decile).
    draws, seed : int
        Bootstrap over days of "estimate minus best baseline" Spearman per side (0: none).

    Returns
    -------
    dict
        JSON-ready: ``every``, ``eval_step``, ``realized`` and ``windows`` (each with
        ``timing`` and ``levels``). Raises :class:`InputError` when the store and the realized
        data do not overlap or a window holds no bucket.

    Examples
    --------
    >>> res = evaluate(ds, load_realized("liqs.csv"), [parse_window(":2026-04-01", "train")])  # doctest: +SKIP
    """
    from ..model.registry import params_from_attrs

    windows = windows or [Window("all", None, None)]
    table = table or build_table(ds, realized)
    if table.time.size == 0:
        raise InputError(f"{realized.source}: the store and the realized liquidations share no "
                         "complete bucket")
    results = []
    for w in windows:
        m = w.contains(table.time)
        if not m.any():
            raise InputError(
                f"--{w.role} {w.name.split(' ', 1)[1]}: no bucket with both an estimate and "
                f"realized liquidations (they share {iso(table.time[0])} .. "
                f"{iso(table.time[-1] + table.step)})")
        res = {"name": w.name, "role": w.role,
               "start": iso(w.start) if w.start is not None else None,
               "end": iso(w.end) if w.end is not None else None,
               "first_bucket": iso(table.time[m][0]), "last_bucket": iso(table.time[m][-1]),
               "timing": timing(table, w, frac, draws=draws, seed=seed),
               "levels": levels(ds, realized, w, frac)}
        results.append(res)
    try:
        params = params_from_attrs(ds.attrs).to_attrs()
    except (KeyError, InputError, TypeError, ValueError):
        params = None
    return json_safe({
        "every": td64_str(bucket_step(ds)), "eval_step": td64_str(table.step), "params": params,
        "realized": {"source": realized.source, "kind": realized.kind,
                     "price_kind": realized.price_kind, "columns": realized.columns or None},
        "top_share": frac,
        "bootstrap": {"draws": int(draws), "seed": int(seed), "unit": "UTC day",
                      "statistic": "Spearman(estimate) - Spearman(best baseline), per bucket"},
        "windows": results,
    })
