"""The normalized series: one perpetual contract on one exchange at a fixed step (MODEL.md).

Input files (Parquet or CSV) -> :func:`load_series` -> a validated :class:`Series` whose bars sit
on a regular UTC grid of step Δ, with gaps as NaN rows. Every rule an input must meet is checked
here, and a failure is an :class:`~liqgpu.errors.InputError` that names the file, row and column.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from ._time import exact_iso
from .schema import KINDS

log = logging.getLogger(__name__)

REQUIRED = ("open", "high", "low", "close", "oi")
OPTIONAL = ("mark_high", "mark_low", "volume", "taker_buy_volume", "quote_volume")
PRICE_COLUMNS = ("open", "high", "low", "close", "mark_high", "mark_low")
MAX_ROWS = 50_000_000  # hard ceiling (memory), whatever --max-bars says
#: defaults of --max-bars and --max-gap: more bars per file, or a longer hole between two bars,
#: is refused as a probable wrong timestamp (raise them with the options)
DEFAULT_MAX_BARS = 10_000_000
DEFAULT_MAX_GAP = "90d"
#: the largest magnitude accepted in a numeric column: products of prices and OI stay finite
#: (in float32 cubes too) far beyond any real market
MAX_VALUE = 1e15
_NAME_OK = re.compile(r"[A-Za-z0-9_.\-/]+")
NS = np.timedelta64(1, "ns")


@dataclass(eq=False)
class Series:
    """A validated series on a regular grid.

    Attributes
    ----------
    time : ndarray of datetime64[ns]
        Bar open times, UTC, strictly increasing by exactly ``step``.
    step : numpy.timedelta64
        The model step Δ.
    columns : dict of str to ndarray of float64
        ``open, high, low, close, oi`` and any of ``mark_high, mark_low, volume,
        taker_buy_volume, quote_volume``; NaN where a bar is missing.
    exchange, symbol, kind, contract_size
        Metadata (MODEL.md, "A series").
    source : str
        Where the series came from (file name), for messages.
    """

    time: np.ndarray
    step: np.timedelta64
    columns: dict[str, np.ndarray]
    exchange: str = "synthetic"
    symbol: str = "BTCUSDT"
    kind: str = "linear"
    contract_size: float = 1.0
    source: str = "<memory>"
    n_gaps: int = 0
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"--kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        if not (math.isfinite(self.contract_size) and self.contract_size > 0):
            raise InputError(f"--contract-size: must be a number > 0, got {self.contract_size}")
        if not re.fullmatch(r"[A-Za-z0-9_.\-/]+", self.exchange or ""):
            raise InputError(f"--exchange: {self.exchange!r} must be letters, digits or _.-/")
        if not re.fullmatch(r"[A-Za-z0-9_.\-/]+", self.symbol or ""):
            raise InputError(f"--symbol: {self.symbol!r} must be letters, digits or _.-/")

    @property
    def name(self) -> str:
        """The series label used in datasets: ``exchange:symbol``."""
        return f"{self.exchange}:{self.symbol}"

    def __len__(self) -> int:
        return int(self.time.size)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.columns[key]

    def get(self, key: str):
        return self.columns.get(key)

    @property
    def has_mark(self) -> bool:
        return "mark_high" in self.columns and "mark_low" in self.columns

    def fingerprint(self) -> str:
        """SHA-256 of the bars and metadata (stable across runs)."""
        h = hashlib.sha256()
        h.update(f"{self.name}|{self.kind}|{self.contract_size!r}|{int(self.step / NS)}".encode())
        h.update(np.ascontiguousarray(self.time.astype("datetime64[ns]").view(np.int64)).tobytes())
        for k in sorted(self.columns):
            h.update(k.encode())
            h.update(np.ascontiguousarray(self.columns[k], dtype=np.float64).tobytes())
        return h.hexdigest()

    def slice(self, start: int, stop: int) -> "Series":
        """Bars [start, stop) as a new series (same metadata)."""
        return Series(
            self.time[start:stop].copy(),
            self.step,
            {k: v[start:stop].copy() for k, v in self.columns.items()},
            self.exchange,
            self.symbol,
            self.kind,
            self.contract_size,
            self.source,
        )


# ------------------------------------------------------------------------------------------------
def load_series(
    path: str | Path,
    *,
    exchange: str | None = None,
    symbol: str | None = None,
    kind: str | None = None,
    contract_size: float | None = None,
    step=None,
    max_bars: int | None = None,
    max_gap=None,
) -> Series:
    """Read and validate a normalized series file (Parquet or CSV).

    Parameters
    ----------
    path : str or Path
        ``.parquet``/``.pq`` or ``.csv`` (optionally ``.csv.gz``) with the columns of MODEL.md:
        ``time`` (UTC timestamps or epoch milliseconds), ``open, high, low, close, oi`` and
        optionally ``mark_high, mark_low, volume, taker_buy_volume, quote_volume``.
    exchange, symbol : str, optional
        Metadata; default from the file's ``exchange``/``symbol`` columns if present, else
        ``'unknown'`` and the file stem.
    kind : {'linear', 'inverse'}, optional
        Default from the file's ``kind`` column (``liqgpu ingest`` writes it), else linear.
    contract_size : float, optional
        Default from the file's ``contract_size`` column, else 1.
    step : str or timedelta, optional
        Model step; must be a whole multiple of the file's own step (bars are resampled).
    max_bars : int, optional
        Refuse a file that fills to more bars than this [default ``DEFAULT_MAX_BARS``].
    max_gap : str or timedelta, optional
        Refuse a hole between two bars longer than this (``'none'``: any)
        [default ``DEFAULT_MAX_GAP``].

    Returns
    -------
    Series

    Examples
    --------
    >>> s = load_series("btc.parquet", exchange="binance", symbol="BTCUSDT")  # doctest: +SKIP
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise InputError(f"{name}: no such file")
    if path.is_dir():
        raise InputError(f"{name}: is a folder, not a series file")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = _read_parquet(path)
        elif suffixes.endswith((".csv", ".csv.gz", ".txt")):
            if path.stat().st_size == 0:
                raise InputError(f"{name}: the file is empty")
            import pandas as pd

            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            if path.suffix.lower() != ".gz":
                from .io.tables import check_complete_rows

                check_complete_rows(path.read_bytes(), df.shape[1], name, 1)
        else:
            raise InputError(f"{name}: unknown file type; use .parquet or .csv")
    except InputError:
        raise
    except Exception as exc:  # parser errors of every kind become one sentence
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{name}: cannot read the file ({msg})") from None
    meta_exchange = _single_value(df, "exchange", name)
    meta_symbol = _single_value(df, "symbol", name)
    meta_kind = _single_value(df, "kind", name)
    meta_cs = _single_value(df, "contract_size", name)
    if contract_size is None and meta_cs is not None:
        try:
            contract_size = float(meta_cs)
        except ValueError:
            raise InputError(f"{name}: column 'contract_size' holds {meta_cs!r}, not a number") from None
    for col, v in (("exchange", meta_exchange), ("symbol", meta_symbol)):
        if v is not None and not _NAME_OK.fullmatch(v) and not (exchange if col == "exchange"
                                                                 else symbol):
            raise InputError(f"{name}: column '{col}' holds {v!r}; it must be letters, digits "
                             f"or _.-/ (or pass --{col})")
    return from_frame(
        df,
        exchange=exchange or meta_exchange or "unknown",
        symbol=symbol or meta_symbol or _name_from_file(path),
        max_bars=max_bars,
        max_gap=max_gap,
        kind=kind or meta_kind or "linear",
        contract_size=1.0 if contract_size is None else contract_size,
        step=step,
        source=name,
        header_lines=1 if suffixes.endswith((".csv", ".csv.gz", ".txt")) else 0,
    )


