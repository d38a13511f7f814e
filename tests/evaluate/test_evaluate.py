"""Evaluation against realized liquidations: metrics on hand-made cases, CLI, real data."""

from __future__ import annotations

import json
from pathlib import Path
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import liqgpu
from liqgpu.errors import InputError
from liqgpu.evaluate import (Window, average_ranks, baseline_scores, evaluate, load_realized,
                             parse_window, pearson_log1p, profile_figures, spearman,
                             top_membership, top_share)
from liqgpu.evaluate.commands import evaluate_cmd, sweep_cmd
from liqgpu.model.v1.params import Params
from liqgpu.series import from_frame

H = 3_600_000


# -- metrics ----------------------------------------------------------------------------------
def test_average_ranks_and_spearman_match_scipy_on_ties():
    x = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5])
    y = np.array([2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4])
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    stats = pytest.importorskip("scipy.stats")
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_perfect_predictor_scores_one_and_a_shuffled_one_near_zero():
    rng = np.random.default_rng(0)
    real = rng.lognormal(10, 2, 5000)
    assert spearman(real, real) == pytest.approx(1.0)
    assert spearman(3 * real + 1, real) == pytest.approx(1.0)  # monotone: still 1
    assert pearson_log1p(real, real) == pytest.approx(1.0)
    shuffled = rng.permutation(real)
    assert abs(spearman(shuffled, real)) < 0.05
    assert abs(pearson_log1p(shuffled, real)) < 0.05
    # a perfect predictor's top 10% of buckets hold exactly the 10% largest realized amounts
    top = np.sort(real)[::-1][:500].sum() / real.sum()
    assert top_share(real, real) == pytest.approx(top)
    assert top > 0.5
    # a shuffled one holds about 10%
    assert top_share(shuffled, real) == pytest.approx(0.1, abs=0.05)


def test_top_membership_splits_ties_evenly():
    assert top_membership([1, 5, 3, 5], frac=0.25).tolist() == [0.0, 0.5, 0.0, 0.5]
    # a constant score is the uniform share k/n exactly
    m = top_membership(np.zeros(15))
    assert m == pytest.approx(np.full(15, 2 / 15))  # k = ceil(1.5) = 2
    assert top_share(np.zeros(15), np.arange(15.0)) == pytest.approx(2 / 15)


def test_level_profile_lift_and_top_decile():
    # uniform profile: lift exactly 1, top-decile credit k/n, wherever the events fall
    top, lift = profile_figures(np.ones(20), np.array([0, 7, 19]), np.array([1.0, 2.0, 3.0]))
    assert lift == pytest.approx(6.0)  # sum of notional x 1
    assert top == pytest.approx(6.0 * 2 / 20)
    # all mass in one bin and every event there: lift n, top-decile share 1
    prof = np.zeros(20)
    prof[4] = 5.0
    top, lift = profile_figures(prof, np.array([4, 4]), np.array([1.0, 3.0]))
    assert lift == pytest.approx(20 * 4.0)
    assert top == pytest.approx(4.0)
    # an event in an empty bin: lift 0; the second of k = 2 top slots is shared by 19 tied bins
    top, lift = profile_figures(prof, np.array([0]), np.array([1.0]))
    assert (top, lift) == (pytest.approx(1 / 19), 0.0)
    # a zero profile counts as uniform
    assert profile_figures(np.zeros(10), np.array([3]), np.array([2.0])) == (
        pytest.approx(0.2), pytest.approx(2.0))


def test_baselines_on_a_tiny_hand_computed_market():
    o = np.array([[100.0, 100.0, 110.0]])
    h = np.array([[110.0, 101.0, 110.0]])
    lo = np.array([[90.0, 80.0, 110.0]])
    c = np.array([[105.0, 81.0, 110.0]])
    oi = np.array([[2.0, 1.0, np.nan]])
    b = baseline_scores(o, h, lo, c, oi)
    np.testing.assert_allclose(b["range_oi"][:, 0], [math.log(100 / 90) * 210,
                                                     math.log(100 / 80) * 81, 0.0])
    np.testing.assert_allclose(b["range_oi"][:, 1], [math.log(110 / 100) * 210,
                                                     math.log(101 / 100) * 81, 0.0])
    np.testing.assert_allclose(b["absret_oi"][:, 0], [math.log(105 / 100) * 210,
                                                      math.log(100 / 81) * 81, 0.0])
    np.testing.assert_allclose(b["absret_oi"][:, 0], b["absret_oi"][:, 1])


def test_windows_parse():
    w = parse_window(":2026-04-01", "train")
    assert w.start is None and w.end == np.datetime64("2026-04-01", "ns")
    w = parse_window("2026-03-04T10:00..2026-03-05", "test")
    assert w.start == np.datetime64("2026-03-04T10:00", "ns")
    for bad in ("2026-04-01", "a:b", "2026-04-02:2026-04-01", "2026-03-04T10:00:2026-03-05"):
        with pytest.raises(InputError):
            parse_window(bad, "test")


