"""How good is the estimate? Accuracy figures against realized liquidations, with baselines.

Everything here is a pure function of numpy arrays, pandas frames or an xarray dataset (a store
opened with :func:`liqgpu.open_store`, or the dataset :func:`liqgpu.estimate` returns):

* :func:`load_realized` reads realized liquidations: either **events** (the normalized events
  schema: ``time, side, price, notional``; ``exchange, symbol, price_kind, qty`` optional) or
  **aggregates** (``time`` plus a long and a short notional column per bar).
* :func:`evaluate` lines the estimate up with them on common buckets and computes, per window:

  - *timing*: per bucket and side, estimated liquidated notional against realized notional:
    Spearman and Pearson-of-log1p correlations and the share of realized notional in the buckets
    the estimate ranks in its top 10 %;
  - *levels* (events with prices): where each event's price falls in the estimated intensity
    profile of its side at the end of the previous bucket, over the bins inside the event
    bucket's [low, high]: the share of realized notional in the profile's top-decile bins and
    the lift over a uniform spread across the range;
  - *daily*: the Spearman of per-day sums (complete UTC days) of each predictor, and a
    bootstrap over days (resampled with replacement) of "estimate minus best baseline"
    per-bucket Spearman per side, with a 95 % interval (:func:`bootstrap_days`);
  - the same figures for baselines on the same buckets: ``range_oi`` (log(open/low)·OI for
    longs, log(high/open)·OI for shorts), ``absret_oi`` (|log(close/open)|·OI) and, for levels
    and the top-10 % share, ``uniform``.

Ties are handled exactly: a bucket (or bin) tied with others at the top-decile boundary counts
with the probability that a random tie-break puts it in the top decile, so a constant predictor
scores exactly the uniform share.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._time import iso, parse_time, td64_str
from .errors import InputError
from .events import Realized, load_realized, parse_columns  # noqa: F401 - re-exported
from .jsonsafe import json_safe
from .schema import SIDES

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# realized liquidations
# ---------------------------------------------------------------------------------------------
# windows
@dataclass(frozen=True)
class Window:
    """A time range [start, end) with a role ('train', 'test' or 'all')."""

    role: str
    start: np.datetime64 | None
    end: np.datetime64 | None

    @property
    def name(self) -> str:
        def f(t):
            return "" if t is None else iso(t)
        return f"{self.role} {f(self.start)}..{f(self.end)}"

    def contains(self, t: np.ndarray) -> np.ndarray:
        ok = np.ones(t.shape, bool)
        if self.start is not None:
            ok &= t >= self.start
        if self.end is not None:
            ok &= t < self.end
        return ok


def parse_window(text: str, role: str = "test") -> Window:
    """``'START:END'`` (or ``'START..END'`` when the times hold ':') -> :class:`Window`.

    Either end may be empty (open). Times are UTC dates or ISO times.

    Examples
    --------
    >>> parse_window(":2026-04-01", "train").name
    'train ..2026-04-01'
    """
    option = f"--{role}"
    s = str(text).strip()
    if ".." in s:
        a, b = s.split("..", 1)
    elif s.count(":") == 1:
        a, b = s.split(":")
    else:
        raise InputError(f"{option} {text}: write START:END with dates, or START..END when the "
                         "times contain ':'")
    w = Window(role, parse_time(a, option), parse_time(b, option))
    if w.start is not None and w.end is not None and w.end <= w.start:
        raise InputError(f"{option} {text}: the end is not after the start")
    return w


# ---------------------------------------------------------------------------------------------
# lining the estimate up with the realized liquidations
@dataclass
class Table:
    """Per evaluation bucket: estimate, baselines and realized notional, (n, 3) each side+total."""

    time: np.ndarray  # (n,) bucket start
    step: np.timedelta64
    estimate: np.ndarray  # (n, 2)
    realized: np.ndarray  # (n, 3) long, short, total (total includes unknown-side events)
    baselines: dict  # name -> (n, 2)
    n_store_buckets: int = 0


def _every(ds) -> np.timedelta64:
    from ._time import parse_duration

    ev = ds.attrs.get("every")
    if ev:
        return np.timedelta64(int(round(parse_duration(ev).total_seconds() * 1e9)), "ns")
    t = ds["time"].values
    if t.size < 2:
        raise InputError("the store has a single bucket and no 'every' attribute")
    return (t[1] - t[0]).astype("timedelta64[ns]")


def bucket_inputs(ds) -> dict:
    """Per store bucket: estimated liquidated (T, 2) and the price/OI columns (T,)."""
    liq = ds["liquidated"].sum(["series", "price", "leverage"])
    if "outside_liquidated" in ds:
        liq = liq + ds["outside_liquidated"].sum(["series", "leverage"])
    est = np.asarray(liq.transpose("time", "side").values, dtype=np.float64)
    px = {k: np.asarray(ds[k].values, dtype=np.float64) for k in ("open", "high", "low",
                                                                    "close", "oi")}
    return {"estimate": est, **px}


def baseline_scores(open_, high, low, close, oi) -> dict:
    """Timing baselines per bucket and side from (S, T) bucket prices and OI (base units).

    ``range_oi``: log(open/low)·OI·close for longs, log(high/open)·OI·close for shorts;
    ``absret_oi``: |log(close/open)|·OI·close for both. Summed over series; NaN -> 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        notional = oi * close
        down = np.log(open_ / low) * notional
        up = np.log(high / open_) * notional
        ar = np.abs(np.log(close / open_)) * notional

    def tot(x):
        return np.nansum(np.where(np.isfinite(x), x, np.nan), axis=0)

    return {"range_oi": np.stack([tot(down), tot(up)], axis=1),
            "absret_oi": np.stack([tot(ar), tot(ar)], axis=1)}


