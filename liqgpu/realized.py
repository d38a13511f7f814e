"""Bin realized liquidation events onto a dataset's buckets and price grid (MODEL.md, "Realized
liquidations").

An event lands in the bucket that contains its time (bucket o covers ``[time[o], time[o] +
every)``) and the price bin that contains its published price (``x_j <= price < x_{j+1}``), in
the series ``exchange:symbol``, on side ``long`` (index 0) or ``short`` (index 1); the value is
its quote notional. Events that land nowhere are counted by reason, logged and returned in the
summary, never dropped silently.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

SIDES = ("long", "short")


def bin_realized(events, *, series_names: list[str], time: np.ndarray, every: np.timedelta64,
                 edges: np.ndarray, unknown_side: str = "skip", return_summary: bool = False,
                 log_left_out: bool = True):
    """Sum event notional into a ``(series, time, price, side)`` array.

    Parameters
    ----------
    events : pandas.DataFrame
        Normalized events (:mod:`liqgpu.io.events`): ``time`` (UTC), ``exchange``, ``symbol``,
        ``side`` (``long``/``short``/``unknown``), ``price``, ``notional``.
    series_names : list of str
        ``exchange:symbol`` of each series, in dataset order (matched case-insensitively).
    time : ndarray of datetime64[ns]
        Bucket open times, increasing.
    every : numpy.timedelta64
        Bucket length.
    edges : ndarray of float64
        Price edges x_0 < ... < x_P.
    unknown_side : {'skip', 'split'}
        Events whose side is unknown (Hyperliquid): counted and left out, or half to each side.
    return_summary : bool
        Also return the summary dict.
    log_left_out : bool
        Log a warning when events are left out (callers that bin in pieces log once instead).

    Returns
    -------
    ndarray of float64, shape (S, n_buckets, P, 2)
        Quote notional; side index 0 = long liquidated, 1 = short liquidated.
    dict, optional
        ``events``, ``binned``, ``notional_binned`` and, per reason (``other_series``,
        ``before_range``, ``after_range``, ``below_grid``, ``above_grid``, ``unknown_side``),
        the count and notional of events left out.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> ev = pd.DataFrame({"time": pd.to_datetime(["2024-01-01 00:30"], utc=True),
    ...                    "exchange": ["bybit"], "symbol": ["BTCUSDT"], "side": ["long"],
    ...                    "price": [105.0], "notional": [1000.0]})
    >>> t = np.array(["2024-01-01T00:00", "2024-01-01T01:00"], dtype="datetime64[ns]")
    >>> out = bin_realized(ev, series_names=["bybit:BTCUSDT"], time=t,
    ...                    every=np.timedelta64(1, "h"), edges=np.array([100.0, 110.0, 120.0]))
    >>> out[0, 0, 0, 0]
    np.float64(1000.0)
    """
    from .io.tables import time_ns

    if unknown_side not in ("skip", "split"):
        raise InputError(f"unknown_side: {unknown_side!r} is not skip or split")
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not (np.diff(edges) > 0).all():
        raise InputError("edges: need at least two strictly increasing price edges")
    t_b = np.asarray(time).astype("datetime64[ns]").view(np.int64)
    if t_b.size and (np.diff(t_b) <= 0).any():
        raise InputError("time: bucket times must be strictly increasing")
    every_ns = int(np.timedelta64(every, "ns").astype(np.int64))
    if every_ns <= 0:
        raise InputError("every: must be a positive duration")
    S, T, P = len(series_names), t_b.size, edges.size - 1
    out = np.zeros((S, T, P, 2), dtype=np.float64)
    n = len(events)
    summary = {"events": int(n), "binned": 0, "notional_binned": 0.0}
    reasons = ("other_series", "before_range", "after_range", "below_grid", "above_grid",
               "unknown_side")
    for r in reasons:
        summary[r] = {"count": 0, "notional": 0.0}
    if n == 0 or S == 0 or T == 0:
        if n:
            summary["other_series" if S == 0 else "after_range"] = {
                "count": int(n), "notional": float(np.nansum(events["notional"]))}
        return (out, summary) if return_summary else out

    missing = [c for c in ("time", "exchange", "symbol", "side", "price", "notional")
               if c not in events.columns]
    if missing:
        raise InputError(f"events: missing column(s) {', '.join(missing)}")
    t = time_ns(events["time"])
    price = events["price"].to_numpy(dtype=np.float64)
    notional = events["notional"].to_numpy(dtype=np.float64)
    if not (np.isfinite(price).all() and np.isfinite(notional).all()):
        raise InputError("events: price and notional must be finite numbers")
    names = (events["exchange"].astype(str) + ":" + events["symbol"].astype(str)).str.lower()
    lookup = {name.lower(): i for i, name in enumerate(series_names)}
    s_idx = names.map(lookup).fillna(-1).to_numpy(dtype=np.int64)
    side = events["side"].astype(str).str.lower().to_numpy()
    side_idx = np.where(side == "long", 0, np.where(side == "short", 1, -1))

    o = np.searchsorted(t_b, t, side="right") - 1
    j = np.searchsorted(edges, price, side="right") - 1

    def left_out(reason, mask):
        summary[reason]["count"] += int(mask.sum())
        summary[reason]["notional"] += float(notional[mask].sum())
        return mask

    bad = left_out("other_series", s_idx < 0)
    bad |= left_out("before_range", ~bad & (o < 0))
    in_bucket = (o >= 0) & (t < t_b[np.clip(o, 0, T - 1)] + every_ns)
    bad |= left_out("after_range", ~bad & ~in_bucket)
    bad |= left_out("below_grid", ~bad & (j < 0))
    bad |= left_out("above_grid", ~bad & (j >= P))
    if unknown_side == "skip":
        bad |= left_out("unknown_side", ~bad & (side_idx < 0))
    ok = ~bad
    known = ok & (side_idx >= 0)
    np.add.at(out, (s_idx[known], o[known], j[known], side_idx[known]), notional[known])
    unk = ok & (side_idx < 0)
    if unk.any():  # split
        for k in (0, 1):
            np.add.at(out, (s_idx[unk], o[unk], j[unk], np.full(int(unk.sum()), k)),
                      notional[unk] / 2)
    summary["binned"] = int(ok.sum())
    summary["notional_binned"] = float(notional[ok].sum())
    left = {r: summary[r]["count"] for r in reasons if summary[r]["count"]}
    if left and log_left_out:
        log.warning("realized: %d of %d events not binned (%s)", n - summary["binned"], n,
                    ", ".join(f"{k} {v}" for k, v in left.items()))
    return (out, summary) if return_summary else out


def check_matched(events, *, series_names: list[str], start, end,
                  allow_unmatched: bool = False, source: str = "--realized") -> None:
    """The one rule for realized events in every command: each event must belong to a series of
    the store (``exchange:symbol``, case-insensitive) and fall in its time range ``[start,
    end)``. Otherwise an :class:`InputError` naming how many and which, unless
    ``allow_unmatched`` (then a warning, and those events are left out)."""
    if events is None or len(events) == 0:
        return
    names = {n.lower() for n in series_names}
    key = (events["exchange"].astype(str) + ":" + events["symbol"].astype(str)).str.lower()
    other = ~key.isin(names).to_numpy()
    from .io.tables import time_ns

    t = time_ns(events["time"])
    lo = int(np.datetime64(start, "ns").astype(np.int64))
    hi = int(np.datetime64(end, "ns").astype(np.int64))
    outside = ~other & ((t < lo) | (t >= hi))
    if not (other.any() or outside.any()):
        return
    parts = []
    if other.any():
        held = sorted(set(key[other]))[:3]
        parts.append(f"{int(other.sum())} of {len(events)} events belong to no series of the "
                     f"store ({', '.join(held)}{', ...' if len(set(key[other])) > 3 else ''})")
    if outside.any():
        parts.append(f"{int(outside.sum())} fall outside its time range "
                     f"{np.datetime_as_string(np.datetime64(start, 's'))}Z .. "
                     f"{np.datetime_as_string(np.datetime64(end, 's'))}Z")
    msg = f"{source}: " + "; ".join(parts)
    if not allow_unmatched:
        raise InputError(msg + "; pass --allow-unmatched to leave them out")
    log.warning("%s (left out: --allow-unmatched)", msg)