def _read_parquet(path: Path):
    """The columns of a Parquet file: read with pyarrow alone (no pandas import) into an
    :class:`_ArrowColumns` when the file is plain, else with ``pandas.read_parquet`` (a pandas
    index stored in the file, or a file pyarrow alone cannot read), as before."""
    try:
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path).read()
        meta = table.schema.pandas_metadata or {}
        plain = all(isinstance(ix, dict) for ix in meta.get("index_columns", []))
    except Exception:  # noqa: BLE001 - pandas reads it (or says why it cannot)
        plain = False
    if plain:
        return _ArrowColumns(table)
    import pandas as pd

    return pd.read_parquet(path)


class _ArrowColumns:
    """A pyarrow table with the little of the DataFrame interface :func:`from_frame` uses.

    Columns are pyarrow ChunkedArrays; :func:`parse_times`, :func:`_parse_numeric` and
    :func:`_single_value` read the plain types (timestamps, int64, float64, strings) with
    numpy and hand any other to pandas (``to_pandas``), so messages stay the same.
    """

    def __init__(self, table, names=None):
        self._table = table
        self.columns = list(table.column_names if names is None else names)

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def rename(self, columns: dict) -> "_ArrowColumns":
        return _ArrowColumns(self._table, [columns.get(c, c) for c in self.columns])

    def __getitem__(self, col):
        return self._table.column(self.columns.index(col))