def _bin_sum(idx, values, n) -> np.ndarray:
    out = np.zeros((n,) + values.shape[1:])
    np.add.at(out, idx, values)
    return out


def build_table(ds, realized: Realized, *, inputs: dict | None = None) -> Table:
    """Line the store's buckets up with the realized liquidations on common buckets.

    Aggregates: the evaluation step is the longer of the store's ``every`` and the bar length;
    a bucket counts only when all its store buckets and realized bars are present. Events: the
    store's buckets, from the first event's bucket to the last's.
    """
    return table_from_arrays(ds["time"].values, _every(ds),
                             inputs if inputs is not None else bucket_inputs(ds), realized)


def table_from_arrays(time, every, inp: dict, realized: Realized) -> Table:
    """:func:`build_table` on arrays: bucket times, ``every`` and :func:`bucket_inputs`' dict.

    ``inp['estimate']`` may carry extra dimensions after time (e.g. (T, K, 2) per tier); they are
    kept in ``Table.estimate``.
    """
    t = np.asarray(time).astype("datetime64[ns]")
    base = baseline_scores(inp["open"], inp["high"], inp["low"], inp["close"], inp["oi"])
    store_end = t[-1] + every
    if realized.end <= t[0] or realized.start >= store_end:
        raise InputError(
            f"{realized.source}: no overlap between the realized liquidations "
            f"({iso(realized.start)} .. {iso(realized.end)}) and the store "
            f"({iso(t[0])} .. {iso(store_end)})")
    f = realized.frame
    rt = f["time"].to_numpy().astype("datetime64[ns]")
    if realized.kind == "aggregates":
        r = realized.step
        E = max(every, r)
        small = min(every, r)
        if E % every or E % r or (t[0] - rt[0]) % small:
            raise InputError(
                f"{realized.source}: its {td64_str(r)} bars from {iso(rt[0])} do not line up with "
                f"the store's {td64_str(every)} buckets from {iso(t[0])}; estimate on buckets that "
                "start on the bars' boundaries")
        origin = t[0] if every >= r else rt[0]
        ib = ((t - origin) // E).astype(np.int64)
        ir = ((rt - origin) // E).astype(np.int64)
        lo = min(ib.min(), ir.min())
        ib, ir = ib - lo, ir - lo
        n = int(max(ib.max(), ir.max()) + 1)
        cnt_b = np.bincount(ib, minlength=n)
        cnt_r = np.bincount(ir, minlength=n)
        rv = np.stack([f["long"].to_numpy(), f["short"].to_numpy()], axis=1)
        real = _bin_sum(ir, rv, n)
        ok = (cnt_b == E // every) & (cnt_r == E // r)
        est = _bin_sum(ib, inp["estimate"], n)
        bl = {k: _bin_sum(ib, v, n) for k, v in base.items()}
        times = origin + (np.arange(n) + lo) * E
        real3 = np.concatenate([real, real.sum(axis=1, keepdims=True)], axis=1)
    else:
        E = every
        inside = (rt >= t[0]) & (rt < store_end)
        if not inside.any():
            raise InputError(f"{realized.source}: no event falls inside the store's time range "
                             f"({iso(t[0])} .. {iso(store_end)})")
        ir = ((rt[inside] - t[0]) // E).astype(np.int64)
        n = t.size
        side = f["side"].to_numpy()[inside]
        w = f["notional"].to_numpy()[inside]
        real3 = np.zeros((n, 3))
        for j, s in enumerate(SIDES):
            np.add.at(real3[:, j], ir[side == s], w[side == s])
        np.add.at(real3[:, 2], ir, w)
        ok = np.zeros(n, bool)
        ok[ir.min():ir.max() + 1] = True
        est, bl, times = inp["estimate"], base, t
    return Table(time=times[ok], step=E, estimate=est[ok], realized=real3[ok],
                 baselines={k: v[ok] for k, v in bl.items()}, n_store_buckets=int(t.size))


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
    return days[full], _bin_sum(inv.reshape(-1), x, days.size)[full]


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
    every = _every(ds)
    rt = f["time"].to_numpy().astype("datetime64[ns]")
    price = f["price"].to_numpy()
    sel = (window.contains(rt) & np.isfinite(price) & (rt >= t[0] + every)
           & (rt < t[-1] + every))
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
        j0 = max(0, int(np.searchsorted(edges, lo_, side="right")) - 1)
        j1 = min(edges.size - 1, int(np.searchsorted(edges, hi_, side="left")))  # exclusive
        nbin = max(j1 - j0, 0)
        for g, gm in groups.items():
            m = here & gm
            a = acc[g]
            a["n_events"] += int(m.sum())
            a["notional"] += float(w[m].sum())
            inr = m & (ev_bin >= j0) & (ev_bin < j1)
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
    from .model.registry import params_from_attrs

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
        "every": td64_str(_every(ds)), "eval_step": td64_str(table.step), "params": params,
        "realized": {"source": realized.source, "kind": realized.kind,
                     "price_kind": realized.price_kind, "columns": realized.columns or None},
        "top_share": frac,
        "bootstrap": {"draws": int(draws), "seed": int(seed), "unit": "UTC day",
                      "statistic": "Spearman(estimate) - Spearman(best baseline), per bucket"},
        "windows": results,
    })


# ---------------------------------------------------------------------------------------------
# text, markdown and plots
def _f(v, pct=False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:+.3f}" if abs(v) <= 1 else f"{v:.2f}"


def summary_rows(window: dict) -> list[tuple[str, dict]]:
    """(metric, {predictor: value}) rows of one window, for text and markdown tables."""
    rows = []
    t = window["timing"]
    for side in TIMING_SIDES:
        d = t[side]
        if d["realized_notional"] <= 0:
            continue
        for metric, label in (("spearman", "Spearman"), ("pearson_log1p", "Pearson log1p"),
                              ("top10_share", "top-10% bucket share")):
            vals = {"estimate": d["estimate"][metric]}
            for b in TIMING_BASELINES:
                vals[b] = d[b][metric]
            vals["uniform"] = d["uniform"][metric]
            rows.append((f"timing {side}: {label}", vals))
        dd = d.get("daily") or {}
        if dd.get("estimate") is not None:
            rows.append((f"timing {side}: daily Spearman ({dd['n_days']} days)",
                         {p: dd.get(p) for p in ("estimate",) + TIMING_BASELINES}))
    lv = window.get("levels") or {}
    for g in ("long", "short", "all"):
        if g not in lv:
            continue
        d = lv[g]
        rows.append((f"levels {g}: top-decile bin share",
                     {"estimate": d["estimate"]["top10_share"],
                      "uniform": d["uniform"]["top10_share"]}))
        rows.append((f"levels {g}: lift over uniform",
                     {"estimate": d["estimate"]["lift"], "uniform": d["uniform"]["lift"]}))
    return rows


PREDICTORS = ("estimate",) + TIMING_BASELINES + ("uniform",)


def bootstrap_lines(window: dict) -> list[str]:
    """One line per side: "estimate − best baseline" Spearman with its bootstrap interval."""
    out = []
    for side in TIMING_SIDES:
        d = window["timing"].get(side) or {}
        b = d.get("bootstrap")
        if not b or d.get("realized_notional", 0) <= 0 or b.get("lo") is None:
            continue
        out.append(f"{side}: estimate − {b['vs']} Spearman {b['point']:+.3f}, "
                   f"{100 * b['level']:.0f}% CI [{b['lo']:+.3f}, {b['hi']:+.3f}] "
                   f"({b['n_days']} days, {b['valid_draws']} draws, seed {b['seed']}; "
                   f"{100 * b['share_le_0']:.1f}% of draws ≤ 0)")
    return out


def format_text(result: dict) -> str:
    """Plain-text tables of an :func:`evaluate` result."""
    lines = [f"realized: {result['realized']['source']} ({result['realized']['kind']}); "
             f"buckets of {result['eval_step']}"]
    for w in result["windows"]:
        lines.append("")
        lines.append(f"{w['name']}: {w['timing']['n_buckets']} buckets "
                     f"{w['first_bucket']} .. {w['last_bucket']}")
        lines.append(f"  {'metric':<40}" + "".join(f"{p:>11}" for p in PREDICTORS))
        for metric, vals in summary_rows(w):
            pct = "share" in metric
            lines.append(f"  {metric:<40}" + "".join(f"{_f(vals.get(p), pct):>11}"
                                                       for p in PREDICTORS))
        bl = bootstrap_lines(w)
        if bl:
            lines.append("  bootstrap over days:")
            lines += [f"    {x}" for x in bl]
        lv = w.get("levels") or {}
        if "all" in lv:
            a = lv["all"]
            lines.append(f"  levels: {a['n_in_range']} of {a['n_events']} events inside their "
                         f"bucket's range ({_f(a['in_range_share'], True)} of notional; prices "
                         f"{lv['price_kind']})")
    return "\n".join(lines)


def format_markdown(result: dict, title: str = "Evaluation") -> str:
    """Markdown summary of an :func:`evaluate` result."""
    out = [f"# {title}", "",
           f"Realized: `{result['realized']['source']}` ({result['realized']['kind']}); "
           f"evaluation buckets of {result['eval_step']}; store buckets of {result['every']}.",
           ""]
    if result.get("params"):
        out += [f"Model parameters: `{result['params']}`", ""]
    for w in result["windows"]:
        out += [f"## {w['name']}", "",
                f"{w['timing']['n_buckets']} buckets, {w['first_bucket']} .. {w['last_bucket']}.",
                "", "| metric | " + " | ".join(PREDICTORS) + " |",
                "|---|" + "---:|" * len(PREDICTORS)]
        for metric, vals in summary_rows(w):
            pct = "share" in metric
            out.append(f"| {metric} | " + " | ".join(_f(vals.get(p), pct) for p in PREDICTORS)
                       + " |")
        out.append("")
        bl = bootstrap_lines(w)
        if bl:
            out += ["Bootstrap over days (resampling UTC days with replacement):", ""]
            out += [f"* {x}" for x in bl]
            out.append("")
    return "\n".join(out)


def _save(fig, path: Path) -> None:
    import os
    import uuid

    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def plot_window(ds, realized: Realized, table: Table, window: Window, folder: Path,
                slug: str) -> list[Path]:
    """Estimated vs realized over time per side; event prices over the heatmap (events only)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    written = []
    m = window.contains(table.time)
    tt = table.time[m]
    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    for j, (ax, side) in enumerate(zip(axes, SIDES)):
        ax.plot(tt, table.realized[m, j] / 1e6, lw=0.8, color="tab:red", label="realized")
        ax.set_ylabel(f"{side} realized, M")
        ax2 = ax.twinx()
        ax2.plot(tt, table.estimate[m, j] / 1e6, lw=0.8, color="tab:blue", alpha=0.7,
                 label="estimated")
        ax2.set_ylabel(f"{side} estimated, M")
        ax.set_title(f"{side}s liquidated per {td64_str(table.step)} bucket", fontsize=9)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    fig.suptitle(window.name, fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    p = folder / f"{slug}_timing.png"
    _save(fig, p)
    plt.close(fig)
    written.append(p)
    if realized.kind == "events":
        f = realized.frame
        rt = f["time"].to_numpy().astype("datetime64[ns]")
        ok = window.contains(rt) & np.isfinite(f["price"].to_numpy())
        t = ds["time"].values.astype("datetime64[ns]")
        every = _every(ds)
        if ok.any():
            t0, t1 = rt[ok].min() - 6 * every, rt[ok].max() + 6 * every
            sel = np.flatnonzero((t >= t0) & (t <= t1))
            if sel.size:
                prices = f["price"].to_numpy()[ok]
                pad = 0.03 * (np.nanmax(prices) - np.nanmin(prices) + np.nanmean(prices) * 0.01)
                edges = ds["price_edges"].values
                pl, ph = np.nanmin(prices) - pad, np.nanmax(prices) + pad
                jsel = np.flatnonzero((edges[1:] >= pl) & (edges[:-1] <= ph))
                img = np.asarray(ds["intensity"].isel(time=sel, price=jsel)
                                 .sum(["series", "leverage", "side"]).values, np.float64)
                fig, ax = plt.subplots(figsize=(11, 6))
                te = np.r_[t[sel], t[sel[-1]] + every]
                ax.pcolormesh(te, edges[jsel[0]:jsel[-1] + 2], np.sqrt(img.T), cmap="magma",
                              shading="flat")
                sides = f["side"].to_numpy()[ok]
                w = f["notional"].to_numpy()[ok]
                size = 4 + 60 * np.sqrt(w / max(w.max(), 1e-12))
                for s, c in (("long", "tab:cyan"), ("short", "tab:green"),
                             ("unknown", "white")):
                    ms = sides == s
                    if ms.any():
                        ax.scatter(rt[ok][ms], prices[ms], s=size[ms], c=c, alpha=0.6,
                                   edgecolors="none", label=f"{s} liquidations")
                ax.plot(t[sel], ds["close"].isel(time=sel).values[0], color="white", lw=0.6,
                        label="close")
                ax.set_ylim(pl, ph)
                ax.legend(fontsize=8, loc="upper left")
                ax.set_title(f"{window.name}: event prices ({realized.price_kind}) over the "
                             "estimated intensity (sqrt)", fontsize=9)
                fig.autofmt_xdate()
                fig.tight_layout()
                p = folder / f"{slug}_levels.png"
                _save(fig, p)
                plt.close(fig)
                written.append(p)
    return written


def write_report(folder, ds, realized: Realized, result: dict, windows: list[Window],
                 table: Table, title: str = "Evaluation") -> list[Path]:
    """Write ``evaluation.json``, ``evaluation.md`` and per-window PNGs into ``folder``."""
    import json
    import os

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, w in enumerate(windows):
        slug = f"{i + 1:02d}_{w.role}"
        written += plot_window(ds, realized, table, w, folder, slug)
    md = format_markdown(result, title)
    md += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in written) + "\n"
    for name, text in (("evaluation.json", json.dumps(result, indent=2)),
                       ("evaluation.md", md)):
        p = folder / name
        tmp = p.with_name(f".{name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, p)
        written.append(p)
    return written


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
