"""Backend resolution and its errors: ``--backend cupy`` without CuPy is one clear line, exit 2."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

from liqgpu.cli import main
from liqgpu.errors import BackendUnavailable
from liqgpu import backend


@pytest.fixture
def no_cupy(monkeypatch):
    """Make ``import cupy`` fail as it does where CuPy is not installed."""
    monkeypatch.setitem(sys.modules, "cupy", None)


@pytest.fixture
def cupy_without_device(monkeypatch):
    """A CuPy that imports but sees no CUDA device."""
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)


@pytest.fixture
def csv(tmp_path):
    """A small valid series: 1-minute bars, epoch-millisecond times."""
    rng = np.random.default_rng(0)
    n = 120
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    close = 100 * np.exp(np.cumsum(0.001 * rng.standard_normal(n)))
    opn = np.r_[close[0], close[:-1]]
    high = np.maximum(opn, close) * 1.001
    low = np.minimum(opn, close) * 0.999
    oi = 1000 + np.cumsum(rng.integers(-5, 10, n))
    lines = ["time,open,high,low,close,oi"]
    lines += [f"{t0 + 60_000 * i},{opn[i]:.6f},{high[i]:.6f},{low[i]:.6f},{close[i]:.6f},{oi[i]}"
              for i in range(n)]
    p = tmp_path / "bars.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _estimate(csv, out, backend_name):
    return CliRunner().invoke(main, ["estimate", str(csv), "--out", str(out),
                                     "--backend", backend_name, "--every", "1h"])


def _one_line(output: str) -> str:
    lines = [x for x in output.splitlines() if x.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_cli_cupy_backend_without_cupy(no_cupy, csv, tmp_path):
    out = tmp_path / "out.zarr"
    r = _estimate(csv, out, "cupy")
    assert r.exit_code == 2, r.output
    line = _one_line(r.output)
    assert "CuPy" in line
    assert "pip install 'liqgpu[gpu]'" in line
    assert not out.exists()


def test_cli_cupy_backend_without_device(cupy_without_device, csv, tmp_path):
    out = tmp_path / "out.zarr"
    r = _estimate(csv, out, "cupy")
    assert r.exit_code == 2, r.output
    line = _one_line(r.output)
    assert "no CUDA device" in line and "--backend numpy" in line
    assert not out.exists()


def test_cli_numpy_backend_works_on_the_same_csv(no_cupy, csv, tmp_path):
    out = tmp_path / "out.zarr"
    r = _estimate(csv, out, "numpy")
    assert r.exit_code == 0, r.output
    assert out.exists()


def test_resolve(no_cupy):
    assert backend.resolve("numpy") == ("numpy", np)
    assert backend.resolve("auto") == ("numpy", np)  # falls back without CuPy
    assert backend.gpu_available() is False
    with pytest.raises(BackendUnavailable, match=r"CuPy is not installed.*liqgpu\[gpu\]"):
        backend.resolve("cupy")
    with pytest.raises(ValueError, match="--backend"):
        backend.resolve("torch")


def test_ops_chosen_by_namespace():
    """One operations module per backend, with the same functions (the engine calls these)."""
    from liqgpu.backend import cpu, cuda

    assert backend.ops_for(np) is cpu
    assert backend.ops_for(object()) is cuda  # any other namespace: CuPy
    names = {"name", "on_host", "to_host", "scatter_add", "diff_scatter", "scatter_rows",
             "first_cross"}
    for ops in (cpu, cuda):
        assert names <= set(vars(ops)), ops.__name__
    assert (cpu.name, cpu.on_host, cuda.name, cuda.on_host) == ("numpy", True, "cupy", False)


def test_array_namespace_without_cupy_loaded(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    assert backend.array_namespace(np.zeros(2), np.ones(3)) is np


@pytest.mark.gpu
def test_resolve_cupy_on_a_gpu():
    import cupy

    assert backend.resolve("cupy") == ("cupy", cupy)
    assert backend.resolve("auto") == ("cupy", cupy)
    with pytest.raises(TypeError, match="mixed"):
        backend.array_namespace(np.zeros(2), cupy.zeros(2))
    assert backend.array_namespace(cupy.zeros(2)) is cupy



@pytest.mark.gpu
def test_cuda_to_host_pinned_and_pageable():
    """The CUDA backend's copy to the host: the same values whether it goes through pinned
    memory (1 MiB and up, strided device views included) or cupy.asnumpy (smaller)."""
    import cupy

    from liqgpu.backend import cuda

    rng = np.random.default_rng(3)
    huge = rng.normal(size=(3, 200, 1001))  # 4.6 MiB of float64
    cases = [
        (cupy.asarray(huge), huge),
        (cupy.asarray(huge)[:, 5:150, :1000], huge[:, 5:150, :1000]),  # strided, > 1 MiB
        (cupy.asarray(huge).transpose(2, 0, 1), huge.transpose(2, 0, 1)),
        (cupy.arange(10), np.arange(10)),  # below the pinned floor
    ]
    for dev, want in cases:
        got = cuda.to_host(dev)
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert cases[1][1].nbytes >= cuda.PINNED_MIN_BYTES
