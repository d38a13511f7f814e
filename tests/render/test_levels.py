"""find_levels on hand-made datasets with known answers, and the ``levels`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from liqgpu.errors import InputError
from liqgpu.render.levels import find_levels, runs

LEVS = (10.0, 50.0)


def hand_dataset(n_time: int = 24, n_price: int = 60, *, close: float | None = None,
                 series=("ex:BTCUSDT",), max_age: str = "none", realized: bool = False,
                 linear: bool = False):
    """A tiny dataset in the store layout: a 100 bps log grid from 100 (or a linear grid of
    step 1 from 100), hourly buckets, tiers 10x and 50x, everything zero; close defaults to the
    centre of bin 30."""
    import xarray as xr

    n_s = len(series)
    if linear:
        edges = 100.0 + np.arange(n_price + 1, dtype=np.float64)
    else:
        edges = 100.0 * 1.01 ** np.arange(n_price + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    time = np.datetime64("2026-01-01T00:00", "ns") + np.arange(n_time) * np.timedelta64(1, "h")
    c = centres[min(30, n_price - 1)] if close is None else close
    cube = ("series", "time", "price", "leverage", "side")
    tier = ("series", "time", "leverage", "side")
    zeros = np.zeros((n_s, n_time, n_price, len(LEVS), 2), np.float32)
    data = {
        "intensity": (cube, zeros.copy()),
        "liquidated": (cube, zeros.copy()),
    }
    for v in ("added", "closed", "expired", "outside", "outside_liquidated"):
        data[v] = (tier, np.zeros((n_s, n_time, len(LEVS), 2)))
    for v in ("open", "high", "low", "close"):
        data[v] = (("series", "time"), np.full((n_s, n_time), c))
    data["oi"] = (("series", "time"), np.ones((n_s, n_time)))
    if realized:
        data["realized"] = (("series", "time", "price", "side"),
                            np.zeros((n_s, n_time, n_price, 2), np.float32))
    grid = (f"linear:100:{edges[-1]:g}:1" if linear else f"log:100:{edges[-1]:.10g}:100")
    ds = xr.Dataset(
        data,
        coords={"series": list(series), "time": time, "price": centres,
                "leverage": np.asarray(LEVS), "side": ["long", "short"],
                "symbol": ("series", [s.split(":")[1] for s in series]),
                "exchange": ("series", [s.split(":")[0] for s in series]),
                "price_edges": ("price_edge", edges)},
        attrs={"format": "liqgpu", "model": "v1", "leverages": list(LEVS), "weights": [0.5, 0.5],
               "mmr": 0.004, "entry": "hlc3", "side_split": "both", "closure": "proportional",
               "max_age": max_age, "step": "1h", "every": "1h", "grid": grid},
    )
    return ds


def known_dataset():
    """Long bands at bins 10..14 (10x: 1, 2, 3, 2, 1 M) and 20..21 (50x: 4 M each, 10x: 1 M
    each); a short band at bins 40..42 (10x: 5 M each); close at bin 30's centre."""
    ds = hand_dataset()
    a = ds["intensity"].values
    M = 1e6
    a[0, :, 10:15, 0, 0] = np.array([1, 2, 3, 2, 1]) * M
    a[0, :, 20:22, 1, 0] = 4 * M
    a[0, :, 20:22, 0, 0] = 1 * M
    a[0, :, 40:43, 0, 1] = 5 * M
    return ds


def write_store(ds, path):
    """Write a hand-made dataset as a store (zarr v3, consolidated), quietly."""
    from liqgpu.store import _quiet_zarr

    with _quiet_zarr():
        ds.to_zarr(path, zarr_format=3, consolidated=True, mode="w")
    return path


def test_runs():
    assert runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    assert runs(np.zeros(3, bool)) == []
    assert runs(np.ones(3, bool)) == [(0, 3)]


