"""Any CSV or Parquet table with a column mapping: ``--map time=open_time_ms,oi=oi_usd,...``.

Fields: ``time`` (bar open time: epoch s/ms/µs/ns or text, UTC when no zone is given), the series
columns ``open, high, low, close, oi, mark_high, mark_low, volume, taker_buy_volume,
quote_volume``, ``oi_stale`` (rows where it is true/1 get OI = NaN: a forward-filled value is
not a measurement), and ``exchange``/``symbol`` (columns with one value). A field left out of the
map is read from the column of the same name when there is one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .archive import expand_inputs, read_members
from .tables import (SERIES_COLUMNS, epoch_to_ns, numeric, oi_in_model_units, read_csv,
                     series_table)

FIELDS = ("time",) + SERIES_COLUMNS + ("oi_stale", "exchange", "symbol")
OI_UNITS = ("base", "contracts", "quote")


def parse_map(text: str | None) -> dict:
    """``'time=open_time_ms,oi=oi_usd'`` -> ``{'time': 'open_time_ms', 'oi': 'oi_usd'}``.

    Examples
    --------
    >>> parse_map("time=ts, oi=oi_usd")
    {'time': 'ts', 'oi': 'oi_usd'}
    """
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise InputError(f"--map: {item.strip()!r} is not FIELD=COLUMN")
        k, v = (x.strip() for x in item.split("=", 1))
        if k not in FIELDS:
            raise InputError(f"--map: {k!r} is not a field ({', '.join(FIELDS)})")
        out[k] = v
    return out


def _read_frame(path: Path):
    import pandas as pd

    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return [(str(path), pd.read_parquet(path), 0)]
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InputError(f"{path}: cannot read the Parquet file ({type(exc).__name__})") from None
    return [(s, *read_csv(d, s)) for s, d in read_members(path)]


def only_rows(df, keep: np.ndarray):
    """``df`` with the rows outside ``keep`` holding the first kept row's values: parsed whole,
    the table then names the file's own rows in its errors, and the rows of other venues (left
    out after) are never read as numbers or times."""
    if keep.all():
        return df
    out = df.copy()
    out.loc[~keep] = df.loc[keep].iloc[[0] * int((~keep).sum())].to_numpy()
    return out


def _zoneless_text(values) -> str | None:
    """The first time of a text time column when it carries no zone (no Z, no offset), which
    liqgpu reads as UTC; None for epoch numbers and zoned text."""
    import re

    import pandas as pd

    s = pd.Series(values)
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
        return None
    first = next((str(v).strip() for v in s.head(20) if str(v).strip() not in ("", "nan")), "")
    if not first or re.fullmatch(r"[0-9.eE+-]+", first):
        return None
    return None if re.search(r"(Z|[+-]\d\d:?\d\d|UTC|GMT)$", first, re.I) else first


def read_generic(inputs, *, mapping=None, oi_unit="base", kind="linear", contract_value=None,
                 exchange=None, symbol=None, **_):
    """A mapped CSV/Parquet table -> a series (or part).

    Parameters
    ----------
    mapping : str or dict
        ``FIELD=COLUMN`` pairs (see the module docstring).
    oi_unit : {'base', 'contracts', 'quote'}
        Converted to what the model reads (:func:`liqgpu.io.tables.oi_in_model_units`): base
        units for linear contracts (quote / close; contracts x ``contract_value``), contracts
        for inverse ones (quote / ``contract_value``; base x close / ``contract_value``).
    kind : {'linear', 'inverse'}
    contract_value : float, optional
        Linear: base units per contract; inverse: quote value of one contract.

    Examples
    --------
    >>> t = read_generic(["btc_5m.csv"], mapping="time=open_time_ms,oi=oi_usd",
    ...                  oi_unit="quote")  # doctest: +SKIP
    """
    m = parse_map(mapping) if not isinstance(mapping, dict) else dict(mapping)
    if oi_unit not in OI_UNITS:
        raise InputError(f"--oi-unit: {oi_unit!r} is not one of {', '.join(OI_UNITS)}")
    if kind not in ("linear", "inverse"):
        raise InputError(f"--kind: {kind!r} is not linear or inverse")
    pieces, syms, exchs, stale_n, left_out, naive, held = [], set(), set(), 0, 0, None, {}
    for p in expand_inputs(inputs):
        for source, df, h in _read_frame(p):
            df.columns = [str(c).strip() for c in df.columns]
            for k, col in m.items():
                if col not in df.columns:
                    raise InputError(f"{source}: --map {k}={col}: no column {col!r} (columns: "
                                     f"{', '.join(list(df.columns)[:15])})")
            tcol = m.get("time", "time")
            if tcol not in df.columns:
                raise InputError(f"{source}: no 'time' column; map one with --map time=COLUMN")
            # a long table of several venues or symbols: the rows of --exchange / --symbol
            keep = np.ones(len(df), bool)
            for key, given in (("exchange", exchange), ("symbol", symbol)):
                c = m.get(key, key)
                if given and c in df.columns:
                    vals = df[c].astype(str).str.strip().str.upper()
                    keep &= (vals == given.upper()).to_numpy()
                    held.setdefault(key, set()).update(
                        df[c].astype(str).str.strip().unique()[:5])
            if not keep.any():
                left_out += len(df)
                continue
            df = only_rows(df, keep)  # (the others: values the kept rows parse as)
            ns = epoch_to_ns(df[tcol], source, tcol, h)
            naive = naive or _zoneless_text(df[tcol])
            cols = {}
            for f in SERIES_COLUMNS:
                c = m.get(f, f)
                if c in df.columns:
                    cols[f] = numeric(df, c, source, h)
            if not cols:
                raise InputError(f"{source}: no series column found (map some of "
                                 f"{', '.join(SERIES_COLUMNS)})")
            if "oi" in cols:
                oi = "oi"
                if oi_unit == "quote" and kind == "linear" and "close" not in cols:
                    # an OI part in quote notional without prices: `ingest merge` divides it
                    # by the close of the bar it lands on (from the price part)
                    oi = "oi_quote"
                    cols["oi_quote"] = cols.pop("oi")
                else:
                    cols["oi"] = oi_in_model_units(cols["oi"], cols.get("close"), oi_unit=oi_unit,
                                                   kind=kind, contract_value=contract_value,
                                                   source=source)
                sc = m.get("oi_stale", "oi_stale")
                if sc in df.columns:
                    st = df[sc].astype(str).str.strip().str.lower().isin(["1", "true", "yes"])
                    st = st.to_numpy()
                    stale_n += int(st[keep].sum())
                    cols[oi] = np.where(st, np.nan, cols[oi])
            for key, acc in (("symbol", syms), ("exchange", exchs)):
                c = m.get(key, key)
                if c in df.columns:
                    vals = df[c][keep].astype(str).str.strip()
                    several = sorted(v for v in vals.unique() if v not in ("", "nan"))
                    if len(several) > 1:
                        raise InputError(f"{source}: several {key}s in one file "
                                         f"({', '.join(several[:4])}); pick one with --{key}")
                    acc.add(several[0] if several else None)
            if keep.all():
                pieces.append((source, ns, cols, h, len(df)))
            else:
                left_out += int((~keep).sum())
                pieces.append((source, ns[keep], {k: v[keep] for k, v in cols.items()}, h,
                               len(df), np.flatnonzero(keep)))
    if not pieces:
        has = "; ".join(f"its {k} column holds {', '.join(sorted(v))}" for k, v in held.items())
        raise InputError(f"{', '.join(map(str, inputs))}: no rows of --exchange "
                         f"{exchange or '(any)'} --symbol {symbol or '(any)'} ({has}; to name "
                         f"the series otherwise, leave that column out of --map)")
    sym = symbol or next((s for s in syms if s), None)
    exch = exchange or next((s for s in exchs if s), None)
    for what, v in (("exchange", exch), ("symbol", sym)):
        if not v:  # as generic-events: the series' name is not guessed from a file name
            raise InputError(f"{pieces[0][0]}: no {what} column; pass --{what} (or map one "
                             f"with --map {what}=COLUMN)")
    if len({s for s in syms if s}) > 1 and not symbol:
        raise InputError(f"{pieces[0][0]}: the files hold several symbols ({', '.join(sorted(syms))})")
    cs = float(contract_value) if (kind == "inverse" and contract_value) else 1.0
    has_oi = any("oi" in p[2] for p in pieces)
    if any("oi_quote" in p[2] for p in pieces):
        notes = ["OI unit in file: quote, kept as oi_quote (no close column): an OI part; "
                 "`liqgpu ingest merge` divides it by the close of each bar from a price part"]
    else:
        notes = [f"OI unit in file: {oi_unit}" + (" (divided by close)" if oi_unit == "quote"
                                                 else "")
                 if has_oi else "no OI column mapped: a price part (merge it with an OI part)"]
    t = series_table(pieces, exchange=exch, symbol=sym, kind=kind, contract_size=cs, notes=notes)
    if left_out:
        t.dropped["other exchanges/symbols"] = left_out
    if naive:
        t.notes.append(f"times without a zone (e.g. {naive!r}) read as UTC")
    if stale_n:
        t.notes.append(f"{stale_n} bar(s) with a stale OI flag: OI set to NaN")
        t.dropped["OI values flagged stale (set to NaN)"] = stale_n
    return t


EVENT_FIELDS = ("time", "exchange", "symbol", "side", "price", "qty", "notional", "price_kind")


def read_generic_events(inputs, *, mapping=None, side_means="position", price_kind="order",
                        exchange=None, symbol=None, **_):
    """A mapped CSV/Parquet table of liquidation events -> events.

    Fields: ``time, exchange, symbol, side, price`` and ``notional`` or ``qty`` (the other is
    computed as qty x price), optionally ``price_kind`` (a column). ``side`` values are
    ``long/short/unknown`` (the liquidated position; ``side_means='position'``) or
    ``buy/sell`` (the liquidation order; ``side_means='order'``: sell liquidates a long).

    Examples
    --------
    >>> t = read_generic_events(["liqs.csv"], mapping="time=ts_ms,side=liquidated_position,"
    ...                         "notional=notional_usd", exchange="okx")  # doctest: +SKIP
    """
    from ..events import make_events, order_side_to_position
    from .tables import where

    m = {}
    for item in (mapping or "").split(","):
        if item.strip():
            if "=" not in item:
                raise InputError(f"--map: {item.strip()!r} is not FIELD=COLUMN")
            k, v = (x.strip() for x in item.split("=", 1))
            if k not in EVENT_FIELDS:
                raise InputError(f"--map: {k!r} is not an event field ({', '.join(EVENT_FIELDS)})")
            m[k] = v
    if side_means not in ("position", "order"):
        raise InputError(f"--side-means: {side_means!r} is not position or order")
    pieces, other = [], 0
    for p in expand_inputs(inputs):
        for source, df, h in _read_frame(p):
            df.columns = [str(c).strip() for c in df.columns]
            col = {f: m.get(f, f) for f in EVENT_FIELDS}
            for f in ("time", "side", "price"):
                if col[f] not in df.columns:
                    raise InputError(f"{source}: no {f!r} column; map one with --map {f}=COLUMN")
            n_in = len(df)
            if col["exchange"] in df.columns:
                ex = df[col["exchange"]].astype(str).str.strip().str.lower().to_numpy(dtype=object)
            elif exchange:
                ex = np.full(n_in, exchange, dtype=object)
            else:
                raise InputError(f"{source}: no exchange column; pass --exchange")
            if col["symbol"] in df.columns:
                sy = df[col["symbol"]].astype(str).str.strip().to_numpy(dtype=object)
            elif symbol:
                sy = np.full(n_in, symbol, dtype=object)
            else:
                raise InputError(f"{source}: no symbol column; pass --symbol")
            keep = np.ones(n_in, bool)
            if exchange and col["exchange"] in df.columns:
                keep &= ex == exchange.lower()
            if symbol and col["symbol"] in df.columns:
                keep &= np.char.upper(sy.astype(str)) == symbol.upper()
            # every column is read from the whole table and the rows kept after, so that an
            # error names the row of the file (the rows of other venues only as numbers/times)
            other += int((~keep).sum())
            if not keep.any():
                continue
            df = only_rows(df, keep)  # other venues' rows are not parsed (nor blamed)
            raw = df[col["side"]].astype(str).str.strip().str.lower()
            if side_means == "order":
                bad = np.flatnonzero(keep & ~raw.isin(["buy", "sell"]).to_numpy())
                if bad.size:
                    raise InputError(f"{where(source, int(bad[0]), h)}, column '{col['side']}': "
                                     f"{raw.iloc[bad[0]]!r} is not buy or sell")
                side = order_side_to_position(raw[keep], source, h)
            else:
                side = raw.to_numpy(dtype=object)
                bad = np.flatnonzero(keep & ~np.isin(side, ["long", "short", "unknown"]))
                if bad.size:
                    raise InputError(f"{where(source, int(bad[0]), h)}, column '{col['side']}': "
                                     f"{side[bad[0]]!r} is not long, short or unknown "
                                     "(use --side-means order for buy/sell)")
                side = side[keep]
            price = numeric(df, col["price"], source, h)[keep]
            qty = numeric(df, col["qty"], source, h, required=False)
            notional = numeric(df, col["notional"], source, h, required=False)
            if notional is None and qty is None:
                raise InputError(f"{source}: map a notional or a qty column")
            qty = None if qty is None else qty[keep]
            notional = qty * price if notional is None else notional[keep]
            if qty is None:
                qty = np.full(int(keep.sum()), np.nan)
            pk = (df[col["price_kind"]].astype(str).to_numpy(dtype=object)[keep]
                  if col["price_kind"] in df.columns else price_kind)
            ns = epoch_to_ns(df[col["time"]], source, col["time"], h)[keep]
            pieces.append((source, {"time": ns, "exchange": ex[keep], "symbol": sy[keep],
                                    "side": side, "price": price, "price_kind": pk, "qty": qty,
                                    "notional": notional, "rows": np.flatnonzero(keep)},
                           h, n_in))
    if not pieces:
        raise InputError(f"{inputs[0]}: no events left after --exchange/--symbol")
    t = make_events(pieces, notes=[f"side means the {side_means}", f"price kind: {price_kind}"])
    if other:
        t.dropped["other exchanges/symbols"] = other
    return t
