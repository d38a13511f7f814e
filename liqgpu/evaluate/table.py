"""The estimate, the baselines and the realized liquidations lined up on common buckets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._time import iso, td64_str
from ..errors import InputError
from ..events import Realized
from ..schema import SIDES


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


def bucket_step(ds) -> np.timedelta64:
    from .._time import parse_duration

    ev = ds.attrs.get("every")
    if ev:
        return np.timedelta64(int(round(parse_duration(ev).total_seconds() * 1e9)), "ns")
    t = ds["time"].values
    if t.size < 2:
        raise InputError("the store has a single bucket and no 'every' attribute")
    return (t[1] - t[0]).astype("timedelta64[ns]")


def bar_span(ds) -> tuple:
    """(first bar's open, last bar's close) of a store, each None where the store does not say:
    its ``data_start`` and ``data_end`` attributes."""
    from ..store.layout import data_end

    raw = ds.attrs.get("data_start")
    try:
        start = np.datetime64(str(raw).rstrip("Z"), "ns") if raw else None
    except ValueError:
        start = None
    return start, data_end(ds.attrs)


def covered(time, every, span=(None, None)) -> np.ndarray:
    """Per bucket: whether the series' bars cover its whole span [t, t + every): False for a
    bucket starting before the first bar (``span[0]``: a clock-aligned first bucket holding one
    5m bar of 30m) or ending after the last bar's close (``span[1]``).

    Examples
    --------
    >>> t = np.datetime64("2026-05-25T15:30", "ns") + np.arange(3) * np.timedelta64(30, "m")
    >>> covered(t, np.timedelta64(30, "m"), (np.datetime64("2026-05-25T15:55", "ns"),
    ...                                      np.datetime64("2026-05-25T16:45", "ns"))).tolist()
    [False, True, False]
    """
    t = np.asarray(time).astype("datetime64[ns]")
    every = np.timedelta64(every, "ns")
    ok = np.ones(t.shape, bool)
    start, end = span
    if start is not None:
        ok &= t >= np.datetime64(start, "ns")
    if end is not None:
        ok &= t + every <= np.datetime64(end, "ns")
    return ok


def bucket_inputs(ds) -> dict:
    """Per store bucket: estimated liquidated (T, 2), the price/OI columns (T,) and
    ``covered`` (T,) bool (:func:`covered`: the bars cover the bucket's whole span)."""
    liq = ds["liquidated"].sum(["series", "price", "leverage"])
    if "outside_liquidated" in ds:
        liq = liq + ds["outside_liquidated"].sum(["series", "leverage"])
    est = np.asarray(liq.transpose("time", "side").values, dtype=np.float64)
    px = {k: np.asarray(ds[k].values, dtype=np.float64) for k in ("open", "high", "low",
                                                                    "close", "oi")}
    return {"estimate": est, **px,
            "covered": covered(ds["time"].values, bucket_step(ds), bar_span(ds))}


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


def bin_sum(idx, values, n) -> np.ndarray:
    out = np.zeros((n,) + values.shape[1:])
    np.add.at(out, idx, values)
    return out


def build_table(ds, realized: Realized, *, inputs: dict | None = None) -> Table:
    """Line the store's buckets up with the realized liquidations on common buckets.

    Aggregates: the evaluation step is the longer of the store's ``every`` and the bar length;
    a bucket counts only when all its store buckets and realized bars are present. Events: the
    store's buckets, from the first event's bucket to the last's. Either way a store bucket
    that the series' bars do not cover whole (:func:`covered`) is not present.
    """
    return table_from_arrays(ds["time"].values, bucket_step(ds),
                             inputs if inputs is not None else bucket_inputs(ds), realized)


def table_from_arrays(time, every, inp: dict, realized: Realized) -> Table:
    """:func:`build_table` on arrays: bucket times, ``every`` and :func:`bucket_inputs`' dict.

    ``inp['estimate']`` may carry extra dimensions after time (e.g. (T, K, 2) per tier); they are
    kept in ``Table.estimate``. ``inp['covered']`` (optional, (T,) bool): the store buckets
    the bars cover whole; the others count as absent.
    """
    t = np.asarray(time).astype("datetime64[ns]")
    cov = inp.get("covered")
    cov = np.ones(t.size, bool) if cov is None else np.asarray(cov, bool)
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
        cnt_b = np.bincount(ib[cov], minlength=n)
        cnt_r = np.bincount(ir, minlength=n)
        rv = np.stack([f["long"].to_numpy(), f["short"].to_numpy()], axis=1)
        real = bin_sum(ir, rv, n)
        ok = (cnt_b == E // every) & (cnt_r == E // r)
        est = bin_sum(ib, inp["estimate"], n)
        bl = {k: bin_sum(ib, v, n) for k, v in base.items()}
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
        ok &= cov
        est, bl, times = inp["estimate"], base, t
    return Table(time=times[ok], step=E, estimate=est[ok], realized=real3[ok],
                 baselines={k: v[ok] for k, v in bl.items()}, n_store_buckets=int(t.size))
