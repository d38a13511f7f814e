"""Bybit, OKX and Tardis readers, on sample files written from the documented layouts."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from liqgpu.errors import InputError
from liqgpu.io import bybit, okx, tardis

T0 = 1704067200000  # 2024-01-01 00:00 UTC, ms


# -- Bybit ---------------------------------------------------------------------------------------
def test_bybit_liquidation_stream_buy_is_long_liquidated(tmp_path):
    msgs = [
        {"topic": "liquidation.BTCUSDT", "type": "snapshot", "ts": T0 + 10,
         "data": {"updatedTime": T0, "symbol": "BTCUSDT", "side": "Buy", "size": "0.003",
                  "price": "43511.70"}},
        {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": T0 + 2010,
         "data": [{"T": T0 + 2000, "s": "BTCUSDT", "S": "Sell", "v": "0.5", "p": "44000"}]},
    ]
    p = tmp_path / "liq.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("\n".join(json.dumps(m) for m in msgs))
    df = bybit.read_liquidations([p]).frame
    assert df["side"].tolist() == ["long", "short"]
    assert (df["price_kind"] == "bankruptcy").all() and (df["exchange"] == "bybit").all()
    np.testing.assert_allclose(df["qty"], [0.003, 0.5])
    np.testing.assert_allclose(df["notional"], [0.003 * 43511.7, 22000])
    assert df["time"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")


def test_bybit_inverse_size_is_usd_contracts(tmp_path):
    p = tmp_path / "liq.csv"
    p.write_text(f"updatedTime,symbol,side,size,price\n{T0},BTCUSD,Sell,1000,40000\n")
    df = bybit.read_liquidations([p]).frame
    assert df["notional"].iloc[0] == 1000 and df["qty"].iloc[0] == pytest.approx(0.025)
    assert df["side"].iloc[0] == "short"


def test_bybit_open_interest_newest_first_json(tmp_path):
    doc = {"retCode": 0, "result": {"symbol": "BTCUSDT", "category": "linear", "list": [
        {"openInterest": "50200.5", "timestamp": str(T0 + 600_000)},
        {"openInterest": "50100.0", "timestamp": str(T0 + 300_000)},
        {"openInterest": "50000.0", "timestamp": str(T0)}]}}
    p = tmp_path / "oi.json"
    p.write_text(json.dumps(doc))
    t = bybit.read_open_interest([p])
    df = t.frame
    # snapshot at T -> bar opening at T - 5m
    assert df["time"].iloc[0] == pd.Timestamp("2023-12-31 23:55", tz="UTC")
    np.testing.assert_allclose(df["oi"], [50000, 50100, 50200.5])
    assert df["symbol"].iloc[0] == "BTCUSDT" and df["kind"].iloc[0] == "linear"


# -- OKX -----------------------------------------------------------------------------------------
def test_okx_liquidation_orders_contracts_and_sides(tmp_path):
    doc = {"code": "0", "msg": "", "data": [
        {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "details": [
            {"bkLoss": "0", "bkPx": "40000", "ccy": "", "posSide": "net", "side": "sell",
             "sz": "3", "ts": str(T0)},
            {"bkLoss": "0", "bkPx": "41000", "ccy": "", "posSide": "short", "side": "buy",
             "sz": "10", "ts": str(T0 + 1000)}]},
        {"instId": "BTC-USD-SWAP", "instType": "SWAP", "details": [
            {"bkPx": "40000", "posSide": "net", "side": "buy", "sz": "5", "ts": str(T0 + 500)}]},
    ]}
    p = tmp_path / "okx.json"
    p.write_text(json.dumps(doc))
    df = okx.read_liquidations([p]).frame
    assert df["symbol"].tolist() == ["BTC-USDT-SWAP", "BTC-USD-SWAP", "BTC-USDT-SWAP"]
    assert df["side"].tolist() == ["long", "short", "short"]
    np.testing.assert_allclose(df["qty"], [0.03, 500 / 40000, 0.1])  # ctVal 0.01 BTC; 100 USD
    np.testing.assert_allclose(df["notional"], [1200, 500, 4100])
    assert (df["price_kind"] == "bankruptcy").all()


def test_okx_unknown_contract_value_needs_option(tmp_path):
    p = tmp_path / "okx.csv"
    p.write_text(f"ts,instId,side,posSide,sz,bkPx\n{T0},PEPE-USDT-SWAP,sell,net,2,0.00001\n")
    with pytest.raises(InputError, match="contract-value"):
        okx.read_liquidations([p])
    df = okx.read_liquidations([p], contract_value=10_000_000).frame
    assert df["notional"].iloc[0] == pytest.approx(200.0)


def test_okx_open_interest_history_rubik(tmp_path):
    rows = [[str(T0 + 600_000), "3000", "30", "1.2e6"], [str(T0 + 300_000), "2000", "20", "8e5"]]
    p = tmp_path / "oi.json"
    p.write_text(json.dumps({"code": "0", "data": rows}))
    df = okx.read_open_interest([p], symbol="BTC-USDT-SWAP").frame
    np.testing.assert_allclose(df["oi"], [20, 30])  # base units (oiCcy)
    assert df["time"].iloc[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    inv = okx.read_open_interest([p], symbol="BTC-USD-SWAP").frame
    np.testing.assert_allclose(inv["oi"], [2000, 3000])  # contracts
    assert inv["kind"].iloc[0] == "inverse" and inv["contract_size"].iloc[0] == 100


# -- Tardis --------------------------------------------------------------------------------------
TICKER_HEADER = ("exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,"
                 "predicted_funding_rate,open_interest,last_price,index_price,mark_price")


def test_tardis_derivative_ticker_microseconds_bucketed(tmp_path):
    us = T0 * 1000
    lines = [TICKER_HEADER]
    for sec, oi, mark in ((0, 100, 40000), (20, 101, 40050), (50, 102, 39990), (70, 103, 40100)):
        lines.append(f"binance-futures,BTCUSDT,{us + sec * 10**6},{us + sec * 10**6 + 5},,0.0001,,"
                     f"{oi},{mark},{mark},{mark}")
    p = tmp_path / "binance-futures_derivative_ticker_2024-01-01_BTCUSDT.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    df = tardis.read_derivative_ticker([p], step="1m").frame
    assert df["time"].tolist() == [pd.Timestamp("2024-01-01 00:00", tz="UTC"),
                                   pd.Timestamp("2024-01-01 00:01", tz="UTC")]
    np.testing.assert_allclose(df["oi"], [102, 103])
    np.testing.assert_allclose(df["mark_high"], [40050, 40100])
    np.testing.assert_allclose(df["mark_low"], [39990, 40100])
    assert df["exchange"].iloc[0] == "binance"
    q = tardis.read_derivative_ticker([p], step="1m", oi_unit="quote").frame
    np.testing.assert_allclose(q["oi"], [102 / 39990, 103 / 40100])


def test_tardis_liquidations_sell_is_long(tmp_path):
    us = T0 * 1000
    p = tmp_path / "liq.csv"
    p.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
                 f"binance-futures,BTCUSDT,{us},{us + 9},1,sell,40000,0.5\n"
                 f"bybit,BTCUSDT,{us + 10**6},{us + 10**6 + 9},,buy,40100,0.1\n")
    df = tardis.read_liquidations([p]).frame
    assert df["side"].tolist() == ["long", "short"]
    assert df["price_kind"].tolist() == ["order", "bankruptcy"]
    assert df["exchange"].tolist() == ["binance", "bybit"]
    np.testing.assert_allclose(df["notional"], [20000, 4010])
    assert df["time"].iloc[1] == pd.Timestamp("2024-01-01 00:00:01", tz="UTC")


def test_open_interest_files_of_several_symbols_are_refused(tmp_path):
    paths = []
    for sym in ("BTCUSDT", "ETHUSDT"):
        p = tmp_path / f"{sym}.csv"
        p.write_text(f"timestamp,openInterest,symbol\n{T0},10,{sym}\n{T0 + 300_000},11,{sym}\n")
        paths.append(p)
    with pytest.raises(InputError, match=r"several symbols \(BTCUSDT, ETHUSDT\)"):
        bybit.read_open_interest(paths)
    assert bybit.read_open_interest(paths[:1]).frame["symbol"].iloc[0] == "BTCUSDT"
    lines = [TICKER_HEADER]
    for ex, sym in (("binance-futures", "BTCUSDT"), ("bybit", "BTCUSDT")):
        lines.append(f"{ex},{sym},{T0 * 1000},{T0 * 1000 + 5},,0.0001,,100,40000,40000,40000")
    files = []
    for i, line in enumerate(lines[1:]):
        f = tmp_path / f"t{i}.csv"
        f.write_text(TICKER_HEADER + "\n" + line + "\n")
        files.append(f)
    with pytest.raises(InputError, match="several exchanges"):
        tardis.read_derivative_ticker(files, step="1m")
