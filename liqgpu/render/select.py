"""What to draw: the user's selection of a store (series, side, tiers, time, price, variable),
validated into one :class:`Selection` that the heatmap, the map and the levels share.

Every check raises :class:`~liqgpu.errors.InputError` with one sentence naming the option, so the
command line exits with code 2 before anything is written.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

VARIABLES = ("intensity", "liquidated", "realized")
SIDES = ("long", "short", "both")
REQUIRED = ("intensity", "close", "price_edges")
DOLLARS = {"USD", "USDT", "USDC", "BUSD", "FDUSD", "USDE", "TUSD", "DAI"}


def open_dataset(store):
    """A store path or an in-memory dataset, checked to have the liqgpu layout.

    Parameters
    ----------
    store : str, Path or xarray.Dataset

    Returns
    -------
    xarray.Dataset
        Opened lazily (dask) when ``store`` is a path.

    Examples
    --------
    >>> ds = open_dataset("demo.zarr")  # doctest: +SKIP
    """
    if isinstance(store, (str, Path)):
        from ..store import open_store

        ds = open_store(store)
        name = str(store)
    else:
        ds = store
        name = "the dataset"
    missing = [v for v in REQUIRED if v not in ds.variables]
    if missing or not {"series", "time", "price", "leverage", "side"} <= set(ds.dims):
        raise InputError(f"{name}: not a liqgpu dataset (missing {', '.join(missing) or 'dims'})")
    if ds.sizes["time"] < 1 or ds.sizes["price"] < 1:
        raise InputError(f"{name}: the store is empty (no time bucket or no price bin)")
    return ds


# -- parsing ------------------------------------------------------------------------------------
def parse_time(text, *, option: str) -> np.datetime64:
    """A UTC instant from ISO text (``2026-01-05``, ``2026-01-05T12:00``, ``...Z``, ``+00:00``).

    Examples
    --------
    >>> parse_time("2026-01-05T12:00Z", option="--at")
    numpy.datetime64('2026-01-05T12:00:00.000000000')
    """
    if isinstance(text, np.datetime64):
        return text.astype("datetime64[ns]")
    import pandas as pd

    try:
        ts = pd.Timestamp(str(text).strip())
    except (ValueError, TypeError):
        raise InputError(f"{option}: cannot read {text!r} as a time; use ISO 8601 such as "
                         "2026-01-05T12:00Z") from None
    if ts is pd.NaT:
        raise InputError(f"{option}: {text!r} is not a time")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.to_datetime64(), "ns")


def parse_leverages(value) -> tuple[float, ...] | None:
    """``'25,50'`` or a sequence of numbers -> a tuple of floats (``None`` stays ``None``)."""
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
        try:
            return tuple(float(p.strip().rstrip("xX")) for p in parts)
        except ValueError:
            raise InputError(f"--leverage: {value!r} must be numbers separated by commas "
                             "such as 25,50") from None
    return tuple(float(v) for v in value)


def leverage_cells(ds) -> list:
    """The store's ``leverage`` coordinate: tiers (floats, v1) or band labels (str, v2)."""
    vals = np.asarray(ds["leverage"].values)
    if vals.dtype.kind in "fiu":
        return [float(x) for x in vals]
    return [str(x) for x in vals]


def fmt_leverage(v) -> str:
    """``25x`` for a tier, ``2-10x`` for a band."""
    return f"{v:g}x" if isinstance(v, (float, int, np.floating)) else f"{v}x"


