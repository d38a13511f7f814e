"""The raw CUDA kernels: sources found and compilable, the first_cross algorithm checked on the
CPU by emulation (liqgpu.testing.kernels) against the engine, and (``gpu``) every wrapper and the
CuPy engine on a device.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liqgpu.backend import kernels
from liqgpu.model.engine import _SparseTables
from liqgpu.testing.kernels import (diff_scatter_emulate, first_cross_emulate,
                                    scatter_add_emulate)

REPO = Path(__file__).resolve().parents[2]

ENTRY_POINTS = {
    "first_cross.cu": ["first_cross_f64"],
    "scatter.cu": ["scatter_add_f64", "diff_scatter_f64"],
}
NVCC = shutil.which("nvcc")


# -- sources ------------------------------------------------------------------------------------
def test_kernel_paths_are_the_checkout_sources():
    names = [p.name for p in kernels.kernel_paths()]
    assert names == sorted(p.name for p in (REPO / "kernels").glob("*.cu"))
    assert set(names) == set(ENTRY_POINTS)


def test_kernel_source_by_name():
    src = kernels.kernel_source("first_cross")
    assert src == kernels.kernel_source("first_cross.cu")
    assert src == (REPO / "kernels" / "first_cross.cu").read_text()
    with pytest.raises(KeyError, match="scatter.cu"):
        kernels.kernel_source("nope")


@pytest.mark.parametrize("fname", sorted(ENTRY_POINTS))
def test_sources_are_nvrtc_friendly(fname):
    """Entry points are extern "C" (names unmangled) and nothing needs host headers."""
    src = kernels.kernel_source(fname)
    assert "#include" not in src  # NVRTC (cupy.RawModule) has no host include paths by default
    for entry in ENTRY_POINTS[fname]:
        assert re.search(rf'extern "C" __global__ void {entry}\(', src), entry
        body = src[src.index(f"void {entry}("):]
        assert "gridDim.x * blockDim.x" in body.split("extern")[0]  # grid-stride loop


def test_importing_kernels_does_not_import_cupy():
    code = ("import sys, liqgpu.backend.kernels as k, liqgpu.backend.cuda, liqgpu.testing.kernels; "
            "k.kernel_paths(); k.kernel_source('scatter'); print('cupy' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=REPO)
    assert r.stdout.strip() == "False"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH; cannot compile the CUDA sources")
@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
@pytest.mark.parametrize("fname", sorted(ENTRY_POINTS))
def test_nvcc_compiles(fname, arch, tmp_path):
    """Each source compiles to PTX with no warning and exports its typed entry points."""
    src = next(p for p in kernels.kernel_paths() if p.name == fname)
    ptx = tmp_path / (fname + ".ptx")
    r = subprocess.run([NVCC, f"-arch={arch}", *kernels.COMPILE_OPTIONS, "-Werror",
                        "all-warnings", "--ptx", "-o", str(ptx), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = ptx.read_text()
    for entry in ENTRY_POINTS[fname]:
        assert re.search(rf"\.entry {entry}\(", text), f"{entry} missing from the PTX"


# -- CPU emulation of first_cross -----------------------------------------------------------------
def test_emulation_mirrors_the_cuda_lines():
    """Drift guard: the CUDA statements that first_cross_thread copies are still in the source."""
    src = " ".join(kernels.kernel_source("first_cross").split())
    for line in ("long long pos = start;",
                 "for (int j = J - 1; j >= 0; --j) {",
                 "const long long at = pos < L - 1 ? pos : L - 1;",
                 "const double v = levels[j][base + at];",
                 "if (v > thr) { pos += (1LL << j); }",
                 "return pos < m ? pos : m;",
                 "const long long base = (which[i] * S + series[i]) * L;"):
        assert line in src, line


def _brute(v, which, series, start, thr):
    """First position p >= start with v[which, series, p] <= thr, else m (by definition)."""
    m = v.shape[2]
    out = np.empty(thr.size, dtype=np.int64)
    for i in range(thr.size):
        row = v[which[i], series[i], start[i]:]
        hit = np.flatnonzero(row <= thr[i])
        out[i] = start[i] + hit[0] if hit.size else m
    return out


values = st.sampled_from([1.0, 2.0, 3.0, 2.5, 10.0, -1.0, np.inf])


@st.composite
def problems(draw):
    S = draw(st.integers(1, 3))
    m = draw(st.integers(1, 70))
    v = np.array(draw(st.lists(values, min_size=2 * S * m, max_size=2 * S * m)))
    v = v.reshape(2, S, m)
    n = draw(st.integers(0, 40))
    which = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.int64)
    series = np.array(draw(st.lists(st.integers(0, S - 1), min_size=n, max_size=n)),
                      dtype=np.int64)
    start = np.array(draw(st.lists(st.integers(0, m), min_size=n, max_size=n)), dtype=np.int64)
    thr = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float64)
    grid = draw(st.integers(1, 4))
    block = draw(st.sampled_from([1, 3, 8, 256]))
    return v, which, series, start, thr, grid, block


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_first_cross_emulation_matches_engine(problem):
    """The kernel's per-thread loop (emulated, grid-stride) == _SparseTables == the definition."""
    v, which, series, start, thr, grid, block = problem
    S, m = v.shape[1], v.shape[2]
    tables = _SparseTables(v[0], v[1], np)
    want = tables.first_at_or_below(which, series, start, thr)
    got = first_cross_emulate(tables.levels, which, series, start, thr, n_series=S,
                                      length=tables.L, m=m, grid=grid, block=block)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, _brute(v, which, series, start, thr))


