"""Binance USDⓈ-M (``um``) and COIN-M (``cm``) futures: Binance Vision archives and forceOrder.

Conventions (from Binance's public documentation of data.binance.vision and the websocket API):

- klines / markPriceKlines: 12 columns, with or without a header row (older archives have none):
  ``open_time, open, high, low, close, volume, close_time, quote_volume|base_volume, count,
  taker_buy_volume, taker_buy_quote_volume|taker_buy_base_volume, ignore``. Times are epoch
  milliseconds, some 2025 files microseconds (read by magnitude). On COIN-M ``volume`` counts
  contracts and the 8th column is the base volume.
- metrics: ``create_time`` (text, UTC), ``symbol``, ``sum_open_interest`` (base units on USDⓈ-M,
  contracts on COIN-M) every 5 minutes. A snapshot at T is the OI at the close of the bar
  that opens at T - 5m.
- liquidationSnapshot and forceOrder: the ``side`` is the liquidation *order's* side: SELL
  liquidates a long. ``price`` is the order price, ``average_price`` the average fill. Quantities
  are base units on USDⓈ-M and contracts on COIN-M.
- COIN-M contract value: 100 USD for BTCUSD contracts, 10 USD for the others.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from .archive import expand_inputs, read_members
from ..events import make_events, order_side_to_position
from .tables import (check_increasing, epoch_to_ns, looks_like_json, numeric, read_csv,
                     read_json_records, series_table, single_symbol)

log = logging.getLogger(__name__)

KLINE_UM = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
            "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore")
KLINE_CM = ("open_time", "open", "high", "low", "close", "volume", "close_time", "base_volume",
            "count", "taker_buy_volume", "taker_buy_base_volume", "ignore")
LIQ_SNAPSHOT = ("time", "side", "order_type", "time_in_force", "original_quantity", "price",
                "average_price", "order_status", "last_fill_quantity", "accumulated_fill_quantity")
METRICS_STEP_NS = 5 * 60 * 10**9


def symbol_from_name(source: str) -> str:
    """``BTCUSDT`` from ``.../BTCUSDT-1m-2024-01-01.zip!BTCUSDT-1m-2024-01-01.csv``."""
    return Path(source.split("!")[0]).name.split("-")[0].upper()


def market_of(symbol: str, market: str | None = None) -> str:
    """``cm`` for COIN-M symbols (``BTCUSD_PERP``, ``ETHUSD_240329``), else ``um``."""
    if market:
        if market not in ("um", "cm"):
            raise InputError(f"--market: {market!r} is not um or cm")
        return market
    s = symbol.upper()
    return "cm" if ("_" in s and s.split("_")[0].endswith("USD")) or s.endswith("USD") else "um"


def cm_contract_value(symbol: str) -> float:
    """COIN-M contract value in USD: 100 for BTCUSD contracts, 10 for the others."""
    return 100.0 if symbol.upper().startswith("BTCUSD") else 10.0


def _meta(symbol, market, contract_value):
    market = market_of(symbol, market)
    if market == "cm":
        cv = float(contract_value) if contract_value else cm_contract_value(symbol)
        return market, "inverse", cv
    return market, "linear", 1.0


def _symbol(sources, given):
    if given:
        return given.upper()
    names = {symbol_from_name(s) for s in sources}
    if len(names) > 1:
        raise InputError(f"{sources[0]}: the files hold several symbols ({', '.join(sorted(names))})"
                         "; ingest one symbol at a time or pass --symbol")
    return names.pop()


def read_klines(inputs, *, symbol=None, market=None, contract_value=None, mark=False, **_):
    """Binance Vision klines (or markPriceKlines with ``mark=True``) -> a series part.

    Parameters
    ----------
    inputs : list of str or Path
        ``.zip``, ``.gz`` or ``.csv`` files or folders of them, one symbol.
    symbol : str, optional
        Default: from the file names (``BTCUSDT-1m-2024-01-01.zip``).
    market : {'um', 'cm'}, optional
        Default: ``cm`` for symbols like ``BTCUSD_PERP``.
    contract_value : float, optional
        COIN-M contract value in USD (default 100 for BTCUSD, else 10).
    mark : bool
        Mark-price klines: only ``mark_high, mark_low`` are kept.

    Returns
    -------
    Table

    Examples
    --------
    >>> t = read_klines(["BTCUSDT-1m-2024-01-01.zip"])  # doctest: +SKIP
    """
    members = [m for p in expand_inputs(inputs) for m in read_members(p)]
    sym = _symbol([m[0] for m in members], symbol)
    market, kind, cv = _meta(sym, market, contract_value)
    names = KLINE_CM if market == "cm" else KLINE_UM
    pieces = []
    for source, data in members:
        df, h = read_csv(data, source, names=names)
        ns = epoch_to_ns(df["open_time"], source, "open_time", h)
        num = {c: numeric(df, c, source, h) for c in ("open", "high", "low", "close")}
        if mark:
            cols = {"mark_high": num["high"], "mark_low": num["low"]}
        elif market == "cm":
            contracts = numeric(df, "volume", source, h)
            cols = dict(num, volume=numeric(df, "base_volume", source, h),
                        taker_buy_volume=numeric(df, "taker_buy_base_volume", source, h),
                        quote_volume=contracts * cv)
        else:
            cols = dict(num, volume=numeric(df, "volume", source, h),
                        taker_buy_volume=numeric(df, "taker_buy_volume", source, h),
                        quote_volume=numeric(df, "quote_volume", source, h))
        pieces.append((source, ns, cols, h, len(df)))
    notes = ["times: epoch ms or µs read by magnitude; time = bar open"]
    if market == "cm" and not mark:
        notes.append(f"COIN-M: volume = base volume; quote_volume = contracts x {cv:g} USD")
    return series_table(pieces, exchange="binance", symbol=sym, kind=kind, contract_size=cv,
                        notes=notes, time_column="open_time")


def read_mark_klines(inputs, **kw):
    """Binance Vision markPriceKlines -> a ``mark_high, mark_low`` part (see :func:`read_klines`)."""
    return read_klines(inputs, mark=True, **kw)


def read_metrics(inputs, *, symbol=None, market=None, contract_value=None, **_):
    """Binance Vision metrics (5-minute ``sum_open_interest``) -> an ``oi`` part.

    A row created at T is the OI at the close of the 5-minute bar opening at T - 5m. The OI is
    base units on USDⓈ-M and contracts on COIN-M (the model's native units).
    """
    members = [m for p in expand_inputs(inputs) for m in read_members(p)]
    pieces, syms = [], set()
    for source, data in members:
        df, h = read_csv(data, source)
        for c in ("create_time", "sum_open_interest"):
            if c not in df.columns:
                raise InputError(f"{source}: missing column '{c}'; not a Binance metrics file "
                                 f"(columns: {', '.join(df.columns[:8])})")
        s = single_symbol(df["symbol"], source, symbol) if "symbol" in df.columns else None
        syms.add((s or symbol_from_name(source)).upper())
        ns = epoch_to_ns(df["create_time"], source, "create_time", h) - METRICS_STEP_NS
        pieces.append((source, ns, {"oi": numeric(df, "sum_open_interest", source, h)}, h, len(df)))
    if len(syms) > 1:
        raise InputError(f"{members[0][0]}: the files hold several symbols ({', '.join(sorted(syms))})")
    sym = syms.pop()
    market, kind, cv = _meta(sym, market, contract_value)
    return series_table(pieces, exchange="binance", symbol=sym, kind=kind, contract_size=cv,
                        step_ns=METRICS_STEP_NS, notes=["OI snapshot at create_time T -> bar opening at T - 5m",
                               "OI unit: " + ("contracts" if kind == "inverse" else "base")])


def _fo_events(source, t, sym, side_raw, qty_orig, price, avg, filled, market, cv, h):
    side = order_side_to_position(side_raw, source, h)
    avg = np.where(np.isfinite(avg) & (avg > 0), avg, np.nan)
    use_avg = np.isfinite(avg)
    px = np.where(use_avg, avg, price)
    kind = np.where(use_avg, "average", "order")
    q = np.where(np.isfinite(filled) & (filled > 0), filled, qty_orig)
    mk = np.array([market_of(s, market) for s in np.unique(sym)])
    cmset = {s for s, m in zip(np.unique(sym), mk) if m == "cm"}
    is_cm = np.isin(sym, list(cmset)) if cmset else np.zeros(len(sym), bool)
    if is_cm.any():
        cvs = np.array([float(contract_value_or(cv, s)) for s in sym])
        notional = np.where(is_cm, q * cvs, q * px)
        qty = np.where(is_cm, notional / px, q)
    else:
        notional, qty = q * px, q
    return {"time": t, "exchange": "binance", "symbol": sym, "side": side, "price": px,
            "price_kind": kind, "qty": qty, "notional": notional}


def contract_value_or(cv, symbol):
    return cv if cv else cm_contract_value(symbol)


def read_liquidation_snapshot(inputs, *, symbol=None, market=None, contract_value=None, **_):
    """Binance Vision liquidationSnapshot -> events (SELL liquidates a long; price = average
    fill where given, else the order price; qty = filled quantity, else the original)."""
    pieces = []
    for p in expand_inputs(inputs):
        for source, data in read_members(p):
            df, h = read_csv(data, source, names=LIQ_SNAPSHOT)
            sym = (symbol or symbol_from_name(source)).upper()
            t = epoch_to_ns(df["time"], source, "time", h)
            cols = _fo_events(
                source, t, np.full(len(df), sym, dtype=object), df["side"],
                numeric(df, "original_quantity", source, h), numeric(df, "price", source, h),
                numeric(df, "average_price", source, h),
                numeric(df, "accumulated_fill_quantity", source, h), market, contract_value, h)
            pieces.append((source, cols, h, len(df)))
    return make_events(pieces, notes=["side: SELL order -> long liquidated",
                                      "price: average fill (price_kind=average) else order price"])


#: forceOrder fields: websocket key first, then CSV names seen in recordings.
FO_ALIASES = {
    "time": ("T", "trade_time_ms", "order_trade_time_ms", "trade_time", "time", "E",
             "event_time_ms", "timestamp"),
    "symbol": ("s", "symbol"),
    "side": ("S", "side"),
    "qty": ("q", "original_quantity", "orig_qty", "quantity"),
    "price": ("p", "price"),
    "avg": ("ap", "average_price", "avg_price"),
    "filled": ("z", "filled_accumulated_quantity", "order_filled_accumulated_quantity",
               "accumulated_fill_quantity", "executed_qty"),
}


def _pick(df, key, source, required=True):
    for name in FO_ALIASES[key]:
        if name in df.columns:
            return name
    if required:
        raise InputError(f"{source}: missing a {key} column (one of "
                         f"{', '.join(FO_ALIASES[key])})")
    return None


def read_forceorder(inputs, *, symbol=None, market=None, contract_value=None, **_):
    """Binance forceOrder recordings -> events.

    Accepts websocket JSON lines (``{"e":"forceOrder","E":..,"o":{"s","S","q","p","ap","z","T",..}}``,
    also wrapped as ``{"stream":..,"data":..}`` or lists from ``!forceOrder@arr``) and CSV files
    with the same fields, by their one-letter keys or descriptive names
    (``trade_time_ms, symbol, side, original_quantity, price, average_price,
    filled_accumulated_quantity``). ``symbol`` keeps only that symbol's events.
    """
    import pandas as pd

    other = 0
    pieces, notes = [], ["side: SELL order -> long liquidated",
                         "price: average fill (price_kind=average) else order price; "
                         "qty: filled quantity else original"]
    for p in expand_inputs(inputs):
        for source, data in read_members(p):
            if looks_like_json(data):
                rows = []
                for rec in read_json_records(data, source):
                    for r in rec if isinstance(rec, list) else [rec]:
                        r = r.get("data", r) if isinstance(r, dict) else r
                        for x in r if isinstance(r, list) else [r]:
                            if not isinstance(x, dict) or "o" not in x:
                                raise InputError(f"{source}: event {len(rows) + 1} is not a "
                                                 "forceOrder message (no 'o' object)")
                            rows.append(dict(x["o"], E=x.get("E")))
                df, h = pd.DataFrame(rows), 0
                if df.empty:
                    raise InputError(f"{source}: no forceOrder events")
            else:
                df, h = read_csv(data, source)
            tcol = _pick(df, "time", source)
            scol = _pick(df, "symbol", source, required=symbol is None)
            syms = (df[scol].astype(str).str.strip().str.upper().to_numpy(dtype=object) if scol
                    else np.full(len(df), symbol.upper(), dtype=object))
            n_in = len(df)
            if symbol and scol:
                keep = syms == symbol.upper()
                df, syms = df[keep].reset_index(drop=True), syms[keep]
                other += n_in - len(df)
                if not len(df):  # an all-market recording with none of this symbol's events
                    continue
            acol, fcol = _pick(df, "avg", source, False), _pick(df, "filled", source, False)
            nan = np.full(len(df), np.nan)
            cols = _fo_events(
                source, epoch_to_ns(df[tcol], source, tcol, h), syms, df[_pick(df, "side", source)],
                numeric(df, _pick(df, "qty", source), source, h),
                numeric(df, _pick(df, "price", source), source, h),
                numeric(df, acol, source, h) if acol else nan,
                numeric(df, fcol, source, h) if fcol else nan, market, contract_value, h)
            pieces.append((source, cols, h, n_in))
    if not pieces:
        raise InputError(f"{inputs[0]}: no liquidation events" + (f" of {symbol}" if symbol else ""))
    t = make_events(pieces, notes=notes)
    if other:
        t.dropped["other symbols (--symbol)"] = other
    return t


__all__ = ["read_klines", "read_mark_klines", "read_metrics", "read_liquidation_snapshot",
           "read_forceorder", "market_of", "cm_contract_value", "check_increasing"]
