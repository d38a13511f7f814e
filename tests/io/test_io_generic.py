"""Generic mapped tables, merging parts onto one step, and the ingest command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from liqgpu.cli import main
from liqgpu.errors import InputError
from liqgpu.io import align, binance, generic
from liqgpu.series import load_series

T0 = 1704067200000
METRICS_HEADER = ("create_time,symbol,sum_open_interest,sum_open_interest_value,"
                  "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
                  "count_long_short_ratio,sum_taker_long_short_vol_ratio")


def test_generic_map_quote_oi_and_stale(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("ts,o,h,l,c,oi_usd,stale,sym\n"
                 f"{T0},100,110,90,100,1000,0,BTCUSDT\n"
                 f"{T0 + 300_000},100,120,95,200,4000,0,BTCUSDT\n"
                 f"{T0 + 900_000},200,210,190,200,4000,1,BTCUSDT\n")
    t = generic.read_generic([p], mapping="time=ts,open=o,high=h,low=l,close=c,oi=oi_usd,"
                             "oi_stale=stale,symbol=sym", oi_unit="quote", exchange="binance")
    df = t.frame
    np.testing.assert_allclose(df["oi"], [10, 20, np.nan])
    assert df["symbol"].iloc[0] == "BTCUSDT" and df["exchange"].iloc[0] == "binance"
    assert t.dropped == {"OI values flagged stale (set to NaN)": 1}


def test_generic_bad_map_and_missing_column(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text(f"ts,close\n{T0},1\n")
    with pytest.raises(InputError, match="--map: 'price' is not a field"):
        generic.read_generic([p], mapping="price=close")
    with pytest.raises(InputError, match=r"x.csv: --map oi=oi_usd: no column 'oi_usd'"):
        generic.read_generic([p], mapping="time=ts,oi=oi_usd")


def _klines(tmp_path, minutes, name="BTCUSDT-1m-2024-01-01.csv"):
    rows = []
    for i in minutes:
        o = 100.0 + i
        rows.append(f"{T0 + i * 60000},{o},{o + 2},{o - 1},{o + 1},1,{T0 + i * 60000 + 59999},"
                    f"{o},3,0.5,{o / 2},0")
    p = tmp_path / name
    p.write_text("\n".join(rows) + "\n")
    return p


def _metrics(tmp_path, ends):
    p = tmp_path / "BTCUSDT-metrics-2024-01-01.csv"
    lines = [METRICS_HEADER] + [
        f"{pd.Timestamp(T0 + m * 60000, unit='ms'):%Y-%m-%d %H:%M:%S},BTCUSDT,{1000 + m},1,1,1,1,1"
        for m in ends]
    p.write_text("\n".join(lines) + "\n")
    return p


def test_merge_klines_mark_and_5m_oi(tmp_path):
    minutes = [m for m in range(15) if m not in (6, 7)]  # a 2-minute hole in the klines
    k = binance.read_klines([_klines(tmp_path, minutes)])
    mk = tmp_path / "mark"
    mk.mkdir()
    m = binance.read_mark_klines([_klines(mk, range(15))])
    oi = binance.read_metrics([_metrics(tmp_path, [5, 15])])  # the 00:10 snapshot is missing
    s5, gaps = align.merge([k, m, oi], step="5m")
    df = s5.frame
    assert df["time"].tolist() == [pd.Timestamp(f"2024-01-01 00:{x:02d}", tz="UTC")
                                   for x in (0, 5, 10)]
    np.testing.assert_allclose(df["open"], [100, 105, 110])
    np.testing.assert_allclose(df["high"], [106, 111, 116])
    np.testing.assert_allclose(df["low"], [99, 104, 109])
    np.testing.assert_allclose(df["close"], [105, 110, 115])
    np.testing.assert_allclose(df["volume"], [5, 3, 5])  # summed; 2 bars missing in the middle
    np.testing.assert_allclose(df["oi"], [1005, np.nan, 1015])  # missing OI stays NaN
    assert gaps["oi_missing_bars"] == 1 and gaps["price_missing_bars"] == 0
    assert gaps["price_partial_bars"] == 1  # 00:05 made of 3 minutes of 5
    # default step = the coarsest part's (5m); 1m puts OI on the last minute of its 5m bar
    assert align.merge([k, m, oi])[0].frame["time"].size == 3
    s1, g1 = align.merge([k, oi], step="1m")
    o1 = s1.frame["oi"].to_numpy()
    assert o1[4] == 1005 and np.isnan(o1[:4]).all() and o1[14] == 1015
    assert g1["price_missing_bars"] == 2 and g1["price_gaps"] == 1
    assert g1["price_partial_bars"] == 0


def test_merge_errors(tmp_path):
    k = binance.read_klines([_klines(tmp_path, range(10))])
    with pytest.raises(InputError, match="no oi column"):
        align.merge([k])
    oi = binance.read_metrics([_metrics(tmp_path, [5, 10])])
    mark5 = binance.read_mark_klines([_klines(tmp_path, range(0, 10, 5), "BTCUSDT-5m-x.csv")])
    with pytest.raises(InputError, match="only OI can be placed"):
        align.merge([k, oi, mark5], step="1m")
    with pytest.raises(InputError, match="column 'open' is also in"):
        align.merge([k, oi, k])


def test_cli_ingest_parts_then_merge_then_load(tmp_path):
    kdir = tmp_path / "klines"
    kdir.mkdir()
    _klines(kdir, range(10))
    met = _metrics(tmp_path, [5, 10])
    r = CliRunner()
    # ingest writes Parquet only: a .csv name would hold Parquet bytes that nothing reads as CSV
    res = r.invoke(main, ["ingest", "binance-klines", str(kdir), "-o", str(tmp_path / "k.csv")])
    assert res.exit_code == 2 and "ingest writes Parquet; name the file .parquet" in res.output
    assert not (tmp_path / "k.csv").exists()
    res = r.invoke(main, ["ingest", "binance-klines", str(kdir), "-o", str(tmp_path / "k.parquet")])
    assert res.exit_code == 0, res.output
    assert "10 series rows" in res.output and "0 gap(s)" in res.output
    res = r.invoke(main, ["ingest", "binance-metrics", str(met), "-o", str(tmp_path / "m.parquet"),
                          "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["rows"] == 2 and d["step"] == "5m" and d["time_start"].startswith("2024-01-01T00:00")
    out = tmp_path / "s.parquet"
    res = r.invoke(main, ["ingest", "merge", str(tmp_path / "k.parquet"), str(tmp_path / "m.parquet"),
                          "-o", str(out)])
    assert res.exit_code == 0, res.output
    s = load_series(out)
    assert s.name == "binance:BTCUSDT" and len(s) == 2
    np.testing.assert_allclose(s["oi"], [1005, 1010])
    # FORMAT=PATH straight from native files gives the same series
    out2 = tmp_path / "s2.parquet"
    res = r.invoke(main, ["ingest", "merge", f"binance-klines={kdir}", f"binance-metrics={met}",
                          "-o", str(out2)])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(out2))
    # existing output is not replaced without --overwrite
    res = r.invoke(main, ["ingest", "merge", str(tmp_path / "k.parquet"), str(tmp_path / "m.parquet"),
                          "-o", str(out)])
    assert res.exit_code == 2 and "exists" in res.output


@pytest.mark.parametrize("unit, raw, expect", [
    ("contracts", 10_000.0, 10_000.0),
    ("quote", 1_000_000.0, 10_000.0),     # $1M of $100 contracts
    ("base", 25.0, 10_000.0),             # 25 BTC at $40,000 = $1M
])
def test_inverse_oi_units_become_contracts(tmp_path, unit, raw, expect):
    from liqgpu.io.generic import read_generic

    p = tmp_path / "inv.csv"
    p.write_text(f"t,o,h,l,c,oi\n{T0},40000,40000,40000,40000,{raw}\n"
                 f"{T0 + 60_000},40000,40000,40000,40000,{raw}\n")
    t = read_generic([p], mapping="time=t,open=o,high=h,low=l,close=c,oi=oi", oi_unit=unit,
                     kind="inverse", contract_value=100, exchange="x", symbol="BTCUSD")
    np.testing.assert_allclose(t.frame["oi"], [expect, expect])
    if unit != "contracts":
        with pytest.raises(InputError, match="needs --contract-value"):
            read_generic([p], mapping="time=t,open=o,high=h,low=l,close=c,oi=oi", oi_unit=unit,
                         kind="inverse", exchange="x", symbol="BTCUSD")


def test_oi_snapshots_at_irregular_times_are_placed_on_bars(tmp_path):
    """OI read at irregular times (every 7-13 s, off any grid): ingest reports them as
    snapshots, not as a 6 s series with gaps of zero bars, and merge --step puts the last one
    of each bar on it; without --step or klines, one sentence each."""
    k = binance.read_klines([_klines(tmp_path, range(10))])
    times = T0 + np.array([3_000, 14_000, 61_500, 70_000, 119_000, 250_000, 299_000, 481_000])
    p = tmp_path / "snaps.csv"
    pd.DataFrame({"t": times, "oi": np.arange(times.size) + 10.0}).to_csv(p, index=False)
    snaps = generic.read_generic([p], mapping="time=t,oi=oi", exchange="binance",
                                 symbol="BTCUSDT")
    out = tmp_path / "snaps.parquet"
    r = CliRunner().invoke(main, ["ingest", "generic", str(p), "--map", "time=t,oi=oi",
                                  "--exchange", "binance", "--symbol", "BTCUSDT", "-o", str(out)])
    assert r.exit_code == 0 and "at irregular times (no step)" in r.output, r.output
    s1, _ = align.merge([k, snaps], step="1m")
    oi = s1.frame["oi"].to_numpy()
    # the last snapshot of each minute: 00:00 (3 s, 14 s) 11; 00:01 (61.5, 70, 119 s) 14;
    # 00:04 (250, 299 s) 16; 00:08 (481 s) 17; the other minutes none
    np.testing.assert_allclose(oi[:9], [11, 14, np.nan, np.nan, 16, np.nan, np.nan, np.nan, 17])
    with pytest.raises(InputError, match="OI snapshots at irregular times; give --step"):
        align.merge([snaps])


def test_generic_events_errors_name_the_file_row_after_other_venues_are_left_out(tmp_path):
    """A long-format file of several venues, filtered by --exchange: an error names the row
    (and line) of the file, not its place among the rows kept."""
    f = tmp_path / "ev.csv"
    f.write_text("ts_ms,venue,coin,side,px,usd\n"
                 "1700000000000,hyperliquid,BTC,S,35000,1000\n"
                 "1700000060000,hyperliquid,BTC,B,n/a,2000\n"  # not parsed: left out

                 "1700000120000,okx,BTC,long,35020,3000\n"
                 "1700000180000,okx,BTC,sell,35030,4000\n"
                 "1700000240000,okx,BTC,short,-1,5000\n")
    m = "time=ts_ms,exchange=venue,symbol=coin,side=side,price=px,notional=usd"
    with pytest.raises(InputError, match=r"ev.csv: row 4 \(line 5\), column 'side': 'sell' "
                                         "is not long, short or unknown"):
        generic.read_generic_events([f], mapping=m, exchange="okx")
    f.write_text(f.read_text().replace("sell", "long"))
    with pytest.raises(InputError, match=r"ev.csv: row 5 \(line 6\), column 'price': -1; it "
                                         "must be a number > 0"):
        generic.read_generic_events([f], mapping=m, exchange="okx")
    f.write_text(f.read_text().replace("short,-1", "short,35040"))
    t = generic.read_generic_events([f], mapping=m, exchange="okx")
    assert list(t.frame["side"]) == ["long", "long", "short"]
    assert list(t.frame["notional"]) == [3000.0, 4000.0, 5000.0]
    assert t.dropped["other exchanges/symbols"] == 2
    # buy/sell orders: the same rule
    f.write_text(f.read_text().replace("okx,BTC,long", "okx,BTC,sell", 1)
                 .replace("okx,BTC,long", "okx,BTC,hold"))
    with pytest.raises(InputError, match=r"row 4 \(line 5\), column 'side': 'hold' is not buy "
                                         "or sell"):
        generic.read_generic_events([f], mapping=m, exchange="okx", side_means="order")


def test_quote_oi_part_without_prices_is_divided_by_the_merged_close(tmp_path):
    """An OI file in quote notional with no price column (a venue's OI download, an aggregator's
    export) becomes an OI part (oi_quote) that `ingest merge` divides by the close of the bar it
    lands on; the bars beyond the last price are left out, with a note."""
    px = tmp_path / "px.csv"
    px.write_text("t,o,h,l,c\n" + "".join(
        f"{T0 + i * 300_000},{100 + i},{101 + i},{99 + i},{100 + i}\n" for i in range(12)))
    oi = tmp_path / "oi.csv"  # hourly OI in USD, running two hours past the prices
    oi.write_text("t,oi_usd\n" + "".join(f"{T0 + h * 3_600_000},{(h + 1) * 1e6}\n"
                                          for h in range(3)))
    r = CliRunner().invoke(main, ["ingest", "generic", str(oi), "--map", "time=t,oi=oi_usd",
                                  "--oi-unit", "quote", "--exchange", "binance", "--symbol",
                                  "BTCUSDT", "-o", str(tmp_path / "oi.parquet")])
    assert r.exit_code == 0, r.output
    assert "columns oi_quote" in r.output and "ingest merge` divides it" in r.output
    r = CliRunner().invoke(main, ["ingest", "generic", str(px), "--map",
                                  "time=t,open=o,high=h,low=l,close=c", "--exchange", "binance",
                                  "--symbol", "BTCUSDT", "-o", str(tmp_path / "px.parquet")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["ingest", "merge", str(tmp_path / "px.parquet"),
                                  str(tmp_path / "oi.parquet"), "--step", "5m",
                                  "-o", str(tmp_path / "s.parquet")])
    assert r.exit_code == 0, r.output
    assert "0 bar(s) of OI only left out before, 24 after" in r.output
    s = load_series(tmp_path / "s.parquet")
    assert len(s) == 12
    o = s["oi"]
    # the hourly OI sits on the last 5m bar of its hour (the 00:55 bar, close 111): 1e6 / 111
    assert o[11] == pytest.approx(1e6 / 111) and np.isnan(o[:11]).all()
    # both an oi and an oi_quote part: OI given twice
    with pytest.raises(InputError, match="is also in .* \\(as OI\\); give each column once"):
        align.merge([generic.read_generic([px], mapping="time=t,open=o,high=h,low=l,close=c,"
                                          "oi=h", exchange="binance", symbol="BTCUSDT"),
                     generic.read_generic([oi], mapping="time=t,oi=oi_usd", oi_unit="quote",
                                          exchange="binance", symbol="BTCUSDT")], step="5m")


def test_long_table_of_several_venues_keeps_the_rows_of_exchange_and_symbol(tmp_path):
    f = tmp_path / "c.csv"
    rows = ["time_utc,venue,coin,o,h,l,c"]
    for i in range(4):
        for v, base in (("binance", 100), ("okx", 200)):
            for coin, k in (("BTC", 1), ("ETH", 10)):
                x = base * k + i
                rows.append(f"2025-03-06T{i:02d}:00:00Z,{v},{coin},{x},{x + 1},{x - 1},{x}")
    f.write_text("\n".join(rows) + "\n")
    m = "time=time_utc,exchange=venue,symbol=coin,open=o,high=h,low=l,close=c"
    t = generic.read_generic([f], mapping=m, exchange="okx", symbol="ETH")
    np.testing.assert_array_equal(t.frame["close"], [2000, 2001, 2002, 2003])
    assert t.frame["exchange"].iloc[0] == "okx" and t.frame["symbol"].iloc[0] == "ETH"
    assert t.dropped["other exchanges/symbols"] == 12
    with pytest.raises(InputError, match=r"several symbols in one file \(BTC, ETH\); pick one "
                                         "with --symbol"):
        generic.read_generic([f], mapping=m, exchange="okx")
    with pytest.raises(InputError, match=r"several exchanges in one file \(binance, okx\)"):
        generic.read_generic([f], mapping=m, symbol="BTC")
    with pytest.raises(InputError, match="no rows of --exchange bybit --symbol BTC \\(its "
                                         "exchange column holds binance, okx; its symbol"):
        generic.read_generic([f], mapping=m, exchange="bybit", symbol="BTC")
    # a venue's rows with a value that is not a number are not the others' business
    lines = f.read_text().splitlines()
    lines[1] = lines[1].replace(",100,", ",n/a,")  # binance BTC's first open
    f.write_text("\n".join(lines) + "\n")
    assert len(generic.read_generic([f], mapping=m, exchange="okx", symbol="ETH").frame) == 4
    # an error names the file's row: okx ETH's third bar is line 13 of the file
    lines = f.read_text().splitlines()
    lines[12] = lines[12].replace("2025-03-06T02:00:00Z", "2025-03-06T00:00:00Z")
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"c.csv: row 12 \(line 13\), column 'time': "
                                         "2025-03-06T00:00:00Z is before"):
        generic.read_generic([f], mapping=m, exchange="okx", symbol="ETH")


def test_merge_names_an_unknown_format_and_estimate_names_a_series_split_in_files(tmp_path):
    import liqgpu

    r = CliRunner().invoke(main, ["ingest", "merge", "foo=" + str(tmp_path / "x.csv"),
                                  "-o", str(tmp_path / "m.parquet")])
    assert r.exit_code == 2 and "'foo' is not a format (FORMAT=PATH with one of" in r.output
    s = liqgpu.synthetic_series(days=1, seed=1, exchange="binance", symbol="BTCUSDT")
    df = pd.DataFrame({"time": pd.to_datetime(s.time).tz_localize("UTC"),
                       **{c: s[c] for c in ("open", "high", "low", "close", "oi")},
                       "exchange": "binance", "symbol": "BTCUSDT"})
    df.iloc[:700].to_parquet(tmp_path / "a.parquet")
    df.iloc[700:].to_parquet(tmp_path / "b.parquet")
    r = CliRunner().invoke(main, ["estimate", str(tmp_path / "a.parquet"),
                                  str(tmp_path / "b.parquet"), "-o", str(tmp_path / "s.zarr")])
    assert r.exit_code == 2, r.output
    assert "binance:BTCUSDT given twice (" in r.output and "a.parquet" in r.output \
        and "b.parquet" in r.output and "liqgpu update STORE" in r.output


def test_times_without_a_zone_are_said_to_be_read_as_utc(tmp_path):
    f = tmp_path / "n.csv"
    f.write_text("dt,o,h,l,c\n2026-01-01 00:00,1,2,0.5,1\n2026-01-01 00:05,1,2,0.5,1\n")
    t = generic.read_generic([f], mapping="time=dt,open=o,high=h,low=l,close=c",
                             exchange="x", symbol="Y")
    assert "times without a zone (e.g. '2026-01-01 00:00') read as UTC" in t.notes
    assert t.frame["time"].iloc[0] == pd.Timestamp("2026-01-01T00:00Z")
    for zoned in ("2026-01-01T00:00Z", "2026-01-01 01:00+01:00"):
        f.write_text(f"dt,o,h,l,c\n{zoned},1,2,0.5,1\n2026-01-01T00:05Z,1,2,0.5,1\n")
        t = generic.read_generic([f], mapping="time=dt,open=o,high=h,low=l,close=c",
                                 exchange="x", symbol="Y")
        assert not any("without a zone" in n for n in t.notes), zoned
        assert t.frame["time"].iloc[0] == pd.Timestamp("2026-01-01T00:00Z")
    f.write_text(f"dt,o,h,l,c\n{T0},1,2,0.5,1\n{T0 + 300_000},1,2,0.5,1\n")  # epoch ms
    t = generic.read_generic([f], mapping="time=dt,open=o,high=h,low=l,close=c",
                             exchange="x", symbol="Y")
    assert not any("without a zone" in n for n in t.notes)
