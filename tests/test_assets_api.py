"""Assets summed across venues, the numbers as DataFrames/CSV, and -v/-q after a subcommand."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import liqgpu
from liqgpu.assets import split_symbol
from liqgpu.cli import main
from liqgpu.series import from_frame


@pytest.mark.parametrize("symbol, base, quote", [
    ("BTCUSDT", "BTC", "USDT"), ("BTC-USDT-SWAP", "BTC", "USDT"), ("BTCUSD_PERP", "BTC", "USD"),
    ("ETH-PERP", "ETH", "USD"), ("BTC/USDT:USDT", "BTC", "USDT"), ("BTC", "BTC", "USD"),
    ("1000PEPEUSDC", "1000PEPE", "USDC"), ("ETHBTC", "ETH", "BTC"), ("BTC-USD-251226", "BTC", "USD"),
])
def test_split_symbol(symbol, base, quote):
    assert split_symbol(symbol) == (base, quote)


@pytest.fixture(scope="module")
def venues(tmp_path_factory):
    """BTC on two venues (one of them inverse) and ETH on one, in one store."""
    d = tmp_path_factory.mktemp("venues")
    s = liqgpu.synthetic_series(days=2, seed=4)
    df = pd.DataFrame({"time": s.time, **s.columns})
    btc_a = from_frame(df, exchange="binance", symbol="BTCUSDT")
    inv = df.assign(oi=df["oi"] * df["close"] / 100.0)  # contracts of 100 USD
    btc_b = from_frame(inv, exchange="okx", symbol="BTC-USD-SWAP", kind="inverse",
                       contract_size=100.0)
    eth = df.assign(**{c: df[c] / 20 for c in ("open", "high", "low", "close")})
    eth_s = from_frame(eth, exchange="binance", symbol="ETHUSDT")
    path = d / "v.zarr"
    liqgpu.estimate([btc_a, btc_b, eth_s], every="1h", backend="numpy", out=path,
                    grid="log:500:500000:20")
    return path


def test_asset_sums_its_series_across_venues(venues):
    ds = liqgpu.open_store(venues)
    both = liqgpu.heatmap(venues, asset="btc")
    want = ds["intensity"].sel(series=["binance:BTCUSDT", "okx:BTC-USD-SWAP"]).sum(
        ["series", "leverage", "side"], dtype=np.float64).values
    np.testing.assert_allclose(both.values, want, rtol=1e-12)
    assert both.attrs["series"] == ["binance:BTCUSDT", "okx:BTC-USD-SWAP"]
    one = liqgpu.heatmap(venues, series="binance:BTCUSDT")
    assert float(both.sum()) > float(one.sum()) > 0
    with pytest.raises(liqgpu.InputError, match="mixes assets"):
        liqgpu.heatmap(venues)
    with pytest.raises(liqgpu.InputError, match="--asset SOL: no selected series"):
        liqgpu.heatmap(venues, asset="SOL")


def test_render_asset_title_names_the_series(venues, tmp_path):
    r = CliRunner().invoke(main, ["render", str(venues), "-o", str(tmp_path / "a.png"),
                                  "--asset", "BTC", "--width", "800", "--height", "450", "-v"])
    assert r.exit_code == 0, r.output
    from liqgpu.render.select import select

    sel = select(liqgpu.open_store(venues), asset="BTC")
    assert sel.title_names() == "BTC (binance:BTCUSDT + okx:BTC-USD-SWAP)"
    assert sel.quote() == "USD"
    r = CliRunner().invoke(main, ["render", str(venues), "-o", str(tmp_path / "b.png")])
    assert r.exit_code == 2 and "mixes assets (BTC, ETH)" in r.output


def test_levels_and_map_csv_match_the_numbers(venues, tmp_path):
    csv = tmp_path / "levels.csv"
    r = CliRunner().invoke(main, ["levels", str(venues), "--asset", "BTC", "--top", "4",
                                  "--csv", str(csv)])
    assert r.exit_code == 0, r.output
    got = pd.read_csv(csv)
    api = liqgpu.levels(venues, top=4, asset="BTC", threshold=0.25)
    assert len(got) == 4 and got["notional"].tolist() == pytest.approx(api["notional"].tolist())
    assert got["rank"].tolist() == [1, 2, 3, 4]
    assert (got["notional"].diff().dropna() <= 0).all()
    prof = liqgpu.profile(venues, asset="BTC")
    ds = liqgpu.open_store(venues)
    last = ds["intensity"].isel(time=-1).sel(series=["binance:BTCUSDT", "okx:BTC-USD-SWAP"])
    total = last.sum(["series", "leverage"]).values.sum(axis=0)
    assert prof["long"].sum() == pytest.approx(total[0], rel=1e-6)
    assert prof["short"].sum() == pytest.approx(total[1], rel=1e-6)
    band_cols = [c for c in prof.columns if c.startswith("long ")]
    assert band_cols == ["long 2-10x", "long 10-25x", "long 25-50x", "long 50-100x",
                         "long 100-150x"]
    np.testing.assert_allclose(prof[band_cols].sum(axis=1), prof["long"], rtol=1e-9)
    mcsv = tmp_path / "map.csv"
    r = CliRunner().invoke(main, ["map", str(venues), "--asset", "BTC", "-o",
                                  str(tmp_path / "m.png"), "--csv", str(mcsv), "--width", "800",
                                  "--height", "450"])
    assert r.exit_code == 0, r.output
    pd.testing.assert_frame_equal(pd.read_csv(mcsv), prof, check_exact=False, rtol=1e-9)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_verbosity_after_the_subcommand(venues, tmp_path):
    out = tmp_path / "q.png"
    r = CliRunner().invoke(main, ["render", str(venues), "-o", str(out), "--asset", "ETH",
                                  "--width", "800", "--height", "450", "-q"])
    assert r.exit_code == 0 and r.output == "" and out.exists()
    r = CliRunner().invoke(main, ["render", str(venues), "-o", str(out), "--asset", "ETH",
                                  "--width", "800", "--height", "450"])
    assert r.output.startswith("wrote ")
    r = CliRunner().invoke(main, ["render", str(venues), "-o", str(out), "--asset", "DOGE", "-q"])
    assert r.exit_code == 2 and "--asset DOGE" in r.output  # errors still show under -q


def test_snapshot_at_never_looks_ahead(venues):
    ds = liqgpu.open_store(venues)
    t = pd.DatetimeIndex(ds["time"].values)
    # 10 minutes into bucket 5: its snapshot (at its end) is in the future; bucket 4's is not
    snap = liqgpu.snapshot_at(ds, (t[5] + pd.Timedelta("10min")).isoformat())
    assert pd.Timestamp(snap["time"].values) == t[4]
    np.testing.assert_array_equal(snap["intensity"].values, ds["intensity"].isel(time=4).values)
    exact = liqgpu.snapshot_at(venues, (t[5] + pd.Timedelta("1h")).isoformat())
    assert pd.Timestamp(exact["time"].values) == t[5]  # at the end of bucket 5: its snapshot
    assert liqgpu.snapshot_at(ds, (t[0] + pd.Timedelta("30min")).isoformat()) is None


@pytest.mark.parametrize("cmd", ["levels", "map"])
def test_csv_into_a_missing_folder_is_one_sentence_and_writes_nothing(venues, tmp_path, cmd):
    png = tmp_path / "m.png"
    args = [cmd, str(venues), "--asset", "BTC", "--csv", str(tmp_path / "no" / "x.csv")]
    if cmd == "map":
        args += ["-o", str(png), "--width", "800", "--height", "450"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "the folder" in r.output and "does not exist" in r.output
    assert isinstance(r.exception, SystemExit) and list(tmp_path.iterdir()) == []


def test_the_api_takes_a_frame_of_bars_and_says_what_it_cannot_take(tmp_path):
    """liqgpu.estimate reads a pandas DataFrame of bars as from_frame does (it used to walk its
    columns as file paths: 'time: no such file'); a dict of parameters or a number is one
    clear InputError."""
    import pandas as pd
    import pytest

    import liqgpu
    from liqgpu.series import from_frame

    s = liqgpu.synthetic_series(days=1, seed=3)
    df = pd.DataFrame({"time": s.time, **s.columns})
    a = liqgpu.estimate(df, every="1h", backend="numpy")
    b = liqgpu.estimate(from_frame(df), every="1h", backend="numpy")
    assert a["intensity"].equals(b["intensity"]) and a.sizes["time"] == 24
    with pytest.raises(liqgpu.InputError, match="params: a dict is not model parameters"):
        liqgpu.estimate(df, params={"churn": 0.3})
    with pytest.raises(liqgpu.InputError, match="series: a int is not a series"):
        liqgpu.estimate(42)


def test_a_grid_that_leaves_most_levels_out_is_warned_of(tmp_path, caplog):
    """A --grid holding a narrow price range: the run says how much of the live notional at
    the end it leaves off the grid (in memory and to a store); the default grid: no warning."""
    import logging

    import liqgpu

    s = liqgpu.synthetic_series(days=1, seed=3)
    c = float(s["close"][-1])
    narrow = f"log:{c * 1.05:.2f}:{c * 1.2:.2f}:10"
    with caplog.at_level(logging.WARNING, logger="liqgpu.pipeline"):
        liqgpu.estimate(s, every="1h", backend="numpy", grid=narrow)
        liqgpu.estimate(s, every="1h", backend="numpy", grid=narrow, out=tmp_path / "n.zarr")
    warned = [r.getMessage() for r in caplog.records if "off the grid" in r.getMessage()]
    assert len(warned) == 2 and all(narrow in m and "widen --grid" in m for m in warned)
    share = float(warned[0].split("%")[0])
    assert 10 < share <= 100
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="liqgpu.pipeline"):
        liqgpu.estimate(s, every="1h", backend="numpy", out=tmp_path / "d.zarr")
    assert not [r for r in caplog.records if "off the grid" in r.getMessage()]