# -- a small market with known realized liquidations --------------------------------------------
def _market(n=24 * 20, seed=3):
    rng = np.random.default_rng(seed)
    t = 1_767_225_600_000 + H * np.arange(n)  # 2026-01-01
    ret = rng.normal(0, 0.01, n)
    close = 50_000 * np.exp(np.cumsum(ret))
    open_ = np.r_[50_000, close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, n)))
    oi = 10_000 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"time": t, "open": open_, "high": high, "low": low, "close": close,
                         "oi": oi})


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    d = tmp_path_factory.mktemp("mkt")
    df = _market()
    series = from_frame(df, exchange="x", symbol="BTCUSDT", source="market")
    store = d / "m.zarr"
    ds = liqgpu.estimate(series, every="1h", backend="numpy", out=store, model="v1")
    est = ds["liquidated"].sum(["series", "price", "leverage"]).values  # (time, side)
    # realized = the estimate itself (a perfect predictor), as aggregates and as events
    agg = pd.DataFrame({"open_time_ms": df["time"], "liq_long_usd": est[:, 0],
                        "liq_short_usd": est[:, 1], "other": 1.0})
    agg.to_csv(d / "agg.csv", index=False)
    series_file = d / "series.csv"
    df.to_csv(series_file, index=False)
    return {"dir": d, "df": df, "series": series, "store": store, "ds": ds, "est": est,
            "agg": d / "agg.csv", "series_file": series_file}


def test_perfect_aggregates_score_one(market):
    rz = load_realized(market["agg"])
    assert rz.kind == "aggregates" and rz.columns["long"] == "liq_long_usd"
    res = evaluate(market["ds"], rz)
    t = res["windows"][0]["timing"]
    for side in ("long", "short", "total"):
        assert t[side]["estimate"]["spearman"] == pytest.approx(1.0)
        assert t[side]["estimate"]["pearson_log1p"] == pytest.approx(1.0)
        assert t[side]["uniform"]["top10_share"] == pytest.approx(48 / 480)
        assert t[side]["realized_notional"] == pytest.approx(t[side]["estimated_notional"],
                                                             rel=1e-5)
    assert res["windows"][0]["levels"] is None
    # two-hour realized bars: buckets are summed to 2h, still perfect
    df2 = pd.read_csv(market["agg"])
    df2["g"] = df2["open_time_ms"] // (2 * H)
    df2 = df2.groupby("g").agg({"open_time_ms": "first", "liq_long_usd": "sum",
                                "liq_short_usd": "sum"})
    p2 = market["dir"] / "agg2.csv"
    df2.to_csv(p2, index=False)
    res2 = evaluate(market["ds"], load_realized(p2))
    assert res2["eval_step"] == "2h"
    assert res2["windows"][0]["timing"]["n_buckets"] == 240
    assert res2["windows"][0]["timing"]["long"]["estimate"]["spearman"] == pytest.approx(1.0)


def test_events_at_the_estimated_peak_have_top_decile_share_one(market):
    ds = market["ds"]
    inten = ds["intensity"].sum(["series", "leverage"]).values  # (time, price, side)
    edges = ds["price_edges"].values
    rows = []
    lows, highs = ds["low"].values[0], ds["high"].values[0]
    t0 = market["df"]["time"].iloc[0]
    for b in range(1, 200):
        j0 = np.searchsorted(edges, lows[b], side="right") - 1
        j1 = np.searchsorted(edges, highs[b], side="left")
        prof = inten[b - 1, j0:j1, 0]
        if prof.sum() <= 0:
            continue
        j = j0 + int(np.argmax(prof))
        price = float(np.clip(ds["price"].values[j], lows[b], highs[b] * 0.9999999))
        if not (edges[j] <= price < edges[j + 1]):
            continue
        rows.append({"time": t0 + b * H + 60_000, "side": "long", "price": price,
                     "notional": 1000.0, "price_kind": "trigger"})
    assert len(rows) > 20
    p = market["dir"] / "events.parquet"
    pd.DataFrame(rows).to_parquet(p)
    res = evaluate(ds, load_realized(p))
    lv = res["windows"][0]["levels"]
    assert lv["long"]["estimate"]["top10_share"] == pytest.approx(1.0)
    assert lv["long"]["estimate"]["lift"] > 3
    assert lv["long"]["uniform"]["lift"] == 1.0
    assert lv["long"]["in_range_share"] == pytest.approx(1.0)
    assert lv["price_kind"] == "trigger"