def choose_leverages(ds, leverage, *, name: str = "the store") -> list:
    """The leverage cells ``--leverage`` picks (all when it is empty).

    On tier stores (v1) it takes tiers (``25,50``); on band stores (v2) band labels (``10-25``)
    or leverages (``20`` picks the band holding 20x).
    """
    cells = leverage_cells(ds)
    if leverage is None or leverage == "" or leverage == ():
        return cells
    if cells and isinstance(cells[0], float):
        want = parse_leverages(leverage)
        bad = [w for w in want if not any(math.isclose(w, lv, rel_tol=1e-9) for lv in cells)]
        if bad:
            raise InputError(f"--leverage: {', '.join(f'{b:g}' for b in bad)} is not a tier of "
                             f"{name} (tiers: {', '.join(f'{lv:g}' for lv in cells)})")
        return [lv for lv in cells if any(math.isclose(w, lv, rel_tol=1e-9) for w in want)]
    tokens = [str(t).strip().rstrip("xX") for t in
              (leverage.split(",") if isinstance(leverage, str) else leverage) if str(t).strip()]
    lo = np.asarray(ds["leverage_lo"].values, dtype=np.float64)
    hi = np.asarray(ds["leverage_hi"].values, dtype=np.float64)
    picked = set()
    for tok in tokens:
        if tok in cells:
            picked.add(cells.index(tok))
            continue
        try:
            x = float(tok)
        except ValueError:
            x = math.nan
        hit = [j for j in range(len(cells)) if lo[j] <= x < hi[j]
               or (j == len(cells) - 1 and x == hi[j])]
        if not hit:
            raise InputError(f"--leverage: {tok!r} is neither a band of {name} nor a leverage "
                             f"inside one (bands: {', '.join(cells)})")
        picked.add(hit[0])
    return [cells[j] for j in sorted(picked)]


def parse_series(value) -> tuple[str, ...] | None:
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return tuple(str(v) for v in value)


def fmt_time(t) -> str:
    """``2026-01-05 12:00`` (UTC, minutes)."""
    return str(np.datetime_as_string(np.datetime64(t, "m"), unit="m")).replace("T", " ")


# -- the selection ------------------------------------------------------------------------------
@dataclass
class Selection:
    """A validated view of a store: index ranges and labels, nothing loaded yet.

    Attributes
    ----------
    ds : xarray.Dataset
        The store, lazily.
    variable : str
        ``intensity``, ``liquidated`` or ``realized``.
    series : list of str
        Selected series names.
    sides : list of str
        ``['long']``, ``['short']`` or ``['long', 'short']``.
    leverages : list of float
        Selected tiers (all for ``realized``, which has none).
    t0, t1 : int
        Time bucket index range ``[t0, t1)``.
    p0, p1 : int
        Price bin index range ``[p0, p1)``.
    every : numpy.timedelta64
        Bucket length.
    log_grid : bool
        Whether the bins are evenly spaced in log price.
    """

    ds: object
    variable: str
    series: list
    sides: list
    leverages: list
    t0: int
    t1: int
    p0: int
    p1: int
    every: np.timedelta64
    log_grid: bool
    lookback: timedelta | None = None
    meta: dict = field(default_factory=dict)

    # -- convenience ----------------------------------------------------------------------------
    @property
    def n_time(self) -> int:
        return self.t1 - self.t0

    @property
    def n_price(self) -> int:
        return self.p1 - self.p0

    @property
    def times(self) -> np.ndarray:
        return self.ds["time"].values[self.t0:self.t1].astype("datetime64[ns]")

    @property
    def edges(self) -> np.ndarray:
        return np.asarray(self.ds["price_edges"].values[self.p0:self.p1 + 1], dtype=np.float64)

    @property
    def centres(self) -> np.ndarray:
        return np.asarray(self.ds["price"].values[self.p0:self.p1], dtype=np.float64)

    @property
    def time_range(self) -> tuple[np.datetime64, np.datetime64]:
        """Start of the first bucket, end of the last (the close of the last bar, where the
        bars do not fill that bucket)."""
        from ..store.layout import data_end

        t = self.times
        end, last = t[-1] + self.every, data_end(self.ds.attrs)
        return t[0], (end if last is None else min(end, last.astype(end.dtype)))

    def cube(self, variable: str | None = None):
        """The selected variable, lazily, dims (series, time, price[, leverage], side)."""
        v = variable or self.variable
        if v not in self.ds.variables:
            raise InputError(f"--variable {v}: this store has no {v!r} variable")
        da = self.ds[v].isel(time=slice(self.t0, self.t1), price=slice(self.p0, self.p1))
        da = da.sel(series=self.series, side=self.sides)
        if "leverage" in da.dims:
            da = da.sel(leverage=self.leverages)
        return da

    def prices(self) -> dict:
        """open, high, low, close of the selected buckets (mean over the selected series)."""
        out = {}
        for v in ("open", "high", "low", "close"):
            if v not in self.ds.variables:
                out[v] = np.full(self.n_time, np.nan)
                continue
            a = self.ds[v].sel(series=self.series).isel(time=slice(self.t0, self.t1)).values
            a = np.asarray(a, dtype=np.float64)
            with np.errstate(invalid="ignore"), _quiet_nanmean():
                out[v] = np.nanmean(a, axis=0) if a.shape[0] > 1 else a[0]
        return out

    def no_oi(self) -> np.ndarray:
        """Per selected bucket: whether no selected series had an open-interest value in it
        (the model opens and closes no position there: its levels stay as they were, but for
        price crossings)."""
        if "oi" not in self.ds.variables:
            return np.zeros(self.n_time, dtype=bool)
        a = self.ds["oi"].sel(series=self.series).isel(time=slice(self.t0, self.t1)).values
        return np.isnan(np.asarray(a, dtype=np.float64)).all(axis=0)

    def symbols(self) -> list[str]:
        return _unique(self.meta.get("symbol", []))

    def exchanges(self) -> list[str]:
        return _unique(self.meta.get("exchange", []))

    def quote(self) -> str:
        """The quote currency read from the symbols (``BTCUSDT`` -> ``USDT``; ``USD`` when the
        selection sums dollar quotes such as USDT and USD), else ``quote``."""
        from ..assets import split_symbol

        found = {split_symbol(s)[1] for s in self.symbols()}
        if len(found) > 1 and found <= DOLLARS:
            return "USD"
        return found.pop() if len(found) == 1 else "quote"

    def assets(self) -> list[str]:
        """Base assets of the selected series (``['BTC']``)."""
        from ..assets import base_asset

        return _unique([base_asset(s) for s in self.symbols()])

    def title_names(self) -> str:
        """``BTCUSDT`` for one symbol; ``BTC (binance:BTCUSDT + okx:BTC-USDT-SWAP)`` for an asset
        summed over several series."""
        syms = self.symbols()
        if len(syms) <= 1:
            return ", ".join(syms) or ", ".join(self.series)
        return f"{', '.join(self.assets())} ({' + '.join(self.series)})"

    def bin_label(self) -> str:
        """``10 bps`` for a log grid, the step for a linear one."""
        e = self.edges
        if len(e) < 2:
            return "bin"
        if self.log_grid:
            return f"{(e[1] / e[0] - 1) * 1e4:.3g} bps bin"
        return f"{e[1] - e[0]:.6g} bin"