def _is_arrow(values) -> bool:
    return type(values).__module__.startswith("pyarrow")


def _arrow_numbers(values) -> np.ndarray | None:
    """An int64/float64 column without nulls (float NaN allowed) as float64, else None."""
    import pyarrow as pa

    t = values.type
    if t == pa.float64():
        return _arrow_to_numpy(values, np.float64)
    if t == pa.int64() and not values.null_count:
        return _arrow_to_numpy(values, np.int64).astype(np.float64)
    return None


def _arrow_to_numpy(values, dtype) -> np.ndarray:
    """A fixed-width ChunkedArray as numpy, from its buffers (pyarrow's ``to_numpy`` imports
    pandas, its compute functions take 0.1 s to import); nulls become NaN (floats only)."""
    dtype = np.dtype(dtype)
    parts = []
    for c in values.chunks:
        validity, data = c.buffers()[:2]
        a = np.frombuffer(data, dtype=dtype, count=len(c), offset=c.offset * dtype.itemsize)
        if c.null_count:
            bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
            a = np.where(bits[c.offset:c.offset + len(c)].astype(bool), a, np.nan)
        parts.append(a)
    if not parts:
        return np.zeros(0, dtype)
    return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


def _name_from_file(path: Path) -> str:
    """The default symbol: the file name up to its first dot, with anything but letters,
    digits and _.-/ (spaces, non-ASCII letters) replaced by '_'."""
    stem = path.name.split(".")[0]
    clean = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).strip("_") or "unknown"
    return clean


def _single_value(df, col: str, name: str) -> str | None:
    if col not in df.columns:
        return None
    raw = df[col]
    if _is_arrow(raw):
        import pyarrow as pa

        if raw.type in (pa.string(), pa.large_string(), pa.int64(), pa.float64()):
            uniq = dict.fromkeys(raw.to_pylist())  # in order of appearance, as pandas
            vals = [v for v in dict.fromkeys(str(u) for u in uniq)
                    if v not in ("", "nan", "None")]
        else:
            vals = [v for v in raw.to_pandas().astype(str).unique()
                    if v not in ("", "nan", "None")]
    else:
        vals = [v for v in raw.astype(str).unique() if v not in ("", "nan", "None")]
    if len(vals) > 1:
        raise InputError(f"{name}: column '{col}' holds several values ({', '.join(vals[:3])}); "
                         "one file must hold one series")
    return vals[0] if vals else None


def _where(source: str, row: int, header_lines: int) -> str:
    """'file: row N' (1-based data row; plus the line number for text files)."""
    if header_lines:
        return f"{source}: row {row + 1} (line {row + 1 + header_lines})"
    return f"{source}: row {row + 1}"


