"""The viewer's data: stores held in memory, reloaded when they change on disk, and what the
page asks of them (the heatmap at screen resolution, the cursor readout, the liquidation map,
the top levels).

No browser library is imported here: numpy, xarray, datashader and liqgpu's own rendering pieces
only, so everything the page shows can be checked without a browser.

Consistency with writers. ``liqgpu update`` builds a new store beside the old one and exchanges
the two directories atomically; a live recorder rewrites ``zarr.json`` when it grows the store.
A :class:`StoreData` reads the store's *stamp* (inode, mtime and size of the directory and of its
``zarr.json``) before and after loading everything it needs into memory, and keeps the result
only when the two stamps agree: a load that overlapped a swap or a write is thrown away and
retried, so the page never shows a half-written store, and no file stays open between loads.
"""

from __future__ import annotations

import logging
import os
import threading
import time as _time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..render.select import every_of  # noqa: F401 - re-exported for the page
from ..render.style import fmt_price  # noqa: F401

log = logging.getLogger(__name__)

VARIABLES = ("intensity", "liquidated", "realized")
PRICE_VARS = ("open", "high", "low", "close")
SIDE_MODES = ("both", "long", "short", "two hues")
HOWS = ("linear", "log", "eq_hist")
LOAD_TRIES = 5
CANDLE_MIN_PX = 5  # candles instead of the close line when a bucket is this wide on screen


def stamp(path: Path) -> tuple:
    """What changes when the store is replaced or rewritten: (inode, mtime, size) of the store
    directory and of its ``zarr.json`` (``None`` for one that is missing)."""
    out = []
    for p in (path, path / "zarr.json"):
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def tier_label(v) -> str:
    """A leverage coordinate as the page shows it: ``25x`` for a tier, the label of a band."""
    if isinstance(v, (float, int, np.floating, np.integer)):
        return f"{float(v):g}x"
    return str(v)