def test_first_cross_emulation_random_floats():
    rng = np.random.default_rng(3)
    for m in (1, 2, 3, 31, 32, 33, 257):
        S = 2
        v = rng.normal(size=(2, S, m))
        v[rng.random(v.shape) < 0.1] = np.inf
        n = 300
        which = rng.integers(0, 2, n)
        series = rng.integers(0, S, n)
        start = rng.integers(0, m + 1, n)
        thr = rng.normal(size=n) - 1.0
        thr[:5] = v[which[:5], series[:5], np.minimum(start[:5], m - 1)]  # ties: <= hits
        tables = _SparseTables(v[0], v[1], np)
        stacked = np.stack(tables.levels)  # the (J, 2*S*L) form works the same
        got = first_cross_emulate(stacked, which, series, start, thr, n_series=S,
                                          length=tables.L, m=m, grid=3)
        np.testing.assert_array_equal(got, tables.first_at_or_below(which, series, start, thr))
        np.testing.assert_array_equal(got, _brute(v, which, series, start, thr))


def test_first_cross_emulation_nan_threshold_stops_like_numpy():
    v = np.array([[[3.0, 2.0, 1.0]], [[np.inf, np.inf, np.inf]]])
    tables = _SparseTables(v[0], v[1], np)
    q = dict(which=np.array([0, 1]), series=np.array([0, 0]), start=np.array([0, 1]),
             thr=np.array([np.nan, np.nan]))
    got = first_cross_emulate(tables.levels, **q, n_series=1, length=tables.L, m=3)
    np.testing.assert_array_equal(got, tables.first_at_or_below(**q))


def test_diff_scatter_emulation_matches_masked_scatters():
    rng = np.random.default_rng(5)
    rows, width, n = 9, 7, 500
    lo = rng.integers(0, rows, n)
    hi = np.minimum(lo + rng.integers(0, 4, n), rows - 1)
    col = rng.integers(0, width, n)
    w = rng.random(n)
    got = np.zeros((rows, width))
    diff_scatter_emulate(got, lo, hi, col, w)
    span = lo < hi  # the engine's pair of masked scatters
    want = np.zeros(rows * width)
    np.add.at(want, lo[span] * width + col[span], w[span])
    np.add.at(want, hi[span] * width + col[span], -w[span])
    np.testing.assert_allclose(got.reshape(-1), want, rtol=0, atol=1e-12)
    # spans: the cumulative sum adds w to rows lo..hi-1
    dense = np.zeros((rows, width))
    for a, b, c, x in zip(lo, hi, col, w):
        dense[a:b, c] += x
    np.testing.assert_allclose(np.cumsum(got, axis=0), dense, atol=1e-12)


