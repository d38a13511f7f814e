"""Liquidation events, in one place: the normalized schema, reading, and binning onto a grid.

The normalized events file (``liqgpu ingest``, ``liqgpu record``) holds realized liquidations
that an exchange published, one row each: ``time`` (UTC, tz-aware), ``exchange``, ``symbol``,
``side`` (``long``/``short``: the side of the position that was liquidated; ``unknown`` where the
source does not say, with ``side_known`` False), ``price`` (as published), ``price_kind``
(``bankruptcy``, ``order`` or ``average``: which price that is), ``qty`` (base units, NaN if
unknown) and ``notional`` (quote).

* building and checking: :func:`make_events` (the venue readers), :func:`validate_events`,
  :func:`load_events`, :func:`order_side_to_position`;
* binning (MODEL.md, "Realized liquidations"): :func:`bin_realized` puts an event in the bucket
  that contains its time (bucket o covers ``[time[o], time[o] + every)``) and the price bin that
  contains its published price (``x_j <= price < x_{j+1}``), in the series ``exchange:symbol``,
  on side ``long`` (index 0) or ``short`` (index 1); the value is its quote notional. Events that
  land nowhere are counted by reason, logged and returned in the summary, never dropped
  silently. :func:`check_matched` is the one rule every command applies to events that match no
  series or fall outside the store's time range;
* evaluation input: :func:`load_realized` reads events or per-bar aggregates into
  :class:`Realized` (``liqgpu evaluate``, ``liqgpu sweep``).

Estimate, update, the Dask tasks, ``live`` and evaluate all read and bin events through this
module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .io.tables import Table, to_utc, where
from .schema import EVENT_COLUMNS, EVENT_REQUIRED, EVENT_SIDES, PRICE_KINDS, SIDES, TIME_COLUMNS

__all__ = ["EVENT_COLUMNS", "EventBinner", "PRICE_KINDS", "REALIZED_ATTRS", "Realized",
           "bin_realized", "check_matched", "read_events",
           "load_events", "load_realized", "make_events", "order_side_to_position",
           "parse_columns", "read_table", "validate_events"]

log = logging.getLogger(__name__)


# -- the normalized events table -----------------------------------------------------------------
def order_side_to_position(values, source: str, header_lines: int = 0) -> np.ndarray:
    """Liquidation *order* side -> liquidated *position* side: SELL/sell liquidates a long,
    BUY/buy a short (Binance forceOrder, OKX, Tardis)."""
    import pandas as pd

    s = pd.Series(values).astype(str).str.strip().str.lower()
    out = np.where(s == "sell", "long", np.where(s == "buy", "short", ""))
    bad = np.flatnonzero(out == "")
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{where(source, i, header_lines)}, column 'side': {s.iloc[i]!r} is not "
                         "buy or sell")
    return out


def make_events(pieces: list, *, notes=None) -> Table:
    """Join per-file pieces ``(source, dict_of_columns, header_lines, rows_in)`` into events.

    Each dict holds ``time`` (int64 ns), ``exchange``, ``symbol``, ``side``, ``price``,
    ``price_kind``, ``qty``, ``notional`` and optionally ``side_known`` and ``rows`` (each
    event's row in its file, for the messages, where rows were left out). Rows are checked
    (price and notional finite and > 0) and sorted by time; events at equal times are kept
    (several liquidations can share a millisecond).
    """
    import pandas as pd

    frames, rows_in = [], 0
    for source, cols, header_lines, n_in in pieces:
        rows_in += n_in
        n = len(cols["time"])
        f = pd.DataFrame({
            "_t": np.asarray(cols["time"], dtype=np.int64),
            "exchange": np.broadcast_to(np.asarray(cols["exchange"], dtype=object), n),
            "symbol": np.broadcast_to(np.asarray(cols["symbol"], dtype=object), n),
            "side": np.asarray(cols["side"], dtype=object),
            "price": np.asarray(cols["price"], dtype=np.float64),
            "price_kind": np.broadcast_to(np.asarray(cols["price_kind"], dtype=object), n),
            "qty": np.broadcast_to(np.asarray(cols["qty"], dtype=np.float64), n),
            "notional": np.asarray(cols["notional"], dtype=np.float64),
        })
        f["side_known"] = (np.broadcast_to(np.asarray(cols["side_known"], dtype=bool), n)
                           if "side_known" in cols else f["side"] != "unknown")
        _check(f, source, header_lines, cols.get("rows"))
        frames.append(f)
    df = pd.concat(frames, ignore_index=True).sort_values("_t", kind="stable")
    df = df.reset_index(drop=True)
    df.insert(0, "time", to_utc(df.pop("_t").to_numpy()))
    for c in ("exchange", "symbol", "side", "price_kind"):
        df[c] = df[c].astype(str)
    return Table(df, "events", [p[0] for p in pieces], rows_in, {}, list(notes or []))


def _check(f, source: str, header_lines: int, rows=None) -> None:
    """``rows``: the file's row of each of ``f``'s (where rows were left out before), for the
    messages; else their positions."""
    def at(i):
        return where(source, int(i if rows is None else rows[i]), header_lines)

    for col in ("price", "notional"):
        v = f[col].to_numpy()
        bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
        if bad.size:
            i = int(bad[0])
            shown = "missing" if np.isnan(v[i]) else f"{float(v[i]):g}"
            raise InputError(f"{at(i)}, column '{col}': {shown}; it must be a number > 0")
    bad = np.flatnonzero(~f["side"].isin(EVENT_SIDES).to_numpy())
    if bad.size:
        raise InputError(f"{at(bad[0])}, column 'side': "
                         f"{f['side'].iloc[int(bad[0])]!r} is not long, short or unknown")
    bad = np.flatnonzero(~f["price_kind"].isin(PRICE_KINDS).to_numpy())
    if bad.size:
        raise InputError(f"{source}: price_kind {f['price_kind'].iloc[int(bad[0])]!r} is not one "
                         f"of {', '.join(PRICE_KINDS)}")


def validate_events(df, source: str = "<events>", single: str | None = None):
    """Check a normalized events DataFrame and return it with ``time`` as UTC and ``side_known``.

    ``single``: the ``exchange:symbol`` of the only series the events are for (a store of one
    series); a file without ``exchange`` or ``symbol`` columns is then taken as that series'
    (as ``liqgpu evaluate`` reads such files).

    Raises
    ------
    InputError
        A missing column, a side other than long/short/unknown, a non-positive price or
        notional, or a time that is not a time.
    """
    import pandas as pd

    from .io.tables import epoch_to_ns

    out = df.copy()
    if single is not None and ":" in single:
        for col, value in zip(("exchange", "symbol"), single.split(":", 1)):
            if col not in out.columns:
                out[col] = value
    missing = [c for c in EVENT_REQUIRED if c not in out.columns]
    if missing:
        venue = {"exchange", "symbol"} & set(missing)
        raise InputError(f"{source}: missing column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(m) for m in missing)}; events need time, exchange, "
                         "symbol, side, price, notional"
                         + ("; exchange and symbol may be left out only for a store of one "
                            "series" if venue and single is None else ""))
    ns = epoch_to_ns(out["time"], source, "time")
    out["time"] = to_utc(ns)
    out["side"] = out["side"].astype(str).str.lower()
    if "side_known" not in out.columns:
        out["side_known"] = out["side"] != "unknown"
    if "price_kind" not in out.columns:
        out["price_kind"] = "order"
    if "qty" not in out.columns:
        out["qty"] = np.nan
    f = out.rename(columns={"time": "_t"})
    f["price"] = pd.to_numeric(f["price"], errors="coerce")
    f["notional"] = pd.to_numeric(f["notional"], errors="coerce")
    _check(f, source, 0)
    out["price"], out["notional"] = f["price"], f["notional"]
    return out


def load_events(path: str | Path, single: str | None = None):
    """Read a normalized events Parquet (or CSV) file and validate it (``single``: as
    :func:`validate_events`).

    Examples
    --------
    >>> ev = load_events("bybit_liqs.parquet")  # doctest: +SKIP
    """
    path = Path(path)
    return validate_events(read_table(path, what="a file of liquidation events"), str(path),
                           single)


# -- binning onto a grid ---------------------------------------------------------------------------
def bin_realized(events, *, series_names: list[str], time: np.ndarray, every: np.timedelta64,
                 edges: np.ndarray, unknown_side: str = "skip", return_summary: bool = False,
                 log_left_out: bool = True):
    """Sum event notional into a ``(series, time, price, side)`` array.

    Parameters
    ----------
    events : pandas.DataFrame
        Normalized events (:func:`load_events`): ``time`` (UTC), ``exchange``, ``symbol``,
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
    summary = _empty_summary(events, S, T)
    if n == 0 or S == 0 or T == 0:
        return (out, summary) if return_summary else out

    s_idx, o, j, side_idx, notional, ok = _classify(events, series_names, t_b, every_ns,
                                                    edges, unknown_side, summary)
    known = ok & (side_idx >= 0)
    np.add.at(out, (s_idx[known], o[known], j[known], side_idx[known]), notional[known])
    unk = ok & (side_idx < 0)
    if unk.any():  # split
        for k in (0, 1):
            np.add.at(out, (s_idx[unk], o[unk], j[unk], np.full(int(unk.sum()), k)),
                      notional[unk] / 2)
    left = {r: summary[r]["count"] for r in REASONS if summary[r]["count"]}
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
        tt = t[outside]
        parts.append(f"{int(outside.sum())} of {len(events)} fall outside its time range "
                     f"{np.datetime_as_string(np.datetime64(start, 's'))}Z .. "
                     f"{np.datetime_as_string(np.datetime64(end, 's'))}Z (those from "
                     f"{np.datetime_as_string(np.datetime64(int(tt.min()), 'ns'), unit='s')}Z to "
                     f"{np.datetime_as_string(np.datetime64(int(tt.max()), 'ns'), unit='s')}Z)")
    msg = f"{source}: " + "; ".join(parts)
    if not allow_unmatched:
        raise InputError(msg + "; pass --allow-unmatched to leave them out")
    log.warning("%s (left out: --allow-unmatched)", msg)


REASONS = ("other_series", "before_range", "after_range", "below_grid", "above_grid",
           "unknown_side")


def _empty_summary(events, S: int, T: int) -> dict:
    """:func:`bin_realized`'s summary before any event is classified; where there is no series
    or no bucket, every event is counted left out."""
    n = len(events)
    summary = {"events": int(n), "binned": 0, "notional_binned": 0.0}
    for r in REASONS:
        summary[r] = {"count": 0, "notional": 0.0}
    if n and (S == 0 or T == 0):
        summary["other_series" if S == 0 else "after_range"] = {
            "count": int(n), "notional": float(np.nansum(events["notional"]))}
    return summary


def realized_summary(events, *, series_names: list[str], time: np.ndarray,
                     every: np.timedelta64, edges: np.ndarray,
                     unknown_side: str = "skip") -> dict:
    """:func:`bin_realized`'s summary of these events over the whole time axis ``time``,
    without the cube: what a run binning them chunk by chunk reports, in one pass, so its
    sums do not depend on how the run cut its time axis."""
    edges = np.asarray(edges, dtype=np.float64)
    t_b = np.asarray(time).astype("datetime64[ns]").view(np.int64)
    summary = _empty_summary(events, len(series_names), t_b.size)
    if len(events) and len(series_names) and t_b.size:
        _classify(events, series_names, t_b, int(np.timedelta64(every, "ns").astype(np.int64)),
                  edges, unknown_side, summary)
    return summary


def _classify(events, series_names, t_b, every_ns: int, edges, unknown_side: str,
              summary: dict):
    """Each event's series, bucket, bin and side (``bin_realized``'s checks), and whether it
    is binned; the counts and notional of those left out, per reason, and of those binned,
    added to ``summary``. Returns (series, bucket, bin, side, notional, binned)."""
    from .io.tables import time_ns

    missing = [c for c in EVENT_REQUIRED if c not in events.columns]
    if missing:
        raise InputError(f"events: missing column(s) {', '.join(missing)}")
    T, P = t_b.size, edges.size - 1
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
    summary["binned"] += int(ok.sum())
    summary["notional_binned"] += float(notional[ok].sum())
    return s_idx, o, j, side_idx, notional, ok


# -- reading and binning for a run (estimate, update, the Dask tasks) ----------------------------
def read_events(realized, series_names=None, unknown_side: str = "skip"):
    """Normalized events from paths and/or DataFrames (``--realized``), sorted by time; None
    when none are given. Every file is checked before anything else runs. ``series_names``:
    the store's series; where it holds one, files without venue columns are that series'.
    ``unknown_side``: what binning does with events whose side is unknown (Hyperliquid's), as
    :func:`bin_realized`; kept with the events (``attrs``) for :class:`EventBinner`."""
    if unknown_side not in UNKNOWN_SIDE:
        raise InputError(f"--unknown-side: {unknown_side!r} is not one of {', '.join(UNKNOWN_SIDE)}")
    if realized is None or (isinstance(realized, (list, tuple)) and not realized):
        return None
    import pandas as pd

    names = list(series_names or ())
    single = str(names[0]) if len(names) == 1 else None
    items = realized if isinstance(realized, (list, tuple)) else [realized]
    frames = [validate_events(x, single=single) if isinstance(x, pd.DataFrame)
              else load_events(x, single) for x in items]
    ev = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    ev = ev.sort_values("time", kind="stable").reset_index(drop=True)
    ev.attrs["unknown_side"] = unknown_side
    ev.attrs["sources"] = [str(x) if not isinstance(x, pd.DataFrame) else "<DataFrame>"
                           for x in items]
    return ev


#: what binning does with events of unknown side: leave them out, or half to each side
UNKNOWN_SIDE = ("skip", "split")


def unknown_side_rule(attrs) -> str:
    """The rule a store's realized events were binned by (its ``realized_summary``), which
    ``update`` and ``live`` keep for the events they bin later; "skip" where it does not say."""
    return ((attrs or {}).get("realized_summary") or {}).get("unknown_side_rule", "skip")


REALIZED_ATTRS = {"units": "quote notional",
                  "long_name": "liquidations published by the exchange, binned on the grid"}


class EventBinner:
    """Bins events chunk by chunk (memory bounded like the engine), one summary at the end."""

    def __init__(self, events, names, btime, every, edges):
        from .io.tables import time_ns

        self.ev, self.names, self.btime, self.every, self.edges = events, names, btime, every, edges
        self.t = time_ns(events["time"])
        self.unknown_side = events.attrs.get("unknown_side", "skip")

    def add_to(self, ds, b0: int, b1: int):
        ds["realized"] = (("series", "time", "price", "side"), self.cube(b0, b1),
                          {**REALIZED_ATTRS, "units": ds["intensity"].attrs["units"]}
                          if "intensity" in ds else dict(REALIZED_ATTRS))
        return ds

    def cube(self, b0: int, b1: int) -> np.ndarray:
        """Buckets [b0, b1) binned: (series, time, price, side) float32."""
        lo = self.btime[b0].astype("datetime64[ns]").view(np.int64)
        hi = (self.btime[b1 - 1] + self.every).astype("datetime64[ns]").view(np.int64)
        first = b0 == 0
        last = b1 == self.btime.size
        i0 = 0 if first else int(np.searchsorted(self.t, lo, side="left"))
        i1 = self.t.size if last else int(np.searchsorted(self.t, hi, side="left"))
        cube = bin_realized(self.ev.iloc[i0:i1], series_names=self.names,
                            time=self.btime[b0:b1], every=self.every, edges=self.edges,
                            unknown_side=self.unknown_side, log_left_out=False)
        return cube.astype(np.float32)

    def finish(self) -> dict:
        """The summary of every event over the whole time axis (one pass: the same sums
        however the run cut its chunks), with a warning for those left out."""
        s = realized_summary(self.ev, series_names=self.names, time=self.btime,
                             every=self.every, edges=self.edges, unknown_side=self.unknown_side)
        s["unknown_side_rule"] = self.unknown_side
        # which files, and which price convention (MODEL.md: comparisons must say it)
        s["sources"] = list(self.ev.attrs.get("sources", []))
        s["price_kinds"] = (sorted({str(k) for k in self.ev["price_kind"]})
                            if "price_kind" in self.ev and len(self.ev) else [])
        left = {k: v["count"] for k, v in s.items() if isinstance(v, dict) and v["count"]}
        if left:
            hint = (": their side is not published (Hyperliquid); --unknown-side split counts "
                    "them half to each side" if left.get("unknown_side") else "")
            log.warning("realized: %d of %d events not binned (%s)%s", s["events"] - s["binned"],
                        s["events"], ", ".join(f"{k} {v}" for k, v in left.items()), hint)
        return s


# -- realized liquidations for evaluation: events or per-bar aggregates ----------------------------
@dataclass
class Realized:
    """Realized liquidations read by :func:`load_realized`.

    Attributes
    ----------
    kind : {'events', 'aggregates'}
    frame : pandas.DataFrame
        events: ``time`` (datetime64[ns], UTC), ``side`` ('long', 'short' or 'unknown'),
        ``price`` (NaN where unknown), ``notional``; aggregates: ``time, long, short``.
    step : numpy.timedelta64 or None
        Bar length of aggregates.
    source : str
    price_kind : str
        Price convention of events ('bankruptcy', 'order', 'mixed', 'unknown').
    """

    kind: str
    frame: object
    step: np.timedelta64 | None = None
    source: str = "<memory>"
    price_kind: str = "unknown"
    columns: dict = field(default_factory=dict)
    #: events: each row's ``symbol`` (or ``exchange:symbol``), lower case; None when the file
    #: names no symbol
    series: object = None

    def for_store(self, ds, *, allow_unmatched: bool = False) -> "Realized":
        """Only the events of the store's series; events of another series are an InputError
        unless ``allow_unmatched`` (then left out with a warning), and a file with none of the
        store's series always is (never scored against the wrong market without a word)."""
        if self.series is None:
            return self
        names = [str(x).lower() for x in ds["series"].values]
        syms = [n.split(":", 1)[-1] for n in names]
        ser = np.asarray(self.series, dtype=object)
        keep = np.array([(x in names) if ":" in x else (x in syms) for x in ser], dtype=bool)
        if not keep.any():
            held = sorted({str(x) for x in ser})[:3]
            raise InputError(f"{self.source}: holds events of {', '.join(held)}, not of the "
                             f"store's {', '.join(names)}; give the events of the store's series")
        if keep.all():
            return self
        if not allow_unmatched:
            raise InputError(f"{self.source}: {int((~keep).sum())} of {keep.size} events belong "
                             f"to no series of the store; pass --allow-unmatched to leave them "
                             f"out")
        log.warning("%s: %d of %d events belong to other series and are left out",
                    self.source, int((~keep).sum()), keep.size)
        frame = self.frame.iloc[np.flatnonzero(keep)].reset_index(drop=True)
        return Realized(self.kind, frame, self.step, self.source, self.price_kind, self.columns,
                        ser[keep])

    @property
    def start(self) -> np.datetime64:
        return self.frame["time"].to_numpy()[0]

    @property
    def end(self) -> np.datetime64:
        t = self.frame["time"].to_numpy()[-1]
        return t + (self.step if self.step is not None else np.timedelta64(1, "ns"))


def parse_columns(text: str | None) -> dict:
    """``'long=a,short=b[,time=c]'`` -> ``{'long': 'a', 'short': 'b', 'time': 'c'}``."""
    if not text:
        return {}
    out = {}
    for part in str(text).split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("long", "short", "time") or not val.strip():
            raise InputError(f"--realized-columns: cannot read {part.strip()!r}; use "
                             "long=COLUMN,short=COLUMN (and optionally time=COLUMN)")
        out[key] = val.strip()
    return out


def read_table(path: Path, *, what: str = "a file of realized liquidations"):
    """Read a Parquet or CSV table; every failure is one :class:`InputError` naming the file."""
    import pandas as pd

    name = str(path)
    if not path.exists():
        raise InputError(f"{name}: no such file")
    if path.is_dir():
        raise InputError(f"{name}: is a folder, not {what}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if "".join(path.suffixes[-2:]).lower().endswith((".csv", ".csv.gz", ".txt")):
            if path.stat().st_size == 0:
                raise InputError(f"{name}: the file is empty")
            return pd.read_csv(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - parser errors become one sentence
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{name}: cannot read the file ({msg})") from None
    raise InputError(f"{name}: unknown file type; use .parquet or .csv")


def _times(values, name: str, col: str) -> np.ndarray:
    import pandas as pd

    s = pd.Series(values)
    if not pd.api.types.is_numeric_dtype(s.dtype) and len(s):
        num = pd.to_numeric(s.astype(str).str.strip(), errors="coerce")
        if num.notna().all():  # epoch numbers read as text (CSV)
            s = num
        elif 2 * int(num.notna().sum()) > len(num):  # epoch numbers but for a few: those
            i = int(np.flatnonzero(num.isna().to_numpy())[0])
            raise InputError(f"{name}: row {i + 1}, column '{col}': cannot read "
                             f"{str(s.iloc[i]).strip()!r} as a time")
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        from .io.tables import epoch_to_ns  # s, ms, us or ns by magnitude, as estimate reads

        return epoch_to_ns(s, name, col).view("datetime64[ns]")
    try:
        t = pd.to_datetime(s.astype(str), utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{name}: column '{col}' holds values that are not UTC times or "
                         "epoch milliseconds") from None
    if t.isna().any():
        raise InputError(f"{name}: column '{col}' has a missing time in row "
                         f"{int(np.flatnonzero(t.isna().to_numpy())[0]) + 1}")
    return t.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]")


def load_realized(path, columns: dict | str | None = None) -> Realized:
    """Read realized liquidations: normalized events or per-bar aggregates (Parquet or CSV).

    Parameters
    ----------
    path : str or Path
        Events: columns ``time`` (UTC or epoch ms), ``side`` ('long'/'short'; anything else
        counts as unknown), ``notional`` (quote), ``price`` (optional) and ``price_kind``
        (optional). Aggregates: a time column and a long and a short notional column.
    columns : dict or str, optional
        ``{'long': ..., 'short': ..., 'time': ...}`` (or the ``long=a,short=b`` text) naming the
        aggregate columns; auto-detected when the file has one column containing ``long`` and
        one containing ``short`` (``*_usd`` preferred).

    Returns
    -------
    Realized
    """
    import pandas as pd

    path = Path(path)
    name = str(path)
    cols = parse_columns(columns) if isinstance(columns, str) or columns is None else dict(columns)
    df = read_table(path)
    if len(df) == 0:
        raise InputError(f"{name}: no rows")
    lower = {str(c).strip().lower(): c for c in df.columns}
    is_events = not cols and {"side", "notional"} <= set(lower)
    tcol = cols.get("time")
    if tcol is None:
        tcol = next((lower[c] for c in TIME_COLUMNS if c in lower), None)
    if tcol is None or tcol not in df.columns:
        raise InputError(f"{name}: no time column (looked for "
                         f"{tcol!r})" if tcol else f"{name}: no time column; name it 'time' or "
                         "pass --realized-columns time=COLUMN")
    t = _times(df[tcol], name, str(tcol))
    if is_events:
        side_raw = df[lower["side"]].astype(str).str.strip().str.lower()
        side = np.where(side_raw.isin(SIDES), side_raw, "unknown")
        notional = pd.to_numeric(df[lower["notional"]], errors="coerce").to_numpy(np.float64)
        price = np.full(len(df), np.nan)
        if "price" in lower:  # optional; where given, a positive number (empty: unknown)
            raw = df[lower["price"]]
            price = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
            text = raw.astype(str).str.strip().str.lower()
            blank = (raw.isna() | text.isin(["", "nan", "none", "null", "<na>"])).to_numpy()
            bad = np.flatnonzero((np.isnan(price) & ~blank) | (price <= 0) | np.isinf(price))
            if bad.size:
                raise InputError(f"{name}: row {int(bad[0]) + 1}, column 'price': "
                                 f"{str(raw.iloc[int(bad[0])]).strip()!r} is not a price > 0")
        bad = np.flatnonzero(~np.isfinite(notional) | (notional < 0) | (notional > _max_value()))
        if bad.size:
            raise InputError(f"{name}: row {int(bad[0]) + 1}, column 'notional': must be a "
                             "number >= 0")
        kinds = (sorted(set(df[lower["price_kind"]].astype(str))) if "price_kind" in lower
                 else ["unknown"])
        frame = pd.DataFrame({"time": t, "side": side, "price": price, "notional": notional})
        series = None
        if "symbol" in lower:
            sym = df[lower["symbol"]].astype(str).str.strip().str.lower()
            if "exchange" in lower:
                ex = df[lower["exchange"]].astype(str).str.strip().str.lower()
                sym = (ex + ":" + sym).where(ex != "", sym)
            frame["_series"] = sym.to_numpy()
        frame = frame.sort_values("time", kind="mergesort").reset_index(drop=True)
        if "_series" in frame:
            series = frame.pop("_series").to_numpy(dtype=object)
        return Realized("events", frame, None, name,
                        kinds[0] if len(kinds) == 1 else "mixed", series=series)
    # aggregates
    for s in SIDES:
        if s not in cols:
            cand = [c for c in df.columns if s in str(c).lower() and c != tcol]
            usd = [c for c in cand if "usd" in str(c).lower()]
            pick = usd if len(usd) == 1 else cand
            if len(pick) != 1:
                raise InputError(
                    f"{name}: cannot tell which column holds {s} liquidations "
                    f"({len(pick)} candidates); pass --realized-columns long=COLUMN,short=COLUMN"
                    if pick else f"{name}: not normalized events (time, side, notional) and no "
                    f"column with '{s}' in its name; pass --realized-columns long=COLUMN,"
                    "short=COLUMN")
            cols[s] = pick[0]
        elif cols[s] not in df.columns:
            raise InputError(f"{name}: no column {cols[s]!r} (--realized-columns {s}=); the file "
                             f"has {', '.join(map(str, df.columns[:12]))}")
    vals = {}
    for s in SIDES:
        v = pd.to_numeric(df[cols[s]], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(v) | (v < 0) | (v > _max_value()))
        if bad.size:
            raise InputError(f"{name}: row {int(bad[0]) + 1}, column {cols[s]!r}: must be a "
                             "number >= 0")
        vals[s] = v
    frame = pd.DataFrame({"time": t, **vals}).sort_values("time", kind="mergesort")
    frame = frame.drop_duplicates()  # the same bar twice (overlapping downloads): once
    dup = np.flatnonzero(frame["time"].duplicated(keep=False).to_numpy())
    if dup.size:  # two bars at one time: which one holds the liquidations is not known
        rows = sorted(int(i) + 1 for i in frame.index[dup][:2])
        when = pd.Timestamp(frame["time"].iloc[dup[0]]).isoformat()
        raise InputError(f"{name}: rows {rows[0]} and {rows[1]} have the same time {when}Z; "
                         "give each bar once")
    frame = frame.reset_index(drop=True)
    if len(frame) < 2:
        raise InputError(f"{name}: needs at least two bars to tell the bar length")
    d = np.diff(frame["time"].to_numpy()).astype("timedelta64[ns]")
    step = np.min(d)
    if np.any(d % step):
        raise InputError(f"{name}: bars are not on one step (gaps of {np.unique(d)[:3]} found)")
    return Realized("aggregates", frame, step, name,
                    columns={"time": str(tcol), **{s: str(cols[s]) for s in SIDES}})


def _max_value() -> float:
    from .series import MAX_VALUE  # the finite-value bound shared with series files

    return MAX_VALUE
