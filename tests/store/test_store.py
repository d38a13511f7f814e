"""Stores: layout readable with plain xarray, atomic writes, overwrite rules."""

import json

import numpy as np
import pytest
import xarray as xr

import liqgpu
from liqgpu.errors import InputError
from liqgpu.model.v1 import Params

from helpers import make_series, random_market


@pytest.fixture(scope="module")
def small():
    d, e = random_market(3, 400, nan_rows=0.03)
    return make_series(d["close"], d["oi"], high=d["high"], low=d["low"], extra=e,
                       exchange="binance", symbol="BTCUSDT")


def test_store_layout_and_plain_open_zarr(tmp_path, small):
    out = tmp_path / "s.zarr"
    mem = liqgpu.estimate(small, every="30min", backend="numpy", chunk_buckets=3)
    ds = liqgpu.estimate(small, every="30min", backend="numpy", out=out, chunk_buckets=3)
    plain = xr.open_zarr(out)  # any xarray user can read it
    assert plain["intensity"].dims == ("series", "time", "price", "leverage", "side")
    assert plain["intensity"].dtype == np.float32 and plain["added"].dtype == np.float64
    for v in ("added", "closed", "expired", "outside", "outside_liquidated"):
        assert plain[v].dims == ("series", "time", "leverage", "side")
    for v in ("open", "high", "low", "close", "oi"):
        assert plain[v].dims == ("series", "time")
    assert plain["series"].values.tolist() == ["binance:BTCUSDT"]
    assert plain["side"].values.tolist() == ["long", "short"]
    assert plain.sizes["time"] == 14  # 400 one-minute bars in 30-minute buckets
    assert str(plain["time"].values[1]) == "2026-03-01T00:30:00.000000000"
    # the store run cuts its chunks once more (at the last bucket, for `liqgpu update`):
    # rounding may differ, values may not
    np.testing.assert_allclose(plain["intensity"].values, mem["intensity"].values, rtol=1e-6,
                               atol=1e-6 * float(mem["intensity"].max()))
    np.testing.assert_allclose(ds["closed"].values, mem["closed"].values, rtol=1e-12, atol=1e-6)
    a = plain.attrs
    assert a["format"] == "liqgpu" and a["model"] == "v2" and a["mmr"] == 0.004
    assert len(a["leverages"]) == 40 and a["bands"] == [2, 10, 25, 50, 100, 150]
    assert a["churn"] == 0.3 and a["max_age"] == "none" and a["leverages_spec"] == "log:2:150:40"
    assert plain["leverage"].values.tolist() == ["2-10", "10-25", "25-50", "50-100", "100-150"]
    assert plain["leverage_lo"].values.tolist() == [2, 10, 25, 50, 100]
    assert plain["leverage_hi"].values.tolist() == [10, 25, 50, 100, 150]
    assert plain["churned"].dims == ("series", "time", "leverage", "side")
    np.testing.assert_allclose(ds["churned"].values, mem["churned"].values, rtol=1e-12,
                               atol=1e-9 * float(mem["added"].max()))
    assert a["fingerprint"].startswith("sha256:") and a["every"] == "30m"
    assert (out / "zarr.json").exists()
    meta = json.loads((out / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and "consolidated_metadata" in meta
    enc = plain["intensity"].encoding
    from liqgpu.store import chunking

    tc, pc = chunking(plain.sizes["price"], plain.sizes["leverage"], plain.sizes["time"],
                      plain.sizes["series"])
    assert enc["chunks"] == (1, tc, pc, plain.sizes["leverage"], 2)
    # bucket prices
    np.testing.assert_allclose(plain["high"].values[0, 0], np.nanmax(small["high"][:30]))
    np.testing.assert_allclose(plain["oi"].values[0, 1], small["oi"][59])


def test_same_input_same_fingerprint(tmp_path, small):
    a = liqgpu.estimate(small, every="1h", backend="numpy")
    b = liqgpu.estimate(small, every="1h", backend="numpy")
    c = liqgpu.estimate(small, every="1h", backend="numpy", params=Params(mmr=0.005))
    assert a.attrs["fingerprint"] == b.attrs["fingerprint"] != c.attrs["fingerprint"]


def test_existing_store_is_refused_then_overwritten(tmp_path, small):
    out = tmp_path / "s.zarr"
    liqgpu.estimate(small, every="1h", backend="numpy", out=out)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        liqgpu.estimate(small, every="2h", backend="numpy", out=out)
    assert sorted(p.name for p in out.rglob("*")) == before
    liqgpu.estimate(small, every="2h", backend="numpy", out=out, overwrite=True)
    assert xr.open_zarr(out).attrs["every"] == "2h"
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # no temp or backup left


def test_failure_mid_write_leaves_no_store(tmp_path, small, monkeypatch):
    out = tmp_path / "s.zarr"
    from liqgpu.model import engine

    calls = {"n": 0}
    real = engine.Engine.chunk

    def failing(self, b0, b1, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(self, b0, b1, **kw)

    monkeypatch.setattr(engine.Engine, "chunk", failing)
    with pytest.raises(RuntimeError):
        liqgpu.estimate(small, every="1min", backend="numpy", out=out, chunk_buckets=8)
    assert calls["n"] == 3
    assert list(tmp_path.iterdir()) == []  # nothing at the target, no temp folder


def test_failure_keeps_previous_store(tmp_path, small, monkeypatch):
    out = tmp_path / "s.zarr"
    liqgpu.estimate(small, every="1h", backend="numpy", out=out)
    from liqgpu import store

    monkeypatch.setattr(store.StoreWriter, "commit", lambda self: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        liqgpu.estimate(small, every="2h", backend="numpy", out=out, overwrite=True)
    assert xr.open_zarr(out).attrs["every"] == "1h"
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_not_a_store_and_bad_targets(tmp_path, small):
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match="not a liqgpu store"):
        liqgpu.open_store(tmp_path / "dir")
    with pytest.raises(InputError, match="not a liqgpu store; refusing"):
        liqgpu.estimate(small, backend="numpy", out=tmp_path / "dir", overwrite=True)
    with pytest.raises(InputError, match="does not exist"):
        liqgpu.estimate(small, backend="numpy", out=tmp_path / "missing" / "s.zarr")


def test_writer_thread_failure_propagates_and_leaves_nothing(tmp_path, small, monkeypatch):
    out = tmp_path / "s.zarr"
    from liqgpu import store

    real = store.StoreWriter.write
    calls = {"n": 0}

    def failing(self, ds):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(self, ds)

    monkeypatch.setattr(store.StoreWriter, "write", failing)
    with pytest.raises(OSError, match="disk full"):
        liqgpu.estimate(small, every="10min", backend="numpy", out=out, chunk_buckets=8)
    assert list(tmp_path.iterdir()) == []
    assert calls["n"] == 2  # the engine stopped feeding the writer after its failure
