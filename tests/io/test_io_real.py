"""Ingest the real files in ../shared/data/real and check what a person would check: row counts,
notional totals against the files' own sums, sides, UTC times, stale OI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from liqgpu.cli import main
from liqgpu.io import binance, bybit, generic
from liqgpu.series import load_series

CG5 = "coinglass_btc_agg/binance_btcusdt_perp_5m_price_oi_2026-05-25_2026-06-22.csv"
CG1H = "coinglass_btc_agg/agg3_btc_liq_binance_oi_spotprice_1h_2025-12-04_2026-06-02.csv"
BYBIT = "bybit_btcusdt_liquidations_2024/bybit_linear_btcusdt_liquidations_2024-02-12_2024-06-02.csv"
BFO = "binance_btcusdt_forceorder_2024-12/binance_um_btcusdt_forceorder_2024-12-04_2024-12-06.csv"
BWS = "binance_forceorder_ws_snippets/binance_um_forceorder_all_symbols.csv"
MV = "multivenue_hl_okx_hourly/liquidation_events_hl_2025-05_okx_2026-03.csv"


def test_binance_5m_perp_price_and_oi(real_data, tmp_path):
    raw = pd.read_csv(real_data / CG5)
    out = tmp_path / "btc5m.parquet"
    res = CliRunner().invoke(main, [
        "ingest", "generic", str(real_data / CG5), "--map", "time=open_time_ms,oi=oi_usd",
        "--oi-unit", "quote", "--exchange", "binance", "--symbol", "BTCUSDT", "-o", str(out)])
    assert res.exit_code == 0, res.output
    s = load_series(out)
    assert len(s) == len(raw) == 8014 and s.n_gaps == 0
    assert str(s.step.astype("timedelta64[m]")) == "5 minutes"
    assert s.time[0] == np.datetime64("2026-05-25T15:55") and s.time[-1] == np.datetime64(
        "2026-06-22T11:40")
    stale = raw["oi_stale"].to_numpy() == 1
    assert stale.sum() == 1679 and np.isnan(s["oi"][stale]).all()
    assert np.isfinite(s["oi"][~stale]).all()
    # oi_usd / close equals the file's own oi_btc_approx
    np.testing.assert_allclose(s["oi"][~stale], raw["oi_btc_approx"].to_numpy()[~stale], rtol=1e-9)
    np.testing.assert_allclose(s["close"], raw["close"])
    assert s.name == "binance:BTCUSDT"


def test_hourly_window_oi_and_gaps(real_data):
    raw = pd.read_csv(real_data / CG1H)
    t = generic.read_generic([real_data / CG1H], mapping=(
        "time=open_time_ms,open=spot_open,high=spot_high,low=spot_low,close=spot_close,"
        "oi=binance_oi_usd_close"), oi_unit="quote", exchange="binance", symbol="BTCUSDT")
    df = t.frame
    assert len(df) == len(raw) == 4312
    assert df["time"].iloc[0] == pd.Timestamp("2025-12-04 06:00", tz="UTC")
    from liqgpu.io.tables import report

    d = report(t)
    expect_missing = int((np.diff(raw["open_time_ms"]) // 3_600_000 - 1).sum())
    assert d["step"] == "1h" and d["missing_bars"] == expect_missing
    np.testing.assert_allclose(df["oi"] * df["close"], raw["binance_oi_usd_close"], rtol=1e-12)


def test_bybit_events(real_data):
    raw = pd.read_csv(real_data / BYBIT)
    df = bybit.read_liquidations([real_data / BYBIT]).frame
    assert len(df) == len(raw) == 30630
    assert str(df["time"].dt.tz) == "UTC"
    assert df["time"].iloc[0] == pd.Timestamp("2024-02-12 16:45:33.999", tz="UTC")
    # Buy = long liquidated, as the file's own liquidated_position column says
    raw = raw.sort_values("ts_ms", kind="stable").reset_index(drop=True)
    assert (df["side"].to_numpy() == raw["liquidated_position"].to_numpy()).all()
    for side in ("long", "short"):
        assert df.loc[df.side == side, "notional"].sum() == pytest.approx(
            raw.loc[raw.liquidated_position == side, "notional_usd"].sum(), rel=1e-12)
    assert df["notional"].sum() == pytest.approx(339_281_064.6157, rel=1e-9)


def test_binance_forceorder_events(real_data):
    raw = pd.read_csv(real_data / BFO)
    df = binance.read_forceorder([real_data / BFO]).frame
    assert len(df) == 1844
    assert (df["side"] == "long").sum() == 729 and (df["side"] == "short").sum() == 1115
    # SELL liquidates a long
    assert ((raw["side"] == "SELL") == (raw["liquidated_position"] == "long")).all()
    # notional = filled x average price, the file's notional_usd
    assert df["notional"].sum() == pytest.approx(raw["notional_usd"].sum(), rel=1e-12)
    assert df["notional"].sum() == pytest.approx(26.85e6, rel=1e-3)
    assert df["time"].iloc[-1] == pd.Timestamp("2024-12-06 18:12:09.262", tz="UTC")


def test_binance_forceorder_snippets_all_symbols(real_data):
    raw = pd.read_csv(real_data / BWS)
    t = binance.read_forceorder([real_data / BWS])
    assert len(t.frame) == len(raw) == 6092
    btc = binance.read_forceorder([real_data / BWS], symbol="BTCUSDT")
    assert len(btc.frame) == 110 and btc.dropped["other symbols (--symbol)"] == 6092 - 110
    lp = raw["liquidated_position"].value_counts()
    assert (t.frame["side"] == "long").sum() == lp["long"]
    # where the fill is missing ("None"), the order price is used and said so
    no_avg = pd.to_numeric(raw["average_price"], errors="coerce").fillna(0).le(0).sum()
    assert (t.frame["price_kind"] == "order").sum() == no_avg


@pytest.mark.parametrize("venue,n,kind", [("okx", 5816, "bankruptcy"),
                                          ("hyperliquid", 2243, "order")])
def test_okx_and_hyperliquid_events(real_data, venue, n, kind):
    raw = pd.read_csv(real_data / MV)
    raw = raw[raw["venue"] == venue]
    t = generic.read_generic_events(
        [real_data / MV], mapping="time=ts_ms,exchange=venue,symbol=coin,side=liquidated_position,"
        "notional=notional_usd,qty=size_base", exchange=venue, price_kind=kind)
    df = t.frame
    assert len(df) == len(raw) == n
    assert df["notional"].sum() == pytest.approx(raw["notional_usd"].sum(), rel=1e-12)
    if venue == "hyperliquid":  # sides unknown
        assert (df["side"] == "unknown").all() and not df["side_known"].any()
    else:  # OKX: sell order -> long liquidated
        assert ((raw["side"] == "sell") == (raw["liquidated_position"] == "long")).all()
        assert df["side"].isin(["long", "short"]).all() and df["side_known"].all()
        assert set(df["symbol"]) == {"BTC", "ETH", "SOL", "DOGE", "HYPE"}