def parse_times(values, source: str = "<memory>", header_lines: int = 0) -> np.ndarray:
    """Parse a time column (epoch milliseconds or timestamps) to UTC datetime64[ns]."""
    if _is_arrow(values):
        out = _arrow_times(values, source, header_lines)
        if out is not None:
            return out
        values = values.to_pandas()
    import pandas as pd

    s = pd.Series(values)
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        text = s.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if len(text) and numeric.notna().iloc[0]:  # epoch milliseconds: every row must be
            bad = np.flatnonzero(numeric.isna().to_numpy())
            if bad.size:
                i = int(bad[0])
                raise InputError(
                    f"{_where(source, i, header_lines)}, column 'time': cannot read "
                    f"{text.iloc[i]!r} as epoch milliseconds like the rows before it"
                )
            s = numeric
            return parse_times(s, source, header_lines)
        else:
            try:
                t = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
            except (ValueError, TypeError):
                t = pd.to_datetime(text, utc=True, format="mixed", errors="coerce")
            bad = np.flatnonzero(t.isna().to_numpy())
            if bad.size:
                i = int(bad[0])
                raise InputError(
                    f"{_where(source, i, header_lines)}, column 'time': cannot read "
                    f"{text.iloc[i]!r} as a UTC time or epoch milliseconds"
                )
            return t.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]")
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        out = s.to_numpy().astype("datetime64[ns]")
        bad = np.flatnonzero(np.isnat(out))
        if bad.size:
            raise InputError(f"{_where(source, int(bad[0]), header_lines)}, column 'time': missing time")
        return out
    if pd.api.types.is_numeric_dtype(s.dtype):
        return _epoch_times(s.to_numpy(dtype=np.float64), source, header_lines)
    raise InputError(f"{source}: column 'time' has unsupported type {s.dtype}")


def _arrow_times(values, source: str, header_lines: int) -> np.ndarray | None:
    """A pyarrow time column without nulls (timestamps, or int64/float64 epoch numbers) as
    UTC datetime64[ns]; None for any other (pandas reads those)."""
    import pyarrow as pa

    t = values.type
    if pa.types.is_timestamp(t) and not values.null_count:
        per = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[t.unit]
        raw = _arrow_to_numpy(values, np.int64)  # timestamps are int64 since the epoch
        if per > 1 and raw.size and max(abs(int(raw.min())), abs(int(raw.max()))) \
                >= np.iinfo(np.int64).max // per:
            return None  # beyond datetime64[ns]: as pandas handles it
        return (raw * per).view("datetime64[ns]")
    arr = _arrow_numbers(values)
    if arr is None:
        return None
    return _epoch_times(arr, source, header_lines)


def _epoch_times(arr: np.ndarray, source: str, header_lines: int) -> np.ndarray:
    """Epoch milliseconds (or seconds, recognized by their range) as datetime64[ns]."""
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0) | (arr != np.round(arr)))
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"{_where(source, i, header_lines)}, column 'time': {arr[i]!r} is not an epoch "
            "time in whole milliseconds"
        )
    if arr.size and arr.max() > 1e14:
        raise InputError(
            f"{source}: column 'time' looks like microseconds or nanoseconds "
            f"(largest {arr.max():.0f}); epoch times must be milliseconds"
        )
    if arr.size and arr.min() >= 1e9 and arr.max() < 1e11:
        # as milliseconds these would be Jan 1970 .. Mar 1973; as seconds, 2001 .. 5138
        log.info("%s: column 'time' holds epoch seconds (read as such)", source)
        return (arr.astype(np.int64) * 1_000_000_000).astype("datetime64[ns]")
    return (arr.astype(np.int64) * 1_000_000).astype("datetime64[ns]")


def _parse_numeric(df, col: str, source: str, header_lines: int) -> np.ndarray:
    raw = df[col]
    if _is_arrow(raw):
        arr = _arrow_numbers(raw)
        if arr is not None:
            return _check_finite(arr, col, source, header_lines)
        raw = raw.to_pandas()
    import pandas as pd

    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return _check_finite(raw.to_numpy(dtype=np.float64, na_value=np.nan), col, source,
                             header_lines)
    text = raw.astype(str).str.strip()
    num = pd.to_numeric(text, errors="coerce")
    empty = text.str.lower().isin(["", "nan", "na", "none", "null", "<na>"])
    bad = np.flatnonzero((num.isna() & ~empty).to_numpy())
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"{_where(source, i, header_lines)}, column '{col}': {text.iloc[i]!r} is not a number"
        )
    return _check_finite(num.to_numpy(dtype=np.float64, na_value=np.nan), col, source,
                         header_lines)


