"""From a lazy (time x price) cube to pixels, one block of time at a time.

The store is read in blocks of buckets (a fixed memory budget, dask underneath), each block is
reduced over series and tiers, and buckets are averaged into pixel columns when there are more
buckets than columns. datashader then resamples the (columns x bins) array onto the pixel grid
in the axis' own space (log price for a log grid), so every pixel row receives the mean of the
bins it covers, or the one bin it lies in: no row is skipped, no row sums two bins where its
neighbour sums one (the horizontal stripes of a linear-price quadmesh over log bins). On the
device (``render --backend cupy``) :mod:`liqgpu.render.resample` gives the same pixels in array
code on CuPy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .select import Selection

log = logging.getLogger(__name__)

BLOCK_BYTES = 192 * 2**20  # cube bytes read per block


@dataclass
class Columns:
    """Buckets averaged into columns.

    Attributes
    ----------
    data : ndarray, shape (n_col, n_price, n_side)
        Mean over the buckets of each column (float32); NaN where a column has no bucket.
    sums : ndarray, same shape
        Sums over the buckets of each column (for marks sized by notional).
    x0, dx : float
        The first column's left edge and the column width, in ms since the epoch.
    merged : bool
        Whether buckets were merged (more buckets than columns).
    """

    data: np.ndarray
    sums: np.ndarray
    x0: float
    dx: float
    merged: bool

    @property
    def centres(self) -> np.ndarray:
        return self.x0 + (np.arange(self.data.shape[0]) + 0.5) * self.dx


def render_backend(backend: str = "auto"):
    """``(name, xp)`` for ``render --backend``: ``auto`` is CuPy when a GPU is usable, else
    numpy. The device render needs CuPy alone (its resampling is liqgpu's own array code,
    :mod:`liqgpu.render.resample`; datashader's CUDA path would need cudf).

    Raises
    ------
    BackendUnavailable
        ``cupy`` asked for where CuPy or a CUDA device is missing (one sentence; the CLI exits
        with code 2).
    """
    from ..backend import BACKENDS, gpu_available, resolve
    from ..errors import BackendUnavailable

    if backend not in BACKENDS:
        from ..errors import InputError

        raise InputError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "numpy" or (backend == "auto" and not gpu_available()):
        return "numpy", np
    try:
        return resolve("cupy")
    except BackendUnavailable:
        if backend == "auto":
            return "numpy", np
        raise


def to_ms(t) -> np.ndarray:
    """datetime64 -> float ms since the epoch."""
    return np.asarray(t, dtype="datetime64[ns]").astype(np.int64) / 1e6


def iter_blocks(sel: Selection, variable: str | None = None, *, block_bytes: int = BLOCK_BYTES,
                xp=np):
    """Yield ``(i0, i1, block)`` with ``block`` the selected cube of buckets ``[i0, i1)`` (offsets
    into the selection), summed over series and tiers: shape (i1 - i0, n_price, n_side), float64.

    With ``xp`` CuPy (``render --backend cupy``) the block is read on the host as stored
    (float32), copied to the device and summed there; NaN counts as 0 either way.
    """
    da = sel.cube(variable)
    reduce = [d for d in ("series", "leverage") if d in da.dims]
    per_bucket = 4 * int(np.prod([da.sizes[d] for d in da.dims if d != "time"]))
    step = max(1, block_bytes // max(per_bucket, 1))
    n = da.sizes["time"]
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        if xp is not np:
            raw = da.isel(time=slice(i0, i1)).transpose("time", "price", "side", *reduce).values
            dev = xp.asarray(raw)
            axes = tuple(range(3, 3 + len(reduce)))
            arr = xp.nansum(dev, axis=axes, dtype=xp.float64) if axes else \
                xp.nan_to_num(dev.astype(xp.float64), nan=0.0)
            yield i0, i1, arr
            continue
        part = da.isel(time=slice(i0, i1)).sum(reduce, dtype=np.float64)
        arr = np.asarray(part.transpose("time", "price", "side").values, dtype=np.float64)
        np.nan_to_num(arr, copy=False, nan=0.0)
        yield i0, i1, arr


def columns(sel: Selection, n_cols: int, variable: str | None = None, *,
            block_bytes: int = BLOCK_BYTES, xp=np) -> Columns:
    """Average the selection's buckets into at most ``n_cols`` pixel columns.

    With no more buckets than columns, each bucket stays its own column (datashader widens it
    later); with more, bucket ``i`` (its centre) goes to the column under it and each column is
    the mean of its buckets.

    Examples
    --------
    >>> c = columns(sel, 1600)  # doctest: +SKIP
    >>> c.data.shape  # doctest: +SKIP
    (1600, 702, 2)

    With ``xp`` CuPy the sums are made on the device (float64, cast to float32 at the end) and
    ``data`` and ``sums`` stay there (see :func:`columns_device`).
    """
    if xp is not np:
        return columns_device(sel, n_cols, variable, block_bytes=block_bytes, xp=xp)
    t_lo, dx, merged, col_of, counts, n_out = _column_plan(sel, n_cols)
    sums = np.zeros((n_out, sel.n_price, len(sel.sides)), dtype=np.float32)
    for i0, i1, arr in iter_blocks(sel, variable, block_bytes=block_bytes):
        if not merged:
            sums[i0:i1] = arr
            continue
        c = col_of[i0:i1]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        sums[c[starts]] += np.add.reduceat(arr, starts, axis=0)
    if merged:
        with np.errstate(invalid="ignore", divide="ignore"):
            data = (sums / counts[:, None, None]).astype(np.float32)
        data[counts == 0] = np.nan
    else:
        data = sums
    return Columns(data=data, sums=sums, x0=t_lo, dx=dx, merged=merged)


def _column_plan(sel: Selection, n_cols: int):
    """``(x0, dx, merged, col_of, counts, n_out)``: buckets merged into ``n_cols`` columns (the
    column of each bucket and how many buckets each holds) when there are more buckets than
    columns, else one column per bucket."""
    t_lo, t_hi = (to_ms(t) for t in sel.time_range)
    n_t = sel.n_time
    if n_t <= n_cols:
        return t_lo, (t_hi - t_lo) / n_t, False, None, None, n_t
    dx = (t_hi - t_lo) / n_cols
    centres = to_ms(sel.times) + (sel.every / np.timedelta64(1, "ms")) / 2
    col_of = np.clip(((centres - t_lo) // dx).astype(np.int64), 0, n_cols - 1)
    counts = np.zeros(n_cols)
    np.add.at(counts, col_of, 1)
    return t_lo, dx, True, col_of, counts, n_cols


def columns_device(sel: Selection, n_cols: int, variable: str | None = None, *,
                   block_bytes: int = BLOCK_BYTES, xp) -> Columns:
    """:func:`columns` on a device array namespace (CuPy): the blocks are summed over series and
    tiers on the device and scattered into their columns there (float64 accumulators)."""
    t_lo, dx, merged, col_of, counts, n_out = _column_plan(sel, n_cols)
    sums = xp.zeros((n_out, sel.n_price, len(sel.sides)), dtype=xp.float64)
    for i0, i1, arr in iter_blocks(sel, variable, block_bytes=block_bytes, xp=xp):
        if not merged:
            sums[i0:i1] = arr
            continue
        _scatter_add(sums, xp.asarray(col_of[i0:i1]), arr, xp)
    if merged:
        cnt = xp.asarray(counts)[:, None, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            data = (sums / cnt).astype(xp.float32)
        data[xp.asarray(counts == 0)] = xp.nan
    else:
        data = sums.astype(xp.float32)
    return Columns(data=data, sums=sums.astype(xp.float32), x0=t_lo, dx=dx, merged=merged)


def _scatter_add(target, index, values, xp) -> None:
    """``target[index[i]] += values[i]`` along the first axis, repeated indices summed."""
    if xp is np:
        np.add.at(target, index, values)
        return
    import cupyx

    cupyx.scatter_add(target, index, values)


def _grid_coords(n_x: int, n_y: int, cols: Columns, sel: Selection, fwd):
    """Cell centres of the grid datashader sees, in axis space, and the x range.

    Returns ``(xs, ys, x_range, x_src, y_src)``: ``xs``/``ys`` the centres (an axis of one cell
    is split in two halves, datashader needs two coordinates to infer a spacing), ``x_src`` and
    ``y_src`` the data cell under each of those coordinates.
    """
    e = fwd(sel.edges)
    # even spacing in axis space: centres of the bins in that space, not the stored centres
    ys = e[0] + (np.arange(n_y) + 0.5) * (e[-1] - e[0]) / n_y
    xs = cols.x0 + (np.arange(n_x) + 0.5) * cols.dx
    x_range = (cols.x0, cols.x0 + cols.dx * n_x)
    x_src, y_src = np.arange(n_x), np.arange(n_y)
    if n_y == 1:
        ys = np.array([e[0] + (e[-1] - e[0]) * 0.25, e[0] + (e[-1] - e[0]) * 0.75])
        y_src = np.zeros(2, dtype=np.int64)
    if n_x == 1:
        xs = np.array([cols.x0 + cols.dx * 0.25, cols.x0 + cols.dx * 0.75])
        x_src = np.zeros(2, dtype=np.int64)
    return xs, ys, x_range, x_src, y_src


def _grid_array(data, cols: Columns, sel: Selection, fwd):
    """The (price x column) xarray DataArray that datashader resamples, with its axis ranges."""
    import xarray as xr

    n_x, n_p = data.shape[0], data.shape[1]
    xs, ys, x_range, x_src, y_src = _grid_coords(n_x, n_p, cols, sel, fwd)
    v = data.T
    if n_p == 1 or n_x == 1:
        v = v[np.ix_(y_src, x_src)]
    da = xr.DataArray(v, coords={"y": ys, "x": xs}, dims=("y", "x"), name="v")
    return da, x_range


def rasterize_device(cols: Columns, side_index, sel: Selection, *, width: int, height: int,
                     y_range: tuple[float, float], xp) -> np.ndarray:
    """:func:`rasterize` for columns on the device, in liqgpu's own array code on ``xp``
    (CuPy or numpy; see :mod:`liqgpu.render.resample`): the same pixels as datashader's
    ``Canvas.raster(upsample_method="nearest", downsample_method="mean")``, which has no CuPy
    path (and datashader's CuPy aggregations need RAPIDS cudf).

    Each pixel is the area-weighted mean of the finite cells it covers (a cell a pixel partly
    covers weighs by the covered fraction), or the cell under its low edge when cells are wider
    than pixels; datashader's window (cropping to whole cells, padding the canvas beyond the
    data with NaN) is followed to the pixel. The cells and pixels are planned per axis on the
    host; the grid is summed over sides, gathered and weighted on the device and the image
    copied back once.

    Returns
    -------
    ndarray (height, width), float32 on the host; NaN where there is no bin or no bucket.
    """
    from .resample import axis_plan, resample

    idx = np.atleast_1d(side_index)
    data = cols.data[:, :, xp.asarray(idx)].sum(axis=2)
    fwd = np.log10 if sel.log_grid else (lambda v: np.asarray(v, dtype=np.float64))
    n_x, n_p = data.shape[0], data.shape[1]
    xs, ys, x_range, x_src, y_src = _grid_coords(n_x, n_p, cols, sel, fwd)
    y0, y1 = (float(fwd(v)) for v in y_range)
    px = axis_plan(xs, x_range[0], x_range[1], int(width), src=x_src)
    py = axis_plan(ys, y0, y1, int(height), src=y_src)
    return resample(data.T, px, py, xp=xp)


def rasterize(cols: Columns, side_index, sel: Selection, *, width: int, height: int,
              y_range: tuple[float, float]) -> np.ndarray:
    """Resample columns onto a (height, width) pixel grid with datashader (origin lower).

    Parameters
    ----------
    cols : Columns
    side_index : int or list of int
        Which side(s) of ``cols.data`` to sum.
    sel : Selection
        Gives the bins and whether the axis is log.
    width, height : int
        Pixels of the plot area.
    y_range : (float, float)
        Price range of the plot area (quote), mapped through log10 for a log grid.

    Returns
    -------
    ndarray (height, width), float32; NaN where there is no bin or no bucket.
    """
    import datashader as dsh

    idx = np.atleast_1d(side_index)
    data = cols.data[:, :, idx].sum(axis=2)
    fwd = np.log10 if sel.log_grid else (lambda v: np.asarray(v, dtype=np.float64))
    da, x_range = _grid_array(data, cols, sel, fwd)
    y0, y1 = (float(fwd(v)) for v in y_range)
    cvs = dsh.Canvas(plot_width=int(width), plot_height=int(height), x_range=x_range,
                     y_range=(y0, y1))
    agg = cvs.raster(da, upsample_method="nearest", downsample_method="mean")
    return np.asarray(agg.values, dtype=np.float32)


@dataclass
class Marks:
    """Point overlays (realized or estimated liquidations): one mark per cell and side."""

    time_ms: np.ndarray
    price: np.ndarray
    notional: np.ndarray
    side: np.ndarray  # 0 long, 1 short (index into the selection's sides)


def marks(sel: Selection, variable: str, *, n_cols: int, n_rows: int,
          max_marks: int = 4000) -> Marks:
    """Liquidations of ``variable`` as marks: summed into cells of about one column by
    ``1/n_rows`` of the price range, placed at the notional-weighted price of the cell, the
    ``max_marks`` largest kept.
    """
    cols = columns(sel, n_cols, variable)
    return cell_marks(cols.sums, sel.centres, cols.centres, n_rows=n_rows, max_marks=max_marks)


def cell_marks(sums: np.ndarray, price_centres: np.ndarray, col_centres: np.ndarray, *,
               n_rows: int, max_marks: int) -> Marks:
    """Marks from column sums ``(n_col, n_price, n_side)``: bins grouped into about ``n_rows``
    rows, each mark at its cell's notional-weighted price, the ``max_marks`` largest kept."""
    n_p = sums.shape[1]
    k = max(1, int(np.ceil(n_p / max(n_rows, 1))))
    pad = (-n_p) % k
    s = np.pad(sums, ((0, 0), (0, pad), (0, 0)))
    w = np.pad(sums * price_centres[None, :, None], ((0, 0), (0, pad), (0, 0)))
    s = s.reshape(s.shape[0], -1, k, s.shape[2]).sum(axis=2)
    w = w.reshape(w.shape[0], -1, k, w.shape[2]).sum(axis=2)
    ci, pi, si = np.nonzero(s > 0)
    val = s[ci, pi, si]
    if val.size > max_marks:
        keep = np.argpartition(val, -max_marks)[-max_marks:]
        ci, pi, si, val = ci[keep], pi[keep], si[keep], val[keep]
    return Marks(time_ms=col_centres[ci], price=w[ci, pi, si] / val, notional=val, side=si)
