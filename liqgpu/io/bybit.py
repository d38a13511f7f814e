"""Bybit v5: liquidation stream recordings and open-interest history.

Conventions (Bybit v5 API documentation):

- ``liquidation.{symbol}`` messages carry ``data: {updatedTime, symbol, side, size, price}`` and
  ``allLiquidation.{symbol}`` messages ``data: [{T, s, S, v, p}]``. The side is the side of the
  liquidated **position**: ``Buy`` = a long was liquidated, ``Sell`` = a short. The price is the
  bankruptcy price. ``size`` is base units on linear contracts and contracts of 1 USD on inverse
  ones (``BTCUSD``).
- ``/v5/market/open-interest`` returns ``result.list = [{openInterest, timestamp}]`` newest first;
  ``openInterest`` is base units on linear contracts and USD (= contracts) on inverse ones.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .archive import expand_inputs, read_members
from ..events import make_events
from .tables import (alias, epoch_to_ns, files_symbol, looks_like_json, numeric, read_csv,
                     read_json_records, series_table, shift_snapshots, single_symbol, where)


def is_inverse(symbol: str) -> bool:
    """Bybit inverse contracts end in USD (``BTCUSD``) or a delivery suffix (``BTCUSDH25``)."""
    s = symbol.upper()
    return s.endswith("USD") or (len(s) > 3 and s[:-3].endswith("USD") and s[-2:].isdigit())


#: allLiquidation keys -> liquidation keys.
_ALL_LIQ = {"T": "updatedTime", "s": "symbol", "S": "side", "v": "size", "p": "price"}


def _frame_from_json(data, source, kind):
    import pandas as pd

    rows = []
    for rec in read_json_records(data, source):
        if not isinstance(rec, dict):
            raise InputError(f"{source}: record {len(rows) + 1} is not a JSON object")
        if kind == "oi":
            res = rec.get("result", rec)
            items = res.get("list") if isinstance(res, dict) else None
            if items is None:
                raise InputError(f"{source}: no result.list; not a Bybit open-interest response")
            sym = res.get("symbol")
            rows.extend(dict(x, symbol=sym) if sym else x for x in items)
        else:
            d = rec.get("data", rec)
            for x in d if isinstance(d, list) else [d]:
                if not isinstance(x, dict):
                    raise InputError(f"{source}: record {len(rows) + 1} has no data object")
                rows.append({_ALL_LIQ.get(k, k): v for k, v in x.items()})
    if not rows:
        raise InputError(f"{source}: no records")
    return pd.DataFrame(rows)


def read_liquidations(inputs, *, symbol=None, contract_value=None, **_):
    """Bybit liquidation recordings (JSON lines of websocket messages, or CSV with
    ``updatedTime|timestamp, symbol, side, size, price``) -> events.

    Examples
    --------
    >>> t = read_liquidations(["liquidation_BTCUSDT_2024-03-01.jsonl.gz"])  # doctest: +SKIP
    """
    pieces, other = [], 0
    for p in expand_inputs(inputs):
        for source, data in read_members(p):
            if looks_like_json(data):
                df, h = _frame_from_json(data, source, "liq"), 0
            else:
                df, h = read_csv(data, source)
            tc = alias(df, ("updatedTime", "T", "timestamp", "ts_ms", "ts", "time"), source, "time")
            sc = alias(df, ("symbol", "s"), source, "symbol", required=symbol is None)
            n_in = len(df)
            syms = (df[sc].astype(str).str.strip().str.upper().to_numpy(dtype=object) if sc
                    else np.full(n_in, symbol.upper(), dtype=object))
            if symbol and sc:
                keep = syms == symbol.upper()
                df, syms = df[keep].reset_index(drop=True), syms[keep]
                other += n_in - len(df)
            if not len(df):
                continue
            side_raw = df[alias(df, ("side", "S"), source, "side")].astype(str).str.strip()
            side = np.where(side_raw == "Buy", "long", np.where(side_raw == "Sell", "short", ""))
            bad = np.flatnonzero(side == "")
            if bad.size:
                raise InputError(f"{where(source, int(bad[0]), h)}, column 'side': "
                                 f"{side_raw.iloc[int(bad[0])]!r} is not Buy or Sell")
            size = numeric(df, alias(df, ("size", "v", "qty", "qty_btc"), source, "size"), source, h)
            price = numeric(df, alias(df, ("price", "p"), source, "price"), source, h)
            inv = np.array([is_inverse(s) for s in syms])
            cv = float(contract_value) if contract_value else 1.0
            notional = np.where(inv, size * cv, size * price)
            qty = np.where(inv, notional / price, size)
            pieces.append((source, {"time": epoch_to_ns(df[tc], source, tc, h), "exchange": "bybit",
                                    "symbol": syms, "side": side, "price": price,
                                    "price_kind": "bankruptcy", "qty": qty,
                                    "notional": notional}, h, n_in))
    if not pieces:
        raise InputError(f"{inputs[0]}: no liquidation events" + (f" of {symbol}" if symbol else ""))
    t = make_events(pieces, notes=["side: Buy = long position liquidated (Bybit v5)",
                                   "price: bankruptcy price as published"])
    if other:
        t.dropped["other symbols (--symbol)"] = other
    return t


def read_open_interest(inputs, *, symbol=None, contract_value=None, **_):
    """Bybit ``/v5/market/open-interest`` responses (JSON) or CSV ``timestamp, openInterest``
    -> an ``oi`` part. A snapshot at T is the OI at the close of the bar opening at T - step."""
    pieces, syms = [], set()
    for p in expand_inputs(inputs):
        for source, data in read_members(p):
            if looks_like_json(data):
                df, h = _frame_from_json(data, source, "oi"), 0
            else:
                df, h = read_csv(data, source)
            tc = alias(df, ("timestamp", "ts", "time"), source, "time")
            oc = alias(df, ("openInterest", "open_interest", "oi"), source, "openInterest")
            if "symbol" in df.columns:
                syms.add(single_symbol(df["symbol"], source, symbol))
            pieces.append((source, epoch_to_ns(df[tc], source, tc, h),
                           {"oi": numeric(df, oc, source, h)}, h, len(df)))
    sym = files_symbol(syms, pieces[0][0] if pieces else str(inputs[0]), symbol)
    if not sym:
        raise InputError(f"{pieces[0][0]}: no symbol in the file; pass --symbol")
    sym = sym.upper()
    pieces, oi_step = shift_snapshots(pieces)
    inv = is_inverse(sym)
    return series_table(pieces, step_ns=oi_step, exchange="bybit", symbol=sym,
                        kind="inverse" if inv else "linear",
                        contract_size=float(contract_value or 1.0),
                        notes=["OI snapshot at T -> bar opening at T - step",
                               "OI unit: " + ("contracts of 1 USD" if inv else "base")])
