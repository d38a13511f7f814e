"""Pieces shared by the readers: epoch units, CSV/JSON parsing, series parts and reports.

A reader turns native files into a *table*: a pandas DataFrame with a ``time`` column (UTC,
tz-aware) and either series columns (``open, high, low, close, oi, mark_high, ...``; a *part*
when some are missing, e.g. only ``oi`` from an open-interest file) or the events columns of
:mod:`liqgpu.events`. Series tables carry the constant columns ``exchange, symbol, kind,
contract_size``; a part's ``time`` is the bar **open** time and ``oi`` the open interest at the
bar's close (an open-interest snapshot taken at T belongs to the bar that closes at T).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

SERIES_COLUMNS = ("open", "high", "low", "close", "oi", "mark_high", "mark_low", "volume",
                  "taker_buy_volume", "quote_volume")
META_COLUMNS = ("exchange", "symbol", "kind", "contract_size")
#: Plausible epoch range (2009-01-01 .. 2100-01-01) in ns, to catch a wrong unit or a bad number.
_T_MIN = np.datetime64("2009-01-01", "ns").astype(np.int64)
_T_MAX = np.datetime64("2100-01-01", "ns").astype(np.int64)


@dataclass
class Table:
    """What a reader returns.

    Attributes
    ----------
    frame : pandas.DataFrame
        The normalized rows (see the module docstring).
    kind : {'series', 'events'}
    files : list of str
        The files read.
    rows_in : int
        Data rows read from the files.
    dropped : dict of str to int
        Rows left out, by reason (never silently).
    notes : list of str
        Conventions applied (units, sides), for the report.
    """

    frame: object
    kind: str
    files: list = field(default_factory=list)
    rows_in: int = 0
    dropped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def where(source: str, row: int, header_lines: int = 0) -> str:
    """'file: row N (line M)' for 0-based data row ``row`` (the series module's wording)."""
    from ..series import _where

    return _where(source, row, header_lines)


def check_complete_rows(data: bytes, ncols: int, source: str, header_lines: int) -> None:
    """Refuse a row of the CSV bytes ``data`` with fewer fields than the file's ``ncols``
    columns (a download cut off mid-row, a broken line): pandas would pass it on with its
    missing fields empty, as a bar of missing values. Fields are counted by their commas, in
    files without quotes (where a quoted field may hold one, pandas' own reading stands);
    blank lines are skipped, as pandas skips them."""
    if ncols < 2 or b'"' in data:
        return
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if not buf.size:
        return
    if buf[-1] != 10:
        ends = np.append(ends, buf.size)
    starts = np.concatenate([[0], ends[:-1] + 1])
    length = ends - starts
    length = length - ((length > 0) & (buf[np.maximum(ends - 1, 0)] == 13))  # (\r\n)
    commas = np.flatnonzero(buf == 44)
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    rows = np.flatnonzero(length > 0)[header_lines:]  # the data rows, as pandas numbers them
    short = np.flatnonzero(fields[rows] < ncols)
    if short.size:
        i = int(short[0])
        raise InputError(f"{where(source, i, header_lines)}: {int(fields[rows[i]])} of {ncols} "
                         f"fields; the row is cut off (a truncated file?)")


# -- times ---------------------------------------------------------------------------------------
def epoch_to_ns(values, source: str, column: str, header_lines: int = 0) -> np.ndarray:
    """Epoch times in s, ms, µs or ns (each value by its magnitude), or text timestamps, to int64 ns.

    Binance Vision files hold milliseconds, some 2025 files microseconds; Tardis holds
    microseconds. Text without a zone is read as UTC.

    Examples
    --------
    >>> epoch_to_ns([1704067200000, 1704067200000000], "f", "time")  # doctest: +SKIP
    array([1704067200000000000, 1704067200000000000])
    """
    import pandas as pd

    s = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        out = s.to_numpy().astype("datetime64[ns]").view(np.int64)
        bad = np.flatnonzero(out == np.iinfo(np.int64).min)
        if bad.size:
            raise InputError(f"{where(source, int(bad[0]), header_lines)}, column '{column}': "
                             "missing time")
        return _check_range(out, source, column, header_lines)
    if not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        text = s.astype(str).str.strip()
        num = pd.to_numeric(text, errors="coerce")
        if len(text) and num.notna().all():
            s = num
        elif 2 * int(num.notna().sum()) > len(num):  # epoch numbers but for a few: those
            i = int(np.flatnonzero(num.isna().to_numpy())[0])
            raise InputError(f"{where(source, i, header_lines)}, column '{column}': cannot "
                             f"read {text.iloc[i]!r} as a time")
        else:
            t = pd.to_datetime(text, utc=True, format="mixed", errors="coerce")
            bad = np.flatnonzero(t.isna().to_numpy())
            if bad.size:
                i = int(bad[0])
                raise InputError(f"{where(source, i, header_lines)}, column '{column}': cannot "
                                 f"read {text.iloc[i]!r} as a time")
            out = t.dt.tz_localize(None).to_numpy().astype("datetime64[ns]").view(np.int64)
            return _check_range(out, source, column, header_lines)
    arr = s.to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{where(source, i, header_lines)}, column '{column}': {arr[i]!r} is not "
                         "an epoch time")
    # seconds < 1e11 (year 5138) <= milliseconds < 1e14 <= microseconds < 1e17 <= nanoseconds
    mult = np.select([arr < 1e11, arr < 1e14, arr < 1e17], [1e9, 1e6, 1e3], 1.0)
    out = np.round(arr * mult).astype(np.int64)
    if s.dtype.kind in "iu":  # exact for integers (float64 loses ns digits)
        ints = s.to_numpy(dtype=np.int64)
        out = ints * mult.astype(np.int64)
    return _check_range(out, source, column, header_lines)


