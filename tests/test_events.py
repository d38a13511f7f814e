"""bin_realized on hand-made events whose bins are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from liqgpu.errors import InputError
from liqgpu.events import bin_realized

TIME = np.array(["2024-01-01T00:00", "2024-01-01T01:00", "2024-01-01T02:00"],
                dtype="datetime64[ns]")
EDGES = np.array([100.0, 110.0, 120.0, 130.0])
HOUR = np.timedelta64(1, "h")


def events(rows):
    return pd.DataFrame(rows, columns=["time", "exchange", "symbol", "side", "price", "notional"]
                        ).assign(time=lambda d: pd.to_datetime(d["time"], utc=True, format="ISO8601"))


def test_known_bins_and_edges():
    ev = events([
        ("2024-01-01 00:00:00", "bybit", "BTCUSDT", "long", 100.0, 1.0),    # first edge: bin 0
        ("2024-01-01 00:59:59.999", "bybit", "BTCUSDT", "long", 109.99, 2.0),  # still bucket 0
        ("2024-01-01 01:00:00", "bybit", "BTCUSDT", "short", 110.0, 4.0),   # edge 110 -> bin 1
        ("2024-01-01 02:30:00", "okx", "BTC-USDT-SWAP", "long", 129.0, 8.0),
        ("2024-01-01 02:31:00", "OKX", "btc-usdt-swap", "long", 129.5, 16.0),  # case-insensitive
    ])
    out, s = bin_realized(ev, series_names=["bybit:BTCUSDT", "okx:BTC-USDT-SWAP"], time=TIME,
                          every=HOUR, edges=EDGES, return_summary=True)
    assert out.shape == (2, 3, 3, 2)
    expect = np.zeros_like(out)
    expect[0, 0, 0, 0] = 3.0
    expect[0, 1, 1, 1] = 4.0
    expect[1, 2, 2, 0] = 24.0
    np.testing.assert_array_equal(out, expect)
    assert s["binned"] == 5 and s["notional_binned"] == 31.0


def test_outside_events_are_counted_not_dropped_silently(caplog):
    ev = events([
        ("2023-12-31 23:59:59", "bybit", "BTCUSDT", "long", 105.0, 1.0),  # before the range
        ("2024-01-01 03:00:00", "bybit", "BTCUSDT", "long", 105.0, 2.0),  # after the last bucket
        ("2024-01-01 00:10:00", "bybit", "BTCUSDT", "long", 99.99, 4.0),  # below the grid
        ("2024-01-01 00:10:00", "bybit", "BTCUSDT", "short", 130.0, 8.0),  # x_P is outside
        ("2024-01-01 00:10:00", "binance", "BTCUSDT", "long", 105.0, 16.0),  # no such series
        ("2024-01-01 00:10:00", "bybit", "BTCUSDT", "unknown", 105.0, 32.0),
        ("2024-01-01 00:10:00", "bybit", "BTCUSDT", "long", 105.0, 64.0),  # the one binned
    ])
    with caplog.at_level("WARNING", logger="liqgpu.events"):
        out, s = bin_realized(ev, series_names=["bybit:BTCUSDT"], time=TIME, every=HOUR,
                              edges=EDGES, return_summary=True)
    assert out.sum() == 64.0 and out[0, 0, 0, 0] == 64.0
    assert {k: s[k]["notional"] for k in ("before_range", "after_range", "below_grid",
                                          "above_grid", "other_series", "unknown_side")} == {
        "before_range": 1.0, "after_range": 2.0, "below_grid": 4.0, "above_grid": 8.0,
        "other_series": 16.0, "unknown_side": 32.0}
    assert s["binned"] == 1 and s["events"] == 7
    assert "6 of 7 events not binned" in caplog.text
    split = bin_realized(ev, series_names=["bybit:BTCUSDT"], time=TIME, every=HOUR, edges=EDGES,
                         unknown_side="split")
    assert split[0, 0, 0, 0] == 64.0 + 16.0 and split[0, 0, 0, 1] == 16.0


def test_bucket_shorter_than_spacing_and_bad_args():
    ev = events([("2024-01-01 00:45:00", "bybit", "BTCUSDT", "long", 105.0, 1.0)])
    out, s = bin_realized(ev, series_names=["bybit:BTCUSDT"], time=TIME,
                          every=np.timedelta64(30, "m"), edges=EDGES, return_summary=True)
    assert out.sum() == 0 and s["after_range"]["count"] == 1
    with pytest.raises(InputError, match="edges"):
        bin_realized(ev, series_names=["bybit:BTCUSDT"], time=TIME, every=HOUR,
                     edges=np.array([1.0, 1.0]))
    empty = bin_realized(ev.iloc[:0], series_names=["a:b"], time=TIME, every=HOUR, edges=EDGES)
    assert empty.shape == (1, 3, 3, 2) and empty.sum() == 0


def test_a_run_s_summary_does_not_depend_on_its_chunks():
    """EventBinner bins chunk by chunk (as estimate's engine chunks, or the Dask pass's larger
    ones) and reports one summary: the same dict, to the last bit, however the time axis is
    cut, and the one bin_realized gives over the whole axis."""
    from liqgpu.events import EventBinner

    rng = np.random.default_rng(3)
    n, T = 4000, 48
    t0 = np.datetime64("2024-01-01T00:00", "ns")
    time = t0 + np.arange(T) * HOUR
    offs = rng.integers(-3600, (T + 2) * 3600, n) * np.timedelta64(1, "s")
    ev = pd.DataFrame({
        "time": pd.to_datetime(t0 + offs, utc=True),
        "exchange": rng.choice(["bybit", "okx"], n), "symbol": "BTCUSDT",
        "side": rng.choice(["long", "short", "unknown"], n, p=[0.45, 0.45, 0.1]),
        "price": rng.uniform(95.0, 135.0, n),
        # magnitudes far apart: a sum's rounding depends on how it is grouped
        "notional": rng.choice([0.1, 3.7, 1e12, 7e15], n) * rng.uniform(0.5, 1.5, n)})
    ev = ev.sort_values("time", kind="stable").reset_index(drop=True)
    names = ["bybit:BTCUSDT"]
    whole, ref = bin_realized(ev, series_names=names, time=time, every=HOUR, edges=EDGES,
                              return_summary=True, log_left_out=False)
    for cuts in ([0, T], [0, 1, T], [0, 5, 17, 18, 40, T], list(range(T + 1))):
        b = EventBinner(ev, names, time, HOUR, EDGES)
        cube = np.concatenate([b.cube(b0, b1) for b0, b1 in zip(cuts[:-1], cuts[1:])], axis=1)
        np.testing.assert_array_equal(cube, whole.astype(np.float32))
        assert b.finish() == {**ref, "unknown_side_rule": "skip", "sources": [],
                              "price_kinds": []}, cuts
    assert ref["binned"] > 0 and ref["other_series"]["count"] > 0 \
        and ref["before_range"]["count"] > 0 and ref["after_range"]["count"] > 0


def test_load_realized_refuses_a_bad_price_and_a_repeated_bar(tmp_path):
    """`evaluate --realized`: an event's price, where given, must be a price (a negative or
    text one was used, or read as unknown); an empty one is unknown. Two aggregate bars at one
    time are named (one was dropped without a word)."""
    import liqgpu
    from liqgpu.events import load_realized

    t = ["2026-01-01T00:00Z", "2026-01-01T00:05Z", "2026-01-01T00:09Z"]
    for price, words in (([100, -5, 101], "row 2, column 'price': '-5' is not a price > 0"),
                         (["100", "abc", "101"], "row 2, column 'price': 'abc' is not a price")):
        f = tmp_path / "ev.csv"
        pd.DataFrame({"time": t, "side": ["long", "short", "long"], "price": price,
                      "notional": [1, 2, 3]}).to_csv(f, index=False)
        with pytest.raises(liqgpu.InputError, match=words):
            load_realized(f)
    pd.DataFrame({"time": t, "side": ["long", "short", "long"], "price": [100, None, 101],
                  "notional": [1, 2, 3]}).to_csv(f, index=False)
    r = load_realized(f)
    assert r.frame["price"].isna().tolist() == [False, True, False]
    g = tmp_path / "agg.csv"
    pd.DataFrame({"open_time_ms": [1767225600000 + i * 3600000 for i in (0, 1, 1, 2)],
                  "long_usd": [1, 2, 3, 4], "short_usd": 1}).to_csv(g, index=False)
    with pytest.raises(liqgpu.InputError, match=r"rows 2 and 3 have the same time "
                                                r"2026-01-01T01:00:00Z; give each bar once"):
        load_realized(g)
    # the same bar twice, the same values (overlapping downloads): kept once
    pd.DataFrame({"open_time_ms": [1767225600000 + i * 3600000 for i in (0, 1, 1, 2)],
                  "long_usd": [1, 2, 2, 4], "short_usd": 1}).to_csv(g, index=False)
    assert load_realized(g).frame["long"].tolist() == [1, 2, 4]
