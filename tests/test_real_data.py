"""Model v1 on real exchange data from ../shared/data/real (never copied into the repo)."""

import numpy as np
import pandas as pd
import pytest

import liqgpu
from liqgpu.model.formulas import level_factor
from liqgpu.series import from_frame

FILE = "coinglass_btc_agg/binance_btcusdt_perp_5m_price_oi_2026-05-25_2026-06-22.csv"


@pytest.fixture(scope="module")
def binance_5m(real_data):
    raw = pd.read_csv(real_data / FILE)
    # OI is published in USD; the model wants base units for a linear contract.
    oi = (raw["oi_usd"] / raw["close"]).where(raw["oi_stale"] == 0)
    df = pd.DataFrame({"time": raw["open_time_ms"], "open": raw["open"], "high": raw["high"],
                       "low": raw["low"], "close": raw["close"], "oi": oi})
    return raw, from_frame(df, exchange="binance", symbol="BTCUSDT", source=FILE)


def test_real_series_loads_with_its_gaps(binance_5m):
    raw, s = binance_5m
    assert s.step == np.timedelta64(5, "m")
    span = (raw["open_time_ms"].iloc[-1] - raw["open_time_ms"].iloc[0]) // 300_000 + 1
    assert len(s) == span
    assert np.isnan(s["oi"]).sum() >= (raw["oi_stale"] == 1).sum()


def test_real_estimate_levels_sit_where_the_formulas_say(binance_5m):
    raw, s = binance_5m
    ds = liqgpu.estimate(s.slice(0, 2016), every="1h", backend="numpy", model="v1")  # first 7 days
    close = ds["close"].values[0]
    inten = ds["intensity"].values[0]  # (time, price, lev, side)
    price = ds["price"].values
    edges = ds["price_edges"].values
    # every long level below the price it was opened at, every short above: at each hour the
    # bulk of long notional sits below the close and the bulk of short notional above it
    t = 100
    longs = inten[t, :, :, 0].sum(axis=1)
    shorts = inten[t, :, :, 1].sum(axis=1)
    assert longs[price < close[t]].sum() > 0.95 * longs.sum()
    assert shorts[price > close[t]].sum() > 0.95 * shorts.sum()
    # the 100x band hugs the price (within ~1%), the 5x band sits ~20% away
    lev = list(ds["leverage"].values)
    l100 = inten[t, :, lev.index(100.0), 0]
    l5 = inten[t, :, lev.index(5.0), 0]
    w100 = np.average(price, weights=l100)
    w5 = np.average(price, weights=l5)
    assert 0.97 < w100 / close[t] < 1.0
    assert 0.7 < w5 / close[t] < 0.86
    # the default grid covers exactly the extreme levels: max entry x 5x short factor, and
    # min entry x 5x long factor, within one 10 bps bin
    hlc3 = (s["high"][:2016] + s["low"][:2016] + s["close"][:2016]) / 3
    top = np.nanmax(hlc3) * level_factor("linear", 5, 0.004, "short")
    bottom = np.nanmin(hlc3) * level_factor("linear", 5, 0.004, "long")
    assert edges[-2] <= top < edges[-1] <= top * 1.0011
    assert edges[0] <= bottom < edges[1]
    assert float(ds["outside"].sum()) == 0.0
    # conservation in the real data
    added = ds["added"].values[0].sum(axis=0)
    gone = (ds["liquidated"].values[0].sum(axis=(0, 1)) + ds["closed"].values[0].sum(axis=0)
            + ds["expired"].values[0].sum(axis=0) + ds["outside_liquidated"].values[0].sum(axis=0))
    live = inten[-1].sum(axis=0) + ds["outside"].values[0, -1]
    np.testing.assert_allclose(gone + live, added, rtol=1e-5)
    assert added.sum() > 1e9  # billions of dollars of new OI in a week of BTCUSDT