# -- on a GPU ---------------------------------------------------------------------------------------
@pytest.fixture
def cp():
    import cupy

    return cupy


@pytest.mark.gpu
def test_get_module_is_memoized_per_device(cp):
    m1 = kernels.get_module("scatter")
    assert kernels.get_module("scatter.cu") is m1
    for fname, entries in ENTRY_POINTS.items():
        for e in entries:
            kernels.get_kernel(fname, e)  # compiles with NVRTC and finds the entry point


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(6))
def test_first_cross_gpu_matches_numpy(cp, seed):
    rng = np.random.default_rng(seed)
    S = int(rng.integers(1, 4))
    m = int(rng.integers(1, 3000))
    v = rng.normal(size=(2, S, m))
    v[rng.random(v.shape) < 0.05] = np.inf
    n = int(rng.integers(0, 50_000))
    which = rng.integers(0, 2, n)
    series = rng.integers(0, S, n)
    start = rng.integers(0, m + 1, n)
    thr = rng.normal(size=n) - 1.5
    want = _SparseTables(v[0], v[1], np).first_at_or_below(which, series, start, thr)
    tables = _SparseTables(cp.asarray(v[0]), cp.asarray(v[1]), cp)
    args = [cp.asarray(x) for x in (which, series, start, thr)]
    got = kernels.first_cross(tables, *args, check=True)
    assert got.dtype == cp.int64
    np.testing.assert_array_equal(cp.asnumpy(got), want)
    # the engine's path (the backend's kernel) and the binary lifting in array code agree too
    np.testing.assert_array_equal(cp.asnumpy(tables.first_at_or_below(*args)), want)
    np.testing.assert_array_equal(cp.asnumpy(tables.lift(*args)), want)
    # one (J, 2*S*L) array instead of J arrays
    stacked = SimpleNamespace(levels=cp.stack(tables.levels), shape=tables.shape, L=tables.L,
                              m=tables.m)
    np.testing.assert_array_equal(cp.asnumpy(kernels.first_cross(stacked, *args)), want)


@pytest.mark.gpu
def test_first_cross_gpu_checks_queries(cp):
    v = np.ones((2, 1, 5))
    tables = _SparseTables(cp.asarray(v[0]), cp.asarray(v[1]), cp)
    one = cp.zeros(1, dtype=cp.int64)
    with pytest.raises(IndexError):
        kernels.first_cross(tables, one, one + 1, one, cp.zeros(1), check=True)  # series 1 of 1
    assert kernels.first_cross(tables, one[:0], one[:0], one[:0], cp.zeros(0)).size == 0


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(4))
def test_scatter_add_gpu_matches_bincount(cp, seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 5000))
    n = int(rng.integers(0, 2_000_000))
    idx = rng.integers(0, size, n)
    val = rng.normal(size=n)
    start = rng.normal(size=(size,))
    want = start + np.bincount(idx, weights=val, minlength=size)
    target = cp.asarray(start)
    kernels.scatter_add(target, cp.asarray(idx), cp.asarray(val), check=True)
    # atomics add in any order: equal to rounding
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(cp.asnumpy(target), want, rtol=0, atol=1e-9 * scale)