def test_known_bands_threshold_zero():
    ds = known_dataset()
    e, c = ds["price_edges"].values, ds["price"].values
    close = c[30]
    out = find_levels(ds, top=10, threshold=0.0)
    assert [(b["rank"], b["side"], b["bins"]) for b in out] == [
        (1, "short", 3), (2, "long", 2), (3, "long", 5)]
    s, l2, l1 = out
    assert s["notional"] == pytest.approx(15e6)
    assert s["share"] == pytest.approx(1.0)
    assert s["price_low"] == pytest.approx(e[40]) and s["price_high"] == pytest.approx(e[43])
    assert s["price"] == pytest.approx(c[40:43].mean())
    assert s["distance_pct"] == pytest.approx((c[40:43].mean() / close - 1) * 100)
    assert s["dominant"] == [10.0] and s["tiers"] == {"10": pytest.approx(1.0)}
    # long band at 20..21: 10 M of the side's 19 M; 50x holds 80 %
    assert l2["notional"] == pytest.approx(10e6)
    assert l2["share"] == pytest.approx(10 / 19)
    assert l2["tiers"] == {"50": pytest.approx(0.8), "10": pytest.approx(0.2)}
    assert l2["dominant"] == [50.0]
    assert l2["price"] == pytest.approx((c[20] + c[21]) / 2)
    assert l2["distance_pct"] < 0
    # long band at 10..14: 9 M, peak at bin 12
    assert l1["notional"] == pytest.approx(9e6) and l1["share"] == pytest.approx(9 / 19)
    assert l1["peak_price"] == pytest.approx(c[12])
    assert l1["price_low"] == pytest.approx(e[10]) and l1["price_high"] == pytest.approx(e[15])
    assert l1["close"] == pytest.approx(close)
    assert l1["time"] == "2026-01-02T00:00:00Z"  # the end of the last bucket


def test_threshold_splits_and_top():
    ds = known_dataset()
    # 0.7 of the long side's largest bin (5 M in bins 20, 21): only bins 20 and 21 remain
    out = find_levels(ds, top=10, side="long", threshold=0.7)
    assert [(b["bins"], b["notional"]) for b in out] == [(2, pytest.approx(10e6))]
    # 0.3 (1.5 M): bins 11..13 (2, 3, 2 M) and 20, 21 -> two bands
    out = find_levels(ds, top=10, side="long", threshold=0.3)
    assert [(b["bins"], b["notional"]) for b in out] == [(2, pytest.approx(10e6)),
                                                         (3, pytest.approx(7e6))]
    assert out[1]["share"] == pytest.approx(7 / 19)
    assert len(find_levels(ds, top=1, threshold=0.0)) == 1


def test_selection_by_leverage_series_and_time():
    ds = known_dataset()
    out = find_levels(ds, leverage="50", threshold=0.0)
    assert len(out) == 1 and out[0]["notional"] == pytest.approx(8e6)
    assert out[0]["tiers"] == {"50": pytest.approx(1.0)}
    # a different picture in one bucket: --at picks it
    ds["intensity"].values[0, 5] = 0
    ds["intensity"].values[0, 5, 50, 0, 1] = 7e6
    # bucket 5 (05:00-06:00) is snapshot at 06:00: at 05:30 it is still in the future
    assert len(find_levels(ds, at="2026-01-01T05:30Z", threshold=0.0)) == 3
    at5 = find_levels(ds, at="2026-01-01T06:00Z", threshold=0.0)
    assert len(at5) == 1 and at5[0]["peak_price"] == pytest.approx(ds["price"].values[50])
    assert at5[0]["time"] == "2026-01-01T06:00:00Z"


def test_two_series_are_summed():
    ds = hand_dataset(series=("a:BTCUSDT", "b:BTCUSDT"))
    ds["intensity"].values[0, :, 40, 0, 1] = 1e6
    ds["intensity"].values[1, :, 40, 1, 1] = 3e6
    out = find_levels(ds, threshold=0.0)
    assert out[0]["notional"] == pytest.approx(4e6)
    assert out[0]["tiers"] == {"50": pytest.approx(0.75), "10": pytest.approx(0.25)}
    only_b = find_levels(ds, series="b:BTCUSDT", threshold=0.0)
    assert only_b[0]["notional"] == pytest.approx(3e6)


def test_empty_side_gives_no_band():
    ds = known_dataset()
    ds["intensity"].values[..., 1] = 0
    assert find_levels(ds, side="short") == []


@pytest.mark.parametrize("kw, words", [
    ({"top": 0}, "--top"),
    ({"threshold": 1.0}, "--threshold"),
    ({"at": "2025-06-01"}, "outside the store's time range"),
    ({"at": "yesterday-ish"}, "cannot read"),
    ({"leverage": "20"}, "is not a tier"),
    ({"series": "nope"}, "is not in the store"),
    ({"lookback": "4h"}, "--max-age 4h"),
])
def test_bad_input(kw, words):
    with pytest.raises(InputError, match=words):
        find_levels(known_dataset(), **kw)


