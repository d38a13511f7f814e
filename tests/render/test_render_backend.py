"""``liqgpu render --backend``: numpy is the default's output, cupy without a GPU is one clear
line (exit 2), and the device aggregation's array code gives numpy's columns (numpy posing as
CuPy here; the real thing under ``-m gpu``)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner
from test_levels import hand_dataset

from liqgpu.cli import main
from liqgpu.render import raster
from liqgpu.render.select import select


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    import liqgpu

    path = tmp_path_factory.mktemp("store") / "tiny.zarr"
    # model v1: its grid spans +-20 % of the price, where the log bins are near-uniform in
    # price, which the pixel-exact comparisons below rely on (v2's 2x tiers span +-50 %)
    liqgpu.estimate(liqgpu.synthetic_series(days=2, seed=3), every="1h", backend="numpy",
                    out=path, model="v1")
    return path


def _render(store, out, *extra):
    return CliRunner().invoke(main, ["render", str(store), "--out", str(out), "--width", "800",
                                     "--height", "450", *extra])


def _one_line(output: str) -> str:
    lines = [x for x in output.splitlines() if x.strip()]
    assert len(lines) == 1, output
    return lines[0]


def _pixels(path):
    from PIL import Image

    im = Image.open(path)
    return np.asarray(im.convert("RGBA")), dict(im.text)


def test_numpy_backend_equals_default(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # no GPU here, as on CI
    a, b = tmp_path / "default.png", tmp_path / "numpy.png"
    r = _render(tiny_store, a)
    assert r.exit_code == 0, r.output
    r = _render(tiny_store, b, "--backend", "numpy")
    assert r.exit_code == 0, r.output
    (pa, ma), (pb, mb) = _pixels(a), _pixels(b)
    np.testing.assert_array_equal(pa, pb)
    assert ma == mb
    assert a.read_bytes() == b.read_bytes()


def test_cupy_backend_without_cupy(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    out = tmp_path / "x.png"
    r = _render(tiny_store, out, "--backend", "cupy")
    assert r.exit_code == 2, r.output
    line = _one_line(r.output)
    assert "--backend cupy" in line and "CuPy is not installed" in line
    assert not out.exists()


def test_cupy_backend_without_device(tiny_store, tmp_path, monkeypatch):
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    out = tmp_path / "x.png"
    r = _render(tiny_store, out, "--backend", "cupy")
    assert r.exit_code == 2, r.output
    line = _one_line(r.output)
    assert "no CUDA device" in line and "--backend numpy" in line
    assert not out.exists()


def test_cupy_backend_needs_no_numba(monkeypatch):
    """CuPy with a device is enough for the device render, whatever numba can see (the
    resampling is liqgpu's own; numba.cuda is not consulted)."""
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "numba", None)
    assert raster.render_backend("cupy") == ("cupy", fake)
    assert raster.render_backend("auto") == ("cupy", fake)


