"""datashader's ``Canvas.raster(upsample_method="nearest", downsample_method="mean")`` in array
code that runs on any array namespace ``xp`` (numpy or CuPy; no numba, no cudf).

The resampling is separable, so it is planned per axis on the host (a few arrays of the pixel
count) and applied to the 2-D grid on ``xp`` with gathers and arithmetic:

* the window: datashader crops the grid to the cells it finds under the canvas range
  (``datashader.utils.get_indices``), resamples those cells onto the pixels the data covers
  (``round(pixels * covered fraction)``) and pads the rest with NaN (the low side gets
  ``ceil`` of the padding); :func:`axis_plan` makes the same integer decisions from the same
  floating-point expressions;
* more cells than pixels (``datashader.resampling._downsample_2d_mean``): pixel ``p`` spans
  cells ``[p * s, (p + 1) * s)`` with ``s = cells / pixels``; the first and last cells it
  touches weigh by their covered fraction, those inside by 1, a last cell covered by less than
  ``1e-10`` drops out. The pixel is the weighted mean of its finite cells (numerator from the
  data with NaN as 0, denominator from the finite mask, both summed over the few cells of the
  pixel, so a small cell beside a big one keeps its precision), NaN where the finite weight is
  below ``1e-10``;
* fewer cells than pixels (``_upsample_2d_nearest``): pixel ``p`` shows cell
  ``int(p * s)``, NaN where that cell is not finite;
* as many cells as pixels: the cells.

Intermediates are the size of the input or of the image (one weighted axis at a time, each
pixel gathering at most ``ceil(s) + 1`` cells); nothing is pixels x cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-10  # datashader.resampling._EPS


@dataclass
class AxisPlan:
    """How one axis of cells becomes pixels.

    Attributes
    ----------
    n_pix : int
        Pixels of the canvas along the axis.
    pad_lo : int
        NaN pixels before the data (low coordinates).
    index : ndarray (n_data, k) int64
        For each data pixel, the cells it reads (indices into the grid's cells).
    weight : ndarray (n_data, k) float64 or None
        Their weights (0 for unused slots); None where each pixel reads one cell (``k == 1``):
        a gather, no mean.
    empty : bool
        The window holds no cell (datashader then fills the data pixels with 0).
    """

    n_pix: int
    pad_lo: int
    index: np.ndarray
    weight: np.ndarray | None
    empty: bool = False

    @property
    def n_data(self) -> int:
        return self.index.shape[0]


def axis_plan(centres, lo: float, hi: float, n_pix: int, src=None) -> AxisPlan:
    """Plan one axis as datashader's ``Canvas.raster`` does.

    Parameters
    ----------
    centres : array (n,), n >= 2
        Evenly spaced, increasing cell centres (axis space).
    lo, hi : float
        The canvas range along the axis.
    n_pix : int
        Pixels along the axis.
    src : array (n,) of int, optional
        The data cell under each centre (default ``arange(n)``); datashader needs two
        coordinates, so an axis of one cell is passed as two halves that both read cell 0.

    Raises
    ------
    ValueError
        The range does not overlap the cells (datashader raises too).
    """
    c = np.asarray(centres, dtype=np.float64)
    n = len(c)
    src = np.arange(n) if src is None else np.asarray(src, dtype=np.int64)
    # datashader.utils.calc_res / calc_bbox / get_indices, for increasing centres
    res = (c[-1] - c[0]) / (n - 1)
    vmin, vmax = c.min(), c.max()
    first = res * 0 + vmin
    last = res * n + vmin
    left, right = first - res / 2.0, last - res / 2.0
    dmin, dmax = max(lo, left), min(hi, right)
    ratio = min((dmax - dmin) / (hi - lo), 1)
    if np.isclose(ratio, 0):
        raise ValueError("the canvas range does not overlap the grid closely enough to "
                         "rasterize (datashader raises the same)")
    m_pix = max(int(round(n_pix * ratio)), 1)
    half = abs(res) / 2.0
    span = vmax - vmin
    s_idx = int(((dmin + half - vmin) / span) * n)
    e_idx = int(((dmax - half - vmin) / span) * n)
    if e_idx < s_idx:
        e_idx = s_idx
    win = src[s_idx:e_idx + 1]
    # padding: Canvas.raster's lpct / tpct
    n_pad = n_pix - m_pix
    pad_l, pad_r = dmin - lo, hi - dmax
    pct = pad_l / (pad_l + pad_r) if pad_l + pad_r > 0 else 0
    pad_lo = max(int(np.ceil(n_pad * pct)), 0)
    m = len(win)
    if m == 0:
        return AxisPlan(n_pix, pad_lo, np.zeros((m_pix, 1), dtype=np.int64), None, empty=True)
    if m <= m_pix:  # _upsample_2d_nearest (or the cells themselves)
        if m == m_pix:
            local = np.arange(m)
        else:
            local = (np.arange(m_pix) * (m / m_pix)).astype(np.int64)
        return AxisPlan(n_pix, pad_lo, win[np.minimum(local, m - 1)][:, None], None)
    # _downsample_2d_mean
    scale = m / m_pix
    f0 = np.arange(m_pix) * scale
    f1 = f0 + scale
    i0 = f0.astype(np.int64)
    i1 = f1.astype(np.int64)
    w0 = 1.0 - (f0 - i0)
    w1 = f1 - i1
    small = w1 < EPS
    w1 = np.where(small, 1.0, w1)
    i1 = np.where(small & (i1 > i0), i1 - 1, i1)
    k = int((i1 - i0).max()) + 1
    j = i0[:, None] + np.arange(k)[None, :]
    w = np.where(j == i0[:, None], w0[:, None], np.where(j == i1[:, None], w1[:, None], 1.0))
    w = np.where(j > i1[:, None], 0.0, w)
    index = win[np.clip(j, 0, m - 1)]
    return AxisPlan(n_pix, pad_lo, index, w)


def _weigh(num, den, plan: AxisPlan, axis: int, xp):
    """Weighted sums over ``plan``'s cells along ``axis`` (0 rows, 1 columns), float64."""
    idx = xp.asarray(plan.index)
    wts = xp.asarray(plan.weight)
    out_n = out_d = None
    for j in range(plan.index.shape[1]):  # a few cells per pixel, not pixels
        w = wts[:, j][:, None] if axis == 0 else wts[:, j][None, :]
        tn = xp.take(num, idx[:, j], axis=axis) * w
        td = xp.take(den, idx[:, j], axis=axis) * w
        if out_n is None:
            out_n, out_d = tn, td
        else:
            out_n += tn
            out_d += td
    return out_n, out_d


def resample(grid, x: AxisPlan, y: AxisPlan, xp=np) -> np.ndarray:
    """Resample ``grid`` (n_y, n_x) with the two plans; (y.n_pix, x.n_pix) float32 on the host,
    row 0 the lowest y, NaN outside the data and where a pixel has no finite cell."""
    if x.empty or y.empty:
        block = np.zeros((y.n_data, x.n_data), dtype=np.float32)
    else:
        a = xp.ascontiguousarray(xp.asarray(grid))  # gathers along a strided axis crawl
        if x.weight is None and y.weight is None:
            a = xp.where(xp.isfinite(a), a, xp.nan).astype(xp.float32)
            block = a[xp.asarray(y.index[:, 0])[:, None], xp.asarray(x.index[:, 0])[None, :]]
        else:
            # the weighted axes first (they shrink), at the cells the gathers will read
            if x.weight is None:
                a = xp.take(a, xp.asarray(np.unique(x.index[:, 0])), axis=1)
            if y.weight is None:
                a = xp.take(a, xp.asarray(np.unique(y.index[:, 0])), axis=0)
            ok = xp.isfinite(a)
            num = xp.where(ok, a, 0).astype(xp.float64)
            den = ok.astype(xp.float64)
            del ok
            axes = [(p, ax) for p, ax in ((y, 0), (x, 1)) if p.weight is not None]
            # the axis that shrinks most first: less work for the second
            axes.sort(key=lambda t: t[0].n_data / num.shape[t[1]])
            for p, ax in axes:
                num, den = _weigh(num, den, p, ax, xp)
            bad = den < EPS
            block = xp.where(bad, xp.nan, num / xp.where(bad, 1.0, den)).astype(xp.float32)
            del num, den, bad
            if x.weight is None:
                u = np.unique(x.index[:, 0])
                block = xp.take(block, xp.asarray(np.searchsorted(u, x.index[:, 0])), axis=1)
            if y.weight is None:
                u = np.unique(y.index[:, 0])
                block = xp.take(block, xp.asarray(np.searchsorted(u, y.index[:, 0])), axis=0)
        to_host = getattr(xp, "asnumpy", np.asarray)
        block = np.asarray(to_host(block), dtype=np.float32)
    if block.shape == (y.n_pix, x.n_pix):
        return block
    out = np.full((y.n_pix, x.n_pix), np.nan, dtype=np.float32)
    out[y.pad_lo:y.pad_lo + y.n_data, x.pad_lo:x.pad_lo + x.n_data] = block
    return out