def test_levels_command_json(tmp_path):
    from click.testing import CliRunner

    from liqgpu.cli import main

    path = tmp_path / "k.zarr"
    write_store(known_dataset(), path)
    r = CliRunner().invoke(main, ["levels", str(path), "--threshold", "0", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)["levels"]
    assert [b["side"] for b in got] == ["short", "long", "long"]
    assert got[0]["notional"] == pytest.approx(15e6)
    r = CliRunner().invoke(main, ["levels", str(path), "--top", "2"])
    assert r.exit_code == 0 and "short" in r.output and "10x 100%" in r.output
    r = CliRunner().invoke(main, ["levels", str(path), "--at", "1999-01-01"])
    assert r.exit_code == 2 and "outside the store's time range" in r.output


def test_a_gap_in_the_oi_is_said_and_hatched(tmp_path):
    """Buckets without open interest (every selected series' OI missing): `levels` there says
    since when, the JSON carries it, the selection's mask marks them and the heatmap hatches
    each run of them with a legend entry; with OI everywhere, none of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from click.testing import CliRunner

    from liqgpu.cli import main
    from liqgpu.render.heatmap import draw_no_oi
    from liqgpu.render.select import select

    ds = known_dataset()
    ds["oi"].values[0, 5:9] = np.nan  # 05:00 .. 08:59
    ds["oi"].values[0, 15] = np.nan
    path = write_store(ds, tmp_path / "k.zarr")
    at7 = find_levels(path, at="2026-01-01T07:30Z", threshold=0)
    assert at7 and all(b["no_oi_since"] == "2026-01-01T05:00:00Z" for b in at7)
    assert all(b["no_oi_since"] is None for b in find_levels(path, at="2026-01-01T10:30Z"))
    # (a time reads the last snapshot at or before it: 16:10 the bucket 15:00-16:00's)
    r = CliRunner().invoke(main, ["levels", str(path), "--at", "2026-01-01T16:10Z"])
    assert r.exit_code == 0 and "no open-interest data since 2026-01-01T15:00:00Z" in r.output
    r = CliRunner().invoke(main, ["levels", str(path), "--at", "2026-01-01T17:10Z"])
    assert r.exit_code == 0 and "open-interest" not in r.output
    sel = select(ds)
    assert np.flatnonzero(sel.no_oi()).tolist() == [5, 6, 7, 8, 15]
    fig, ax = plt.subplots()
    try:
        n0 = len(ax.patches)
        handles = draw_no_oi(ax, sel)
        spans = ax.patches[n0:]
        assert len(spans) == 2 and [h.get_label() for h in handles] == \
            ["no OI data: nothing opened or closed"]
        x0 = [p.get_x() if hasattr(p, "get_x") else p.get_xy()[0][0] for p in spans]
        import matplotlib.dates as mdates
        assert [mdates.num2date(x).strftime("%H:%M") for x in x0] == ["05:00", "15:00"]
        assert draw_no_oi(ax, select(known_dataset())) == []
    finally:
        plt.close(fig)


def test_one_default_threshold_for_the_command_the_api_and_the_viewer(tmp_path):
    """`liqgpu levels`, liqgpu.levels and find_levels (the viewer's table) list the same bands
    by default; liqgpu.levels carries no_oi_since."""
    from click.testing import CliRunner

    import liqgpu
    from liqgpu.cli import main
    from liqgpu.render.levels import DEFAULT_THRESHOLD
    from liqgpu.render.commands import levels_cmd

    opt = next(p for p in levels_cmd.params if p.name == "threshold")
    assert opt.default == DEFAULT_THRESHOLD == 0.25
    path = write_store(known_dataset(), tmp_path / "k.zarr")
    r = CliRunner().invoke(main, ["levels", str(path), "--json"])
    cli = json.loads(r.output)["levels"]
    api = liqgpu.levels(path)
    assert [(b["side"], b["price_low"], b["notional"]) for b in cli] == \
        list(zip(api["side"], api["price_low"], api["notional"]))
    assert [b["price_low"] for b in find_levels(path)] == list(api["price_low"])
    assert "no_oi_since" in api.columns and api["no_oi_since"].isna().all()


def test_map_title_times_the_snapshot_and_says_what_it_sums(tmp_path):
    """The map's title: the snapshot's time (the last bar's close in a bucket the bars do not
    fill), the OI gap it sits in, and that totals are between the price bounds when given."""
    from liqgpu.render.levels import profile_at
    from liqgpu.render.liqmap import _title

    ds = known_dataset()
    ds["oi"].values[0, 20:] = np.nan
    ds.attrs["data_end"] = "2026-01-01T23:45:00Z"  # the last hourly bucket's bars end at 23:45
    sel, i, cube, close = profile_at(ds, None)
    longs, shorts = cube[:, :, 0].sum(axis=1), cube[:, :, 1].sum(axis=1)
    line = _title(ds, sel, i, longs, shorts)[1]
    assert line.startswith("at 2026-01-01 23:45 UTC  ·  no OI data since 2026-01-01 20:00 UTC")
    assert "live levels: longs" in line
    assert "between the price bounds" in _title(ds, sel, i, longs, shorts, True)[1]


def test_map_band_colours_do_not_depend_on_the_selection(tmp_path, monkeypatch):
    """A band keeps its colour in the map whether or not the bands before it are selected
    (50x drawn alone used to take the first band's colour)."""
    import matplotlib.axes

    from liqgpu.render import render_map, style

    drawn = []
    real = matplotlib.axes.Axes.bar

    def bar(self, *a, **kw):
        drawn.append(kw.get("color"))
        return real(self, *a, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", bar)
    path = write_store(known_dataset(), tmp_path / "k.zarr")
    render_map(path, out=tmp_path / "all.png")
    assert drawn == [style.TIER_COLOURS[0], style.TIER_COLOURS[1]]
    drawn.clear()
    render_map(path, out=tmp_path / "50.png", leverage="50")
    assert drawn == [style.TIER_COLOURS[1]]


def test_a_series_without_oi_in_a_sum_is_named(tmp_path):
    """Two series summed (--asset): one without OI since 10:00 is named in `levels` and in
    the map's title, with since when; the other's levels are not called frozen."""
    from click.testing import CliRunner

    from liqgpu.cli import main
    from liqgpu.render.levels import profile_at
    from liqgpu.render.liqmap import _title

    ds = hand_dataset(series=("ex:BTCUSDT", "hl:BTC"))
    ds["intensity"].values[:, :, 40:43, 0, 1] = 5e6
    ds["oi"].values[1, 10:] = np.nan
    path = write_store(ds, tmp_path / "two.zarr")
    r = CliRunner().invoke(main, ["levels", str(path), "--asset", "BTC", "--at",
                                  "2026-01-01T13:00Z"])
    assert r.exit_code == 0, r.output
    assert "note: hl:BTC has no open-interest data since 2026-01-01T10:00:00Z" in r.output
    assert "ex:BTCUSDT has no" not in r.output and "no open-interest data since" not in \
        r.output.replace("hl:BTC has no open-interest data since", "")
    got = find_levels(path, asset="BTC", at="2026-01-01T13:00Z")
    assert got[0]["no_oi_since"] is None and got[0]["no_oi_series"] == \
        {"hl:BTC": "2026-01-01T10:00:00Z"}
    sel, i, cube, close = profile_at(ds, "2026-01-01T13:00Z", asset="BTC")
    line = _title(ds, sel, i, cube[:, :, 0].sum(axis=1), cube[:, :, 1].sum(axis=1))[1]
    assert "hl:BTC: no OI data since 2026-01-01 10:00 UTC" in line


def test_at_in_a_partial_last_bucket_uses_its_snapshot_at_the_data_end():
    """The last bucket the bars do not fill is snapshot at the last bar's close (`data_end`):
    `--at` at or after that time gives it (not the bucket before), and `snapshot_at` agrees;
    `--at` up to one bucket after the last snapshot is the last one, later is refused."""
    import pandas as pd

    import liqgpu

    s = liqgpu.synthetic_series(days=1, seed=5, step="5min")
    keep = s.time < s.time[0] + np.timedelta64(11 * 60 + 50, "m")  # bars 00:00 .. 11:45
    from liqgpu.series import Series

    s = Series(s.time[keep], s.step, {c: s[c][keep] for c in s.columns}, s.exchange, s.symbol)
    ds = liqgpu.estimate(s, every="1h", backend="numpy")
    t0 = pd.Timestamp(s.time[0]).tz_localize("UTC")
    assert ds.attrs["data_end"].startswith((t0 + pd.Timedelta("11h50min")).strftime("%Y-%m-%dT%H:%M"))
    for at, want in (("11h49min", "10h"), ("11h50min", "11h"), ("11h55min", "11h"),
                     ("12h49min", "11h")):
        got = find_levels(ds, at=(t0 + pd.Timedelta(at)).isoformat(), threshold=0.0)
        assert got and got[0]["time"] == (t0 + pd.Timedelta(want) + pd.Timedelta(
            "1h" if want == "10h" else "50min")).strftime("%Y-%m-%dT%H:%M:%SZ"), at
        snap = liqgpu.snapshot_at(ds, (t0 + pd.Timedelta(at)).isoformat())
        assert pd.Timestamp(snap["time"].values) == (t0 + pd.Timedelta(want)).tz_localize(None)
    with pytest.raises(InputError, match=r"snapshots .* 11:50 UTC; --at may be up to .* 12:50 "
                                         "UTC, excluded"):
        find_levels(ds, at=(t0 + pd.Timedelta("12h50min")).isoformat())


def test_a_lookback_covering_the_whole_store_needs_no_max_age(caplog):
    """A store of 24 hourly buckets estimated without max_age: every position in it was opened
    within a 24h or longer lookback, so its levels are those (with a warning saying so); a
    shorter lookback still needs a store estimated for it. An explicit start is kept."""
    from liqgpu.render.select import select

    ds = known_dataset()
    with caplog.at_level("WARNING"):
        out = find_levels(ds, lookback="48h", threshold=0.0)
    assert out and out[0]["notional"] == pytest.approx(15e6)
    assert "only 1d of data" in caplog.text or "only 24h of data" in caplog.text
    sel = select(ds, lookback="24h", start="2026-01-01T10:00Z")
    assert sel.t0 == 10 and sel.t1 == 24
    sel = select(ds, lookback="24h")
    assert sel.t0 == 0 and sel.t1 == 24
    with pytest.raises(InputError, match="--max-age 23h"):
        select(ds, lookback="23h")


def test_a_window_reaching_past_the_store_is_clipped_with_a_note(caplog):
    """--start before the store's first bucket or --end after its end: the window is clipped to
    the store (a warning says so); a window wholly outside it is still refused."""
    from liqgpu.render.select import select

    ds = known_dataset()  # 24 hourly buckets from 2026-01-01T00:00
    with caplog.at_level("WARNING"):
        sel = select(ds, start="2025-12-31T12:00Z", end="2026-01-01T06:00Z")
    assert (sel.t0, sel.t1) == (0, 6) and "before the store's first bucket" in caplog.text
    with caplog.at_level("WARNING"):
        sel = select(ds, start="2026-01-01T20:00Z", end="2026-01-03")
    assert (sel.t0, sel.t1) == (20, 24) and "after the store's end" in caplog.text
    for kw in ({"start": "2026-01-02T00:00Z"}, {"end": "2025-12-31"}):
        with pytest.raises(InputError, match="outside the store's time range"):
            select(ds, **kw)
    # a clipped start is still the start given: a lookback does not move it to its own
    sel = select(ds, start="2025-12-31T12:00Z", lookback="24h")
    assert (sel.t0, sel.t1) == (0, 24)
    sel = select(ds, start="2025-12-31T12:00Z", end="2026-01-01T20:00Z", lookback="24h")
    assert (sel.t0, sel.t1) == (0, 20)


def test_within_keeps_the_bands_near_the_close():
    """--within: only bins within that many percent of the close (135.46) take part. The long
    band at 122-124.5 (-9 %) stays at 10 %, the one at 110.5-116.1 (-16 %) goes, and the
    short band at 148.9-153.4 (+11.6 %) needs 14 %; a band's share stays its share of the
    side's whole grid."""
    ds = known_dataset()
    lows = lambda bands: sorted((b["side"], round(b["price_low"], 2)) for b in bands)  # noqa: E731
    assert lows(find_levels(ds, threshold=0.0)) == [("long", 110.46), ("long", 122.02),
                                                    ("short", 148.89)]
    near = find_levels(ds, threshold=0.0, within=10)
    assert lows(near) == [("long", 122.02)]
    assert near[0]["notional"] == pytest.approx(10e6)
    assert near[0]["share"] == pytest.approx(10e6 / 19e6)
    assert lows(find_levels(ds, threshold=0.0, within=14)) == [("long", 122.02),
                                                               ("short", 148.89)]
    with pytest.raises(InputError, match="--within: 0 must be a percentage"):
        find_levels(ds, within=0)
    assert find_levels(ds, threshold=0.0, within=1) == []