def _check_range(ns: np.ndarray, source: str, column: str, header_lines: int) -> np.ndarray:
    bad = np.flatnonzero((ns < _T_MIN) | (ns > _T_MAX))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{where(source, i, header_lines)}, column '{column}': "
                         f"{np.datetime64(int(ns[i]), 'ns')} is outside 2009..2100 "
                         "(wrong epoch unit?)")
    return ns


def time_ns(col) -> np.ndarray:
    """A pandas time column (tz-aware or naive UTC) as int64 ns."""
    import pandas as pd

    s = pd.Series(col)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy().astype("datetime64[ns]").view(np.int64)


def to_utc(ns: np.ndarray):
    """int64 ns -> tz-aware UTC pandas DatetimeIndex-like Series values."""
    import pandas as pd

    return pd.to_datetime(np.asarray(ns, dtype=np.int64), unit="ns", utc=True)


def check_increasing(ns: np.ndarray, source: str, header_lines: int = 0,
                     column: str = "time", rows=None) -> np.ndarray:
    """Order of the rows: strictly increasing kept; strictly decreasing (an API's newest-first
    listing) reversed; anything else is an InputError naming the first bad row (``rows``:
    each row's row in the file, where rows were left out before).

    Returns the index array that puts the rows in increasing order.
    """
    n = ns.size
    d = np.diff(ns)
    if n < 2 or (d > 0).all():
        return np.arange(n)
    if (d < 0).all():
        return np.arange(n)[::-1]
    i = int(np.flatnonzero(d <= 0)[0]) + 1
    what = "repeats" if d[i - 1] == 0 else "is before"
    raise InputError(f"{where(source, i if rows is None else int(rows[i]), header_lines)}, "
                     f"column '{column}': {fmt_ns(ns[i])} {what} the previous row's time; "
                     "times must be strictly increasing")


def fmt_ns(ns) -> str:
    """int64 ns -> '2024-01-01T00:01:00Z' (fractions only when present)."""
    import pandas as pd

    return pd.Timestamp(int(ns)).isoformat() + "Z"


