"""The dataset describes itself (CF-style attributes), and stores of the previous format still
read and update."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import liqgpu
import liqgpu.store.layout as store_mod
from liqgpu.updating import update


@pytest.fixture(scope="module")
def series():
    return liqgpu.synthetic_series(days=2, seed=9)


def test_every_variable_and_coordinate_is_described(series, tmp_path):
    out = tmp_path / "s.zarr"
    liqgpu.estimate(series, every="1h", backend="numpy", out=out)
    ds = xr.open_zarr(out)
    assert ds.attrs["Conventions"] == "CF-1.10" and ds.attrs["format_version"] == 2
    for name in list(ds.data_vars) + list(ds.coords):
        assert ds[name].attrs.get("long_name"), name
    for v in ("intensity", "liquidated", "added", "closed", "churned", "close"):
        assert ds[v].attrs["units"] == "USDT", v  # from the symbol BTCUSDT
    assert ds["price"].attrs["bounds"] == "price_bounds"
    b = ds["price_bounds"].values
    np.testing.assert_array_equal(b[:, 0], ds["price_edges"].values[:-1])
    np.testing.assert_array_equal(b[:, 1], ds["price_edges"].values[1:])
    assert ((b[:, 0] <= ds["price"].values) & (ds["price"].values < b[:, 1])).all()
    # snapshot_time: the end of each bucket, where intensity is taken
    np.testing.assert_array_equal(ds["snapshot_time"].values,
                                  ds["time"].values + np.timedelta64(1, "h"))
    assert ds["base"].values.tolist() == ["BTC"] and ds["quote"].values.tolist() == ["USDT"]
    # bucket bars under names no Dataset method shadows: ds.close is a method, ds.bar_close data
    assert callable(ds.close)
    for v in ("open", "high", "low", "close", "oi"):
        np.testing.assert_array_equal(getattr(ds, f"bar_{v}").values, ds[v].values)
    # a lookup by snapshot time never looks ahead
    t = pd.Timestamp(ds["time"].values[5]) + pd.Timedelta("90min")
    i = int(np.searchsorted(ds["snapshot_time"].values, np.datetime64(t.tz_localize(None)),
                            side="right")) - 1
    snap = liqgpu.snapshot_at(ds, t.isoformat() + "Z")
    assert pd.Timestamp(snap["time"].values) == pd.Timestamp(ds["time"].values[i])


def test_a_previous_format_store_reads_and_updates(series, tmp_path, monkeypatch):
    out = tmp_path / "old.zarr"
    head, tail = series.slice(0, 2000), series.slice(1900, len(series))
    with monkeypatch.context() as m:  # what format 1 wrote: no CF extras
        m.setattr(store_mod, "describe", lambda ds, grid=None: None)
        m.setattr(store_mod, "FORMAT_VERSION", 1)
        m.setattr(store_mod, "BAR_VARS", ())  # and no bar_* copies
        liqgpu.estimate(head, every="1h", backend="numpy", out=out, grid="log:20000:200000:10")
    old = liqgpu.open_store(out)
    assert "snapshot_time" not in old.coords and old.attrs["format_version"] == 1
    got = update(out, tail, allow_outside=True)
    whole = liqgpu.estimate(series, every="1h", backend="numpy", grid="log:20000:200000:10")
    assert "snapshot_time" not in got.coords and "bar_close" not in got
    np.testing.assert_array_equal(got["time"].values, whole["time"].values)
    np.testing.assert_allclose(got["intensity"].values, whole["intensity"].values, rtol=1e-5,
                               atol=1e-6 * float(whole["intensity"].max()))
    assert liqgpu.levels(out, top=3).shape[0] == 3


def test_bar_variables_follow_updates(series, tmp_path):
    out = tmp_path / "u.zarr"
    liqgpu.estimate(series.slice(0, 2000), every="1h", backend="numpy", out=out,
                    grid="log:20000:200000:10")
    got = update(out, series.slice(1900, len(series)), allow_outside=True)
    np.testing.assert_array_equal(got["bar_close"].values, got["close"].values)
    assert np.isfinite(got["bar_close"].values[0, -1])