class StoreData:
    """One store named on the command line, held in memory and reloaded when it changes.

    Attributes
    ----------
    path : pathlib.Path
    name : str
        The store's name on the page (its file name).
    ds : xarray.Dataset or None
        The last good version, loaded (numpy, no open file); ``None`` until one loaded.
    error : str or None
        One sentence when the last load failed (the page shows it; ``ds`` keeps the last good
        version, if any).
    version : int
        Increases with every successful (re)load.
    """

    def __init__(self, path, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        self.ds = None
        self.error = None
        self.version = 0
        self._stamp = None
        self._lock = threading.Lock()
        self.load()

    # -- loading ----------------------------------------------------------------------------------
    def load(self) -> bool:
        """(Re)load the store if its stamp changed; True when a new version was loaded."""
        with self._lock:
            s = stamp(self.path)
            if s == self._stamp:
                return False
            for attempt in range(LOAD_TRIES):
                s0 = stamp(self.path)
                try:
                    ds = _read(self.path)
                except InputError as exc:
                    err = str(exc)
                except Exception as exc:  # noqa: BLE001 - any damage is a page message, not a crash
                    err = f"{self.path}: cannot read the store ({type(exc).__name__}: {exc})"
                else:
                    if stamp(self.path) == s0:
                        self.ds, self.error, self._stamp = ds, None, s0
                        self.version += 1
                        log.info("loaded %s (version %d): %s", self.path, self.version,
                                 ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
                        return True
                    err = f"{self.path}: the store changed while it was read"
                log.debug("load of %s failed (try %d): %s", self.path, attempt + 1, err)
                _time.sleep(0.2 * (attempt + 1))
                if stamp(self.path) == s0 and not err.endswith("while it was read"):
                    break  # a damaged store that nobody is writing: retrying will not help
            changed = err != self.error
            self.error, self._stamp = err, stamp(self.path)
            if changed:
                log.error("%s", err)
            return False

    def changed(self) -> bool:
        """Whether the store on disk differs from the loaded version (cheap: two stat calls)."""
        return stamp(self.path) != self._stamp


def _read(path: Path):
    """Open, check and load into memory the variables the viewer draws."""
    from ..render.select import open_dataset

    ds = open_dataset(path)
    keep = [v for v in VARIABLES + PRICE_VARS + ("price_edges",) if v in ds.variables]
    ds = ds[keep].load()
    e = np.asarray(ds["price_edges"].values, dtype=np.float64)
    if e.size != ds.sizes["price"] + 1 or not np.all(np.diff(e) > 0):
        raise InputError(f"{path}: damaged store (price_edges do not bound the price bins)")
    return ds


# -- the view -------------------------------------------------------------------------------------
@dataclass
class View:
    """What the user chose on the page."""

    series: str | None = None
    variable: str = "intensity"
    side: str = "both"
    tiers: tuple | None = None  # indices into ds.leverage; None: all
    how: str = "linear"
    log_axis: bool | None = None  # None: as the grid
    lookback: str | None = None


def numbered(ds):
    """``ds`` with the leverage coordinate replaced by its positions 0..K-1, so that the shared
    selection code works the same for numeric tiers and for band labels such as ``"2-10"``."""
    return ds.assign_coords(leverage=np.arange(ds.sizes["leverage"], dtype=np.float64))


def selection(ds, view: View, *, start=None, end=None, price_min=None, price_max=None,
              variable: str | None = None):
    """The shared :func:`liqgpu.render.select.select` for a view (leverage by position)."""
    from ..render.select import select

    side = "both" if view.side == "two hues" else view.side
    var = variable or view.variable
    tiers = None
    if var != "realized" and view.tiers is not None:
        if len(view.tiers) == 0:
            raise InputError("no leverage tier is selected; tick at least one")
        tiers = [float(i) for i in view.tiers]
    return select(numbered(ds), variable=var, series=view.series or None, side=side,
                  leverage=tiers, start=start, end=end, price_min=price_min, price_max=price_max,
                  lookback=view.lookback or None)


def time_bounds(ds) -> tuple[float, float]:
    """Start of the first bucket and end of the last, ms since the epoch."""
    from ..render.select import every_of

    t = ds["time"].values.astype("datetime64[ns]")
    every = every_of(ds)
    return float(t[0].astype(np.int64) / 1e6), float((t[-1] + every).astype(np.int64) / 1e6)


def default_range(ds, view: View) -> tuple[tuple[float, float], tuple[float, float]]:
    """The first view: the whole time range (or the lookback) and the price path's range."""
    from ..render.heatmap import price_view
    from ..render.raster import to_ms

    sel = selection(ds, view)
    lo, hi = price_view(sel, sel.prices())
    t_lo, t_hi = sel.time_range
    return (float(to_ms(t_lo)), float(to_ms(t_hi))), (lo, hi)


def _ms_to_time(ms: float) -> np.datetime64:
    return np.datetime64(int(round(ms * 1e6)), "ns")


def heatmap(ds, view: View, *, x_range, y_range, width: int, height: int) -> dict:
    """The heatmap of ``view`` over ``x_range`` (ms) x ``y_range`` (price) at width x height.

    The store is cut to the buckets and bins that overlap the ranges, the buckets are averaged
    into at most ``width`` columns and datashader resamples the (columns x bins) array onto the
    ``height`` pixel rows (:mod:`liqgpu.render.raster`, as the PNGs are made), then the pixels are
    shaded with the PNG's colour scales.

    Returns
    -------
    dict
        ``rgba`` (height, width, 4) uint8 (row 0 at the bottom), ``bounds`` (x0, y0, x1, y1) in
        ms and price, ``planes`` the pixel values per side group, ``norm`` (vmin, vmax),
        ``n_bins`` and ``n_buckets`` in the view, ``bin_label``, ``rows_per_bin`` and the
        close/ohlc of the buckets in view.
    """
    from ..render.heatmap import _side_cmap, _cmap, composite, make_norm, shade
    from ..render.raster import columns, rasterize

    width, height = max(int(width), 2), max(int(height), 2)
    t_lo, t_hi = time_bounds(ds)
    x0, x1 = max(float(x_range[0]), t_lo), min(float(x_range[1]), t_hi)
    if x1 <= x0:
        x0, x1 = t_lo, t_hi
    e = np.asarray(ds["price_edges"].values, dtype=np.float64)
    y0, y1 = max(float(y_range[0]), e[0]), min(float(y_range[1]), e[-1])
    if not (y1 > y0 > 0):
        y0, y1 = float(e[0]), float(e[-1])
    sel = selection(ds, view, start=_ms_to_time(x0), end=_ms_to_time(x1) if x1 < t_hi else None,
                    price_min=y0, price_max=y1)
    log_axis = sel.log_grid if view.log_axis is None else bool(view.log_axis)
    # the buckets that overlap the view may reach past it: their columns keep the view's scale
    t_sel = [float(v.astype("datetime64[ns]").astype(np.int64) / 1e6) for v in sel.time_range]
    n_cols = max(2, min(2 * width, int(round(width * (t_sel[1] - t_sel[0]) / (x1 - x0)))))
    cols = columns(sel, n_cols)
    split = view.side == "two hues"
    groups = [[0], [1]] if split else [list(range(len(sel.sides)))]
    # rows evenly spaced in the grid's space (what rasterize does), then mapped to the axis'
    grid_rows = rasterize_rows(height, y0, y1, sel.log_grid, log_axis)
    planes = [rasterize(cols, g, sel, width=n_cols, height=len(grid_rows.src),
                        y_range=(y0, y1))[grid_rows.index] for g in groups]
    # columns: the selection's buckets span [sel time range]; place them as an image of their own
    c_x0, c_x1 = cols.x0, cols.x0 + cols.dx * cols.data.shape[0]
    norm = make_norm(planes, view.how)
    cmaps = [_side_cmap("long"), _side_cmap("short")] if split else [_cmap("inferno")]
    rgba = composite([shade(p, norm, c) for p, c in zip(planes, cmaps)], planes)
    px = sel.prices()
    n_px = width * (sel.every / np.timedelta64(1, "ms")) / (x1 - x0)
    rows_per_bin = height / max(sel.n_price, 1) * (
        (np.log(sel.edges[-1] / sel.edges[0]) / np.log(y1 / y0)) if log_axis
        else (sel.edges[-1] - sel.edges[0]) / (y1 - y0))
    return {
        "rgba": rgba, "planes": planes, "bounds": (c_x0, y0, c_x1, y1),
        "norm": (float(norm.vmin), float(norm.vmax)), "how": view.how,
        "n_bins": sel.n_price, "n_buckets": sel.n_time, "bin_label": sel.bin_label(),
        "rows_per_bin": float(rows_per_bin), "bucket_px": float(n_px),
        "width": width, "height": height, "log_axis": log_axis, "sel": sel, "prices": px,
        "x_range": (x0, x1), "y_range": (y0, y1), "quote": sel.quote(),
    }


@dataclass
class _Rows:
    src: np.ndarray   # source rows (in grid space) to rasterize
    index: np.ndarray  # for each output row, the source row it shows


def rasterize_rows(height: int, y0: float, y1: float, log_grid: bool, log_axis: bool) -> _Rows:
    """Output rows evenly spaced on the axis; when the axis and the grid differ (a log grid on
    a linear axis or the reverse), each axis row takes the grid-space row under its centre (the
    grid-space raster has twice the rows so no bin is skipped)."""
    if log_grid == log_axis:
        idx = np.arange(height)
        return _Rows(src=idx, index=idx)
    n_src = 2 * height
    f = (np.arange(height) + 0.5) / height
    if log_axis:  # linear grid, log axis: the row centre's price, placed linearly
        y = y0 * (y1 / y0) ** f
        g = (y - y0) / (y1 - y0)
    else:  # log grid, linear axis
        y = y0 + (y1 - y0) * f
        g = np.log(y / y0) / np.log(y1 / y0)
    idx = np.clip((g * n_src).astype(np.int64), 0, n_src - 1)
    return _Rows(src=np.arange(n_src), index=idx)


def marks(sel, variable: str, *, width: int, height: int):
    """Realized (or estimated) liquidations in the view as dots: the shared
    :func:`liqgpu.render.raster.marks` at about 4 px x 5 px cells."""
    from ..render.raster import marks as _marks
    from ..render.select import Selection

    if variable not in sel.ds.variables:
        return None
    sub = Selection(**{**sel.__dict__, "variable": variable,
                       "leverages": list(np.asarray(sel.ds["leverage"].values))})
    m = _marks(sub, variable, n_cols=max(1, width // 4), n_rows=max(1, height // 5))
    return m if m.notional.size else None


def readout(ds, view: View, t_ms: float, price: float) -> dict | None:
    """The cell under the cursor: its bucket, price bin, long and short notional (summed over
    the selected series and tiers) and the dominant tiers or bands; ``None`` outside the store."""
    from ..render.levels import DOMINANT_SHARE

    times = ds["time"].values.astype("datetime64[ns]")
    sel = selection(ds, view)
    e = np.asarray(ds["price_edges"].values, dtype=np.float64)
    t = _ms_to_time(t_ms)
    i = int(np.searchsorted(times, t, side="right")) - 1
    j = int(np.searchsorted(e, price, side="right")) - 1
    if not (0 <= i < len(times)) or t >= times[-1] + sel.every or not (0 <= j < len(e) - 1):
        return None
    var = sel.variable
    da = sel.ds[var].isel(time=i, price=j).sel(series=sel.series)
    labels = [tier_label(v) for v in np.asarray(ds["leverage"].values)]
    out = {"time": str(np.datetime_as_string(times[i], unit="m")) + "Z",
           "time_end": str(np.datetime_as_string(times[i] + sel.every, unit="m")) + "Z",
           "bucket": i, "bin": j, "price_low": float(e[j]), "price_high": float(e[j + 1]),
           "variable": var, "quote": sel.quote()}
    if "leverage" in da.dims:
        da = da.sel(leverage=sel.leverages)
    a = np.nan_to_num(np.asarray(da.sum("series", dtype=np.float64)
                                 .transpose(*[d for d in ("leverage", "side") if d in da.dims])
                                 .values, dtype=np.float64))
    sides = [str(s) for s in np.asarray(sel.ds["side"].values)]
    for s in ("long", "short"):
        k = sides.index(s)
        col = a[..., k]
        out[s] = float(col.sum()) if s in sel.sides else None
    if a.ndim == 2:
        cell = a[:, [sides.index(s) for s in sel.sides]].sum(axis=1)
        tot = float(cell.sum())
        order = np.argsort(-cell, kind="stable")
        out["tiers"] = [(labels[int(sel.leverages[k])], float(cell[k] / tot))
                        for k in order if tot > 0 and cell[k] / tot >= DOMINANT_SHARE]
    else:
        out["tiers"] = []
    return out


def snapshot_time(ds, t_ms: float | None):
    """The time whose snapshot the map and the levels show: the cursor's, kept inside the store
    (``None``: the last bucket). Raises LookupError before the first snapshot (no look-ahead)."""
    from ..render.select import every_of

    if t_ms is None:
        return None
    at = _ms_to_time(t_ms)
    t = ds["time"].values.astype("datetime64[ns]")
    every = every_of(ds)
    if at < t[0] + every:
        raise LookupError("before the first snapshot")
    return min(at, t[-1] + every)


def profile(ds, view: View, t_ms: float | None):
    """The liquidation map at the cursor's time (the snapshot at the end of the last bucket that
    ended at or before it: no look-ahead): the shared :func:`liqgpu.render.levels.profile_at`.

    Returns ``(edges, longs, shorts, close, snapshot_iso)`` with longs and shorts summed over
    the selected series and tiers, or ``None`` before the first snapshot.
    """
    from ..render.levels import profile_at

    try:
        at = snapshot_time(ds, t_ms)
    except LookupError:
        return None
    tiers = None if view.tiers is None else [float(i) for i in view.tiers]
    sel, i, cube, close = profile_at(numbered(ds), at, series=view.series or None,
                                     leverage=tiers, lookback=view.lookback or None)
    sides = list(sel.sides)
    longs = cube[:, :, sides.index("long")].sum(axis=1)
    shorts = cube[:, :, sides.index("short")].sum(axis=1)
    end = ds["time"].values[i].astype("datetime64[ns]") + sel.every
    return sel.edges, longs, shorts, close, str(np.datetime_as_string(end, unit="m")) + "Z"


def top_levels(ds, view: View, t_ms: float | None, top: int = 10) -> list[dict]:
    """The strongest bands at the cursor's time (the shared
    :func:`liqgpu.render.levels.find_levels`), tiers named as the page names them."""
    from ..render.levels import find_levels

    try:
        at = snapshot_time(ds, t_ms)
    except LookupError:
        return []
    side = "both" if view.side == "two hues" else view.side
    tiers = None if view.tiers is None else [float(i) for i in view.tiers]
    labels = [tier_label(v) for v in np.asarray(ds["leverage"].values)]
    rows = find_levels(numbered(ds), at=at, top=top, series=view.series or None, side=side,
                       leverage=tiers, threshold=0.2, lookback=view.lookback or None)
    for r in rows:
        r["dominant"] = [labels[int(k)] for k in r["dominant"]]
        r["tiers"] = {labels[int(float(k))]: v for k, v in r["tiers"].items()}
    return rows