def _check_finite(v: np.ndarray, col: str, source: str, header_lines: int) -> np.ndarray:
    """Every number finite and within ``MAX_VALUE`` (1e308 OI would make inf notionals)."""
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(np.isinf(v) | (np.abs(v) > MAX_VALUE))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{_where(source, i, header_lines)}, column '{col}': {v[i]:g} is "
                         f"{'infinite' if np.isinf(v[i]) else f'beyond {MAX_VALUE:g}'} "
                         f"(a corrupt value?)")
    return v


def from_frame(
    df,
    *,
    exchange: str = "unknown",
    symbol: str = "unknown",
    kind: str = "linear",
    contract_size: float = 1.0,
    step=None,
    source: str = "<frame>",
    header_lines: int = 0,
    max_bars: int | None = None,
    max_gap=None,
) -> Series:
    """Validate a DataFrame with the normalized columns and build a :class:`Series`.

    Rows must be strictly increasing in time and on one step; missing bars become NaN rows.
    See :func:`load_series` for the columns.
    """
    from ._time import parse_duration

    cols = {}
    for c in df.columns:
        key = str(c).strip().lower()
        if key in cols:
            raise InputError(f"{source}: columns {str(cols[key])!r} and {str(c)!r} are the same "
                             f"column (names are case-insensitive); keep one")
        cols[key] = c
    missing = [c for c in ("time",) + REQUIRED if c not in cols]
    if missing:
        raise InputError(
            f"{source}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)}; a series needs time, open, high, low, close, oi"
        )
    df = df.rename(columns={v: k for k, v in cols.items()})
    n = len(df)
    if n == 0:
        raise InputError(f"{source}: no rows")
    if n == 1:
        raise InputError(f"{source}: only one row; a series needs at least two bars to set its step")
    time = parse_times(df["time"], source, header_lines)
    data: dict[str, np.ndarray] = {}
    for c in REQUIRED + OPTIONAL:
        if c in df.columns:
            data[c] = _parse_numeric(df, c, source, header_lines)
    if ("mark_high" in data) != ("mark_low" in data):
        raise InputError(f"{source}: give both 'mark_high' and 'mark_low', or neither")

    _check_values(time, data, source, header_lines)
    t_ns = time.view(np.int64)
    diffs = np.diff(t_ns)
    own = int(diffs.min())
    if bool((diffs % own != 0).any()) or _few_off_grid(t_ns, own, diffs):
        i, grid = _off_grid(t_ns)
        raise InputError(
            f"{_where(source, i, header_lines)}, column 'time': {exact_iso(time[i])}Z is "
            f"off the {_fmt_step(grid)} grid of the other rows"
        )
    step_ns = own
    if step is not None:
        td = parse_duration(step, option="--step")
        step_ns = int(round(td.total_seconds() * 1e9))
        if step_ns < own or step_ns % own != 0:
            raise InputError(
                f"--step {step}: must be a whole multiple of the input's own step ({_fmt_step(own)})"
            )
    _check_gaps(time, diffs, own, source, header_lines, max_gap)
    total = (t_ns[-1] - t_ns[0]) // own + 1
    limit = DEFAULT_MAX_BARS if max_bars is None else int(max_bars)
    if total > min(limit, MAX_ROWS):
        raise InputError(
            f"{source}: filling the gaps would make {total} bars of {_fmt_step(own)}; more than "
            + (f"--max-bars {limit} (is a timestamp wrong? pass --max-bars to accept more)"
               if limit < MAX_ROWS else f"{MAX_ROWS}, the most one file may hold")
        )
    # Regular grid at the input's own step, gaps as NaN rows.
    idx = (t_ns - t_ns[0]) // own
    full = {}
    for k, v in data.items():
        a = np.full(total, np.nan)
        a[idx] = v
        full[k] = a
    grid_t = (t_ns[0] + own * np.arange(total, dtype=np.int64)).view("datetime64[ns]")
    n_gaps = int(np.count_nonzero(diffs > own))
    if step_ns != own:
        grid_t, full = resample(grid_t, full, step_ns)
    series = Series(
        grid_t,
        np.timedelta64(step_ns, "ns"),
        full,
        exchange=str(exchange),
        symbol=str(symbol),
        kind=kind,
        contract_size=float(contract_size),
        source=source,
        n_gaps=n_gaps,
    )
    if n_gaps:
        log.info("%s: %d gap(s) filled with NaN bars", source, n_gaps)
    return series