@pytest.mark.gpu
def test_scatter_add_gpu_shapes_and_bounds(cp):
    t = cp.zeros((3, 4))
    kernels.scatter_add(t, cp.array([0, 5, 5, 11]), cp.array([1.0, 2.0, 3.0, 4.0]))
    assert cp.asnumpy(t).reshape(-1).tolist() == [1, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 4]
    with pytest.raises(IndexError):
        kernels.scatter_add(t, cp.array([12]), cp.array([1.0]), check=True)
    kernels.scatter_add(t, cp.array([12, -1]), cp.array([1.0, 1.0]))  # skipped, never written
    assert float(t.sum()) == 10.0
    with pytest.raises(TypeError):
        kernels.scatter_add(cp.zeros(3, dtype=cp.float32), cp.array([0]), cp.array([1.0]))


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(3))
def test_diff_scatter_gpu_matches_emulation(cp, seed):
    rng = np.random.default_rng(seed)
    rows, width, n = 40, 333, 300_000
    lo = rng.integers(0, rows, n)
    hi = np.minimum(lo + rng.integers(0, 6, n), rows - 1)
    col = rng.integers(0, width, n)
    w = rng.random(n)
    want = np.zeros((rows, width))
    diff_scatter_emulate(want, lo, hi, col, w)
    got = cp.zeros((rows, width))
    kernels.diff_scatter(got, *(cp.asarray(x) for x in (lo, hi, col, w)), check=True)
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=0,
                               atol=1e-9 * max(1.0, float(np.abs(want).max())))


@pytest.mark.gpu
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_engine_cupy_matches_numpy(seed):
    """The whole engine on CuPy == on numpy, float64, within 1e-9 of each variable's max cell."""
    import liqgpu

    s = liqgpu.synthetic_series(days=2, seed=seed)
    ref = liqgpu.estimate(s, every="1h", backend="numpy", dtype=np.float64)
    got = liqgpu.estimate(s, every="1h", backend="cupy", dtype=np.float64)
    assert got.attrs["backend"] == "cupy" and ref.attrs["backend"] == "numpy"
    assert dict(got.sizes) == dict(ref.sizes)
    for v in ("intensity", "liquidated", "added", "closed", "expired", "outside",
              "outside_liquidated"):
        a, b = got[v].values, ref[v].values
        assert a.dtype == b.dtype == np.float64, v
        top = float(np.abs(b).max())
        assert np.abs(a - b).max() <= 1e-9 * max(top, 1e-300), v
    assert float(ref["liquidated"].sum()) > 0  # the comparison covers liquidations


# -- the wrappers on the CPU: a numpy stand-in for CuPy, kernels replaced by their emulation ------
_SIG = re.compile(r'extern "C" __global__ void (\w+)\((.*?)\)\s*\{', re.S)


def _signature(entry: str) -> list[str]:
    """Parameter kinds of a CUDA entry point: 'double**', 'double*', 'll*', 'll', 'int'."""
    for fname in ENTRY_POINTS:
        for name, params in _SIG.findall(kernels.kernel_source(fname)):
            if name != entry:
                continue
            kinds = []
            for p in params.split(","):
                words = [w for w in re.sub(r"\*", " * ", p).split()
                         if w not in ("const", "__restrict__")][:-1]  # drop the name
                base = "ll" if words[:2] == ["long", "long"] else words[0]
                kinds.append(base + "*" * words.count("*"))
            return kinds
    raise KeyError(entry)


_ARG_TYPES = {"double**": np.uint64, "double*": np.float64, "ll*": np.int64}


class _FakeArray(np.ndarray):
    """numpy standing in for cupy.ndarray: ``.data.ptr`` is the buffer's address."""

    @property
    def data(self):
        return SimpleNamespace(ptr=self.__array_interface__["data"][0])


def _fake(x):
    return x.view(_FakeArray)


def _fake_cupy():
    m = SimpleNamespace(
        ndarray=_FakeArray, int64=np.int64, float64=np.float64, uint64=np.uint64,
        asarray=lambda x, dtype=None: _fake(np.asarray(x, dtype=dtype)),
        ascontiguousarray=lambda x, dtype=None: _fake(np.ascontiguousarray(x, dtype=dtype)),
        empty=lambda n, dtype=np.float64: _fake(np.empty(n, dtype=dtype)),
        asnumpy=lambda x: np.asarray(x).view(np.ndarray),
        cuda=SimpleNamespace(Device=lambda: SimpleNamespace(
            id=0, attributes={"MultiProcessorCount": 1})),
    )
    return m


