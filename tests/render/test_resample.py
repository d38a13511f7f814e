"""liqgpu.render.resample: datashader's Canvas.raster (nearest up, area-weighted mean down) in
array code, checked by hand, against datashader and against an independent dense reference."""

from __future__ import annotations

import numpy as np
import pytest

from liqgpu.render.resample import axis_plan, resample


def _centres(x0, dx, n):
    return x0 + (np.arange(n) + 0.5) * dx


def _ours(v, xs, ys, x_range, y_range, w, h):
    return resample(v, axis_plan(xs, *x_range, w), axis_plan(ys, *y_range, h))


def _datashader(v, xs, ys, x_range, y_range, w, h):
    import datashader as dsh
    import xarray as xr

    da = xr.DataArray(v, coords={"y": ys, "x": xs}, dims=("y", "x"), name="v")
    cvs = dsh.Canvas(plot_width=w, plot_height=h, x_range=x_range, y_range=y_range)
    agg = cvs.raster(da, upsample_method="nearest", downsample_method="mean")
    return np.asarray(agg.values, dtype=np.float32)


def _cube(rng, ny, nx, nan=0.2):
    """Values over 1e-6 .. 1e9 (log-uniform), some NaN."""
    v = (10 ** rng.uniform(-6, 9, (ny, nx))).astype(np.float32)
    v[rng.random(v.shape) < nan] = np.nan
    return v


def test_three_cells_onto_two_pixels_by_hand():
    # x: cells [0,1) [1,2) [2,3) = 1, 2, 4 onto pixels [0,1.5) [1.5,3); y: 2 rows, 2 pixels
    v = np.array([[1, 2, 4], [10, 20, 40]], dtype=np.float32)
    got = _ours(v, _centres(0, 1, 3), _centres(0, 1, 2), (0, 3), (0, 2), 2, 2)
    want = np.array([[(1 * 1 + 2 * 0.5) / 1.5, (2 * 0.5 + 4 * 1) / 1.5],
                     [(10 * 1 + 20 * 0.5) / 1.5, (20 * 0.5 + 40 * 1) / 1.5]], dtype=np.float32)
    np.testing.assert_array_equal(got, want)  # 4/3, 10/3; 40/3, 100/3
    # a NaN cell leaves the mean of the finite area: 1 and 4
    v[0, 1] = np.nan
    got = _ours(v, _centres(0, 1, 3), _centres(0, 1, 2), (0, 3), (0, 2), 2, 2)
    np.testing.assert_array_equal(got[0], np.array([1, 4], dtype=np.float32))
    # both pixels of a row NaN where all its cells are
    v[0] = np.nan
    got = _ours(v, _centres(0, 1, 3), _centres(0, 1, 2), (0, 3), (0, 2), 2, 2)
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()


def test_upsample_nearest_and_padding_by_hand():
    # y: 2 cells onto 5 pixels: pixel p shows cell int(p * 2/5) -> 0 0 0 1 1
    v = np.array([[1, 2], [3, 4]], dtype=np.float32)
    got = _ours(v, _centres(0, 1, 2), _centres(0, 1, 2), (0, 2), (0, 2), 2, 5)
    np.testing.assert_array_equal(got[:, 0], [1, 1, 1, 3, 3])
    np.testing.assert_array_equal(got[:, 1], [2, 2, 2, 4, 4])
    # canvas x (-2, 6) over data [0, 2): 8 pixels, the data on 2, NaN 2 before and 4 after
    got = _ours(v, _centres(0, 1, 2), _centres(0, 1, 2), (-2, 6), (0, 2), 8, 2)
    want = np.full((2, 8), np.nan, dtype=np.float32)
    want[:, 2:4] = v
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("scale_x,scale_y", [(1, 1), (4, 2), (3, 5), (1 / 2, 1 / 3), (1 / 4, 3),
                                             (5, 1 / 2), (1, 1 / 6)])
def test_whole_multiples_equal_datashader(scale_x, scale_y):
    rng = np.random.default_rng(7)
    nx, ny = 24, 36
    v = _cube(rng, ny, nx)
    xs, ys = _centres(100.0, 2.5, nx), _centres(-3.0, 0.01, ny)
    w, h = int(round(nx * scale_x)), int(round(ny * scale_y))
    xr_, yr_ = (100.0, 100.0 + 2.5 * nx), (-3.0, -3.0 + 0.01 * ny)
    got = _ours(v, xs, ys, xr_, yr_, w, h)
    want = _datashader(v, xs, ys, xr_, yr_, w, h)
    assert got.shape == (h, w) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("w,h", [(37, 11), (11, 37), (97, 53), (13, 7), (150, 200), (5, 90)])
