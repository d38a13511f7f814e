"""Clock-aligned output buckets (the default) and --origin start."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import liqgpu
from liqgpu.cli import main
from liqgpu.series import from_frame

from helpers import random_market


@pytest.fixture(scope="module")
def off_clock():
    """5-minute bars starting at 15:55 UTC."""
    d, e = random_market(11, 300, oi_mode="walk", price=100.0)
    df = pd.DataFrame({"time": pd.date_range("2026-03-02T15:55Z", periods=300, freq="5min"),
                       "open": d["open_"], "high": d["high"], "low": d["low"],
                       "close": d["close"], "oi": d["oi"]})
    return df


def test_buckets_start_on_the_clock(off_clock):
    s = from_frame(off_clock, exchange="x", symbol="BTCUSDT")
    ds = liqgpu.estimate(s, every="30m", backend="numpy", grid="log:20:2000:10")
    t = pd.DatetimeIndex(ds["time"].values)
    assert t[0] == pd.Timestamp("2026-03-02T15:30") and (t.minute % 30 == 0).all()
    # the first bucket holds one bar (15:55), the others six
    assert ds["close"].values[0, 0] == off_clock["close"].iloc[0]
    assert ds["close"].values[0, 1] == off_clock["close"].iloc[6]
    assert ds["high"].values[0, 1] == off_clock["high"].iloc[1:7].max()
    st = liqgpu.estimate(s, every="30m", backend="numpy", grid="log:20:2000:10", origin="start")
    assert pd.Timestamp(st["time"].values[0]) == pd.Timestamp("2026-03-02T15:55")
    # the same positions, cut differently: totals agree
    for v in ("added", "liquidated", "churned"):
        assert float(ds[v].sum()) == pytest.approx(float(st[v].sum()), rel=1e-6)  # float32
    with pytest.raises(liqgpu.InputError, match="--origin"):
        liqgpu.estimate(s, every="30m", origin="midnight")


def test_cli_origin_and_update_keeps_it(off_clock, tmp_path):
    a, b = off_clock.iloc[:200], off_clock.iloc[190:]
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    out = tmp_path / "s.zarr"
    r = CliRunner().invoke(main, ["estimate", str(tmp_path / "a.csv"), "-o", str(out), "--every",
                                  "1h", "--grid", "log:20:2000:10", "--symbol", "BTCUSDT"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["update", str(out), str(tmp_path / "b.csv"), "--symbol",
                                  "BTCUSDT"])
    assert r.exit_code == 0, r.output
    ds = liqgpu.open_store(out)
    t = pd.DatetimeIndex(ds["time"].values)
    assert t[0] == pd.Timestamp("2026-03-02T15:00") and (t.minute == 0).all()
    whole = liqgpu.estimate(from_frame(off_clock, symbol="BTCUSDT"), every="1h",
                            backend="numpy", grid="log:20:2000:10")
    np.testing.assert_array_equal(ds["time"].values, whole["time"].values)
    np.testing.assert_allclose(ds["intensity"].values, whole["intensity"].values, rtol=1e-5,
                               atol=1e-6 * float(whole["intensity"].max()))
