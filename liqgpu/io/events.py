"""The normalized events file: realized liquidations that an exchange published (MODEL.md).

Columns: ``time`` (UTC, tz-aware), ``exchange``, ``symbol``, ``side`` (``long``/``short``: the
side of the position that was liquidated; ``unknown`` where the source does not say, with
``side_known`` False), ``price`` (as published), ``price_kind`` (``bankruptcy``, ``order`` or
``average``: which price that is), ``qty`` (base units, NaN if unknown) and ``notional`` (quote).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from .tables import Table, to_utc, where

log = logging.getLogger(__name__)

EVENT_COLUMNS = ("time", "exchange", "symbol", "side", "price", "price_kind", "qty", "notional",
                 "side_known")
SIDES = ("long", "short", "unknown")
PRICE_KINDS = ("bankruptcy", "order", "average")


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
    ``price_kind``, ``qty``, ``notional`` and optionally ``side_known``. Rows are checked
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
        _check(f, source, header_lines)
        frames.append(f)
    df = pd.concat(frames, ignore_index=True).sort_values("_t", kind="stable")
    df = df.reset_index(drop=True)
    df.insert(0, "time", to_utc(df.pop("_t").to_numpy()))
    for c in ("exchange", "symbol", "side", "price_kind"):
        df[c] = df[c].astype(str)
    return Table(df, "events", [p[0] for p in pieces], rows_in, {}, list(notes or []))


def _check(f, source: str, header_lines: int) -> None:
    for col in ("price", "notional"):
        v = f[col].to_numpy()
        bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
        if bad.size:
            i = int(bad[0])
            raise InputError(f"{where(source, i, header_lines)}, column '{col}': {v[i]!r} must be "
                             "a number > 0")
    bad = np.flatnonzero(~f["side"].isin(SIDES).to_numpy())
    if bad.size:
        raise InputError(f"{where(source, int(bad[0]), header_lines)}, column 'side': "
                         f"{f['side'].iloc[int(bad[0])]!r} is not long, short or unknown")
    bad = np.flatnonzero(~f["price_kind"].isin(PRICE_KINDS).to_numpy())
    if bad.size:
        raise InputError(f"{source}: price_kind {f['price_kind'].iloc[int(bad[0])]!r} is not one "
                         f"of {', '.join(PRICE_KINDS)}")


def validate_events(df, source: str = "<events>"):
    """Check a normalized events DataFrame and return it with ``time`` as UTC and ``side_known``.

    Raises
    ------
    InputError
        A missing column, a side other than long/short/unknown, a non-positive price or
        notional, or a time that is not a time.
    """
    import pandas as pd

    from .tables import epoch_to_ns

    missing = [c for c in ("time", "exchange", "symbol", "side", "price", "notional")
               if c not in df.columns]
    if missing:
        raise InputError(f"{source}: missing column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(m) for m in missing)}; events need time, exchange, "
                         "symbol, side, price, notional")
    out = df.copy()
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


def load_events(path: str | Path):
    """Read a normalized events Parquet (or CSV) file and validate it.

    Examples
    --------
    >>> ev = load_events("bybit_liqs.parquet")  # doctest: +SKIP
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except Exception as exc:  # parser errors of every kind become one sentence
        raise InputError(f"{path}: cannot read the file ({type(exc).__name__})") from None
    return validate_events(df, str(path))