def _unique(seq) -> list[str]:
    out = []
    for s in seq:
        s = str(s)
        if s not in out:
            out.append(s)
    return out


class _quiet_nanmean:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def is_log_grid(ds) -> bool:
    """True when the bins are evenly spaced in log price (the default grid)."""
    spec = str(ds.attrs.get("grid", ""))
    if spec.startswith("log:"):
        return True
    if spec.startswith("linear:"):
        return False
    e = np.asarray(ds["price_edges"].values, dtype=np.float64)
    if len(e) < 3 or e[0] <= 0:
        return False
    r = np.diff(np.log(e))
    return bool(np.allclose(r, r[0], rtol=1e-6))


def every_of(ds) -> np.timedelta64:
    """The bucket length: from the ``every`` attribute, else the time spacing, else 1h."""
    from .._time import parse_duration

    try:
        td = parse_duration(ds.attrs.get("every"), option="every")
    except InputError:
        td = None
    if td is not None:
        return np.timedelta64(int(round(td.total_seconds() * 1e9)), "ns")
    t = ds["time"].values
    if len(t) > 1:
        return np.timedelta64(int(np.median(np.diff(t).astype("timedelta64[ns]").astype(np.int64))),
                              "ns")
    return np.timedelta64(3600 * 10**9, "ns")