# -- parsing -------------------------------------------------------------------------------------
def numeric(df, col: str, source: str, header_lines: int = 0, *, required: bool = True):
    """Column ``col`` as float64; text that is not a number is an InputError naming the row."""

    if col not in df.columns:
        if not required:
            return None
        raise InputError(f"{source}: missing column '{col}' (columns: "
                         f"{', '.join(map(str, df.columns[:15]))})")
    from ..series import _parse_numeric

    return _parse_numeric(df, col, source, header_lines)


def first_field_is_number(data: bytes) -> bool:
    """True when the first line of a CSV starts with a number (no header row)."""
    line = data.lstrip().split(b"\n", 1)[0].decode("utf-8", "replace")
    first = line.split(",", 1)[0].strip().strip('"')
    try:
        float(first)
    except ValueError:
        return False
    return True


def read_csv(data: bytes, source: str, *, names=None, header: str = "auto"):
    """Parse CSV bytes to a DataFrame of strings.

    Parameters
    ----------
    names : sequence of str, optional
        Column names by position. With a header row present, the file must have exactly these
        many columns and they are renamed by position; without one (``header='auto'`` and a
        numeric first field) they name the columns.
    header : {'auto', 'yes'}

    Returns
    -------
    (DataFrame, int)
        The rows and the number of header lines (for messages).
    """
    import pandas as pd

    has_header = True
    if header == "auto" and names is not None:
        has_header = not first_field_is_number(data)
    try:
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False,
                         header=0 if has_header else None, skip_blank_lines=True)
    except Exception as exc:  # parser errors of every kind become one sentence
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{source}: cannot read the file as CSV ({msg})") from None
    check_complete_rows(data, df.shape[1], source, int(has_header))
    if names is not None:
        if df.shape[1] != len(names):
            raise InputError(f"{source}: {df.shape[1]} columns, expected {len(names)} "
                             f"({', '.join(names)})")
        df.columns = list(names)
    else:
        df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise InputError(f"{source}: no data rows")
    return df, int(has_header)


def read_json_records(data: bytes, source: str) -> list:
    """JSON lines, or one JSON document (an object or a list), as a list of objects."""
    text = data.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, list) else [doc]
    except json.JSONDecodeError:
        pass
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}: line {n} is not JSON ({exc.msg})") from None
    return out


def looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[")


def single_symbol(values, source: str, given: str | None) -> str | None:
    """The one symbol in a file's symbol column; several is an InputError."""
    import pandas as pd

    vals = [v for v in pd.unique(pd.Series(values).astype(str).str.strip()) if v not in ("", "nan")]
    if len(vals) > 1:
        raise InputError(f"{source}: mixed symbols in one file ({', '.join(vals[:4])}); "
                         "one series file must hold one symbol")
    if vals and given and vals[0].upper() != given.upper():
        raise InputError(f"{source}: holds {vals[0]}, not --symbol {given}")
    return vals[0] if vals else None


def oi_in_model_units(oi, price, *, oi_unit: str, kind: str, contract_value, source: str):
    """OI as the model reads it: base units for linear contracts, contracts for inverse ones
    (each worth ``contract_value`` in quote). ``price`` (close or mark) converts quote and base;
    None when the file has none."""
    cv = float(contract_value) if contract_value else None
    need_price = (oi_unit == "quote" and kind == "linear") or (oi_unit == "base" and kind == "inverse")
    if need_price and price is None:
        raise InputError(f"{source}: --oi-unit {oi_unit} on a {kind} contract needs a price "
                         "column (close) to convert OI")
    if kind == "linear":
        if oi_unit == "quote":
            return oi / price
        if oi_unit == "contracts":
            if cv is None:
                raise InputError("--oi-unit contracts on a linear contract needs "
                                 "--contract-value (base units per contract)")
            return oi * cv
        return oi
    if oi_unit == "contracts":
        return oi
    if cv is None:
        raise InputError(f"--oi-unit {oi_unit} on an inverse contract needs --contract-value "
                         "(quote value of one contract) to count contracts")
    return oi / cv if oi_unit == "quote" else oi * price / cv


def files_symbol(symbols, source: str, given: str | None) -> str | None:
    """The one symbol the files of one series hold (``given`` wins; each file was already
    checked against it by :func:`single_symbol`); several is an InputError."""
    if given:
        return given.upper()
    vals = sorted({str(s).strip().upper() for s in symbols if s and str(s).strip()})
    if len(vals) > 1:
        raise InputError(f"{source}: the files hold several symbols ({', '.join(vals[:4])}); "
                         "one series is one symbol: pass --symbol or fewer files")
    return vals[0] if vals else None


# -- series parts --------------------------------------------------------------------------------
def series_table(pieces: list, *, exchange: str, symbol: str, kind: str, contract_size: float,
                 notes=None, step_ns: int | None = None, time_column: str = "time") -> Table:
    """Join per-file pieces ``(source, ns, {col: values}, header_lines, rows_in)`` into one part
    (a sixth item, where rows were left out: each row's row in its file, for the messages).

    Each file's rows must be strictly increasing (or strictly decreasing, then reversed); rows
    repeated across files (overlapping downloads) keep the first file's row and are counted.
    ``step_ns``, when the format fixes it, is kept in ``frame.attrs['step_ns']`` (saved in the
    Parquet file) so that missing rows cannot make the step look coarser.
    """
    import pandas as pd

    frames = []
    rows_in = 0
    for source, ns, cols, header_lines, n_in, *rows in pieces:
        rows_in += n_in
        order = check_increasing(ns, source, header_lines, time_column, *rows)
        f = pd.DataFrame({k: np.asarray(v, dtype=np.float64)[order] for k, v in cols.items()})
        f.insert(0, "_t", ns[order])
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values("_t", kind="stable")
    dup = df["_t"].duplicated(keep="first")
    dropped = {}
    if dup.any():
        dropped["repeated in another file"] = int(dup.sum())
        df = df[~dup]
    df = df.reset_index(drop=True)
    t = df.pop("_t").to_numpy()
    df.insert(0, "time", to_utc(t))
    df["exchange"] = exchange
    df["symbol"] = symbol
    df["kind"] = kind
    df["contract_size"] = float(contract_size)
    if step_ns:
        df.attrs["step_ns"] = int(step_ns)
    return Table(df, "series", [p[0] for p in pieces], rows_in, dropped, list(notes or []))


def report(table: Table, out=None, fmt: str | None = None) -> dict:
    """A JSON-ready summary: rows, time range, step, gaps and dropped rows (series) or counts and
    notional by side (events)."""
    df = table.frame
    d = {"format": fmt, "out": str(out) if out else None, "kind": table.kind,
         "files": len(table.files), "rows_in": table.rows_in, "rows": int(len(df)),
         "dropped": dict(table.dropped), "notes": list(table.notes)}
    if len(df):
        d["time_start"] = df["time"].iloc[0].isoformat() if table.kind == "series" else \
            df["time"].min().isoformat()
        d["time_end"] = df["time"].iloc[-1].isoformat() if table.kind == "series" else \
            df["time"].max().isoformat()
    if table.kind == "series":
        d["exchange"], d["symbol"] = str(df["exchange"].iloc[0]), str(df["symbol"].iloc[0])
        d["columns"] = [c for c in SERIES_COLUMNS + ("oi_quote",) if c in df.columns]
        d.update(gap_summary(time_ns(df["time"]), df.attrs.get("step_ns")))
        d["nan_values"] = {c: int(np.isnan(df[c].to_numpy(dtype=float)).sum())
                           for c in d["columns"] if np.isnan(df[c].to_numpy(dtype=float)).any()}
    else:
        side = df["side"].astype(str)
        d["symbols"] = sorted(df["symbol"].astype(str).unique().tolist())
        d["count"] = {s: int((side == s).sum()) for s in ("long", "short", "unknown")}
        d["notional"] = {s: float(df.loc[side == s, "notional"].sum())
                         for s in ("long", "short", "unknown")}
    return d


def gap_summary(ns: np.ndarray, step_ns: int | None = None) -> dict:
    """Step (smallest spacing unless given), number of gaps and of missing bars."""
    from datetime import timedelta

    from .._time import format_duration

    if ns.size < 2:
        return {"step": None, "gaps": 0, "missing_bars": 0}
    d = np.diff(ns)
    step = int(step_ns or d.min())
    if step > 0 and bool((d % step).any()):  # not one grid: snapshots at irregular times
        return {"step": None, "gaps": None, "missing_bars": None, "irregular": True}
    big = d[d > step]
    first = []
    for i in np.flatnonzero(d > step)[:5]:
        first.append(f"{np.datetime_as_string(np.datetime64(int(ns[i]) + step, 'ns'), 's')}Z"
                     f"+{int(d[i] // step) - 1}")
    return {"step": format_duration(timedelta(microseconds=step / 1000)),
            "gaps": int(big.size), "missing_bars": int((big // step - 1).sum()),
            "first_gaps": first}


def format_report(d: dict) -> str:
    """The human report printed by ``liqgpu ingest``."""
    lines = [f"wrote {d['out']}: {d['rows']} {d['kind']} rows from {d['files']} file(s) "
             f"({d['rows_in']} read)"]
    if "time_start" in d:
        lines.append(f"time      {d['time_start']} .. {d['time_end']}")
    if d["kind"] == "series":
        if d.get("irregular"):
            lines.append(f"series    {d['exchange']}:{d['symbol']} at irregular times (no step),"
                         f" columns {', '.join(d['columns'])}")
            lines.append("gaps      - (a part of snapshots: `liqgpu ingest merge --step STEP` "
                         "places them on bars)")
        else:
            lines.append(f"series    {d['exchange']}:{d['symbol']} step {d['step']}, columns "
                         f"{', '.join(d['columns'])}")
            lines.append(f"gaps      {d['gaps']} gap(s), {d['missing_bars']} missing bar(s)"
                         + (f" (first: {', '.join(d['first_gaps'])})" if d.get("first_gaps")
                            else ""))
        for c, n in d.get("nan_values", {}).items():
            lines.append(f"nan       {c}: {n} bar(s)")
    else:
        lines.append(f"symbols   {', '.join(d['symbols'][:10])}"
                     + (" ..." if len(d["symbols"]) > 10 else ""))
        for s in ("long", "short", "unknown"):
            if d["count"][s]:
                lines.append(f"{s:<9} {d['count'][s]} events, notional {d['notional'][s]:,.2f}")
    lines.append("dropped   " + (", ".join(f"{n} {why}" for why, n in d["dropped"].items())
                                 if d["dropped"] else "none"))
    for n in d["notes"]:
        lines.append(f"note      {n}")
    return "\n".join(lines)


def shift_snapshots(pieces: list, step_ns: int | None = None) -> tuple[list, int]:
    """Move OI snapshots taken at T to the bar that closes at T (bar open T - step).

    ``pieces`` are series pieces ``(source, ns, cols, header_lines, rows_in)``; the step is the
    smallest spacing of all snapshots unless given. Returns the shifted pieces and the step.
    """
    if step_ns is None:
        allt = np.unique(np.concatenate([p[1] for p in pieces]))
        if allt.size < 2:
            raise InputError(f"{pieces[0][0]}: one snapshot only; cannot tell the OI step "
                             "(give more rows)")
        step_ns = int(np.diff(allt).min())
    return [(s, ns - step_ns, c, h, n) for s, ns, c, h, n in pieces], step_ns


def alias(df, names, source: str, what: str, required: bool = True):
    """The first of ``names`` that is a column of ``df`` (an InputError naming them if none)."""
    for n in names:
        if n in df.columns:
            return n
    if required:
        raise InputError(f"{source}: missing a {what} column (one of {', '.join(names)}); "
                         f"columns are {', '.join(map(str, list(df.columns)[:12]))}")
    return None