def test_sweep_reweighting_equals_a_direct_estimate(market):
    from liqgpu.sweep import tier_liquidated

    tiers = (5.0, 10.0, 25.0)
    p_eq = Params(leverages=tiers, weights=(1 / 3,) * 3, max_age="24h")
    _, _, liq, _ = tier_liquidated(market["series"], p_eq, "1h")
    w = np.array([0.5, 0.0, 0.5])
    combined = np.einsum("tkc,k->tc", liq * 3, w)
    direct = liqgpu.estimate(market["series"], params=Params(leverages=(5.0, 25.0),
                                                             weights=(0.5, 0.5), max_age="24h"),
                             every="1h", backend="numpy")
    d = (direct["liquidated"].sum(["series", "price", "leverage"]).values
         + direct["outside_liquidated"].sum(["series", "leverage"]).values)
    np.testing.assert_allclose(combined, d, rtol=1e-4, atol=1e-6 * d.max())


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_evaluate_writes_json_and_report(market, tmp_path):
    out = tmp_path / "r.json"
    rep = tmp_path / "rep"
    r = CliRunner().invoke(evaluate_cmd, [str(market["store"]), "--realized", str(market["agg"]),
                                          "--train", ":2026-01-10", "--test", "2026-01-10:",
                                          "--json", str(out), "--report", str(rep),
                                          "--bootstrap", "50", "--seed", "2"])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert [w["role"] for w in d["windows"]] == ["train", "test"]
    assert d["windows"][1]["timing"]["long"]["estimate"]["spearman"] == pytest.approx(1.0)
    assert "range_oi" in d["windows"][0]["timing"]["short"]
    assert (rep / "evaluation.md").exists() and (rep / "01_train_timing.png").exists()
    assert not list(rep.glob(".*"))  # no temporary files left
    assert "timing long: Spearman" in r.output
    assert d["bootstrap"]["draws"] == 50 and d["bootstrap"]["seed"] == 2
    b = d["windows"][1]["timing"]["long"]["bootstrap"]
    assert b["draws"] == 50 and b["n_days"] == 11 and b["lo"] > 0
    assert "95% CI" in r.output and "95% CI" in (rep / "evaluation.md").read_text()


def test_evaluate_store_is_what_the_command_runs(market, tmp_path):
    """The library call gives the command's figures and writes the same files."""
    from liqgpu.evaluate import evaluate_store

    out, rep = tmp_path / "r.json", tmp_path / "rep"
    res = evaluate_store(market["store"], market["agg"], train=[":2026-01-10"],
                         test=["2026-01-10:"], draws=50, seed=2, json_path=out, report_dir=rep)
    assert res["windows"][1]["timing"]["long"]["estimate"]["spearman"] == pytest.approx(1.0)
    assert json.loads(out.read_text())["windows"] == json.loads(json.dumps(res["windows"]))
    assert str(out) in res["files"] and str(rep / "evaluation.md") in res["files"]
    assert all(Path(f).exists() for f in res["files"])
    with pytest.raises(InputError, match="--report .*exists and is not a folder"):
        evaluate_store(market["store"], market["agg"], report_dir=out)