def select(ds, *, variable: str = "intensity", series=None, side: str = "both", leverage=None,
           start=None, end=None, price_min=None, price_max=None, lookback=None,
           name: str = "the store", asset=None) -> Selection:
    """Validate a selection of ``ds`` (see :class:`Selection`).

    Parameters
    ----------
    ds : xarray.Dataset
        A liqgpu dataset (see :func:`open_dataset`).
    variable : {'intensity', 'liquidated', 'realized'}
    series : str or sequence of str, optional
        Series names (``exchange:symbol``), symbols or exchanges; default all. Series of one
        base asset are summed (in quote notional); several assets at once are refused.
    asset : str, optional
        A base asset (``BTC``): every series of it, across venues and contract kinds.
    side : {'long', 'short', 'both'}
    leverage : str or sequence of float, optional
        Tiers such as ``'25,50'``; default all.
    start, end : str or datetime64, optional
        UTC; buckets that overlap ``[start, end)`` are kept.
    price_min, price_max : float, optional
        Bins that overlap ``[price_min, price_max]`` are kept; default the whole grid.
    lookback : str or timedelta, optional
        Keep the last ``lookback`` of the range; the store's ``max_age`` must equal it (then
        intensity is exactly the levels of positions opened in that window).

    Returns
    -------
    Selection

    Examples
    --------
    >>> sel = select(ds, side="long", leverage="25,50", start="2026-01-03")  # doctest: +SKIP
    """
    if variable not in VARIABLES:
        raise InputError(f"--variable: {variable!r} is not one of {', '.join(VARIABLES)}")
    if variable not in ds.variables:
        hint = (" (it holds exchange-published liquidations; add them when estimating)"
                if variable == "realized" else "")
        raise InputError(f"--variable {variable}: {name} has no {variable!r} variable{hint}")
    if side not in SIDES:
        raise InputError(f"--side: {side!r} is not one of long, short, both")
    sides = ["long", "short"] if side == "both" else [side]

    names = [str(s) for s in ds["series"].values]
    meta = {}
    for k in ("exchange", "symbol"):
        if k in ds.coords:
            meta[k] = [str(x) for x in np.asarray(ds[k].values)]
    chosen = _pick_series(parse_series(series), names, meta)
    syms = dict(zip(names, meta.get("symbol", names)))
    from ..assets import base_asset

    if asset not in (None, ""):
        want = str(asset).strip().upper()
        held = sorted({base_asset(syms[n]) for n in names})
        chosen = [n for n in chosen if base_asset(syms[n]) == want]
        if not chosen:
            raise InputError(f"--asset {asset}: no selected series of {name} has that base asset "
                             f"(assets: {', '.join(held)})")
    bases = sorted({base_asset(syms[n]) for n in chosen})
    if len(bases) > 1:
        raise InputError(f"--series: the selection mixes assets ({', '.join(bases)}); pick one "
                         "with --asset (series of one asset are summed across venues)")
    if len({syms[n] for n in chosen}) > 1:
        log.info("summing %d series of %s: %s", len(chosen), bases[0], ", ".join(chosen))
    sub = {k: [v[names.index(s)] for s in chosen] for k, v in meta.items()}

    if leverage not in (None, "", ()) and variable == "realized":
        raise InputError("--leverage: realized liquidations have no leverage tier; drop --leverage")
    chosen_lev = choose_leverages(ds, leverage, name=name)

    times = ds["time"].values.astype("datetime64[ns]")
    every = every_of(ds)
    t_lo, t_hi = times[0], times[-1] + every
    span = f"{fmt_time(t_lo)} .. {fmt_time(t_hi)} UTC"
    t0, t1 = 0, len(times)
    s = e = None
    if start is not None:
        s = parse_time(start, option="--start")
    if end is not None:
        e = parse_time(end, option="--end")
    if s is not None and e is not None and e <= s:
        raise InputError(f"--start {start} / --end {end}: the end must come after the start")
    if (s is not None and s >= t_hi) or (e is not None and e <= t_lo):
        what = f"--start {start}" if s is not None and s >= t_hi else f"--end {end}"
        raise InputError(f"{what}: outside the store's time range {span}")
    # a window reaching past the store's ends is clipped to them (with a note)
    if s is not None and s < t_lo:
        log.warning("--start %s: before the store's first bucket; from %s UTC", start,
                    fmt_time(t_lo))
        s = t_lo
    if e is not None and e > t_hi:
        log.warning("--end %s: after the store's end; to %s UTC", end, fmt_time(t_hi))
        e = None
    if e is not None:
        t1 = int(np.searchsorted(times, e, side="left"))
    lb = None
    if lookback is not None:
        lb = check_lookback(ds, lookback)
        if s is None:  # the window shown: the last `lookback` before the end (or from --start)
            s = times[t1 - 1] + every - np.timedelta64(int(lb.total_seconds() * 1e9), "ns")
    if s is not None:
        t0 = max(0, int(np.searchsorted(times, s, side="right")) - 1)
    if t1 <= t0:
        raise InputError("--start/--end: the selection holds no time bucket")

    edges = np.asarray(ds["price_edges"].values, dtype=np.float64)
    p0, p1 = 0, len(edges) - 1
    for opt, val in (("--price-min", price_min), ("--price-max", price_max)):
        if val is not None and not (np.isfinite(val) and val > 0):
            raise InputError(f"{opt}: {val!r} must be a positive price")
    if price_min is not None and price_max is not None and price_max <= price_min:
        raise InputError(f"--price-min {price_min:g} / --price-max {price_max:g}: "
                         "the maximum must exceed the minimum")
    grid_span = f"{edges[0]:.6g} .. {edges[-1]:.6g}"
    if price_min is not None:
        if price_min >= edges[-1]:
            raise InputError(f"--price-min {price_min:g}: above the store's price grid {grid_span}")
        p0 = max(0, int(np.searchsorted(edges, price_min, side="right")) - 1)
    if price_max is not None:
        if price_max <= edges[0]:
            raise InputError(f"--price-max {price_max:g}: below the store's price grid {grid_span}")
        p1 = min(len(edges) - 1, int(np.searchsorted(edges, price_max, side="left")))
    if p1 <= p0:
        raise InputError("--price-min/--price-max: the selection holds no price bin")
    return Selection(ds=ds, variable=variable, series=chosen, sides=sides, leverages=chosen_lev,
                     t0=t0, t1=t1, p0=p0, p1=p1, every=every, log_grid=is_log_grid(ds),
                     lookback=lb, meta=sub)