def test_render_backend_names(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert raster.render_backend("numpy") == ("numpy", np)
    assert raster.render_backend("auto") == ("numpy", np)
    with pytest.raises(ValueError, match="--backend"):
        raster.render_backend("torch")


class NumpyAsCupy(types.ModuleType):
    """numpy under another name, so the render takes its device branch on the CPU."""

    def __init__(self):
        super().__init__("cupy")

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asnumpy(x):
        return np.asarray(x)


@pytest.fixture
def posing(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(
        scatter_add=lambda t, i, v: np.add.at(t, np.asarray(i), v)))
    return NumpyAsCupy()


@pytest.mark.parametrize("n_cols,block", [(7, 200), (80, 200), (7, 10**9)])
def test_device_columns_equal_numpy(posing, n_cols, block):
    ds = hand_dataset(n_time=50, n_price=12)
    rng = np.random.default_rng(1)
    v = rng.random(ds["intensity"].shape).astype(np.float32)
    v[rng.random(v.shape) < 0.1] = np.nan  # NaN counts as 0 on both paths
    ds["intensity"].values[:] = v
    for kw in ({}, {"leverage": "50", "side": "long"}):
        sel = select(ds, **kw)
        want = raster.columns(sel, n_cols, block_bytes=block)
        got = raster.columns(sel, n_cols, block_bytes=block, xp=posing)
        assert got.merged == want.merged and (got.x0, got.dx) == (want.x0, want.dx)
        assert got.data.dtype == want.data.dtype == np.float32
        np.testing.assert_allclose(got.data, want.data, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(got.sums, want.sums, rtol=1e-6)


@pytest.mark.gpu
def test_cupy_render_on_a_gpu(tiny_store, tmp_path):
    """On a GPU: liqgpu resamples the CuPy columns there; the picture matches numpy's."""
    import cupy

    from liqgpu.render import render

    name, xp = raster.render_backend("cupy")
    assert name == "cupy" and xp is cupy
    sel = select(__import__("liqgpu").open_store(tiny_store))
    lo, hi = (float(x) for x in (sel.edges[0], sel.edges[-1]))
    w, h = sel.n_time * 4, sel.n_price * 2  # whole multiples: the same pixels as numpy's
    want = raster.rasterize(raster.columns(sel, w), [0, 1], sel, width=w, height=h,
                            y_range=(lo, hi))
    cols = raster.columns(sel, w, xp=cupy)
    assert isinstance(cols.data, cupy.ndarray)
    got = raster.rasterize_device(cols, [0, 1], sel, width=w, height=h, y_range=(lo, hi),
                                  xp=cupy)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True)
    out = render(tiny_store, out=tmp_path / "gpu.png", width=800, height=450, backend="cupy")
    assert out.stat().st_size > 0


def _rel(want, got):
    both = np.isfinite(want) & np.isfinite(got)
    assert both.mean() > 0.9
    return np.abs(got[both] - want[both]).sum() / max(np.abs(want[both]).sum(), 1e-300)


@pytest.mark.parametrize("scale", [(4, 2), (1, 1), (12.5, 0.55), (62.5, 2.75), (0.37, 3.3),
                                   (2.6, 0.3)])
@pytest.mark.parametrize("inside", [False, True])
def test_device_rasterize_close_to_numpy(posing, tiny_store, scale, inside):
    """liqgpu's resampling (the device path, numpy posing as CuPy here) against datashader's
    raster (the numpy path): the same pixels at whole multiples and where pixels straddle cells
    (measured: bit-equal at every scale here, rel L1 0), with the canvas over the whole grid or
    cropping its first and last bins mid-bin."""
    import liqgpu

    sel = select(liqgpu.open_store(tiny_store))
    lo, hi = (float(x) for x in (sel.edges[0], sel.edges[-1]))
    if inside:
        e = sel.edges
        lo, hi = float(e[0] + 0.4 * (e[1] - e[0])), float(e[-2] + 0.7 * (e[-1] - e[-2]))
    w, h = max(1, int(sel.n_time * scale[0])), max(1, int(sel.n_price * scale[1]))
    want = raster.rasterize(raster.columns(sel, w), [0, 1], sel, width=w, height=h,
                            y_range=(lo, hi))
    got = raster.rasterize_device(raster.columns(sel, w, xp=posing), [0, 1], sel, width=w,
                                  height=h, y_range=(lo, hi), xp=posing)
    assert got.shape == want.shape == (h, w) and got.dtype == np.float32
    assert np.array_equal(np.isnan(got), np.isnan(want))
    if all(float(s).is_integer() for s in scale):
        np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
        assert _rel(want, got) < 1e-6


def test_device_rasterize_one_bin_nan_and_beyond(posing):
    """One price bin (split in two halves for datashader), NaN columns and a price range past
    the grid (NaN rows): the device path gives rasterize's pixels."""
    from types import SimpleNamespace

    rng = np.random.default_rng(5)
    for n_p, y_range in [(1, (10.0, 20.0)), (9, (8.0, 25.0)), (9, (11.0, 19.5))]:
        data = rng.random((13, n_p, 2)).astype(np.float32) * 1e6
        data[3] = np.nan
        cols = raster.Columns(data=data, sums=data, x0=0.0, dx=60_000.0, merged=True)
        sel = SimpleNamespace(edges=np.geomspace(10.0, 20.0, n_p + 1), log_grid=True)
        for w, h in [(13, 4), (30, 7), (5, 40)]:
            want = raster.rasterize(cols, [0, 1], sel, width=w, height=h, y_range=y_range)
            got = raster.rasterize_device(cols, [0, 1], sel, width=w, height=h, y_range=y_range,
                                          xp=posing)
            assert np.array_equal(np.isnan(got), np.isnan(want))
            if w >= 13:  # the NaN column survives (downsampled, its neighbours fill it)
                assert np.isnan(got).any()
            np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