def _few_off_grid(t_ns: np.ndarray, own: int, diffs: np.ndarray) -> bool:
    """Whether a few rows sit off the grid of the commonest step while the smallest difference
    ``own`` divides every difference (a bar shifted by half a step, or a minute into a 5-minute
    bar): taken as the step, ``own`` would fill the series with NaN bars and change the model
    step, silently. A step that many rows use is a real finer step with gaps: at most 1 % of
    the rows (and at least one) may be off, never more than 100."""
    if t_ns.size < 3 or int(diffs.max()) == own:  # one step throughout: the usual file
        return False
    steps, counts = np.unique(diffs, return_counts=True)
    common = int(steps[np.argmax(counts)])
    if common == own or common % own:
        return False
    phase = t_ns % common
    values, n = np.unique(phase, return_counts=True)
    off = t_ns.size - int(n.max())
    return 0 < off <= min(100, max(1, t_ns.size // 100))


def _off_grid(t_ns: np.ndarray) -> tuple[int, int]:
    """The first row off the series' grid, and the grid's step, for times (ns, increasing)
    that are not all on one grid: the step is the commonest difference between rows and the
    grid the commonest phase on it, so the row blamed is the one that moved (not a neighbour
    whose distance to it is the smallest difference)."""
    steps, counts = np.unique(np.diff(t_ns), return_counts=True)
    step = int(steps[np.argmax(counts)])  # (ties: the smallest)
    phase = t_ns % step
    values, counts = np.unique(phase, return_counts=True)
    off = np.flatnonzero(phase != values[np.argmax(counts)])
    return (int(off[0]) if off.size else 1), step


def max_gap_ns(max_gap=None) -> int | None:
    """``--max-gap`` in ns (None: no limit)."""
    from ._time import parse_duration

    raw = DEFAULT_MAX_GAP if max_gap is None else max_gap
    if isinstance(raw, str) and raw.strip().lower() in ("none", "off", "0"):
        return None
    return int(round(parse_duration(raw, option="--max-gap").total_seconds() * 1e9))


def _check_gaps(time, diffs, own: int, source: str, header_lines: int, max_gap) -> None:
    """Refuse a hole between two bars longer than ``max_gap`` (a wrong timestamp, usually:
    filling it would make millions of NaN bars)."""
    raw = DEFAULT_MAX_GAP if max_gap is None else max_gap
    limit = max_gap_ns(max_gap)
    if limit is None:
        return
    if diffs.size and int(diffs.max()) > limit:
        i = int(np.argmax(diffs)) + 1
        raise InputError(
            f"{_where(source, i, header_lines)}, column 'time': a gap of {_fmt_step(int(diffs[i - 1]))} "
            f"after {np.datetime_as_string(time[i - 1], unit='s')}Z is longer than --max-gap "
            f"{raw} (a wrong timestamp? pass --max-gap to accept it)")


def _fmt_step(ns: int) -> str:
    from datetime import timedelta

    from ._time import format_duration

    return format_duration(timedelta(microseconds=ns / 1000))


def _check_values(time: np.ndarray, data: dict, source: str, header_lines: int) -> None:
    t = time.view(np.int64)
    d = np.diff(t)
    bad = np.flatnonzero(d <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        what = "repeats" if d[i - 1] == 0 else "is before"
        raise InputError(
            f"{_where(source, i, header_lines)}, column 'time': {exact_iso(time[i])}Z "
            f"{what} the previous row's time; times must be strictly increasing"
        )

    def first(mask):
        idx = np.flatnonzero(mask)
        return int(idx[0]) if idx.size else None

    with np.errstate(invalid="ignore"):
        for c in PRICE_COLUMNS:
            if c in data:
                i = first(data[c] <= 0)
                if i is not None:
                    raise InputError(
                        f"{_where(source, i, header_lines)}, column '{c}': price {data[c][i]:g} "
                        "must be > 0"
                    )
        for hi, lo in (("high", "low"), ("mark_high", "mark_low")):
            if hi in data:
                i = first(data[hi] < data[lo])
                if i is not None:
                    raise InputError(
                        f"{_where(source, i, header_lines)}, column '{hi}': {hi} {data[hi][i]:g} is "
                        f"below {lo} {data[lo][i]:g}"
                    )
        for c in ("open", "close"):  # the bar's range holds its open and close
            for edge, outside in (("high", data["high"] < data[c]), ("low", data["low"] > data[c])):
                i = first(outside)
                if i is not None:
                    raise InputError(
                        f"{_where(source, i, header_lines)}, column '{edge}': {edge} "
                        f"{data[edge][i]:g} is {'below' if edge == 'high' else 'above'} "
                        f"{c} {data[c][i]:g}")
        for c in ("oi", "volume", "taker_buy_volume", "quote_volume"):
            if c in data:
                i = first(data[c] < 0)
                if i is not None:
                    raise InputError(
                        f"{_where(source, i, header_lines)}, column '{c}': {data[c][i]:g} is negative"
                    )
        for c, v in data.items():
            i = first(np.isinf(v))
            if i is not None:
                raise InputError(f"{_where(source, i, header_lines)}, column '{c}': value is infinite")
            i = first(np.abs(v) > MAX_VALUE)
            if i is not None:
                raise InputError(f"{_where(source, i, header_lines)}, column '{c}': {v[i]:g} is "
                                 f"beyond {MAX_VALUE:g} (a corrupt value?)")


def resample(time: np.ndarray, data: dict, step_ns: int):
    """Resample a regular series to a coarser step aligned to the epoch (MODEL.md rules):
    open=first, high=max, low=min, close=last, oi=last valid, volumes summed."""
    t = time.view(np.int64)
    key = t // step_ns
    k0, k1 = int(key[0]), int(key[-1])
    nb = k1 - k0 + 1
    pos = key - k0
    out_t = ((k0 + np.arange(nb, dtype=np.int64)) * step_ns).view("datetime64[ns]")
    out = {}
    for name, v in data.items():
        valid = np.isfinite(v)
        if name in ("open",):
            out[name] = _first_valid(pos, v, valid, nb, last=False)
        elif name in ("close", "oi"):
            out[name] = _first_valid(pos, v, valid, nb, last=True)
        elif name in ("high", "mark_high"):
            a = np.full(nb, -np.inf)
            np.maximum.at(a, pos[valid], v[valid])
            out[name] = np.where(np.isfinite(a), a, np.nan)
        elif name in ("low", "mark_low"):
            a = np.full(nb, np.inf)
            np.minimum.at(a, pos[valid], v[valid])
            out[name] = np.where(np.isfinite(a), a, np.nan)
        else:  # volumes
            s = np.bincount(pos[valid], weights=v[valid], minlength=nb)
            cnt = np.bincount(pos[valid], minlength=nb)
            out[name] = np.where(cnt > 0, s, np.nan)
    return out_t, out


def _first_valid(pos, v, valid, nb, *, last: bool):
    """First (or last) valid value of each bucket."""
    p, x = pos[valid], v[valid]
    order = np.arange(p.size)
    if last:
        pick = np.full(nb, -1, dtype=np.int64)
        np.maximum.at(pick, p, order)
    else:
        pick = np.full(nb, p.size, dtype=np.int64)
        np.minimum.at(pick, p, order)
    ok = (pick >= 0) & (pick < p.size)
    a = np.full(nb, np.nan)
    a[ok] = x[pick[ok]]
    return a
