"""Merge series parts (klines, mark prices, open interest) onto one model step.

Each part is put on the regular grid of its own step (gaps as NaN), resampled to the model step
with :func:`liqgpu.series.resample` (open=first, high=max, low=min, close=last, oi=last, volumes
summed), and the parts are joined on the union of their time ranges. An OI part coarser than the
model step puts each value on the last model bar inside its own bar (the OI is at that bar's
close); the other bars get NaN: OI is never carried forward. The result goes through
:func:`liqgpu.series.from_frame`, so it meets every rule of a series.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError
from .tables import SERIES_COLUMNS, Table, time_ns, to_utc

log = logging.getLogger(__name__)

_SOURCES = {"open": "klines", "high": "klines", "low": "klines", "close": "klines",
            "oi": "an open-interest file (binance-metrics, bybit-oi, okx-oi, ...)"}


#: the columns that are a part's OI: in model units, or in quote notional (divided by the
#: merged close)
OI_KEYS = {"oi", "oi_quote"}


def _runs(mask: np.ndarray) -> int:
    """Number of runs of True."""
    m = np.asarray(mask, dtype=np.int8)
    return int(np.count_nonzero(np.diff(np.concatenate([[0], m])) == 1))


def merge(tables: list[Table], *, step=None, exchange: str | None = None,
          symbol: str | None = None) -> tuple[Table, dict]:
    """Join series parts into one validated series on ``step``.

    Parameters
    ----------
    tables : list of Table
        Series parts of one contract (from the readers, or read back from their Parquet files).
    step : str, optional
        Model step (``'1m'``, ``'5m'``); default: the coarsest step among the parts.
    exchange, symbol : str, optional
        Override the parts' metadata (they must agree otherwise).

    Returns
    -------
    (Table, dict)
        The merged series and a gap report per column.

    Examples
    --------
    >>> from liqgpu.io import binance
    >>> s, gaps = merge([binance.read_klines(["k/"]), binance.read_metrics(["m/"])],
    ...                 step="5m")  # doctest: +SKIP
    """
    from .._time import parse_duration
    from ..series import from_frame, resample

    if not tables:
        raise InputError("merge: no inputs")
    meta = {}
    for t in tables:
        if t.kind != "series":
            raise InputError(f"{t.files[0] if t.files else '?'}: holds events, not a series part")
        f = t.frame
        for k in ("exchange", "symbol", "kind", "contract_size"):
            v = f[k].iloc[0] if k in f.columns else None
            if k == "symbol" and v is not None:
                v = str(v).upper()
            if v is None or (k == "exchange" and exchange) or (k == "symbol" and symbol):
                continue
            if k in meta and meta[k][0] != v:
                raise InputError(f"{t.files[0]}: {k} {v!r} differs from {meta[k][0]!r} in "
                                 f"{meta[k][1]}; merge parts of one contract")
            meta.setdefault(k, (v, t.files[0]))
    parts = []
    for t in tables:
        ns = time_ns(t.frame["time"])
        src = t.files[0] if t.files else "<part>"
        if ns.size < 2:
            raise InputError(f"{src}: one row only; cannot tell its step")
        own = int(t.frame.attrs.get("step_ns") or np.diff(ns).min())
        if own <= 0 or (np.diff(ns) <= 0).any():
            raise InputError(f"{src}: times are not strictly increasing")
        off = np.flatnonzero((ns - ns[0]) % own)
        cols = {c: t.frame[c].to_numpy(dtype=np.float64) for c in SERIES_COLUMNS + ("oi_quote",)
                if c in t.frame.columns}
        if "oi" in cols and "oi_quote" in cols:
            raise InputError(f"{src}: holds both oi and oi_quote; give OI once")
        if off.size and len(cols) == 1 and set(cols) <= OI_KEYS:  # OI snapshots, irregular
            parts.append((src, ns, None, cols))
            continue
        if off.size:
            raise InputError(f"{src}: row {int(off[0]) + 1}: {np.datetime64(int(ns[off[0]]), 'ns')}Z "
                             f"is off the grid of the part's own step")
        parts.append((src, ns, own, cols))
    regular = [p[2] for p in parts if p[2] is not None]
    if step is None or str(step).strip().lower() in ("", "none", "auto"):
        if not regular:
            raise InputError(f"{parts[0][0]}: OI snapshots at irregular times; give --step to "
                             "place them on bars")
        step_ns = max(regular)
    else:
        step_ns = int(round(parse_duration(step, option="--step").total_seconds() * 1e9))
    seen: dict[str, str] = {}
    placed = []
    partial = 0  # output bars whose prices come from fewer input bars than a step holds
    for src, ns, own, cols in parts:
        for c in cols:
            key = "oi" if c in OI_KEYS else c
            if key in seen:
                raise InputError(f"{src}: column '{c}' is also in {seen[key]}"
                                 f"{' (as OI)' if c != key else ''}; give each column once")
            seen[key] = src
        if own is None:  # snapshots: the last one in each bar of --step (the nearest its close)
            bar = ns // step_ns * step_ns
            last = np.r_[bar[1:] != bar[:-1], True]
            (c,) = cols
            placed.append((src, bar[last], {c: cols[c][last]}))
            log.info("%s: %d OI snapshots placed on %d bars of %s (the last in each)", src,
                     ns.size, int(last.sum()), step)
            continue
        idx = (ns - ns[0]) // own
        n = int(idx[-1]) + 1
        full = {}
        for c, v in cols.items():
            a = np.full(n, np.nan)
            a[idx] = v
            full[c] = a
        grid = ns[0] + own * np.arange(n, dtype=np.int64)
        if own <= step_ns:
            if step_ns % own:
                raise InputError(f"--step: {step}: not a whole multiple of the step of {src}")
            if grid[0] % step_ns or own != step_ns:
                if "close" in full and own < step_ns:  # bars made of fewer than a step's
                    key = grid // step_ns
                    held = np.bincount(key[np.isfinite(full["close"])] - key[0],
                                       minlength=int(key[-1] - key[0]) + 1)
                    partial += int(((held > 0) & (held < step_ns // own)).sum())
                g, full = resample(grid.view("datetime64[ns]"), full, step_ns)
                grid = g.view(np.int64)
        else:
            if set(cols) - OI_KEYS:
                raise InputError(f"{src}: its step is coarser than --step {step}; only OI can be "
                                 "placed on a finer step (prices cannot be split)")
            if own % step_ns:
                raise InputError(f"{src}: its step is not a whole multiple of --step {step}")
            grid = grid + own - step_ns  # the OI is at the close of the last fine bar
        placed.append((src, grid, full))
    missing = [c for c in ("open", "high", "low", "close", "oi") if c not in seen]
    if missing:
        need = sorted({_SOURCES[c] for c in missing})
        raise InputError(f"merge: no {', '.join(missing)} column; add {' and '.join(need)}")
    t0 = min(int(g[0]) for _, g, _ in placed)
    t1 = max(int(g[-1]) for _, g, _ in placed)
    if t0 % step_ns:
        t0 -= t0 % step_ns
    n = (t1 - t0) // step_ns + 1
    out = {c: np.full(n, np.nan) for c in seen}
    quote = None
    for src, grid, full in placed:
        pos = (grid - t0) // step_ns
        for c, v in full.items():
            if c == "oi_quote":
                quote = src
                c = "oi"
            out[c][pos] = v
    if quote is not None:  # (every part linear: the kinds agreed above)
        # quote notional at the bar's close -> base units (a bar without a close: no OI)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["oi"] = out["oi"] / out["close"]
        log.info("%s: OI in quote units divided by the close of each bar", quote)
    import pandas as pd

    # the bars before the first price and after the last are left out: a store there would
    # show OI moves without a price line (a longer OI download than the price's)
    priced = np.flatnonzero(np.isfinite(out["close"]))
    if not priced.size:
        raise InputError(f"merge: no bar has a close price ({', '.join(sorted(set(seen.values())))})")
    cut = (int(priced[0]), n - 1 - int(priced[-1]))
    notes = []
    if cut[0] or cut[1]:
        notes.append(f"kept the bars from the first to the last with a price: {cut[0]} bar(s) "
                     f"of OI only left out before, {cut[1]} after")
        out = {c: v[cut[0]:n - cut[1]] for c, v in out.items()}
        t0 += cut[0] * step_ns
        n -= cut[0] + cut[1]
    df = pd.DataFrame({"time": to_utc(t0 + step_ns * np.arange(n, dtype=np.int64)), **out})
    exch = exchange or meta.get("exchange", ("unknown",))[0]
    sym = symbol or meta.get("symbol", ("unknown",))[0]
    kind = meta.get("kind", ("linear",))[0]
    cs = float(meta.get("contract_size", (1.0,))[0])
    s = from_frame(df, exchange=exch, symbol=sym, kind=kind, contract_size=cs, source="merge")
    frame = pd.DataFrame({"time": to_utc(s.time.view(np.int64)),
                          **{c: s.columns[c] for c in SERIES_COLUMNS if c in s.columns}})
    frame["exchange"], frame["symbol"] = s.exchange, s.symbol
    frame["kind"], frame["contract_size"] = s.kind, s.contract_size
    price_nan = np.isnan(frame["close"].to_numpy())
    oi_nan = np.isnan(frame["oi"].to_numpy())
    gaps = {"bars": int(n), "price_missing_bars": int(price_nan.sum()),
            "price_partial_bars": partial,
            "price_gaps": _runs(price_nan), "oi_missing_bars": int(oi_nan.sum()),
            "oi_gaps": _runs(oi_nan)}
    if "mark_high" in frame.columns:
        mk = np.isnan(frame["mark_high"].to_numpy())
        gaps.update(mark_missing_bars=int(mk.sum()), mark_gaps=_runs(mk))
    files = [f for t in tables for f in t.files]
    table = Table(frame, "series", files, sum(t.rows_in for t in tables),
                  {}, [f"merged {len(tables)} part(s) on step {int(step_ns // 10**9)}s"] + notes)
    return table, gaps
