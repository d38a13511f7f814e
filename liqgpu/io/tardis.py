"""Tardis.dev downloadable CSV datasets: ``derivative_ticker`` and ``liquidations``.

Conventions (Tardis.dev documentation of its CSV datasets):

- Every file has a header row; ``timestamp`` (exchange time) and ``local_timestamp`` are epoch
  **microseconds**; ``timestamp`` may be empty, then ``local_timestamp`` is used.
- derivative_ticker: ``exchange, symbol, timestamp, local_timestamp, funding_timestamp,
  funding_rate, predicted_funding_rate, open_interest, last_price, index_price, mark_price``;
  ``open_interest`` is in the exchange's own unit (``--oi-unit``).
- liquidations: ``exchange, symbol, timestamp, local_timestamp, id, side, price, amount``;
  ``side`` is the liquidation order's side: ``sell`` = a long was liquidated, ``buy`` = a short.
  ``amount`` is in the instrument's unit (coins, or contracts: ``--contract-value``).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .archive import expand_inputs, read_members
from ..events import make_events, order_side_to_position
from .tables import (epoch_to_ns, files_symbol, numeric, oi_in_model_units, read_csv, series_table,
                     single_symbol, where)

TICKER = ("exchange", "symbol", "timestamp", "local_timestamp", "open_interest", "mark_price")
LIQS = ("exchange", "symbol", "timestamp", "local_timestamp", "side", "price", "amount")
#: Which price an exchange's liquidation message carries.
PRICE_KIND = {"binance": "order", "bybit": "bankruptcy", "okex": "bankruptcy", "okx": "bankruptcy"}


def exchange_name(tardis_exchange: str) -> str:
    """``binance-futures`` -> ``binance``, ``okex-swap`` -> ``okx``."""
    e = str(tardis_exchange).strip().split("-")[0].lower()
    return "okx" if e == "okex" else e


def _times(df, source, h):
    ts = df["timestamp"].astype(str).str.strip()
    use = ts.where(ts != "", df["local_timestamp"].astype(str).str.strip())
    return epoch_to_ns(use, source, "timestamp", h)


def _need(df, cols, source, what):
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{source}: missing column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)}; not a Tardis {what} CSV")


def read_derivative_ticker(inputs, *, symbol=None, step="1m", oi_unit="base", kind="linear",
                           contract_value=None, **_):
    """Tardis derivative_ticker -> an ``oi, mark_high, mark_low`` part at ``step``.

    Ticks are bucketed by bar open ``floor(t / step)``: ``oi`` is the bucket's last value (the
    OI at the bar's close), ``mark_high``/``mark_low`` the extremes of the sampled mark price
    (a lower bound on the true range). Bars without ticks are gaps.

    Parameters
    ----------
    oi_unit : {'base', 'contracts', 'quote'}
        Unit of ``open_interest``, converted as in :func:`liqgpu.io.tables.oi_in_model_units`
        (with the mark price): base units for linear contracts, contracts for inverse ones.
    kind : {'linear', 'inverse'}
    """
    import pandas as pd

    from .._time import parse_duration

    step_ns = int(round(parse_duration(step, option="--step").total_seconds() * 1e9))
    frames, n_in, syms, exch = [], 0, set(), set()
    files = []
    for p in expand_inputs(inputs):
        for source, data in read_members(p):
            df, h = read_csv(data, source, header="yes")
            _need(df, TICKER, source, "derivative_ticker")
            syms.add(single_symbol(df["symbol"], source, symbol))
            exch.add(str(df["exchange"].iloc[0]))
            n_in += len(df)
            files.append(source)
            t = _times(df, source, h)
            d = np.diff(t)
            if (d < 0).any():
                i = int(np.flatnonzero(d < 0)[0]) + 1
                raise InputError(f"{where(source, i, h)}, column 'timestamp': earlier than the "
                                 "previous row; ticks must be in time order")
            oi = numeric(df, "open_interest", source, h)
            mark = numeric(df, "mark_price", source, h)
            oi = oi_in_model_units(oi, mark, oi_unit=oi_unit, kind=kind,
                                   contract_value=contract_value, source=source)
            frames.append(pd.DataFrame({"b": t // step_ns, "oi": oi, "mark": mark}))
    sym = files_symbol(syms, files[0], symbol)
    if not sym:
        raise InputError(f"{files[0]}: no symbol in the file; pass --symbol")
    exchanges = sorted({exchange_name(e) for e in exch})
    if len(exchanges) > 1:
        raise InputError(f"{files[0]}: the files hold several exchanges ({', '.join(exchanges)}); "
                         "one series is one exchange")
    df = pd.concat(frames, ignore_index=True).sort_values("b", kind="stable")
    g = df.groupby("b", sort=True)
    last_oi = g["oi"].last()  # last non-NaN per bucket
    cols = {"oi": last_oi.to_numpy(), "mark_high": g["mark"].max().to_numpy(),
            "mark_low": g["mark"].min().to_numpy()}
    ns = last_oi.index.to_numpy(dtype=np.int64) * step_ns
    cs = float(contract_value) if (kind == "inverse" and contract_value) else 1.0
    t = series_table([(files[0], ns, cols, 0, n_in)], exchange=exchanges[0], symbol=str(sym).upper(),
                     kind=kind, contract_size=cs, step_ns=step_ns,
                     notes=["timestamps in µs; ticks bucketed by floor(t/step)",
                            f"OI unit in file: {oi_unit}; mark range from sampled ticks"])
    t.files = files
    return t


def read_liquidations(inputs, *, symbol=None, kind="linear", contract_value=None, **_):
    """Tardis liquidations -> events (``sell`` = long liquidated; price as the exchange sends it:
    the order price on Binance, the bankruptcy price on Bybit and OKX)."""
    pieces, other = [], 0
    for p in expand_inputs(inputs):
        for source, data in read_members(p):
            df, h = read_csv(data, source, header="yes")
            _need(df, LIQS, source, "liquidations")
            n_in = len(df)
            syms = df["symbol"].astype(str).str.strip().str.upper().to_numpy(dtype=object)
            if symbol:
                keep = syms == symbol.upper()
                df, syms = df[keep].reset_index(drop=True), syms[keep]
                other += n_in - len(df)
                if not len(df):
                    continue
            exch = df["exchange"].astype(str).str.strip().to_numpy(dtype=object)
            pk = np.array([next((v for k, v in PRICE_KIND.items() if e.startswith(k)), "order")
                           for e in exch], dtype=object)
            price = numeric(df, "price", source, h)
            amount = numeric(df, "amount", source, h)
            if kind == "inverse":
                if not contract_value:
                    raise InputError("--kind inverse needs --contract-value (USD per contract)")
                notional = amount * float(contract_value)
                qty = notional / price
            else:
                qty = amount * float(contract_value or 1.0)
                notional = qty * price
            pieces.append((source, {"time": _times(df, source, h),
                                    "exchange": np.array([exchange_name(e) for e in exch], object),
                                    "symbol": syms, "side": order_side_to_position(df["side"], source, h),
                                    "price": price, "price_kind": pk, "qty": qty,
                                    "notional": notional}, h, n_in))
    if not pieces:
        raise InputError(f"{inputs[0]}: no liquidation events" + (f" of {symbol}" if symbol else ""))
    t = make_events(pieces, notes=["timestamps in µs", "side: sell -> long liquidated"])
    if other:
        t.dropped["other symbols (--symbol)"] = other
    return t