@pytest.mark.parametrize("case, message", [
    ("columns", "no column 'nope'"),
    ("overlap", "no overlap"),
    ("window", "no bucket with both"),
    ("badwindow", "START:END"),
    ("ambiguous", "cannot tell which column"),
])
def test_cli_evaluate_bad_input_exit_2_nothing_written(market, tmp_path, case, message):
    out = tmp_path / "r.json"
    args = [str(market["store"]), "--realized", str(market["agg"]), "--json", str(out)]
    if case == "columns":
        args += ["--realized-columns", "long=nope,short=liq_short_usd"]
    elif case == "overlap":
        df = pd.read_csv(market["agg"])
        df["open_time_ms"] -= 400 * 24 * H
        p = tmp_path / "old.csv"
        df.to_csv(p, index=False)
        args[2] = str(p)
    elif case == "window":
        args += ["--test", "2027-01-01:2027-02-01"]
    elif case == "badwindow":
        args += ["--test", "2026-01-01"]
    elif case == "ambiguous":
        df = pd.read_csv(market["agg"])
        df["long_b"] = 1.0
        df["short_b"] = 1.0
        df = df.rename(columns={"liq_long_usd": "long_a", "liq_short_usd": "short_a"})
        p = tmp_path / "amb.csv"
        df.to_csv(p, index=False)
        args[2] = str(p)
    r = CliRunner().invoke(evaluate_cmd, args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_sweep_small_grid(market, tmp_path):
    out = tmp_path / "s.json"
    r = CliRunner().invoke(sweep_cmd, [str(market["series_file"]), "--realized",
                                       str(market["agg"]), "--train", ":2026-01-12",
                                       "--test", "2026-01-12:", "--model", "v1",
                                       "--tiers", "5,10,25,50,100",
                                       "--mmr", "0.004", "--entry", "hlc3", "--max-age",
                                       "none,24h", "--json", str(out), "--backend",
                                       "numpy"])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    # the realized amounts are the default model's own: it is among the best (objective 1)
    assert d["ranking"][0]["objective"] == pytest.approx(1.0)
    assert d["default"]["windows"][1]["timing"]["long"]["estimate"]["spearman"] == \
        pytest.approx(1.0)
    assert d["n_engine_runs"] == 2
    assert d["model"] == "v1" and d["ranking"][0]["model"] == "v1"
    r = CliRunner().invoke(sweep_cmd, [str(market["series_file"]), "--realized",
                                       str(market["agg"]), "--test", "2026-01-12:"])
    assert r.exit_code == 2 and "--train" in r.output


def test_v2_per_tier_bands_and_reweighting_equal_a_direct_estimate(market):
    from liqgpu.model.v2 import ParamsV2
    from liqgpu.sweep import per_tier_params, tier_bands, tier_liquidated

    p = per_tier_params(8, 0.5, "range:3", 0.004, max_age="24h")
    assert p.n_out == p.n_tiers == 8
    assert p.band_of.tolist() == list(range(8))  # one band per tier
    assert tier_bands((2.0, 8.0, 32.0)) == (2.0, 4.0, 16.0, 32.0)
    _, _, liq, _ = tier_liquidated(market["series"], p, "1h")
    for a in (1.0, 3.0):
        direct_p = ParamsV2(leverages="log:2:150:8", weights=f"power:{a:g}", churn=0.5,
                            entry="range:3", max_age="24h")
        combined = np.einsum("tkc,k->tc", liq * 8, np.asarray(direct_p.weights))
        direct = liqgpu.estimate(market["series"], params=direct_p, every="1h",
                                 backend="numpy", dtype=np.float64)
        d = (direct["liquidated"].sum(["series", "price", "leverage"]).values
             + direct["outside_liquidated"].sum(["series", "leverage"]).values)
        assert d.max() > 0
        np.testing.assert_allclose(combined, d, rtol=1e-6, atol=1e-9 * d.max())


@pytest.fixture(scope="module")
def market_v2(market):
    """The market's realized amounts from the v2 default model itself."""
    d = market["dir"]
    ds = liqgpu.estimate(market["series"], every="1h", backend="numpy", dtype=np.float64)
    est = (ds["liquidated"].sum(["series", "price", "leverage"]).values
           + ds["outside_liquidated"].sum(["series", "leverage"]).values)
    # train half: the v2 default's own amounts; test half: a different setting's (churn 1,
    # power:1), so a sweep that peeked at test would not pick the default
    from liqgpu.model.v2 import ParamsV2

    ds1 = liqgpu.estimate(market["series"], params=ParamsV2(churn=1.0, weights="power:1"),
                          every="1h", backend="numpy", dtype=np.float64)
    est1 = (ds1["liquidated"].sum(["series", "price", "leverage"]).values
            + ds1["outside_liquidated"].sum(["series", "leverage"]).values)
    cut = 12 * 24
    mix = np.r_[est[:cut], est1[cut:]]
    agg = pd.DataFrame({"open_time_ms": market["df"]["time"], "liq_long_usd": mix[:, 0],
                        "liq_short_usd": mix[:, 1]})
    agg.to_csv(d / "agg_v2.csv", index=False)
    return d / "agg_v2.csv"


def test_cli_sweep_v2_is_the_default_and_never_picks_on_test(market, market_v2, tmp_path):
    out = tmp_path / "s2.json"
    r = CliRunner().invoke(sweep_cmd, [str(market["series_file"]), "--realized",
                                       str(market_v2), "--train", ":2026-01-13",
                                       "--test", "2026-01-13:", "--churn", "0.3,1",
                                       "--power", "1,2", "--tier-count", "20,40",
                                       "--entry", "close", "--json", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["model"] == "v2" and d["n_settings"] == 8 and d["n_engine_runs"] == 4
    top = d["ranking"][0]
    # train holds the v2 default's own amounts: the default setting wins there ...
    assert top["objective"] == pytest.approx(1.0, abs=1e-9)
    assert (top["model"], top["leverages"], top["weights"], top["churn"], top["entry"]) == (
        "v2", "log:2:150:40", "power:2", 0.3, "close")
    assert d["best_params"]["churn"] == 0.3 and d["best_params"]["model"] == "v2"
    # ... although test holds churn 1 / power:1 amounts, where another setting would score 1
    test_best = d["best"]["windows"][1]["timing"]["long"]["estimate"]["spearman"]
    assert test_best < 0.999
    assert d["default"]["params"]["model"] == "v2"
    assert "model v2: swept 8 settings" in r.output


@pytest.mark.parametrize("args, message", [
    (["--tiers", "5,10"], "--tiers: is an option of the model v1 sweep"),
    (["--model", "v1", "--churn", "0.3"], "--churn: is an option of the model v2 sweep"),
    (["--tier-count", "1"], "--tier-count 1: need at least 2 tiers"),
    (["--entry", "range:0"], "range:N"),
])
def test_cli_sweep_bad_options_exit_2(market, args, message):
    r = CliRunner().invoke(sweep_cmd, [str(market["series_file"]), "--realized",
                                       str(market["agg"]), "--train", ":2026-01-12"] + args)
    assert r.exit_code == 2, r.output
    assert message in r.output


# -- real data ----------------------------------------------------------------------------------
W2 = "coinglass_btc_agg/agg3_btc_liq_binance_oi_spotprice_1h_2025-12-04_2026-06-02.csv"
OKX = "multivenue_hl_okx_hourly/liquidation_events_hl_2025-05_okx_2026-03.csv"


def test_real_window2_and_okx_events(real_data, tmp_path):
    raw = pd.read_csv(real_data / W2)
    raw = raw[raw["open_time_ms"] < 1_773_014_400_000]  # up to 2026-03-09: keeps it fast
    df = pd.DataFrame({"time": raw["open_time_ms"], "open": raw["spot_open"],
                       "high": raw["spot_high"], "low": raw["spot_low"],
                       "close": raw["spot_close"],
                       "oi": raw["binance_oi_usd_close"] / raw["spot_close"]})
    s = from_frame(df, exchange="binance", symbol="BTCUSDT", source=W2)
    ds = liqgpu.estimate(s, every="1h", backend="numpy")
    res = evaluate(ds, load_realized(real_data / W2),
                   [parse_window(":2026-03-04", "train")])
    t = res["windows"][0]["timing"]
    assert t["n_buckets"] > 2000
    for side in ("long", "short"):  # the estimate carries timing information
        assert t[side]["estimate"]["spearman"] > 0.3
        assert t[side]["estimate"]["top10_share"] > 0.3
    # the baseline's figure is the Spearman of its own per-bucket scores, computed here apart
    from liqgpu.evaluate import build_table, spearman

    realized = load_realized(real_data / W2)
    table = build_table(ds, realized)
    m = parse_window(":2026-03-04", "train").contains(table.time)
    for j, side in enumerate(("long", "short")):
        want = spearman(table.baselines["range_oi"][m, j], table.realized[m, j])
        assert -1 < want < 1 and t[side]["range_oi"]["spearman"] == pytest.approx(want, abs=1e-12)
        assert t[side]["range_oi"]["spearman"] != pytest.approx(t[side]["estimate"]["spearman"])
    ev = pd.read_csv(real_data / OKX)
    ev = ev[(ev["venue"] == "okx") & (ev["coin"] == "BTC")]
    events = pd.DataFrame({"time": ev["ts_ms"], "side": ev["liquidated_position"],
                           "price": ev["price"], "price_kind": "bankruptcy",
                           "notional": ev["notional_usd"]})
    p = tmp_path / "okx.csv"
    events.to_csv(p, index=False)
    res = evaluate(ds, load_realized(p), [parse_window("2026-03-04:2026-03-06", "test")])
    lv = res["windows"][0]["levels"]
    assert lv["all"]["n_events"] == len(events)
    assert 0 < lv["all"]["n_in_range"] <= lv["all"]["n_events"]
    assert lv["all"]["uniform"]["lift"] == 1.0
    assert lv["all"]["estimate"]["lift"] > 0


# -- daily figures and the bootstrap over days ----------------------------------------------------
def test_daily_sums_keep_complete_days_only():
    from liqgpu.evaluate import daily_sums

    t = np.datetime64("2026-01-01T05") + np.arange(60) * np.timedelta64(1, "h")  # 19 + 24 + 17 h
    days, sums = daily_sums(t, np.timedelta64(1, "h"), np.ones((60, 2)))
    assert days.tolist() == [np.datetime64("2026-01-02", "D").astype(object)]
    assert sums.tolist() == [[24.0, 24.0]]
    # daily buckets: nothing to sum
    d2, s2 = daily_sums(t[:3], np.timedelta64(1, "D"), np.ones(3))
    assert d2.size == 0 and s2.size == 0


def test_bootstrap_perfect_predictor_ci_around_the_known_difference():
    from liqgpu.evaluate import bootstrap_days

    rng = np.random.default_rng(1)
    n_days = 60
    day = np.repeat(np.arange(n_days), 24)
    real = rng.lognormal(10, 2, day.size)
    base = real * rng.lognormal(0, 1.5, day.size)  # a noisy baseline
    known = 1.0 - spearman(base, real)  # perfect predictor minus the baseline
    assert 0.1 < known < 0.5
    b = bootstrap_days(real, base, real, day, draws=500, seed=0)
    assert b["point"] == pytest.approx(known)
    assert b["lo"] < known < b["hi"]
    assert b["lo"] > 0 and b["share_le_0"] == 0.0
    assert b["hi"] - b["lo"] < 0.1  # 1440 buckets: a tight interval
    assert abs(b["mean"] - known) < 0.01
    assert (b["n_days"], b["draws"], b["valid_draws"]) == (60, 500, 500)
    # same seed, same interval; another seed, nearly the same
    assert bootstrap_days(real, base, real, day, draws=500, seed=0) == b
    b2 = bootstrap_days(real, base, real, day, draws=500, seed=7)
    assert b2["lo"] == pytest.approx(b["lo"], abs=0.01)
    # a shuffled predictor against the same baseline: the whole interval is below zero
    sh = bootstrap_days(rng.permutation(real), base, real, day, draws=500, seed=0)
    assert sh["hi"] < 0 and sh["share_le_0"] == 1.0
    # the baseline against itself: exactly zero in every draw
    z = bootstrap_days(base, base, real, day, draws=50)
    assert z["lo"] == z["hi"] == z["point"] == 0.0
    # too few days: no interval
    assert bootstrap_days(real[:96], base[:96], real[:96], day[:96]) is None


def test_evaluate_reports_daily_spearman_and_bootstrap(market):
    from liqgpu.evaluate import format_markdown, format_text

    res = evaluate(market["ds"], load_realized(market["agg"]), draws=200, seed=3)
    assert res["bootstrap"]["draws"] == 200 and res["bootstrap"]["seed"] == 3
    t = res["windows"][0]["timing"]
    for side in ("long", "short", "total"):
        d = t[side]
        assert d["daily"]["n_days"] == 20  # 480 hours from midnight
        assert d["daily"]["estimate"] == pytest.approx(1.0)  # the realized amounts are its own
        b = d["bootstrap"]
        best = max(("range_oi", "absret_oi"), key=lambda k: d[k]["spearman"])
        assert b["vs"] == best
        assert b["point"] == pytest.approx(1.0 - d[best]["spearman"])
        assert 0 < b["lo"] <= b["point"] <= b["hi"]
        assert b["n_days"] == 20
    assert "daily Spearman (20 complete days)" in format_text(res)
    assert "95% CI" in format_text(res) and "95% CI" in format_markdown(res)
    # --bootstrap 0 turns it off
    off = evaluate(market["ds"], load_realized(market["agg"]), draws=0)
    assert off["windows"][0]["timing"]["long"]["bootstrap"] is None
    assert "95% CI" not in format_text(off)


def test_evaluate_reports_a_v2_store_as_v2(market, tmp_path):
    from liqgpu.model.v2 import ParamsV2

    ds = liqgpu.estimate(market["series"], params=ParamsV2(leverages="log:2:150:8"),
                         every="1h", backend="numpy")
    res = evaluate(ds, load_realized(market["agg"]), draws=0)
    assert res["params"]["model"] == "v2" and res["params"]["churn"] == 0.3
    assert len(res["params"]["leverages"]) == 8


def test_cli_sweep_backend_cupy_without_a_gpu_is_one_line(market, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)  # as on a machine without CuPy
    r = CliRunner().invoke(sweep_cmd, [str(market["series_file"]), "--realized",
                                       str(market["agg"]), "--train", ":2026-01-12",
                                       "--test", "2026-01-12:", "--backend", "cupy"])
    assert r.exit_code == 2 and "cupy" in r.output.lower(), r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("model,extra", [
    ("v2", {}), ("v2", {"churn": 0.5, "entry": "range:3", "mmr": 0.005, "max_age": "12h"}),
    ("v1", {"leverages": (3, 10, 50), "weights": (0.5, 0.3, 0.2), "entry": "close"})])
def test_sweep_best_parameters_are_printed_as_estimate_options(market, tmp_path, model, extra):
    """What the sweep prints for its best setting, passed to `liqgpu estimate`, gives a store
    with those parameters (so a user can paste it)."""
    import shlex

    from liqgpu.cli import main
    from liqgpu.evaluate.commands import params_as_options
    from liqgpu.model.registry import default_params

    attrs = default_params(model).__class__(**{**default_params(model).__dict__, **extra}) \
        .to_attrs() if extra else default_params(model).to_attrs()
    opts = params_as_options(attrs)
    assert "[" not in opts and len(opts) < 300, opts
    out = tmp_path / "p.zarr"
    r = CliRunner().invoke(main, ["estimate", str(market["series_file"]), "-o", str(out),
                                  "--backend", "numpy", *shlex.split(opts)])
    assert r.exit_code == 0, (opts, r.output)
    got = liqgpu.open_store(out).attrs
    for k, v in attrs.items():
        if isinstance(v, list):
            assert np.allclose(got[k], v, rtol=1e-5), (k, got[k], v)
        else:
            assert got[k] == v, (k, got[k], v)


def test_table_figures_and_window_names():
    """A lift of 1 prints as 1.00 (a ratio), a correlation of 1 as +1.000, a share in %; the
    window without bounds is the whole store."""
    from liqgpu.evaluate.report import _f

    assert (_f(1.0, ratio=True), _f(2.345, ratio=True), _f(1.0), _f(-0.5)) == \
        ("1.00", "2.35", "+1.000", "-0.500")
    assert _f(0.526, pct=True) == "52.6%" and _f(None) == "–"
    assert Window("all", None, None).name == "all (the whole store)"
    assert Window("test", np.datetime64("2026-03-04"), None).name.startswith("test 2026-03-04")


@pytest.mark.parametrize("train,test,ok", [
    (":2026-01-12", "2026-01-12:", True), (":2026-01-13", "2026-01-12:", False),
    ("2026-01-05:2026-01-08", "2026-01-01:2026-01-06", False),
    ("2026-01-05:2026-01-08", "2026-01-08:2026-01-10", True), (":", "2026-01-12:", False)])
def test_sweep_refuses_train_windows_that_overlap_a_test_window(market, tmp_path, train, test,
                                                                ok):
    """Picking on a window and scoring on it is not out of sample: overlapping --train and
    --test windows are one sentence, exit 2 (touching half-open windows are disjoint)."""
    assert Window("train", *(np.datetime64(x) if x else None for x in
                             (train.split(":") + [""])[:2])).overlaps(
        Window("test", *(np.datetime64(x) if x else None for x in
                         (test.split(":") + [""])[:2]))) is not ok
    if ok:
        return
    r = CliRunner().invoke(sweep_cmd, [str(market["series_file"]), "--realized",
                                       str(market["agg"]), "--train", train, "--test", test,
                                       "--model", "v1", "--backend", "numpy"])
    assert r.exit_code == 2 and "overlap: the best setting would be scored on data it was " \
                                "picked on" in r.output, r.output


def test_sweep_refuses_overlapping_train_windows_and_an_existing_keep_best(market, tmp_path):
    """Two --train windows sharing buckets would count them twice in the objective; an existing
    --keep-best path is refused with advice that fits sweep (it has no --overwrite)."""
    base = [str(market["series_file"]), "--realized", str(market["agg"]), "--model", "v1",
            "--backend", "numpy", "--test", "2026-01-12:"]
    r = CliRunner().invoke(sweep_cmd, base + ["--train", "2026-01-02:2026-01-06",
                                              "--train", "2026-01-05:2026-01-09"])
    assert r.exit_code == 2 and "overlap: their common buckets would count twice" in r.output
    (tmp_path / "best.zarr").mkdir()
    r = CliRunner().invoke(sweep_cmd, base + ["--train", ":2026-01-12", "--keep-best",
                                              str(tmp_path / "best.zarr")])
    assert r.exit_code == 2, r.output
    assert "already exists; choose another path or remove it" in r.output
    assert "--overwrite" not in r.output


# -- buckets the bars do not fill; the level event set --------------------------------------------
M5 = 300_000


def _m5_series(start_ms, n, seed=5):
    rng = np.random.default_rng(seed)
    close = 60_000 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[60_000, close[:-1]]
    df = pd.DataFrame({"time": start_ms + M5 * np.arange(n), "open": open_,
                       "high": np.maximum(open_, close) * 1.001,
                       "low": np.minimum(open_, close) * 0.999, "close": close,
                       "oi": 1_000 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))})
    return from_frame(df, exchange="x", symbol="BTCUSDT", source="m5")


def test_a_bucket_the_bars_do_not_fill_is_left_out(tmp_path):
    # 5m bars 15:55, 16:00 .. 11:25 (39 whole 30m buckets), 11:30 .. 11:40 (close 11:45);
    # 30m buckets on the clock: the first (15:30) holds one bar, the last (11:30) three; the
    # 30m realized bars cover all 41 buckets
    t0 = 1_779_724_500_000  # 2026-05-25T15:55Z
    ds = liqgpu.estimate(_m5_series(t0, 1 + 39 * 6 + 3), every="30m", backend="numpy")
    t = ds["time"].values
    assert t.size == 41
    assert str(t[0])[:16] == "2026-05-25T15:30" and str(t[-1])[:16] == "2026-05-26T11:30"
    assert ds.attrs["data_end"] == "2026-05-26T11:45:00Z"
    H30 = 1_800_000
    agg = pd.DataFrame({"open_time_ms": 1_779_723_000_000 + H30 * np.arange(41),
                        "liq_long_usd": np.arange(41.0), "liq_short_usd": 1.0})
    p = tmp_path / "agg30.csv"
    agg.to_csv(p, index=False)
    rz = load_realized(p)
    # the store says where its bars start and end (data_start 15:55, data_end 11:45): the
    # first bucket (15:30, one bar) and the last (past 11:45) are left out: 16:00 .. 11:00
    assert ds.attrs["data_start"] == "2026-05-25T15:55:00Z"
    tw = evaluate(ds, rz, draws=0)["windows"][0]
    assert tw["timing"]["n_buckets"] == 39
    assert (tw["first_bucket"], tw["last_bucket"]) == ("2026-05-25T16:00:00Z",
                                                        "2026-05-26T11:00:00Z")
    # a store written before data_start was kept: only the last bucket is known partial
    old = ds.copy()
    del old.attrs["data_start"]
    tw_old = evaluate(old, rz, draws=0)["windows"][0]
    assert tw_old["timing"]["n_buckets"] == 40
    assert tw_old["first_bucket"] == "2026-05-25T15:30:00Z"
    assert tw["timing"]["long"]["realized_notional"] == pytest.approx(sum(range(1, 40)))
    # realized hourly bars: a 1h bucket needs both 30m store buckets covered (16:00 .. 10:00)
    agg1 = agg.iloc[1:].groupby((np.arange(40) // 2)).agg(
        {"open_time_ms": "first", "liq_long_usd": "sum", "liq_short_usd": "sum"})
    p1 = tmp_path / "agg1h.csv"
    agg1.to_csv(p1, index=False)
    tw = evaluate(ds, load_realized(p1), draws=0)["windows"][0]
    assert tw["timing"]["n_buckets"] == 19
    assert (tw["first_bucket"], tw["last_bucket"]) == ("2026-05-25T16:00:00Z",
                                                        "2026-05-26T10:00:00Z")
    # events: one in the first bucket, one in each whole bucket, one in the last: only the
    # whole buckets' events are scored, in timing and in levels
    ev_t = 1_779_723_000_000 + H30 * np.arange(40) + 1_740_000  # hh:29 / hh:59
    lows, highs = ds["low"].values[0], ds["high"].values[0]
    price = (lows + highs) / 2
    ev = pd.DataFrame({"time": ev_t, "side": "long", "price": price[:40], "notional": 100.0,
                       "price_kind": "trigger"})
    ev.loc[len(ev)] = {"time": 1_779_723_000_000 + H30 * 40 + 60_000, "side": "long",
                       "price": price[40], "notional": 100.0, "price_kind": "trigger"}
    pe = tmp_path / "ev.csv"
    ev.to_csv(pe, index=False)
    w = evaluate(ds, load_realized(pe), draws=0)["windows"][0]
    assert w["timing"]["n_buckets"] == 39
    assert (w["first_bucket"], w["last_bucket"]) == ("2026-05-25T16:00:00Z",
                                                      "2026-05-26T11:00:00Z")
    assert w["timing"]["long"]["realized_notional"] == pytest.approx(3900.0)
    assert w["levels"]["long"]["n_events"] == 39
    assert w["levels"]["long"]["n_in_range"] == 39


def test_the_sweep_table_leaves_out_a_last_bucket_past_the_last_bar():
    from liqgpu.sweep import per_tier_params, tier_liquidated

    s = _m5_series(1_779_724_800_000, 6 * 10 + 2)  # 16:00 .. 21:05: 10 whole 30m buckets
    t, ev, _, prices = tier_liquidated(s, per_tier_params(20, 0.3, "close", 0.004), "30m")
    assert t.size == 11 and ev == np.timedelta64(30, "m")
    assert prices["covered"].tolist() == [True] * 10 + [False]


def test_level_events_in_range_do_not_depend_on_the_grid(market, tmp_path):
    # the same events scored on a 10 bps and a 200 bps grid of one estimate: the same events
    # count as inside their bucket's [low, high] (the true range, not whole bins of a grid)
    df = market["df"]
    rng = np.random.default_rng(11)
    b = rng.integers(1, len(df), 300)
    lo, hi = df["low"].to_numpy()[b], df["high"].to_numpy()[b]
    # prices from 0.3 % below the low to 0.3 % above the high: about a fifth fall outside
    price = lo * 0.997 + rng.random(300) * (hi * 1.003 - lo * 0.997)
    ev = pd.DataFrame({"time": df["time"].to_numpy()[b] + 60_000,
                       "side": np.where(rng.random(300) < 0.5, "long", "short"),
                       "price": price, "notional": rng.lognormal(8, 1, 300),
                       "price_kind": "trigger"})
    p = tmp_path / "ev.csv"
    ev.to_csv(p, index=False)
    inside = (price >= lo) & (price <= hi)
    assert 30 < (~inside).sum() < 150
    got = []
    for grid in ("log:20000:120000:10", "log:20000:120000:200"):
        ds = liqgpu.estimate(market["series"], every="1h", backend="numpy", model="v1",
                             grid=grid)
        lv = evaluate(ds, load_realized(p), draws=0)["windows"][0]["levels"]
        assert lv["all"]["n_events"] == 300
        assert lv["all"]["n_in_range"] == int(inside.sum())
        assert lv["all"]["in_range_share"] == pytest.approx(
            ev["notional"][inside].sum() / ev["notional"].sum(), rel=1e-12)
        for s in ("long", "short"):
            assert lv[s]["n_in_range"] == int((inside & (ev["side"] == s)).sum())
        got.append(lv["all"]["uniform"]["top10_share"])
    # the uniform top-decile share is k/n of each grid's own bins in the range: it differs
    assert got[0] != pytest.approx(got[1], abs=0.01)
