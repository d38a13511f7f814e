"""Issue 15's user flow end to end, on venues served from 127.0.0.1: history of two venues of
BTC into one store with their realized events, the asset rendered across venues, evaluated on
clock-aligned buckets, and its top levels exported to CSV."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

import liqgpu
from liqgpu.cli import main

from test_fetch_venues import exchange  # noqa: F401  (the local Bybit/OKX server fixture)


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def test_two_venues_of_btc_from_fetch_to_csv(exchange, tmp_path):  # noqa: F811
    series, events = [], []
    for venue, symbol in (("bybit", "BTCUSDT"), ("okx", "BTC-USDT-SWAP")):
        out = run("fetch", venue, "--symbol", symbol, "--start", "2026-03-01", "--end",
                  "2026-03-02", "--interval", "5m", "--out", tmp_path / venue, "--base-url",
                  exchange.url, "--rate", "0", "--json")
        s = json.loads(out)
        series.append(s["series"])
        if s.get("events"):
            events.append(s["events"])
    assert len(events) == 1  # OKX publishes liquidation history; Bybit does not over REST
    store = tmp_path / "btc.zarr"
    realized = [a for e in events for a in ("--realized", e)]
    run("estimate", *series, *realized, "--out", store, "--every", "30m", "--backend", "numpy")
    ds = liqgpu.open_store(store)
    assert [str(x) for x in ds["series"].values] == ["bybit:BTCUSDT", "okx:BTC-USDT-SWAP"]
    assert set(ds["base"].values) == {"BTC"}
    t = pd.DatetimeIndex(ds["time"].values)
    assert (t.minute % 30 == 0).all() and t[0] == pd.Timestamp("2026-03-01")
    ev = pd.read_parquet(events[0])
    assert float(ds["realized"].sel(series="okx:BTC-USDT-SWAP").sum()) == pytest.approx(
        float(ev["notional"].sum()), rel=1e-6)
    # the asset across venues, with the realized dots
    png = tmp_path / "btc.png"
    run("render", store, "--asset", "BTC", "--out", png, "--width", "1200", "--height", "675")
    assert png.stat().st_size > 20_000
    # evaluated on the store's clock-aligned buckets against OKX's events
    out = run("evaluate", store, "--asset", "BTC", "--realized", events[0], "--json",
              tmp_path / "ev.json")
    res = json.loads((tmp_path / "ev.json").read_text())
    timing = res["windows"][0]["timing"]
    for side in ("long", "short"):
        assert timing[side]["realized_notional"] == pytest.approx(
            float(ev.loc[ev["side"] == side, "notional"].sum()), rel=1e-6)
    assert "timing" in out and "range" in out
    # an asset the store does not hold
    r = CliRunner().invoke(main, ["evaluate", str(store), "--asset", "ETH", "--realized",
                                  str(events[0])])
    assert r.exit_code == 2 and "--asset ETH" in r.output
    # the top levels of the asset as CSV, the same as the API gives
    run("levels", store, "--asset", "BTC", "--top", "5", "--csv", tmp_path / "top.csv")
    top = pd.read_csv(tmp_path / "top.csv")
    api = liqgpu.levels(store, asset="BTC", top=5, threshold=0.25)
    assert len(top) == len(api) > 0
    assert top["notional"].tolist() == pytest.approx(api["notional"].tolist())