def test_fractional_scales_match_datashader(w, h):
    """Down in one axis and up in the other, down in both, up in both, at scales that are no
    whole multiple: pixels straddle cells. On this machine the pixels are bit-equal."""
    rng = np.random.default_rng(w * 1000 + h)
    nx, ny = 29, 31
    v = _cube(rng, ny, nx)
    xs, ys = _centres(0.0, 1.0, nx), _centres(2.0, 0.3, ny)
    xr_, yr_ = (0.0, 29.0), (2.0, 2.0 + 0.3 * ny)
    got = _ours(v, xs, ys, xr_, yr_, w, h)
    want = _datashader(v, xs, ys, xr_, yr_, w, h)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


def test_canvas_ranges_beyond_and_inside_the_data_match_datashader():
    """Canvas ranges that crop the grid mid-cell or reach past it (NaN padding): datashader's
    window (whole cells, rounded pixel counts, padding split) is followed exactly."""
    rng = np.random.default_rng(3)
    n_cmp = 0
    for _ in range(200):
        nx, ny = (int(k) for k in rng.integers(2, 50, 2))
        x0, dx, y0, dy = rng.normal() * 10, rng.uniform(0.1, 3), rng.normal(), rng.uniform(0.01, 1)
        xs, ys = _centres(x0, dx, nx), _centres(y0, dy, ny)
        v = _cube(rng, ny, nx)
        w, h = (int(k) for k in rng.integers(1, 120, 2))
        xr_ = tuple(sorted(rng.uniform(x0 - 0.3 * nx * dx, x0 + 1.3 * nx * dx, 2)))
        yr_ = tuple(sorted(rng.uniform(y0 - 0.3 * ny * dy, y0 + 1.3 * ny * dy, 2)))
        try:
            want = _datashader(v, xs, ys, xr_, yr_, w, h)
        except ValueError:
            with pytest.raises(ValueError):
                _ours(v, xs, ys, xr_, yr_, w, h)
            continue
        got = _ours(v, xs, ys, xr_, yr_, w, h)
        assert got.shape == want.shape
        assert np.array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
        n_cmp += 1
    assert n_cmp > 100


def _dense_reference(v, n_x_pix, n_y_pix):
    """Exact-overlap area-weighted mean over the finite cells, canvas = the data's extent, in
    float64 with dense (pixels x cells) overlap matrices (small sizes only)."""
    def overlap(n_cell, n_pix):
        ce = np.arange(n_cell + 1, dtype=np.float64)
        pe = np.arange(n_pix + 1) * (n_cell / n_pix)
        lo = np.maximum(pe[:-1, None], ce[None, :-1])
        hi = np.minimum(pe[1:, None], ce[None, 1:])
        return np.clip(hi - lo, 0, None)

    wy, wx = overlap(v.shape[0], n_y_pix), overlap(v.shape[1], n_x_pix)
    ok = np.isfinite(v)
    num = wy @ np.where(ok, v, 0).astype(np.float64) @ wx.T
    den = wy @ ok.astype(np.float64) @ wx.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


@pytest.mark.parametrize("w,h", [(7, 5), (10, 3), (17, 13)])
def test_area_mean_precision_over_fifteen_decades(w, h):
    """Cells from 1e-6 to 1e9 side by side: each pixel keeps its own relative precision (no
    prefix-sum differences), against a float64 dense reference."""
    rng = np.random.default_rng(11)
    ny, nx = 41, 53
    v = _cube(rng, ny, nx, nan=0.1)
    # bands of tiny values next to huge ones
    v[::3] = (10 ** rng.uniform(-6, -5, (len(v[::3]), nx))).astype(np.float32)
    v[1::3] = (10 ** rng.uniform(8, 9, (len(v[1::3]), nx))).astype(np.float32)
    v[:, ::4] = (10 ** rng.uniform(-6, -5, (ny, len(range(0, nx, 4))))).astype(np.float32)
    got = _ours(v, _centres(0, 1, nx), _centres(0, 1, ny), (0, nx), (0, ny), w, h)
    want = _dense_reference(v, w, h)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    # a whole pixel of tiny cells among huge ones keeps its value
    v2 = np.full((4, 8), 1e9, dtype=np.float32)
    v2[:, 4:] = 1e-6 * np.arange(1, 5, dtype=np.float32)
    got = _ours(v2, _centres(0, 1, 8), _centres(0, 1, 4), (0, 8), (0, 4), 2, 1)
    np.testing.assert_allclose(got, [[1e9, 2.5e-6]], rtol=1e-6)


def test_gather_width_bounded():
    """Each pixel reads at most ceil(cells / pixels) + 1 cells: no pixels x cells matrix."""
    for n, p in [(2600, 450), (8760, 1600), (100, 99), (1000, 3)]:
        plan = axis_plan(_centres(0, 1, n), 0, n, p)
        assert plan.index.shape == plan.weight.shape
        assert plan.index.shape[0] == p and plan.index.shape[1] <= int(np.ceil(n / p)) + 1
        # weights are the covered fraction of each cell: they sum to the pixel's width
        np.testing.assert_allclose(plan.weight.sum(axis=1), n / p, rtol=1e-9)
    plan = axis_plan(_centres(0, 1, 2600), 0, 2600, 8192)
    assert plan.weight is None and plan.index.shape == (8192, 1)