class _EmulatedKernel:
    """Checks a launch against the CUDA signature, then runs the kernel's CPU emulation."""

    def __init__(self, fname, entry, arrays):
        self.entry, self.arrays, self.launches = entry, arrays, []

    def __call__(self, grid, block, args):
        kinds = _signature(self.entry)
        assert len(args) == len(kinds), (self.entry, len(args), kinds)
        for a, k in zip(args, kinds):
            if k.endswith("*"):
                assert isinstance(a, _FakeArray) and a.flags.c_contiguous, (self.entry, k)
                assert a.dtype == _ARG_TYPES[k], (self.entry, k, a.dtype)
            else:
                assert type(a) is {"ll": np.int64, "int": np.int32}[k], (self.entry, k, type(a))
        assert block == (kernels.BLOCK,) and len(grid) == 1 and grid[0] >= 1
        self.launches.append(grid[0])
        run = getattr(self, "_" + self.entry)
        run(grid[0], *args)

    def _first_cross_f64(self, grid, ptrs, which, series, start, thr, out, n, S, L, J, m):
        levels = [self.arrays[int(p)] for p in ptrs]
        assert len(levels) == J and all(lv.size == 2 * S * L for lv in levels)
        assert which.size == series.size == start.size == thr.size == out.size == n
        out[:] = first_cross_emulate(levels, which, series, start, thr, n_series=int(S),
                                             length=int(L), m=int(m), grid=grid)

    def _scatter_add_f64(self, grid, target, size, index, values, n):
        assert target.size == size and index.size == values.size == n
        scatter_add_emulate(target, index, values)

    def _diff_scatter_f64(self, grid, target, rows, width, lo, hi, col, values, n):
        assert target.shape == (rows, width) and values.size == n
        diff_scatter_emulate(target, lo, hi, col, values)


@pytest.fixture
def emulated(monkeypatch):
    """The wrappers run on numpy; returns the address -> array registry for level tables."""
    arrays = {}
    made = {}

    def get_kernel(fname, entry):
        return made.setdefault(entry, _EmulatedKernel(fname, entry, arrays))

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setattr(kernels, "get_kernel", get_kernel)
    monkeypatch.setattr(kernels, "_MAX_BLOCKS", {})
    return SimpleNamespace(arrays=arrays, kernels=made)


def test_first_cross_wrapper_emulated(emulated):
    rng = np.random.default_rng(11)
    S, m, n = 3, 700, 20_000  # more queries than the capped grid has threads (stride loop)
    v = rng.normal(size=(2, S, m))
    tables = _SparseTables(v[0], v[1], np)
    levels = [_fake(lv) for lv in tables.levels]
    emulated.arrays.update({lv.data.ptr: lv for lv in levels})
    tab = SimpleNamespace(levels=levels, shape=tables.shape, L=tables.L, m=tables.m)
    q = [rng.integers(0, 2, n), rng.integers(0, S, n), rng.integers(0, m + 1, n),
         rng.normal(size=n) - 1.5]
    got = kernels.first_cross(tab, *(_fake(x) for x in q), check=True)
    np.testing.assert_array_equal(np.asarray(got), tables.first_at_or_below(*q))
    assert emulated.kernels["first_cross_f64"].launches == [kernels.BLOCKS_PER_SM]
    with pytest.raises(IndexError):
        kernels.first_cross(tab, *(_fake(x) for x in (q[0], q[1] + S, q[2], q[3])), check=True)


