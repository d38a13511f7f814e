"""Realized liquidations through `liqgpu estimate --realized`, on real OKX events: from raw files
to a store in three commands, events in the right buckets and bins, totals matching the file."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

import liqgpu
from liqgpu.cli import main

CG1H = "coinglass_btc_agg/agg3_btc_liq_binance_oi_spotprice_1h_2025-12-04_2026-06-02.csv"
MV = "multivenue_hl_okx_hourly/liquidation_events_hl_2025-05_okx_2026-03.csv"


def cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def okx_store(real_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("okx")
    # hourly BTC price + OI (window 3 of the data README), labelled as the OKX series so OKX's
    # BTC events are binned onto it
    cli("ingest", "generic", real_data / CG1H, "--map",
        "time=open_time_ms,open=spot_open,high=spot_high,low=spot_low,close=spot_close,"
        "oi=binance_oi_usd_close", "--oi-unit", "quote", "--exchange", "okx", "--symbol", "BTC",
        "--out", d / "btc.parquet")
    cli("ingest", "generic-events", real_data / MV, "--map",
        "time=ts_ms,exchange=venue,symbol=coin,side=liquidated_position,notional=notional_usd,"
        "qty=size_base", "--exchange", "okx", "--price-kind", "bankruptcy",
        "--out", d / "events.parquet")
    r = CliRunner().invoke(main, ["estimate", str(d / "btc.parquet"), "--realized",
                                  str(d / "events.parquet"), "--out", str(d / "refused.zarr")])
    # the file holds other coins' events too: an error, unless --allow-unmatched
    assert r.exit_code == 2 and "belong to no series of the store" in r.output, r.output
    assert "--allow-unmatched" in r.output and not (d / "refused.zarr").exists()
    out = cli("estimate", d / "btc.parquet", "--realized", d / "events.parquet",
              "--out", d / "btc.zarr", "--every", "1h", "--backend", "numpy",
              "--allow-unmatched")
    return d, out


def test_realized_events_land_in_their_buckets_and_bins(okx_store, real_data):
    d, out = okx_store
    ds = xr.open_zarr(d / "btc.zarr")
    raw = pd.read_csv(real_data / MV)
    btc = raw[(raw["venue"] == "okx") & (raw["coin"] == "BTC")]
    assert len(btc) > 100
    r = ds["realized"].values[0]  # (time, price, side)
    assert ds["realized"].dims == ("series", "time", "price", "side")
    assert r.sum() == pytest.approx(btc["notional_usd"].sum(), rel=1e-6)
    for side, k in (("long", 0), ("short", 1)):
        want = btc.loc[btc["liquidated_position"] == side, "notional_usd"].sum()
        assert r[:, :, k].sum() == pytest.approx(want, rel=1e-6)
    # one event by hand: its hour and its price bin
    ev = btc.sort_values("notional_usd").iloc[-1]
    t = np.datetime64(pd.Timestamp(ev["ts_ms"], unit="ms").floor("1h").tz_localize(None), "ns")
    o = int(np.flatnonzero(ds["time"].values == t)[0])
    j = int(np.searchsorted(ds["price_edges"].values, ev["price"], side="right") - 1)
    k = 0 if ev["liquidated_position"] == "long" else 1
    assert r[o, j, k] >= ev["notional_usd"] * (1 - 1e-6)
    # the other coins' events belong to no series of this store: counted, not binned
    s = ds.attrs["realized_summary"]
    assert s["other_series"]["count"] == int((raw["venue"] == "okx").sum() - len(btc))
    assert s["binned"] == len(btc)
    assert f"realized: {len(btc)} of" in out


def test_realized_and_estimate_on_the_same_grid(okx_store):
    d, _ = okx_store
    ds = liqgpu.open_store(d / "btc.zarr")
    assert ds["realized"].sizes["price"] == ds["intensity"].sizes["price"]
    # the realized longs of that day sit below the price of their hour, the shorts above,
    # like the estimated levels
    day = ds.sel(time=slice("2026-03-04", "2026-03-05"))
    r = day["realized"].values[0]
    price = day["price"].values
    close = day["close"].values[0]
    below = sum(r[o, price < close[o] * 1.002, 0].sum() for o in range(len(close)))
    assert below > 0.9 * r[:, :, 0].sum()


def test_events_outside_the_time_range_are_an_error_unless_allowed(tmp_path):
    s = liqgpu.synthetic_series(days=1, seed=2, exchange="binance", symbol="BTCUSDT")
    t = pd.to_datetime(s.time, utc=True)
    ev = pd.DataFrame({"time": [t[10], t[-1] + pd.Timedelta("2h"), t[20]],
                       "exchange": "binance", "symbol": "BTCUSDT",
                       "side": ["long", "short", "short"],
                       "price": [s["close"][10], s["close"][-1], s["close"][20]],
                       "notional": [1e5, 2e5, 3e5]})
    late = (t[-1] + pd.Timedelta("2h")).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(liqgpu.InputError, match=f"1 of 3 fall outside its time range .* \\(those "
                                                f"from {late} to {late}\\)"):
        liqgpu.estimate(s, every="1h", backend="numpy", realized=ev)
    ds = liqgpu.estimate(s, every="1h", backend="numpy", realized=ev, allow_unmatched=True)
    assert float(ds["realized"].sum()) == pytest.approx(4e5)
    # epoch seconds, milliseconds and microseconds read the same
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        e2 = ev.iloc[[0, 2]].copy()
        e2["time"] = (e2["time"].astype("datetime64[ns, UTC]").astype("int64") // scale)
        got = liqgpu.estimate(s, every="1h", backend="numpy", realized=e2)
        np.testing.assert_array_equal(got["realized"].values, ds["realized"].values, unit)


def test_events_without_venue_columns_are_the_single_series(tmp_path):
    """An events file without exchange and symbol columns (as `liqgpu evaluate` reads them)
    is taken as the only series' of a one-series store; a store of several series refuses it,
    saying why."""
    s = liqgpu.synthetic_series(days=1, seed=2, exchange="binance", symbol="BTCUSDT")
    t = pd.to_datetime(s.time, utc=True)
    full = pd.DataFrame({"time": [t[10], t[20]], "exchange": "binance", "symbol": "BTCUSDT",
                         "side": ["long", "short"], "price": [s["close"][10], s["close"][20]],
                         "notional": [1e5, 3e5]})
    bare = full.drop(columns=["exchange", "symbol"])
    bare.to_csv(tmp_path / "bare.csv", index=False)
    want = liqgpu.estimate(s, every="1h", backend="numpy", realized=full)["realized"].values
    assert want.sum() == pytest.approx(4e5)
    got = liqgpu.estimate(s, every="1h", backend="numpy", realized=tmp_path / "bare.csv")
    np.testing.assert_array_equal(got["realized"].values, want)
    # the store says which file and which price convention its realized events came in
    summary = got.attrs["realized_summary"]
    assert summary["sources"] == [str(tmp_path / "bare.csv")]
    assert summary["price_kinds"] == ["order"]  # validate_events' default for a bare file
    s2 = liqgpu.synthetic_series(days=1, seed=3, exchange="bybit", symbol="BTCUSDT")
    with pytest.raises(liqgpu.InputError, match="bare.csv: missing columns 'exchange', 'symbol'.*"
                                                "only for a store of one series"):
        liqgpu.estimate([s, s2], every="1h", backend="numpy", realized=tmp_path / "bare.csv")


def test_unknown_side_events_skipped_or_split_and_update_keeps_the_rule(tmp_path, caplog):
    """Events whose side is not published (Hyperliquid's): left out by default, with a warning
    that names the option; `unknown_side='split'` bins half of each to each side, and `update`
    bins new events the way the store was binned."""
    from liqgpu.series import Series
    from liqgpu.updating import update

    s = liqgpu.synthetic_series(days=2, seed=4, exchange="hyperliquid", symbol="BTC")
    t = pd.to_datetime(s.time, utc=True)
    idx = [30, 200, 1500, 2500]
    ev = pd.DataFrame({"time": t[idx], "exchange": "hyperliquid", "symbol": "BTC",
                       "side": ["unknown", "long", "unknown", "unknown"],
                       "price": s["close"][idx], "notional": [1e5, 2e5, 3e5, 4e5]})
    with caplog.at_level("WARNING"):
        skip = liqgpu.estimate(s, every="1h", backend="numpy", realized=ev)
    assert "unknown_side 3" in caplog.text and "--unknown-side split" in caplog.text
    r = skip["realized"].values[0]
    assert r[..., 0].sum() == pytest.approx(2e5) and r[..., 1].sum() == 0
    grid = "log:20000:150000:10"
    split = liqgpu.estimate(s, every="1h", backend="numpy", realized=ev, unknown_side="split",
                            grid=grid)
    r = split["realized"].values[0]
    assert r[..., 0].sum() == pytest.approx(2e5 + 4e5) and r[..., 1].sum() == pytest.approx(4e5)
    # the 1e5 event: half of it on each side, in its hour and price bin
    o = int(np.searchsorted(split["time"].values, t[30].tz_localize(None).to_datetime64(),
                            side="right")) - 1
    j = int(np.searchsorted(split["price_edges"].values, s["close"][30], side="right")) - 1
    assert r[o, j, 0] == pytest.approx(5e4) and r[o, j, 1] == pytest.approx(5e4)
    assert split.attrs["realized_summary"]["unknown_side_rule"] == "split"
    assert split.attrs["realized_summary"]["sources"] == ["<DataFrame>"]
    with pytest.raises(liqgpu.InputError, match="--unknown-side: 'half' is not one of skip, split"):
        liqgpu.estimate(s, every="1h", backend="numpy", realized=ev, unknown_side="half")
    # update: the first day estimated with the rule, the second appended with the events
    cut = 1440
    head = Series(s.time[:cut], s.step, {c: s[c][:cut] for c in s.columns}, s.exchange,
                  s.symbol)
    store = tmp_path / "hl.zarr"
    liqgpu.estimate(head, every="1h", backend="numpy", out=store, grid=grid,
                    realized=ev[ev["time"] < t[cut]], unknown_side="split")
    update(store, s, realized=ev[ev["time"] >= t[cut]], reopen=False)
    got = liqgpu.open_store(store)["realized"].values
    np.testing.assert_allclose(got, split["realized"].values, rtol=1e-6)
