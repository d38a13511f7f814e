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
import threading
import time as _time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..render.select import every_of
from ..render.style import fmt_price  # noqa: F401 - for the page

log = logging.getLogger(__name__)

VARIABLES = ("intensity", "liquidated", "realized")
PRICE_VARS = ("open", "high", "low", "close")
SIDE_MODES = ("both", "long", "short", "two hues")
HOWS = ("linear", "log", "eq_hist")
LOAD_TRIES = 5
CANDLE_MIN_PX = 5  # candles instead of the close line when a bucket is this wide on screen
PLANES_CACHED = 2  # selections (variable, series, tiers) whose planes a store keeps
PYRAMID_MIN = 256  # the coarsest time level keeps at least this many rows


def stamp(path: Path) -> tuple:
    """What changes when the store is replaced or rewritten (:func:`liqgpu.store.stamp`)."""
    from ..store.reader import stamp as store_stamp

    return store_stamp(path, "zarr.json")


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
        Increases with every load of a new version of the store on disk (a change of its
        stamp); reading one more variable of the same version (:meth:`dataset`) keeps it.
    """

    def __init__(self, path, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        self.ds = None
        self.error = None
        self.version = 0
        self.available = set()
        self._planes = {}
        self._stamp = None
        self._lock = threading.Lock()       # the state (ds, version, planes) swaps
        self._load_lock = threading.Lock()  # one load at a time
        self.load()

    # -- loading ----------------------------------------------------------------------------------
    def load(self) -> bool:
        """(Re)load the store if its stamp changed; True when a new version was loaded."""
        with self._load_lock:
            if stamp(self.path) == self._stamp:
                return False
            return self._load(ALWAYS)

    def load_in_background(self) -> bool:
        """Start :meth:`load` in a thread unless one is running (the pages keep answering
        while a large store is read); True when one was started."""
        if self._load_lock.locked():
            return False
        threading.Thread(target=self.load, name=f"load {self.name}", daemon=True).start()
        return True

    def _load(self, variables) -> bool:
        err = None
        for attempt in range(LOAD_TRIES):
            s0 = stamp(self.path)
            try:
                ds, available = _read(self.path, variables)
            except InputError as exc:
                err = str(exc)
            except Exception as exc:  # noqa: BLE001 - any damage is a page message, not a crash
                err = f"{self.path}: cannot read the store ({type(exc).__name__}: {exc})"
            else:
                if stamp(self.path) == s0:
                    with self._lock:
                        # another variable of the same store on disk is not a new version
                        new = self.ds is None or s0 != self._stamp
                        self.ds, self.available, self.error, self._stamp = (ds, available, None,
                                                                            s0)
                        if new:
                            self.version += 1
                        self._planes = {}
                    if new:
                        log.info("loaded %s (version %d): %s", self.path, self.version,
                                 ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
                    else:
                        log.info("read %s of %s (version %d)", variables[-1], self.path,
                                 self.version)
                    return new
                err = f"{self.path}: the store changed while it was read"
            log.debug("load of %s failed (try %d): %s", self.path, attempt + 1, err)
            _time.sleep(0.2 * (attempt + 1))
            if stamp(self.path) == s0 and not err.endswith("while it was read"):
                break  # a damaged store that nobody is writing: retrying will not help
        changed = err != self.error
        with self._lock:
            self.error, self._stamp = err, stamp(self.path)
        if changed:
            log.error("%s", err)
        return False

    def dataset(self, variable: str = "intensity"):
        """The loaded dataset with ``variable`` in it: ``liquidated`` (as large as ``intensity``)
        is read on first use, from the same version of the store (else everything is reloaded)."""
        ds = self.ds
        if ds is None or variable in ds.variables or variable not in self.available:
            return ds
        with self._load_lock:
            if variable not in self.ds.variables:
                self._load(tuple(self.ds.data_vars) + (variable,))
            return self.ds

    def view_data(self, view: "View"):
        """``(ds, planes)`` of one version of the store for ``view`` (the planes cached: a pan or
        a zoom reuses them; a change of variable, series or tiers builds new ones)."""
        ds = self.dataset(view.variable)
        key = (id(ds), view.variable, view.series, view.tiers)
        with self._lock:
            hit = self._planes.get(key)
        if hit is not None:
            return ds, hit
        planes = reduce_planes(ds, view)
        with self._lock:
            self._planes = {k: v for k, v in self._planes.items() if k[0] == id(self.ds)}
            while len(self._planes) >= PLANES_CACHED:
                self._planes.pop(next(iter(self._planes)))
            self._planes[key] = planes
        return ds, planes

    def changed(self) -> bool:
        """Whether the store on disk differs from the loaded version (cheap: two stat calls)."""
        return stamp(self.path) != self._stamp


ALWAYS = ("intensity", "realized") + PRICE_VARS + ("oi", "price_edges",)


def _read(path: Path, variables=ALWAYS):
    """Open and check the store, load ``variables`` (those it has) into memory; returns the
    dataset and the names of the variables the viewer could draw."""
    from ..render.select import open_dataset

    ds = open_dataset(path)
    available = {v for v in VARIABLES if v in ds.variables}
    keep = [v for v in dict.fromkeys(variables) if v in ds.variables]
    ds = ds[keep].load()
    e = np.asarray(ds["price_edges"].values, dtype=np.float64)
    if e.size != ds.sizes["price"] + 1 or not np.all(np.diff(e) > 0):
        raise InputError(f"{path}: damaged store (price_edges do not bound the price bins)")
    return ds, available


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


@dataclass
class Planes:
    """A view's cube summed over its series and tiers, per side, with a time pyramid.

    Attributes
    ----------
    levels : list of dict
        ``levels[L][side]`` for side ``long``, ``short`` and ``both``: a C-contiguous
        (n_price, ceil(n_time / 2**L)) float32 array, the mean of 2**L consecutive buckets (the
        last column: of those there are), NaN read as 0. Price-major so that datashader reads
        each pixel row's bins contiguously.
    """

    levels: list


def reduce_planes(ds, view: View) -> Planes:
    """Sum the selected series and tiers of ``view.variable`` (numpy, one pass per tier), then
    halve the time resolution level by level down to :data:`PYRAMID_MIN` columns."""
    sel = selection(ds, view)  # validates the series and tiers
    da = ds[sel.variable]
    has_lev = "leverage" in da.dims
    order = ["series", "time", "price"] + (["leverage"] if has_lev else []) + ["side"]
    arr = da.transpose(*order).values
    names = [str(x) for x in np.asarray(ds["series"].values)]
    sides = [str(x) for x in np.asarray(ds["side"].values)]
    acc = np.zeros((arr.shape[1], arr.shape[2], arr.shape[-1]), dtype=np.float32)
    tiers = [int(k) for k in sel.leverages] if has_lev else [None]

    def add(clean):
        for s_name in sel.series:
            i = names.index(s_name)
            for k in tiers:
                part = arr[i, :, :, k, :] if has_lev else arr[i]
                np.add(acc, np.nan_to_num(part, nan=0.0) if clean else part, out=acc)

    add(False)
    if np.isnan(acc).any():  # a NaN in one tier must not hide the others (as xarray's sum)
        acc[:] = 0
        add(True)
    base = {s: np.ascontiguousarray(acc[:, :, sides.index(s)].T) for s in ("long", "short")}
    base["both"] = base["long"] + base["short"]
    levels = [base]
    while levels[-1]["both"].shape[1] > 2 * PYRAMID_MIN:
        nxt = {}
        for k, x in levels[-1].items():
            n = x.shape[1] // 2 * 2
            y = x[:, :n:2] + x[:, 1:n:2]
            y *= 0.5
            if x.shape[1] % 2:
                y = np.concatenate([y, x[:, -1:]], axis=1)
            nxt[k] = np.ascontiguousarray(y)
        levels.append(nxt)
    return Planes(levels=levels)


@dataclass
class Cut:
    """The view's part of a plane: ``data`` (n_bins, n_cols), its first column's left edge
    ``x0`` and column width ``dx`` (ms), and the pyramid level it came from."""

    data: np.ndarray
    x0: float
    dx: float
    level: int

    @property
    def x1(self) -> float:
        return self.x0 + self.dx * self.data.shape[1]


def view_cut(planes: Planes, sel, width: int, side: str) -> Cut:
    """The view's buckets and bins of one side (``long``, ``short``, ``both``) from the coarsest
    pyramid level that still has at least one column per pixel column (a view, no copy)."""
    from ..render.raster import to_ms

    n_t = sel.n_time
    lvl = 0
    while lvl + 1 < len(planes.levels) and n_t / 2 ** (lvl + 1) >= width:
        lvl += 1
    f = 2 ** lvl
    r0, r1 = sel.t0 // f, -(-sel.t1 // f)
    data = planes.levels[lvl][side][sel.p0:sel.p1, r0:r1]
    x0 = float(to_ms(sel.ds["time"].values[r0 * f]))
    return Cut(data=data, x0=x0, dx=float(sel.every / np.timedelta64(1, "ms")) * f, level=lvl)


def rasterize(cut: Cut, sel, *, width: int, height: int, y_range) -> np.ndarray:
    """datashader's resampling of a cut onto (height, width) pixels (origin lower), as
    :func:`liqgpu.render.raster.rasterize` does for the PNGs: bins evenly spaced in the axis'
    space (log price for a log grid), each pixel the mean of what it covers or the one cell it
    lies in; NaN where there is no bin or no bucket."""
    import datashader as dsh
    import xarray as xr

    fwd = np.log10 if sel.log_grid else (lambda v: np.asarray(v, dtype=np.float64))
    e = fwd(sel.edges)
    data = cut.data
    n_p, n_x = data.shape
    ys = e[0] + (np.arange(n_p) + 0.5) * (e[-1] - e[0]) / n_p
    xs = cut.x0 + (np.arange(n_x) + 0.5) * cut.dx
    if n_p == 1:  # datashader needs two coordinates to infer a spacing
        data = np.concatenate([data, data], axis=0)
        ys = np.array([e[0] + (e[-1] - e[0]) * 0.25, e[0] + (e[-1] - e[0]) * 0.75])
    if n_x == 1:
        data = np.concatenate([data, data], axis=1)
        xs = np.array([cut.x0 + cut.dx * 0.25, cut.x0 + cut.dx * 0.75])
    da = xr.DataArray(data, coords={"y": ys, "x": xs}, dims=("y", "x"), name="v")
    y0, y1 = (float(fwd(v)) for v in y_range)
    cvs = dsh.Canvas(plot_width=int(width), plot_height=int(height), x_range=(cut.x0, cut.x1),
                     y_range=(y0, y1))
    agg = cvs.raster(da, upsample_method="nearest", downsample_method="mean")
    return np.asarray(agg.values, dtype=np.float32)


def heatmap(ds, view: View, *, x_range, y_range, width: int, height: int,
            planes: Planes | None = None) -> dict:
    """The heatmap of ``view`` over ``x_range`` (ms) x ``y_range`` (price) at width x height.

    The view's buckets and bins are cut from the planes (the cube summed over the selected
    series and tiers; a coarser time level when there are several buckets per pixel column) and
    datashader resamples them onto the pixel grid, averaging what falls in a pixel; the pixels
    are shaded with the PNG's colour scales (:mod:`liqgpu.render.heatmap`).

    Returns
    -------
    dict
        ``rgba`` (height, width, 4) uint8 (row 0 at the bottom), ``bounds`` (x0, y0, x1, y1) in
        ms and price, ``planes`` the pixel values per side group, ``norm`` (vmin, vmax),
        ``n_bins`` and ``n_buckets`` in the view, ``level`` (of the time pyramid),
        ``bin_label``, ``rows_per_bin`` and the selection.
    """
    from ..render.heatmap import _cmap, _side_cmap, composite, make_norm

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
    if planes is None:
        planes = reduce_planes(ds, view)
    log_axis = sel.log_grid if view.log_axis is None else bool(view.log_axis)
    split = view.side == "two hues"
    groups = ["long", "short"] if split else (["both"] if len(sel.sides) == 2 else sel.sides)
    cuts = [view_cut(planes, sel, width, g) for g in groups]
    # the columns cut from the planes may reach past the view: they keep the view's scale
    c_x0, c_x1 = cuts[0].x0, cuts[0].x1
    n_px = max(2, min(4 * width, int(round(width * (c_x1 - c_x0) / (x1 - x0)))))
    # rows evenly spaced in the grid's space (what rasterize does), then mapped to the axis'
    grid_rows = rasterize_rows(height, y0, y1, sel.log_grid, log_axis)
    planes_px = [rasterize(c, sel, width=n_px, height=len(grid_rows.src),
                           y_range=(y0, y1))[grid_rows.index] for c in cuts]
    norm = make_norm(planes_px, view.how)
    peak = max((float(np.nanmax(p, initial=0.0)) for p in planes_px), default=0.0)
    cmaps = [_side_cmap("long"), _side_cmap("short")] if split else [_cmap("inferno")]
    rgba = composite([shade(p, norm, c) for p, c in zip(planes_px, cmaps)], planes_px)
    bucket_px = width * (sel.every / np.timedelta64(1, "ms")) / (x1 - x0)
    rows_per_bin = height / max(sel.n_price, 1) * (
        (np.log(sel.edges[-1] / sel.edges[0]) / np.log(y1 / y0)) if log_axis
        else (sel.edges[-1] - sel.edges[0]) / (y1 - y0))
    return {
        "rgba": rgba, "planes": planes_px, "bounds": (c_x0, y0, c_x1, y1),
        "norm": (float(norm.vmin), float(norm.vmax)), "how": view.how,
        # the scale's top is a quantile of the pixels (linear, log): brighter ones are clipped
        "peak": peak, "clipped": bool(peak > float(norm.vmax) * (1 + 1e-6)),
        "n_bins": sel.n_price, "n_buckets": sel.n_time, "level": cuts[0].level,
        "bin_label": sel.bin_label(), "rows_per_bin": float(rows_per_bin),
        "bucket_px": float(bucket_px), "width": width, "height": height, "log_axis": log_axis,
        "sel": sel, "x_range": (x0, x1), "y_range": (y0, y1), "quote": sel.quote(),
        "no_oi": no_oi(sel),
        # the colour key: per hue, its name and colours from the scale's low end to its top
        "key": [(g if split else "", [_hex(c(x)) for x in np.linspace(0.0, 1.0, 9)])
                for g, c in zip(groups, cmaps)],
    }


NO_OI_LABEL = "no OI data: nothing opened or closed"  # as the PNG's legend names the hatching


def no_oi(sel) -> dict:
    """The buckets of a selection without open interest (no selected series had an OI value
    there, as :meth:`Selection.no_oi` and the PNG's hatching): the model opens and closes no
    position in them, so their bands stay as they were but for price crossings. For realized
    liquidations (events, not the model) there are none.

    Returns
    -------
    dict
        ``spans``: the runs of such buckets as (start, end) ms since the epoch; ``since``: where
        the selection's last bucket lies in such a run, the open of the run's first bucket (ISO
        text, the run may start before the selection) as ``liqgpu levels`` says it, else None;
        ``series``: per selected series without OI in the last bucket while others have it, the
        open of its gap (``{name: ISO text}``).
    """
    from ..render.levels import _no_oi_by_series, _no_oi_since, runs
    from ..render.raster import to_ms

    out = {"spans": [], "since": None, "series": {}}
    if sel.variable == "realized" or "oi" not in sel.ds.variables or sel.n_time == 0:
        return out
    gap = sel.no_oi()
    t = sel.times.astype("datetime64[ns]")
    ends = np.append(t[1:], t[-1] + sel.every)
    out["spans"] = [(float(to_ms(t[a])), float(to_ms(ends[b - 1]))) for a, b in runs(gap)]
    last = sel.t1 - 1
    out["since"] = _no_oi_since(sel.ds, sel, last)
    if out["since"] is None:
        out["series"] = _no_oi_by_series(sel.ds, sel, last)
    return out


def _hex(rgba) -> str:
    return "#" + "".join(f"{int(round(255 * v)):02x}" for v in rgba[:3])


LUT_SIZE = 1024


def shade(img: np.ndarray, norm, cmap) -> np.ndarray:
    """Pixels to colours as :func:`liqgpu.render.heatmap.shade` (the same norm and colour map,
    transparent where empty) through a 1024-colour lookup table: a few times faster than
    interpolating each channel, which matters on every pan and zoom."""
    with np.errstate(invalid="ignore", divide="ignore"):
        empty = ~(np.isfinite(img) & (img > 0))
        v = np.ma.getdata(norm(np.where(empty, np.float32(1.0), img).astype(np.float32)))
    v = np.clip(np.nan_to_num(np.asarray(v, dtype=np.float32), nan=0.0), 0.0, 1.0)
    lut = (np.asarray(cmap(np.linspace(0, 1, LUT_SIZE))) * 255 + 0.5).astype(np.uint8)
    lut[:, 3] = 255
    out = lut[(v * (LUT_SIZE - 1) + 0.5).astype(np.intp)]
    out[empty] = 0
    return out


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


def marks(planes: Planes, sel, *, width: int, height: int, max_marks: int = 4000):
    """Liquidations in the view as dots (placed as :func:`liqgpu.render.raster.marks` places
    them): summed into cells of about 4 px by 5 px, at the notional-weighted price of the cell,
    the ``max_marks`` largest kept; ``None`` when there are none."""
    from ..render.raster import cell_marks

    cuts = [view_cut(planes, sel, max(1, width // 4), s) for s in sel.sides]
    f = 2 ** cuts[0].level
    sums = np.stack([c.data.T * f for c in cuts], axis=2)  # (n_col, n_p, n_s)
    centres = cuts[0].x0 + (np.arange(sums.shape[0]) + 0.5) * cuts[0].dx
    m = cell_marks(sums, sel.centres, centres, n_rows=height // 5, max_marks=max_marks)
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
    from ..store.layout import snapshot_times

    end = snapshot_times(ds["time"].values[i:i + 1], sel.every, ds.attrs)[0]
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
                       leverage=tiers, lookback=view.lookback or None)
    for r in rows:
        r["dominant"] = [labels[int(k)] for k in r["dominant"]]
        r["tiers"] = {labels[int(float(k))]: v for k, v in r["tiers"].items()}
    return rows