def _pick_series(want, names: list[str], meta: dict) -> list[str]:
    if want is None:
        return names
    chosen = []
    for w in want:
        hits = [n for n in names if n == w]
        if not hits:  # a symbol or an exchange selects every series that has it
            for k in ("symbol", "exchange"):
                hits += [n for n, v in zip(names, meta.get(k, [])) if v.lower() == w.lower()]
        if not hits:
            raise InputError(f"--series: {w!r} is not in the store (series: {', '.join(names)})")
        chosen += [h for h in hits if h not in chosen]
    return [n for n in names if n in chosen]


def check_lookback(ds, lookback) -> timedelta:
    """The lookback as a timedelta, when the store was estimated with ``max_age`` equal to it.

    Raises
    ------
    InputError
        When the store's ``max_age`` differs: its intensity then holds positions of another age,
        and the window's levels need a new estimate.
    """
    from .._time import format_duration, parse_duration

    lb = parse_duration(lookback, option="--lookback")
    if lb is None:
        raise InputError("--lookback: give a duration such as 24h or 7d")
    try:
        age = parse_duration(ds.attrs.get("max_age", "none"), option="max_age")
    except InputError:
        age = None
    times = ds["time"].values.astype("datetime64[ns]")
    held = timedelta(seconds=float((times[-1] + every_of(ds) - times[0])
                                   / np.timedelta64(1, "s"))) if times.size else timedelta(0)
    text = str(lookback).strip() if isinstance(lookback, str) else format_duration(lb)
    if lb >= held and (age is None or age >= held):
        # every position of the store was opened within the lookback: its levels are those
        log.warning("--lookback %s: the store holds only %s of data, so its levels are those "
                    "of every position since its start", text, format_duration(held))
        return lb
    if age is None or abs(age.total_seconds() - lb.total_seconds()) > 1e-6:
        have = format_duration(age) if age is not None else "none"
        raise InputError(
            f"--lookback {text}: this store was estimated with max_age {have}, so its levels are "
            f"not those of positions opened in the last {text}; estimate a store for it with "
            f"`liqgpu estimate ... --max-age {text}` and render that one")
    return lb


def bucket_at(sel: Selection, at) -> int:
    """Index (into the store's time) of the latest bucket whose snapshot (taken at its end, or
    at the last bar's close for a last bucket the bars do not fill) is at or before ``at``: no
    look-ahead (default: the last bucket of the selection). ``at`` may lie up to one bucket
    after the last snapshot (the levels as last known)."""
    from ..store.layout import snapshot_times

    if at is None:
        return sel.t1 - 1
    t = parse_time(at, option="--at")
    ends = snapshot_times(sel.ds["time"].values, sel.every, sel.ds.attrs)
    lo, hi = ends[0], ends[-1]
    if not (lo <= t < hi + sel.every):
        raise InputError(f"--at {at}: outside the store's time range (snapshots "
                         f"{fmt_time(lo)} .. {fmt_time(hi)} UTC; --at may be up to "
                         f"{fmt_time(hi + sel.every)} UTC, excluded)")
    return int(np.searchsorted(ends, t, side="right")) - 1
