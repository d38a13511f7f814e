"""Binance Vision and forceOrder readers, on sample files written from the documented layouts."""

from __future__ import annotations

import gzip
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from liqgpu.errors import InputError
from liqgpu.io import binance

T0 = 1704067200000  # 2024-01-01 00:00 UTC, ms
HEADER_UM = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
             "taker_buy_volume,taker_buy_quote_volume,ignore")


def kline_rows(n=3, unit=1, step_ms=60_000, base=100.0):
    rows = []
    for i in range(n):
        t = (T0 + i * step_ms) * unit
        o = base + i
        rows.append(f"{t},{o},{o + 2},{o - 1},{o + 1},{10 + i},{(T0 + (i + 1) * step_ms - 1) * unit},"
                    f"{(10 + i) * o},{5},{4 + i},{(4 + i) * o},0")
    return rows


def write_zip(path, member, text):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, text)
    return path


@pytest.mark.parametrize("header", [True, False])
def test_klines_with_and_without_header(tmp_path, header):
    text = "\n".join(([HEADER_UM] if header else []) + kline_rows()) + "\n"
    p = write_zip(tmp_path / "BTCUSDT-1m-2024-01-01.zip", "BTCUSDT-1m-2024-01-01.csv", text)
    t = binance.read_klines([p])
    df = t.frame
    assert len(df) == 3 and t.rows_in == 3
    assert str(df["time"].dt.tz) == "UTC"
    assert df["time"].iloc[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert df["time"].iloc[2] == pd.Timestamp("2024-01-01 00:02", tz="UTC")
    np.testing.assert_allclose(df["open"], [100, 101, 102])
    np.testing.assert_allclose(df["high"], [102, 103, 104])
    np.testing.assert_allclose(df["volume"], [10, 11, 12])
    np.testing.assert_allclose(df["taker_buy_volume"], [4, 5, 6])
    np.testing.assert_allclose(df["quote_volume"], [1000, 1111, 1224])
    assert (df["symbol"] == "BTCUSDT").all() and (df["kind"] == "linear").all()


def test_klines_microseconds_read_as_same_times(tmp_path):
    ms = tmp_path / "a" / "BTCUSDT-1m-2024-01-01.csv"
    us = tmp_path / "b" / "BTCUSDT-1m-2024-01-01.csv"
    ms.parent.mkdir(), us.parent.mkdir()
    ms.write_text("\n".join(kline_rows(unit=1)) + "\n")
    us.write_text("\n".join(kline_rows(unit=1000)) + "\n")
    a, b = binance.read_klines([ms]).frame, binance.read_klines([us]).frame
    pd.testing.assert_series_equal(a["time"], b["time"])


def test_klines_gz_and_several_days_joined_in_time_order(tmp_path):
    day2 = [r.replace(str(T0), str(T0 + 180_000), 1) for r in kline_rows(1)]
    p1 = tmp_path / "BTCUSDT-1m-2024-01-02.csv.gz"
    with gzip.open(p1, "wt") as fh:
        fh.write("\n".join(day2) + "\n")
    p0 = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    p0.write_text("\n".join(kline_rows(3)) + "\n")
    t = binance.read_klines([tmp_path])  # a folder: files in name order
    assert t.frame["time"].is_monotonic_increasing and len(t.frame) == 4


def test_coinm_klines_inverse_contract_size_and_base_volume(tmp_path):
    # COIN-M: volume counts contracts, column 8 is base volume, 11 taker buy base volume
    row = f"{T0},40000,40100,39900,40050,500,{T0 + 59999},1.25,10,200,0.5,0"
    row2 = f"{T0 + 60000},40050,40100,40000,40080,300,{T0 + 119999},0.75,10,100,0.25,0"
    p = tmp_path / "BTCUSD_PERP-1m-2024-01-01.csv"
    p.write_text(row + "\n" + row2 + "\n")
    t = binance.read_klines([p])
    df = t.frame
    assert df["kind"].iloc[0] == "inverse" and df["contract_size"].iloc[0] == 100.0
    np.testing.assert_allclose(df["volume"], [1.25, 0.75])
    np.testing.assert_allclose(df["taker_buy_volume"], [0.5, 0.25])
    np.testing.assert_allclose(df["quote_volume"], [50_000, 30_000])  # 500 contracts x 100 USD
    p2 = tmp_path / "ETHUSD_PERP-1m-2024-01-01.csv"
    p2.write_text(row + "\n" + row2 + "\n")
    assert binance.read_klines([p2]).frame["contract_size"].iloc[0] == 10.0


def test_mark_klines_give_mark_range_only(tmp_path):
    p = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    p.write_text("\n".join([HEADER_UM] + kline_rows()) + "\n")
    df = binance.read_mark_klines([p]).frame
    assert [c for c in df.columns if c not in ("time", "exchange", "symbol", "kind",
                                               "contract_size")] == ["mark_high", "mark_low"]
    np.testing.assert_allclose(df["mark_low"], [99, 100, 101])


METRICS_HEADER = ("create_time,symbol,sum_open_interest,sum_open_interest_value,"
                  "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
                  "count_long_short_ratio,sum_taker_long_short_vol_ratio")


def test_metrics_oi_snapshot_goes_to_bar_that_closes_at_it(tmp_path):
    text = "\n".join([METRICS_HEADER,
                      "2024-01-01 00:05:00,BTCUSDT,80000.5,3.4e9,1.1,1.2,1.3,0.9",
                      "2024-01-01 00:10:00,BTCUSDT,80010.0,3.4e9,1.1,1.2,1.3,0.9"]) + "\n"
    p = write_zip(tmp_path / "BTCUSDT-metrics-2024-01-01.zip", "BTCUSDT-metrics-2024-01-01.csv", text)
    df = binance.read_metrics([p]).frame
    assert df["time"].iloc[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    np.testing.assert_allclose(df["oi"], [80000.5, 80010.0])


def test_metrics_mixed_symbols_is_an_error(tmp_path):
    p = tmp_path / "BTCUSDT-metrics-2024-01-01.csv"
    p.write_text("\n".join([METRICS_HEADER, "2024-01-01 00:05:00,BTCUSDT,1,1,1,1,1,1",
                            "2024-01-01 00:10:00,ETHUSDT,1,1,1,1,1,1"]) + "\n")
    with pytest.raises(InputError, match=r"BTCUSDT-metrics-2024-01-01.csv: mixed symbols"):
        binance.read_metrics([p])


LIQ_HEADER = ("time,side,order_type,time_in_force,original_quantity,price,average_price,"
              "order_status,last_fill_quantity,accumulated_fill_quantity")


def test_liquidation_snapshot_sides_prices_and_coinm_contracts(tmp_path):
    text = "\n".join([LIQ_HEADER,
                      f"{T0},SELL,LIMIT,IOC,0.5,41000,41100,FILLED,0.5,0.5",
                      f"{T0 + 1000},BUY,LIMIT,IOC,0.2,42000,0,NEW,0,0"]) + "\n"
    p = write_zip(tmp_path / "BTCUSDT-liquidationSnapshot-2024-01-01.zip", "x.csv", text)
    df = binance.read_liquidation_snapshot([p]).frame
    assert df["side"].tolist() == ["long", "short"]  # SELL order liquidates a long
    assert df["price_kind"].tolist() == ["average", "order"]
    np.testing.assert_allclose(df["price"], [41100, 42000])
    np.testing.assert_allclose(df["notional"], [0.5 * 41100, 0.2 * 42000])
    # COIN-M: quantities are contracts of 100 USD
    p2 = write_zip(tmp_path / "BTCUSD_PERP-liquidationSnapshot-2024-01-01.zip", "x.csv",
                   "\n".join([LIQ_HEADER, f"{T0},SELL,LIMIT,IOC,30,40000,40000,FILLED,30,30"]))
    ev = binance.read_liquidation_snapshot([p2]).frame
    assert ev["notional"].iloc[0] == 3000.0 and ev["qty"].iloc[0] == pytest.approx(0.075)


def test_forceorder_websocket_json_lines_and_csv(tmp_path):
    msgs = [
        {"e": "forceOrder", "E": T0 + 5, "o": {"s": "BTCUSDT", "S": "SELL", "o": "LIMIT",
         "f": "IOC", "q": "0.014", "p": "9910", "ap": "9910", "X": "FILLED", "l": "0.014",
         "z": "0.014", "T": T0}},
        {"stream": "!forceOrder@arr", "data": {"e": "forceOrder", "E": T0 + 2005, "o": {
            "s": "ETHUSDT", "S": "BUY", "q": "1", "p": "2000", "ap": "2010", "z": "1",
            "T": T0 + 2000}}},
    ]
    p = tmp_path / "fo.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("\n".join(json.dumps(m) for m in msgs) + "\n")
    t = binance.read_forceorder([p])
    df = t.frame
    assert df["side"].tolist() == ["long", "short"]
    assert df["symbol"].tolist() == ["BTCUSDT", "ETHUSDT"]
    np.testing.assert_allclose(df["notional"], [0.014 * 9910, 2010])
    only = binance.read_forceorder([p], symbol="ETHUSDT")
    assert len(only.frame) == 1 and only.dropped == {"other symbols (--symbol)": 1}
    csv = tmp_path / "fo.csv"
    csv.write_text("T,s,S,q,p,ap,z\n"
                   f"{T0},BTCUSDT,SELL,0.014,9910,9910,0.014\n{T0 + 2000},ETHUSDT,BUY,1,2000,2010,1\n")
    pd.testing.assert_frame_equal(binance.read_forceorder([csv]).frame, df)


def test_forceorder_files_without_the_symbol_are_skipped_not_fatal(tmp_path):
    head = "T,s,S,q,p,ap,z\n"
    eth_only = tmp_path / "a.csv"
    eth_only.write_text(head + f"{T0},ETHUSDT,BUY,1,2000,2010,1\n")
    both = tmp_path / "b.csv"
    both.write_text(head + f"{T0 + 5000},BTCUSDT,SELL,0.5,9000,9000,0.5\n"
                    f"{T0 + 6000},ETHUSDT,SELL,2,2000,2000,2\n")
    t = binance.read_forceorder([eth_only, both], symbol="BTCUSDT")
    assert t.frame["symbol"].tolist() == ["BTCUSDT"]
    np.testing.assert_allclose(t.frame["notional"], [4500.0])
    assert t.dropped == {"other symbols (--symbol)": 2}
    with pytest.raises(InputError, match="no liquidation events of SOLUSDT"):
        binance.read_forceorder([eth_only, both], symbol="SOLUSDT")
