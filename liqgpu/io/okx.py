"""OKX: liquidation orders and open-interest history.

Conventions (OKX v5 API documentation):

- ``/api/v5/public/liquidation-orders`` (and the ``liquidation-orders`` websocket channel) return
  ``data: [{instId, details: [{bkPx, side, posSide, sz, ts, ...}]}]``. ``side`` is the
  liquidation order's side (sell liquidates a long, buy a short); ``posSide`` names the position
  directly in long/short mode. ``bkPx`` is the bankruptcy price; ``sz`` counts contracts.
- Contract value (``ctVal``): linear swaps in base units (BTC-USDT-SWAP 0.01 BTC, ETH 0.1, SOL 1,
  DOGE 1000, XRP 100); inverse swaps in USD (BTC-USD-SWAP 100, others 10). Pass
  ``--contract-value`` for an instrument not in this table.
- ``/api/v5/rubik/stat/contracts/open-interest-history`` returns rows ``[ts, oi, oiCcy, oiUsd]``
  newest first, ``oi`` in contracts and ``oiCcy`` in the base coin.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .archive import expand_inputs, read_members
from ..events import make_events, order_side_to_position
from .tables import (alias, epoch_to_ns, files_symbol, looks_like_json, numeric, read_csv,
                     read_json_records, series_table, shift_snapshots, single_symbol)

LINEAR_CT_VAL = {"BTC": 0.01, "ETH": 0.1, "SOL": 1.0, "DOGE": 1000.0, "XRP": 100.0}


def is_inverse(inst_id: str) -> bool:
    """``BTC-USD-SWAP`` is inverse (coin-margined); ``BTC-USDT-SWAP`` linear."""
    parts = inst_id.upper().split("-")
    return len(parts) >= 2 and parts[1] == "USD"


def contract_value(inst_id: str, given: float | None = None) -> float:
    """ctVal of an instrument: base units (linear) or USD (inverse)."""
    if given:
        return float(given)
    base = inst_id.upper().split("-")[0]
    if is_inverse(inst_id):
        return 100.0 if base == "BTC" else 10.0
    if base in LINEAR_CT_VAL:
        return LINEAR_CT_VAL[base]
    raise InputError(f"{inst_id}: contract value unknown; pass --contract-value (OKX ctVal)")


def _rows(data, source, kind):
    import pandas as pd

    rows = []
    for rec in read_json_records(data, source):
        items = rec.get("data", []) if isinstance(rec, dict) else rec
        for it in items:
            if kind == "liq":
                if not isinstance(it, dict) or "details" not in it:
                    raise InputError(f"{source}: a data item has no 'details'; not an OKX "
                                     "liquidation-orders response")
                rows.extend(dict(d, instId=it.get("instId", d.get("instId"))) for d in it["details"])
            elif isinstance(it, list):
                rows.append(dict(zip(("ts", "oi", "oiCcy", "oiUsd"), it)))
            else:
                rows.append(it)
    if not rows:
        raise InputError(f"{source}: no records")
    return pd.DataFrame(rows)


def read_liquidations(inputs, *, symbol=None, contract_value=None, **_):
    """OKX liquidation orders (API/websocket JSON or CSV ``ts, instId, side, posSide, sz, bkPx``)
    -> events at the bankruptcy price.

    Examples
    --------
    >>> t = read_liquidations(["okx_liq_BTC-USDT-SWAP.json"])  # doctest: +SKIP
    """
    cv_given = contract_value
    pieces, other = [], 0
    for p in expand_inputs(inputs):
        for source, data in read_members(p):
            df, h = (_rows(data, source, "liq"), 0) if looks_like_json(data) else read_csv(data, source)
            ic = alias(df, ("instId", "inst_id", "symbol"), source, "instId", required=symbol is None)
            n_in = len(df)
            inst = (df[ic].astype(str).str.strip().str.upper().to_numpy(dtype=object) if ic
                    else np.full(n_in, symbol.upper(), dtype=object))
            if symbol and ic:
                keep = inst == symbol.upper()
                df, inst = df[keep].reset_index(drop=True), inst[keep]
                other += n_in - len(df)
            if not len(df):
                continue
            side = order_side_to_position(df[alias(df, ("side",), source, "side")], source, h)
            if "posSide" in df.columns:
                ps = df["posSide"].astype(str).str.strip().str.lower().to_numpy()
                side = np.where(np.isin(ps, ["long", "short"]), ps, side)
            sz = numeric(df, alias(df, ("sz", "size"), source, "sz"), source, h)
            px = numeric(df, alias(df, ("bkPx", "price"), source, "bkPx"), source, h)
            cvs = {i: contract_value_of(i, cv_given) for i in np.unique(inst)}
            cv = np.array([cvs[i] for i in inst])
            inv = np.array([is_inverse(i) for i in inst])
            notional = np.where(inv, sz * cv, sz * cv * px)
            qty = np.where(inv, notional / px, sz * cv)
            tc = alias(df, ("ts", "time"), source, "ts")
            pieces.append((source, {"time": epoch_to_ns(df[tc], source, tc, h), "exchange": "okx",
                                    "symbol": inst, "side": side, "price": px,
                                    "price_kind": "bankruptcy", "qty": qty,
                                    "notional": notional}, h, n_in))
    if not pieces:
        raise InputError(f"{inputs[0]}: no liquidation events" + (f" of {symbol}" if symbol else ""))
    t = make_events(pieces, notes=["side: posSide, else sell order -> long liquidated",
                                   "sz in contracts x ctVal; price: bankruptcy (bkPx)"])
    if other:
        t.dropped["other instruments (--symbol)"] = other
    return t


contract_value_of = contract_value


def read_open_interest(inputs, *, symbol=None, contract_value=None, **_):
    """OKX open-interest history (rubik JSON ``[[ts, oi, oiCcy, oiUsd], ...]``, public
    ``open-interest`` JSON, or CSV ``ts, oi[, oiCcy]``) -> an ``oi`` part.

    Linear swaps get base units (``oiCcy``, else contracts x ctVal); inverse swaps keep contracts
    (contract size = ctVal USD). A snapshot at T is the OI at the close of the bar opening at
    T - step. ``symbol`` is the instrument (``BTC-USDT-SWAP``) when the file does not name it.
    """
    pieces, insts = [], set()
    for p in expand_inputs(inputs):
        for source, data in read_members(p):
            df, h = (_rows(data, source, "oi"), 0) if looks_like_json(data) else read_csv(data, source)
            if "instId" in df.columns:
                insts.add(single_symbol(df["instId"], source, symbol))
            inst = files_symbol(insts, source, symbol)
            if not inst:
                raise InputError(f"{source}: no instId in the file; pass --symbol BTC-USDT-SWAP")
            inst = inst.upper()
            tc = alias(df, ("ts", "time", "timestamp"), source, "ts")
            if is_inverse(inst):
                oi = numeric(df, alias(df, ("oi",), source, "oi"), source, h)
            elif "oiCcy" in df.columns:
                oi = numeric(df, "oiCcy", source, h)
            else:
                oi = numeric(df, alias(df, ("oi",), source, "oi"), source, h) * \
                    contract_value_of(inst, contract_value)
            pieces.append((source, epoch_to_ns(df[tc], source, tc, h), {"oi": oi}, h, len(df)))
    pieces, oi_step = shift_snapshots(pieces)
    inv = is_inverse(inst)
    return series_table(pieces, step_ns=oi_step, exchange="okx", symbol=inst,
                        kind="inverse" if inv else "linear",
                        contract_size=contract_value_of(inst, contract_value) if inv else 1.0,
                        notes=["OI snapshot at T -> bar opening at T - step",
                               "OI unit: " + ("contracts" if inv else "base (oiCcy)")])
