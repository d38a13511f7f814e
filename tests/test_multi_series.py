"""Several exchanges and contract kinds in one store (the series dimension) from the CLI."""

import numpy as np
import pandas as pd
import xarray as xr
from click.testing import CliRunner

import liqgpu
from liqgpu.cli import main

from helpers import random_market


def write_series(path, seed, n, price, exchange, symbol, kind, cs, start_ms):
    d, e = random_market(seed, n, price=price)
    pd.DataFrame({"time": start_ms + 60_000 * np.arange(n), "open": d["open_"], "high": d["high"],
                  "low": d["low"], "close": d["close"], "oi": d["oi"], "exchange": exchange,
                  "symbol": symbol, "kind": kind, "contract_size": cs}).to_parquet(path)


def test_linear_and_inverse_from_two_exchanges_share_grid_and_time(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    t0 = 1_767_225_600_000
    write_series(a, 1, 600, 60_000.0, "binance", "BTCUSDT", "linear", 1.0, t0)
    write_series(b, 2, 500, 61_000.0, "binance-cm", "BTCUSD_PERP", "inverse", 100.0, t0 + 60 * 60_000)
    out = tmp_path / "m.zarr"
    r = CliRunner().invoke(main, ["estimate", str(a), str(b), "-o", str(out), "--every", "30m",
                                  "--backend", "numpy"])
    assert r.exit_code == 0, r.output
    ds = xr.open_zarr(out)
    assert ds["series"].values.tolist() == ["binance:BTCUSDT", "binance-cm:BTCUSD_PERP"]
    assert ds["kind"].values.tolist() == ["linear", "inverse"]
    assert ds["contract_size"].values.tolist() == [1.0, 100.0]
    assert ds.sizes["time"] == 20  # union of both ranges: 600 minutes in 30-minute buckets
    # each series equals its own single-series run on the same grid
    grid = ds.attrs["grid"]
    for i, path in enumerate((a, b)):
        alone = liqgpu.estimate(liqgpu.load_series(path), grid=grid, every="30m", backend="numpy")
        got = ds["intensity"].isel(series=i).sel(time=alone["time"]).values
        np.testing.assert_allclose(got, alone["intensity"].values[0], rtol=1e-6,
                                   atol=1e-6 * float(alone["intensity"].max()))
    # the inverse series starts an hour later: its first two buckets are empty
    assert float(ds["added"].isel(series=1, time=slice(0, 2)).sum()) == 0.0
    assert np.isnan(ds["close"].values[1, :2]).all()
    # aggregate views sum over series
    total = ds["liquidated"].sum(["series", "price", "leverage", "side"]).values
    parts = ds["liquidated"].sum(["price", "leverage", "side"]).values.sum(axis=0)
    np.testing.assert_allclose(total, parts, rtol=1e-5)


def test_series_of_different_steps_are_named_with_their_steps():
    import pytest

    import liqgpu

    a = liqgpu.synthetic_series(days=1, step="5min", seed=1, symbol="A")
    b = liqgpu.synthetic_series(days=1, step="1h", seed=2, symbol="B")
    with pytest.raises(liqgpu.InputError, match=r"series have different steps \(synthetic\(seed=1, "
                                                r"days=1\): 5m, synthetic\(seed=2, days=1\): 1h\); "
                                                r"resample them"):
        liqgpu.estimate([a, b], backend="numpy")