def test_scatter_wrappers_emulated(emulated):
    rng = np.random.default_rng(12)
    t = _fake(np.zeros((5, 6)))
    idx, val = rng.integers(0, 30, 1000), rng.normal(size=1000)
    kernels.scatter_add(t, _fake(idx), _fake(val), check=True)
    np.testing.assert_allclose(t.reshape(-1), np.bincount(idx, val, minlength=30), atol=1e-12)
    with pytest.raises(IndexError):
        kernels.scatter_add(t, _fake(np.array([30])), _fake(np.array([1.0])), check=True)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.scatter_add(_fake(np.zeros((4, 4)))[:, :2], _fake(idx[:1]), _fake(val[:1]))
    d = _fake(np.zeros((8, 3)))
    lo = rng.integers(0, 8, 200)
    hi = np.minimum(lo + 2, 7)
    col = rng.integers(0, 3, 200)
    kernels.diff_scatter(d, _fake(lo), _fake(hi), _fake(col), _fake(val[:200]), check=True)
    want = np.zeros((8, 3))
    diff_scatter_emulate(want, lo, hi, col, val[:200])
    np.testing.assert_array_equal(np.asarray(d), want)


# -- the whole engine down its CuPy branch, on the CPU ---------------------------------------------
class _NumpyAsCupy:
    """An array namespace that *is not* numpy (so the engine takes its CuPy branches) but
    computes with numpy and hands out _FakeArray, which the kernel wrappers accept."""

    ndarray = _FakeArray

    def __getattr__(self, name):
        obj = getattr(np, name)
        if callable(obj) and not isinstance(obj, type):
            def wrapped(*args, **kwargs):
                return _wrap(obj(*args, **kwargs))
            return wrapped
        return obj

    @staticmethod
    def asnumpy(x):
        return np.asarray(x).view(np.ndarray)


def _wrap(r):
    if isinstance(r, np.ndarray) and not isinstance(r, _FakeArray):
        return r.view(_FakeArray)
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    return r


def test_engine_cupy_branch_emulated_equals_reference(emulated, monkeypatch):
    """Every line the engine runs on a GPU (kernel launches included, as CPU emulations that
    check each launch against the CUDA signature) gives the reference's numbers."""
    from liqgpu.model import engine
    from liqgpu.model.grid import Grid
    from liqgpu.model.inputs import prepare
    from liqgpu.model.v1 import Params, reference_estimate

    from helpers import make_series, random_market

    monkeypatch.setitem(sys.modules, "cupyx",
                        SimpleNamespace(scatter_add=lambda t, i, v: np.add.at(t, i, v)))
    real_first_cross = kernels.first_cross

    def first_cross(tables, *args, **kw):  # register the level tables' buffers by address
        for lv in tables.levels:
            emulated.arrays[lv.__array_interface__["data"][0]] = lv
        return real_first_cross(tables, *args, **kw)

    monkeypatch.setattr(kernels, "first_cross", first_cross)
    xp = _NumpyAsCupy()
    for seed, p in ((3, Params()), (4, Params(max_age="45min", entry="ohlc4", side_split="taker"))):
        d, e = random_market(seed, 400, nan_rows=0.05, with_mark=seed == 4)
        s = make_series(d["close"], d["oi"], high=d["high"], low=d["low"], open_=d["open_"],
                        extra=e)
        g = Grid.covering(*prepare([s], p).level_range())
        eng = engine.Engine(prepare([s], p), g, 15, xp=xp, dtype=np.float64)
        parts = list(eng.run(4))
        ref = reference_estimate(s, p, g, 15)
        for v in ("intensity", "liquidated", "added", "closed", "expired", "outside"):
            got = np.concatenate([np.asarray(getattr(x, v)) for x in parts], axis=1)[0]
            scale = max(np.abs(ref[v]).max(), 1e-300)
            assert np.abs(got - ref[v]).max() / scale < 1e-9, v
    assert {"first_cross_f64", "scatter_add_f64", "diff_scatter_f64"} <= set(emulated.kernels)
    assert all(k.launches for k in emulated.kernels.values())
