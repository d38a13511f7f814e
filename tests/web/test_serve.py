"""`liqgpu serve`: the browser viewer.

The data behind the page (liqgpu.web.data) is checked against the store directly; then a real
chromium (Debian's chromium and chromium-driver, driven by selenium) loads the page from a server
on a free 127.0.0.1 port and is checked for a heatmap, a zoom at a finer resolution, the hover
readout of a known cell, the side toggle, a live update and a damaged store's message.
Screenshots go to $LIQGPU_SCREENSHOTS when it is set.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import liqgpu
from liqgpu.cli import main

GRID = "log:40000:100000:10"
EVERY = "1h"
HOURS_FIRST = 60  # the store holds 60 h; the update brings it to 72 h


# -- stores ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def market():
    return liqgpu.synthetic_series(days=3, seed=11)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, market):
    """A store of the first 60 h (it gets updated by the browser test), a pristine copy, and
    a damaged copy."""
    root = tmp_path_factory.mktemp("serve")
    s = market
    cut = HOURS_FIRST * 60
    live = root / "live.zarr"
    liqgpu.estimate(s.slice(0, cut), every=EVERY, grid=GRID, backend="numpy", out=live)
    fixed = root / "fixed.zarr"
    shutil.copytree(live, fixed)
    bad = root / "bad.zarr"
    shutil.copytree(live, bad)
    for f in (bad / "intensity").rglob("*"):
        if f.is_file() and f.name != "zarr.json":
            f.write_bytes(b"not a zarr chunk")
    gap = root / "gap.zarr"
    liqgpu.estimate(with_oi_gaps(s.slice(0, cut)), every=EVERY, grid=GRID, backend="numpy",
                    out=gap)
    return {"live": live, "fixed": fixed, "bad": bad, "gap": gap, "root": root}


GAPS = [(10, 15), (40, HOURS_FIRST)]  # hours without open interest in the gap store


def with_oi_gaps(series):
    """The series with its OI missing (NaN, as ingest makes stale OI) over the hours GAPS."""
    import dataclasses

    cols = dict(series.columns)
    oi = cols["oi"].copy()
    for a, b in GAPS:
        oi[a * 60:b * 60] = np.nan
    cols["oi"] = oi
    return dataclasses.replace(series, columns=cols)


@pytest.fixture(scope="module")
def ds(stores):
    return liqgpu.open_store(stores["fixed"]).load()


def cell(ds, i, j, sides=("long", "short"), tiers=None):
    """Notional of bucket i, bin j, summed over series, tiers and ``sides`` (the reference)."""
    a = ds["intensity"].isel(time=i, price=j).sum("series")
    if tiers is not None:
        a = a.isel(leverage=list(tiers))
    return {s: float(a.sel(side=s).sum()) for s in sides}


# -- without a browser -----------------------------------------------------------------------------
def test_import_stays_light():
    code = ("import sys, liqgpu, liqgpu.cli, liqgpu.web, liqgpu.web.data, liqgpu.web.commands; "
            "heavy = {'panel', 'holoviews', 'bokeh'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_serve_without_the_extra_is_one_line_exit_2(stores, monkeypatch):
    import liqgpu.web.commands as cmd

    monkeypatch.setattr(cmd, "missing_viewer_packages", lambda: ["panel", "holoviews"])
    r = CliRunner().invoke(main, ["serve", str(stores["fixed"])])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'liqgpu[viewer]'" in lines[0], r.output


def test_serve_on_a_port_in_use_is_one_line_exit_2(stores, monkeypatch):
    """A port another server holds: one sentence naming --port, exit 2, before the 'viewer
    at' line (it used to print that line, then a traceback)."""
    import liqgpu.web.commands as cmd

    monkeypatch.setattr(cmd, "missing_viewer_packages", lambda: [])
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        r = CliRunner().invoke(main, ["serve", str(stores["fixed"]), "--port", str(port)])
    assert r.exit_code == 2
    assert r.output.strip() == f"Error: --port {port}: already in use on 127.0.0.1 (another " \
                               "server? choose another --port)", r.output


def test_the_heatmap_has_a_colour_key(ds):
    """The page's colour key: the colour map's run from its low end to its top (one hue, or
    longs and shorts in two), with the scale's ends as traders write notionals."""
    from matplotlib import colormaps

    from liqgpu.web import data as D
    from liqgpu.web.app import _money

    v = D.View()
    (x0, x1), (y0, y1) = D.default_range(ds, v)
    hm = D.heatmap(ds, v, x_range=(x0, x1), y_range=(y0, y1), width=800, height=400)
    (name, cols), = hm["key"]
    inferno = colormaps["inferno"]
    assert name == "" and len(cols) == 9
    assert cols[0] == D._hex(inferno(0.0)) and cols[-1] == D._hex(inferno(1.0))
    two = D.heatmap(ds, D.View(side="two hues"), x_range=(x0, x1), y_range=(y0, y1), width=800,
                    height=400)
    assert [k[0] for k in two["key"]] == ["long", "short"]
    assert [_money(x) for x in (0, 950, 12_400, 3_400_000, 1.25e9)] == \
        ["0", "950", "12.4k", "3.4M", "1.25B"]


def test_heatmap_zoom_is_finer_and_matches_the_store(ds):
    from liqgpu.web import data as D

    v = D.View()
    (x0, x1), (y0, y1) = D.default_range(ds, v)
    full = D.heatmap(ds, v, x_range=(x0, x1), y_range=(y0, y1), width=1920, height=1080)
    assert full["rgba"].shape == (1080, 1920, 4)
    assert full["n_buckets"] == ds.sizes["time"]
    # zoom to 6 buckets x 20 bins around a strong cell: every pixel lies in one cell
    t = ds["time"].values.astype("datetime64[ms]").astype(np.int64).astype(float)
    e = ds["price_edges"].values
    i = 30
    prof = ds["intensity"].isel(time=i).sum(["series", "leverage", "side"]).values
    j = int(np.argmax(prof))
    zx = (t[i - 3], t[i + 3])
    zy = (float(e[j - 10]), float(e[j + 10]))
    z = D.heatmap(ds, v, x_range=zx, y_range=zy, width=1920, height=1080)
    assert z["n_bins"] == 20 and z["n_buckets"] == 6
    assert z["rows_per_bin"] > 10 * full["rows_per_bin"]
    plane = z["planes"][0]
    # the pixel at the centre of cell (i, j): bucket i is columns 960..1279, bin j rows 540..593
    col = int((t[i] + 1800e3 - zx[0]) / (zx[1] - zx[0]) * 1920)
    row = int(np.log(np.sqrt(e[j] * e[j + 1]) / zy[0]) / np.log(zy[1] / zy[0]) * 1080)
    ref = cell(ds, i, j)
    assert plane[row, col] == pytest.approx(ref["long"] + ref["short"], rel=1e-5)


def test_readout_names_the_cell(ds):
    from liqgpu.web import data as D

    t = ds["time"].values.astype("datetime64[ms]").astype(np.int64).astype(float)
    e = ds["price_edges"].values
    i, j = 40, int(np.argmax(ds["intensity"].isel(time=40).sum(["series", "leverage",
                                                                 "side"]).values))
    r = D.readout(ds, D.View(), t[i] + 1000.0, float(np.sqrt(e[j] * e[j + 1])))
    ref = cell(ds, i, j)
    assert (r["bucket"], r["bin"]) == (i, j)
    assert r["price_low"] == e[j] and r["price_high"] == e[j + 1]
    assert r["long"] == pytest.approx(ref["long"], rel=1e-9)
    assert r["short"] == pytest.approx(ref["short"], rel=1e-9)
    assert r["tiers"] and all(share >= 0.25 for _, share in r["tiers"])
    only = D.readout(ds, D.View(side="short", tiers=(3, 4)), t[i] + 1.0, float(e[j]) * 1.0001)
    assert only["long"] is None
    assert only["short"] == pytest.approx(cell(ds, i, j, ("short",), tiers=(3, 4))["short"],
                                          rel=1e-9)
    assert D.readout(ds, D.View(), t[0] - 1.0, float(e[j])) is None


def test_band_labels_of_model_v2_work(ds):
    """v2 stores name leverage bands with strings: the controls list them, nothing parses them."""
    from liqgpu.web import data as D

    bands = ["1-5", "5-10", "10-25", "25-50", "50-125"]
    v2 = ds.assign_coords(leverage=bands)
    r = D.readout(v2, D.View(tiers=(1, 2)), float(ds["time"].values[20].astype("datetime64[ms]")
                                                    .astype(np.int64)) + 1.0,
                  float(ds["close"].values[0, 20]) * 0.95)
    assert {name for name, _ in r["tiers"]} <= {"5-10", "10-25"}
    rows = D.top_levels(v2, D.View(), None, top=3)
    assert rows and all(d in bands for r in rows for d in r["dominant"])
    assert [D.tier_label(x) for x in (5.0, 12.5, "2-10")] == ["5x", "12.5x", "2-10"]


def test_store_reloads_after_update_and_never_half_read(stores, market, tmp_path, monkeypatch):
    from liqgpu.updating import update
    from liqgpu.web import data as D

    path = tmp_path / "s.zarr"
    shutil.copytree(stores["fixed"], path)
    st = D.StoreData(path)
    assert st.version == 1 and st.ds.sizes["time"] == HOURS_FIRST and not st.changed()
    assert "liquidated" not in st.ds and "liquidated" in st.available  # read on first use
    liq = st.dataset("liquidated")["liquidated"]
    ref = liqgpu.open_store(path)["liquidated"]
    # another variable of the same store on disk is no new version (the page would redraw)
    assert st.version == 1 and np.array_equal(liq.values, ref.values, equal_nan=True)
    assert not st.changed() and not st.load()
    update(path, market, allow_outside=True)  # model v2's levels may reach past this grid
    assert st.changed()
    # a load overlapped by a write is thrown away and retried
    real, calls = D._read, []

    def racing(p, *a):
        out = real(p, *a)
        if not calls:
            os.utime(p / "zarr.json", ns=(1, time.time_ns() + 10**9))
        calls.append(1)
        return out

    monkeypatch.setattr(D, "_read", racing)
    assert st.load() and len(calls) == 2
    assert st.version == 2 and st.ds.sizes["time"] == 72 and st.error is None


def test_damaged_or_missing_store_is_one_sentence(stores, tmp_path):
    from liqgpu.web import data as D

    bad = D.StoreData(stores["bad"])
    assert bad.ds is None and str(stores["bad"]) in bad.error
    assert "\n" not in bad.error and "Traceback" not in bad.error
    gone = D.StoreData(tmp_path / "nope.zarr")
    assert gone.ds is None and gone.error.endswith("no such store")


def test_lookback_shows_the_max_age_window(market, tmp_path):
    from liqgpu.errors import InputError
    from liqgpu.web import data as D

    path = tmp_path / "aged.zarr"
    liqgpu.estimate(market.slice(0, 48 * 60), every=EVERY, grid=GRID, backend="numpy",
                    params=liqgpu.Params(max_age="12h"), out=path)
    ds = D.StoreData(path).ds
    (x0, x1), (y0, y1) = D.default_range(ds, D.View(lookback="12h"))
    assert x1 - x0 == 12 * 3600e3
    hm = D.heatmap(ds, D.View(lookback="12h"), x_range=(x0, x1), y_range=(y0, y1), width=800,
                   height=400)
    assert hm["n_buckets"] == 12
    with pytest.raises(InputError, match="max_age 12h"):
        D.default_range(ds, D.View(lookback="24h"))


def test_realized_dots_sit_on_their_events(ds):
    from liqgpu.web import data as D

    one = ds["intensity"].isel(leverage=0, drop=True)
    r = one.copy(data=np.zeros(one.shape, dtype=np.float32))
    events = [(10, 200, "long", 2.5e6), (30, 260, "short", 4.0e6)]
    for i, j, side, v in events:
        r.loc[dict(time=ds["time"][i], price=ds["price"][j], side=side)] = v
    dr = ds.assign(realized=r)
    view = D.View(variable="realized")
    sel = D.selection(dr, view)
    m = D.marks(D.reduce_planes(dr, view), sel, width=1920, height=1080)
    t = ds["time"].values.astype("datetime64[ms]").astype(np.int64).astype(float)
    e = ds["price_edges"].values
    assert sorted(m.notional.tolist()) == [2.5e6, 4.0e6]
    for i, j, side, v in events:
        k = int(np.flatnonzero(m.notional == v)[0])
        assert t[i] <= m.time_ms[k] < t[i] + 3600e3
        assert e[j] <= m.price[k] < e[j + 1]
        assert sel.sides[m.side[k]] == side


def test_damaged_on_reload_keeps_the_last_good_version(stores, tmp_path):
    from liqgpu.web import data as D

    path = tmp_path / "d.zarr"
    shutil.copytree(stores["fixed"], path)
    st = D.StoreData(path)
    for f in (path / "intensity").rglob("*"):
        if f.is_file() and f.name != "zarr.json":
            f.write_bytes(b"garbage")
    os.utime(path / "zarr.json", ns=(1, time.time_ns() + 10**9))
    assert st.changed() and st.load_in_background()
    wait(lambda: st.error is not None, timeout=20)
    assert st.version == 1 and st.ds is not None and str(path) in st.error
    assert "\n" not in st.error


def test_a_truncated_zarr_json_is_a_damaged_store(stores, tmp_path):
    """A served store whose zarr.json is cut short: the page's message (and `liqgpu info`'s,
    one line, exit 2) says the store is damaged, not that it is no liqgpu store; a folder
    whose zarr.json is valid JSON without liqgpu's attributes still is no liqgpu store."""
    from liqgpu.web import data as D

    path = tmp_path / "t.zarr"
    shutil.copytree(stores["fixed"], path)
    st = D.StoreData(path)
    (path / "zarr.json").write_text('{"garbage": ')
    assert st.changed() and not st.load()
    want = (f"{path}: damaged store (its zarr.json is not valid JSON: expecting value); "
            "estimate the store again")
    assert st.error == want and st.version == 1 and st.ds is not None
    r = CliRunner().invoke(main, ["info", str(path)])
    assert r.exit_code == 2 and r.output.strip().splitlines() == [f"Error: {want}"], r.output
    (path / "zarr.json").write_bytes(b"\xff\xfe garbage")
    assert "zarr.json is not valid JSON" in D.StoreData(path).error
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    assert D.StoreData(path).error.endswith("not a liqgpu store (no liqgpu attributes in "
                                            "zarr.json)")


def _viewer_reason() -> str | None:
    try:
        import holoviews  # noqa: F401
        import panel  # noqa: F401
    except ImportError as exc:
        return f"the viewer extra is not installed ({exc.name}); pip install '.[test,viewer]'"
    return None


needs_viewer = pytest.mark.skipif(_viewer_reason() is not None, reason=str(_viewer_reason()))


def session_of(*paths):
    """A page's session built outside a server (as the warm-up builds one)."""
    from liqgpu.web.app import Session, Viewer

    s = Session(Viewer(list(paths)))
    s.layout.get_root()
    return s


def ms_of(ds, i):
    return float(ds["time"].values[i].astype("datetime64[ms]").astype(np.int64))


def iso(ds, i):
    return str(ds["time"].values[i].astype("datetime64[s]")) + "Z"


def test_no_oi_buckets_are_spans_and_a_note(stores):
    """Buckets without open interest: the page's spans are those `render` hatches (one per run
    of them, start to end), the note names the gap's first bucket where the view ends in it
    (also a gap that began before the view), and realized liquidations have none."""
    from liqgpu.web import data as D

    ds = D.StoreData(stores["gap"]).ds
    assert "oi" in ds  # loaded with the view's variables
    h = 3600e3
    whole = D.no_oi(D.selection(ds, D.View()))
    assert whole["spans"] == [(ms_of(ds, a), ms_of(ds, a) + (b - a) * h) for a, b in GAPS]
    assert whole["since"] == iso(ds, 40) == "2026-01-02T16:00:00Z"
    # a view from 11:00 to 13:30 ends inside the first gap, which began before it at 10:00
    sel = D.selection(ds, D.View(), start=D._ms_to_time(ms_of(ds, 11)),
                      end=D._ms_to_time(ms_of(ds, 13) + h / 2))
    part = D.no_oi(sel)
    assert part["since"] == iso(ds, 10) and part["spans"] == [(ms_of(ds, 11), ms_of(ds, 14))]
    # ending at 20:00 (OI again): the first gap hatched, no note
    sel = D.selection(ds, D.View(), end=D._ms_to_time(ms_of(ds, 20)))
    assert D.no_oi(sel) == {"spans": [(ms_of(ds, 10), ms_of(ds, 15))], "since": None,
                            "series": {}}
    dr = ds.assign(realized=ds["intensity"].isel(leverage=0, drop=True))
    assert D.no_oi(D.selection(dr, D.View(variable="realized"))) == \
        {"spans": [], "since": None, "series": {}}
    (x0, x1), (y0, y1) = D.default_range(ds, D.View())
    hm = D.heatmap(ds, D.View(), x_range=(x0, x1), y_range=(y0, y1), width=400, height=200)
    assert hm["no_oi"] == whole
    fixed = D.StoreData(stores["fixed"]).ds  # OI everywhere
    assert D.no_oi(D.selection(fixed, D.View()))["spans"] == []


@needs_viewer
def test_the_page_hatches_no_oi_spans_and_notes_them(stores):
    """The page: hatched spans over the buckets without OI (Bokeh strips with a hatch), the
    key's entry, the status note while the view ends in a gap, none once it ends where OI is,
    and the levels' note at a snapshot inside a gap."""
    import holoviews as hv

    from liqgpu.web import data as D

    s = session_of(stores["gap"])
    ds = s.ds
    spans = s._gaps_of()
    assert spans.data["x0"].astype("datetime64[ms]").astype(np.int64).tolist() == \
        [ms_of(ds, a) for a, _ in GAPS]
    fig = hv.render(spans)
    strip, = [r.glyph for r in fig.renderers if type(r.glyph).__name__ == "VStrip"]
    assert strip.hatch_pattern == "/" and strip.fill_alpha == pytest.approx(0.16)
    assert D.NO_OI_LABEL in s.key.object
    note = f"no open-interest data since {iso(ds, 40)} (at the view&#x27;s end)"
    assert note in s.status.object
    # zoomed to 00:00 .. 20:00: the first gap still in view and keyed, no note
    s._image_of((ms_of(ds, 0), ms_of(ds, 20)), (50000.0, 70000.0), 800, 400)
    assert D.NO_OI_LABEL in s.key.object and "liqgpu-no-oi'" not in s.status.object
    s._image_of((ms_of(ds, 20), ms_of(ds, 30)), (50000.0, 70000.0), 800, 400)
    assert D.NO_OI_LABEL not in s.key.object
    # the levels follow the cursor: at 12:30 the snapshot of 12:00, in the first gap
    s.cursor_ms = ms_of(ds, 12) + 1800e3
    s._levels()
    assert f"no open-interest data since {iso(ds, 10)} (at the snapshot" in s.levels_note.object
    s.cursor_ms = ms_of(ds, 30) + 1800e3
    s._levels()
    assert s.levels_note.object == ""


@needs_viewer
def test_candles_are_hollow_over_liquidations(stores, ds):
    """Over liquidated (and realized) the bodies are outlines and the wicks stop at the body
    (the cells under a body stay seen, as the PNG); over the live levels they are solid."""
    import holoviews as hv

    s = session_of(stores["fixed"])
    x = (ms_of(ds, 20), ms_of(ds, 30))
    layers = {}
    for var in ("intensity", "liquidated"):
        s.w_variable.value = var
        ov = s._price_of(x, (50000.0, 70000.0), 1000)
        layers[var] = [len(e) for e in ov]
        if var == "liquidated":
            fig = hv.render(ov)
    # curve, grey wicks, solid up, solid down, side wicks up, box up, side wicks down, box down;
    # buckets 19 (ending at the view's start) .. 30 (starting at its end): 12 candles
    solid = layers["intensity"]
    assert solid[0] == 0 and solid[1] == solid[2] + solid[3] == 12
    assert solid[4:] == [0, 0, 0, 0]
    hollow = layers["liquidated"]
    assert hollow[1:4] == [0, 0, 0] and hollow[5] + hollow[7] == solid[1]
    assert hollow[4] == 2 * hollow[5] and hollow[6] == 2 * hollow[7]
    quads = [r.glyph for r in fig.renderers if type(r.glyph).__name__ == "Quad"
             and len(r.data_source.data["left"])]
    assert len(quads) == 2 and all(q.fill_alpha == 0 for q in quads)
    assert {q.line_color for q in quads} == {"#26a69a", "#ef5350"}
    # no wick crosses a body: each side wick ends at the body's bottom or starts at its top
    ov = s._price_of(x, (50000.0, 70000.0), 1000)
    up_wick, up_box = list(ov.values())[4:6]
    bottoms, tops = up_box.dframe()["price"].values, up_box.dframe()["p1"].values
    w = up_wick.dframe()
    k = len(bottoms)
    assert np.allclose(w["p1"].values[:k], bottoms) and np.allclose(w["price"].values[k:], tops)


def test_the_tag_is_the_close_at_the_views_right_edge(ds):
    """Zoomed into an earlier stretch the tag is the close of the bucket under the right
    edge, not the store's last close."""
    from liqgpu.web import data as D
    from liqgpu.web.app import tag_price

    sel = D.selection(ds, D.View())
    close = ds["close"].values[0]
    assert tag_price(sel, ms_of(ds, 0), ms_of(ds, 30) + 600e3) == close[30]
    assert tag_price(sel, ms_of(ds, 0), ms_of(ds, 30)) == close[29]  # 30 starts at the edge
    assert tag_price(sel, ms_of(ds, 0), ms_of(ds, 59) + 10 * 3600e3) == close[-1]
    assert close[30] != close[-1]
    assert tag_price(sel, ms_of(ds, 59) + 3 * 3600e3, ms_of(ds, 59) + 9 * 3600e3) is None


@needs_viewer
def test_switching_the_variable_is_no_store_change(stores, caplog):
    """Reading liquidated on the first switch to it keeps the store's version: the poll does
    not redraw as if the store changed, and the status line's load stays 1."""
    import logging

    s = session_of(stores["fixed"])
    assert "load 1)" in s.status.object
    with caplog.at_level(logging.INFO, logger="liqgpu.web"):
        s.w_variable.value = "liquidated"
        s._image_of(None, None, 800, 400)
        s._poll_once()
    assert s.store.version == 1 and "liquidated" in s.store.ds
    assert "load 1)" in s.status.object and "at 800x400 px" in s.status.object
    assert not [r for r in caplog.records if "changed" in r.getMessage()]
    assert [r.getMessage() for r in caplog.records if "read liquidated" in r.getMessage()]


@needs_viewer
def test_the_colour_key_marks_its_clipped_top(stores, ds):
    """Linear and log scales end at a quantile of the pixels: the key writes its top as
    '≥ top' where brighter pixels show the top's colour, and the top plainly where none do."""
    from liqgpu.web import data as D
    from liqgpu.web.app import _money

    v = D.View()
    (x0, x1), (y0, y1) = D.default_range(ds, v)
    hm = D.heatmap(ds, v, x_range=(x0, x1), y_range=(y0, y1), width=800, height=400)
    top = hm["norm"][1]
    assert hm["clipped"] and hm["peak"] > top
    assert hm["peak"] == pytest.approx(max(float(np.nanmax(p)) for p in hm["planes"]))
    s = session_of(stores["fixed"])
    s._status({**hm, "elapsed": 0.0})
    assert f"&ge;{_money(top)} USDT per bin" in s.key.object
    s._status({**hm, "elapsed": 0.0, "clipped": False})
    assert "0 <span" in s.key.object and f"</span> {_money(top)} USDT per bin" in s.key.object
    assert "&ge;" not in s.key.object


# -- in a browser ----------------------------------------------------------------------------------
def _browser_reason() -> str | None:
    try:
        import holoviews  # noqa: F401
        import panel  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as exc:
        return f"the viewer extra is not installed ({exc.name}); pip install '.[test,viewer]'"
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt-get install chromium chromium-driver)"
    return None


BROWSER_REASON = _browser_reason()
if BROWSER_REASON and os.environ.get("LIQGPU_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"LIQGPU_REQUIRE_BROWSER=1 but {BROWSER_REASON}")


def browser_test(fn):
    """A browser test: the ``browser`` marker, skipped (with the reason) without chromium."""
    return pytest.mark.browser(
        pytest.mark.skipif(BROWSER_REASON is not None, reason=str(BROWSER_REASON))(fn))

DEEP = """
function deepAll(root, pred, out) {
  for (const el of root.querySelectorAll('*')) {
    if (pred(el)) out.push(el);
    if (el.shadowRoot) deepAll(el.shadowRoot, pred, out);
  }
  return out;
}
function figures() {
  const views = [];
  function walk(v) { views.push(v); if (v.child_views) for (const c of v.child_views) walk(c); }
  for (const r of Object.values(Bokeh.index)) walk(r);
  return views.filter(v => v.frame && v.model.x_range);
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(stores):
    if BROWSER_REASON:
        pytest.skip(BROWSER_REASON)
    from liqgpu.web.app import Viewer
    from liqgpu.web.server import serve

    v = Viewer([stores["live"], stores["bad"], stores["gap"]], poll=0.5)
    port = free_port()
    th = serve(None, viewer=v, port=port, threaded=True)
    yield v, f"http://127.0.0.1:{port}/"
    th.stop()


@pytest.fixture(scope="module")
def page(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1600,1100"):
        o.add_argument(a)
    o.binary_location = shutil.which("chromium")
    d = webdriver.Chrome(options=o, service=Service(shutil.which("chromedriver")))
    v, url = server
    t0 = time.perf_counter()
    d.get(url)
    wait(lambda: v.sessions and v.sessions[-1].last is not None and figures(d), 30)
    wait(lambda: "buckets" in text(d, "liqgpu-status"), 10)
    d.load_seconds = time.perf_counter() - t0
    yield d, v.sessions[-1]
    d.quit()


def wait(fn, timeout=15.0, step=0.1):
    end = time.monotonic() + timeout
    while True:
        out = fn()
        if out:
            return out
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {fn}")
        time.sleep(step)


def figures(d):
    return d.execute_script(DEEP + """
      return figures().map(v => {
        const r = v.canvas_view.el.getBoundingClientRect();
        return {left: r.left + v.frame.bbox.left, top: r.top + v.frame.bbox.top,
                width: v.frame.bbox.width, height: v.frame.bbox.height,
                x0: v.model.x_range.start, x1: v.model.x_range.end,
                y0: v.model.y_range.start, y1: v.model.y_range.end}; });""")


def heat_figure(d):
    return [f for f in figures(d) if f["x0"] > 1e12][0]  # time axis: ms since the epoch


def text(d, cls):
    return d.execute_script(DEEP + """
      const el = deepAll(document, e => e.classList && e.classList.contains(arguments[0]), []);
      if (!el.length) return '';
      return el[0].textContent + (el[0].shadowRoot ? el[0].shadowRoot.textContent : '');""", cls)


def click_button(d, label, nth=0):
    """Click the ``nth`` button labelled ``label`` (the price axis' linear and log are the
    second of their names: the colour scale has the first)."""
    n = d.execute_script(DEEP + """
      const b = deepAll(document, e => e.classList && e.classList.contains('bk-btn')
                        && e.textContent.trim() === arguments[0], []);
      if (b.length > arguments[1]) b[arguments[1]].click();
      return b.length;""", label, nth)
    assert n > nth, f"no button {label!r} (number {nth + 1}) on the page"


def set_ranges(d, x0, x1, y0, y1):
    d.execute_script(DEEP + """
      const v = figures().filter(v => v.model.x_range.start > 1e12)[0];
      v.model.x_range.setv({start: arguments[0], end: arguments[1]});
      v.model.y_range.setv({start: arguments[2], end: arguments[3]});
      v.trigger_ranges_update_event();  // what bokeh's pan and zoom tools emit""", x0, x1, y0, y1)


def heat_pixels(d, fig):
    """The heatmap's plot area from a screenshot, as an (h, w, 3) array."""
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(d.get_screenshot_as_png())).convert("RGB")
    a = np.asarray(im)
    s = a.shape[1] / d.execute_script("return window.innerWidth")
    return a[int(fig["top"] * s) + 2:int((fig["top"] + fig["height"]) * s) - 2,
             int(fig["left"] * s) + 2:int((fig["left"] + fig["width"]) * s) - 2]


def shot(d, name):
    out = os.environ.get("LIQGPU_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(Path(out) / f"{name}.png"))


@browser_test
def test_page_shows_the_heatmap(page, ds):
    d, session = page
    shot(d, "1-load")
    hm = session.last
    assert hm["n_buckets"] == HOURS_FIRST and hm["how"] == "linear"
    # bands where the store has them: the served rows light up where the store's bins do
    plane = hm["planes"][0]
    assert np.nanmax(plane) > 0
    fig = heat_figure(d)

    def lit():
        p = heat_pixels(d, fig)
        return [p] if p.std() > 20 else None

    px = wait(lit, timeout=15, step=0.5)[0]  # not blank (once the browser has drawn it)
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50
    # a bright pixel row of the screenshot lies at a price where the store's last buckets
    # hold levels (the inferno map: bright = red + green high)
    lum = px[:, px.shape[1] // 2].astype(float).sum(axis=1)
    r = int(np.argmax(lum))
    price = fig["y0"] * (fig["y1"] / fig["y0"]) ** (1 - (r + 2) / fig["height"])
    e = ds["price_edges"].values
    j = int(np.searchsorted(e, price)) - 1
    t = ds["time"].values.astype("datetime64[ms]").astype(np.int64)
    col_t = fig["x0"] + (fig["x1"] - fig["x0"]) * 0.5
    i = int(np.searchsorted(t, col_t)) - 1
    near = ds["intensity"].isel(time=i, price=slice(j - 2, j + 3)).sum().item()
    prof = ds["intensity"].isel(time=i).sum(["series", "leverage", "side"]).values
    assert near > np.quantile(prof[prof > 0], 0.5)
    # the side panels: the map and the top levels
    assert len(figures(d)) == 2
    assert re.search(r"\d+,\d{3},\d{3}", text(d, "liqgpu-levels"))
    assert "buckets" in text(d, "liqgpu-status")
    # the damaged store: one sentence on the page, no traceback
    page_text = d.execute_script(DEEP + """
      return deepAll(document, e => e.shadowRoot, []).map(e => e.shadowRoot.textContent)
        .join(' ') + document.body.innerText;""")
    alert = text(d, "liqgpu-alert")
    assert "bad.zarr" in alert and "array intensity is damaged" in alert
    assert "Traceback" not in page_text and "Traceback" not in alert


@browser_test
def test_zoom_rerenders_finer(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    d, session = page
    before = dict(session.last)
    fig = heat_figure(d)
    origin = ScrollOrigin.from_viewport(int(fig["left"] + fig["width"] * 0.6),
                                        int(fig["top"] + fig["height"] * 0.5))
    for _ in range(4):
        ActionChains(d).scroll_from_origin(origin, 0, -200).perform()
        time.sleep(0.15)
    wait(lambda: session.last["n_bins"] < before["n_bins"] * 0.7)
    time.sleep(0.8)  # the last wheel event's render
    after = session.last
    assert after["n_buckets"] < before["n_buckets"]
    assert after["rows_per_bin"] > before["rows_per_bin"] * 1.4
    # still the screen's pixels (the columns of buckets cut by the view's edges reach past it)
    assert (after["width"], after["height"]) == (before["width"], before["height"])
    assert after["planes"][0].shape[0] == before["height"]
    assert after["planes"][0].shape[1] >= before["width"]
    wait(lambda: f"x {after['n_bins']} bins" in text(d, "liqgpu-status"))
    shot(d, "2-zoom")


@browser_test
def test_hover_reads_the_cell(page, ds):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    from liqgpu.render.style import fmt_price

    d, session = page
    t = ds["time"].values.astype("datetime64[ms]").astype(np.int64).astype(float)
    e = ds["price_edges"].values
    i = 25
    prof = ds["intensity"].isel(time=i).sum(["series", "leverage", "side"]).values
    j = int(np.argmax(prof))
    x0, x1, y0, y1 = t[i - 5], t[i + 5], float(e[j - 15]), float(e[j + 15])
    set_ranges(d, x0, x1, y0, y1)
    wait(lambda: abs(session.last["y_range"][0] - y0) < 1e-6 * y0
         and abs(session.last["x_range"][1] - x1) < 1, timeout=5)
    assert 30 <= session.last["n_bins"] <= 32
    fig = wait(lambda: (f := heat_figure(d)) and abs(f["y0"] - y0) < 1e-6 and f)
    tx = t[i] + 1800e3
    py = np.sqrt(e[j] * e[j + 1])
    x = fig["left"] + (tx - fig["x0"]) / (fig["x1"] - fig["x0"]) * fig["width"]
    y = fig["top"] + (1 - np.log(py / fig["y0"]) / np.log(fig["y1"] / fig["y0"])) * fig["height"]
    for dx in (-3, 0):  # a move onto the cell from beside it
        a = ActionBuilder(d)
        a.pointer_action.move_to_location(int(round(x)) + dx, int(round(y)))
        a.perform()
        time.sleep(0.2)
    wait(lambda: session.last_readout is not None and session.last_readout["bucket"] == i)
    ref = cell(ds, i, j)
    want = [f"{fmt_price(e[j])} – {fmt_price(e[j + 1])}", f"longs {ref['long']:,.0f}",
            f"shorts {ref['short']:,.0f}", str(ds["time"].values[i])[:16].replace("T", " ")]
    got = wait(lambda: (s := text(d, "liqgpu-readout")) and all(w in s for w in want) and s)
    assert re.search(r"dominant: \S+ \d+%", got)  # a tier (25x) or a band (2-10)
    # the map and the levels follow the cursor's time: the last snapshot taken at or before
    # it, at the end of bucket i - 1 (bucket i's own is taken at its end: no look-ahead)
    end = str(ds["time"].values[i])[:16].replace("T", " ")
    wait(lambda: end in text(d, "liqgpu-levels"), timeout=5)
    shot(d, "3-hover")


@browser_test
def test_side_toggle_changes_the_picture(page, ds):
    d, session = page
    set_ranges(d, *session.last["x_range"], 45000.0, 85000.0)
    wait(lambda: abs(session.last["y_range"][0] - 45000.0) < 1)
    time.sleep(0.5)
    both = session.last
    fig = heat_figure(d)
    px_both = heat_pixels(d, fig)
    click_button(d, "longs")
    wait(lambda: session.last["sel"].sides == ["long"])
    longs = session.last
    # served: longs only hold less; drawn: the picture changes (once the browser has it)
    assert np.nansum(longs["planes"][0]) < np.nansum(both["planes"][0])
    wait(lambda: np.abs(heat_pixels(d, fig).astype(int) - px_both.astype(int)).mean() > 2,
         timeout=15, step=0.5)
    shot(d, "4-longs")
    click_button(d, "two hues")
    wait(lambda: len(session.last["planes"]) == 2)
    time.sleep(0.8)
    shot(d, "5-two-hues")
    click_button(d, "both")
    wait(lambda: session.last["sel"].sides == ["long", "short"]
         and len(session.last["planes"]) == 1)


@browser_test
def test_update_shows_up_without_reload(page, stores, market):
    from liqgpu.updating import update

    d, session = page
    d.execute_script("window.__liqgpu_same_page = 42;")
    set_ranges(d, *session.last["x_range"], *session.last["y_range"])  # a zoomed view stays
    assert f"{HOURS_FIRST} buckets to" in text(d, "liqgpu-status")
    t0 = time.perf_counter()
    update(stores["live"], market, allow_outside=True)
    wait(lambda: "72 buckets to" in text(d, "liqgpu-status"), timeout=15)
    took = time.perf_counter() - t0
    assert took < 10, took
    assert d.execute_script("return window.__liqgpu_same_page") == 42  # no reload
    assert session.store.ds.sizes["time"] == 72
    shot(d, "6-updated")


def heat_glyphs(d, kind):
    """The heatmap figure's glyphs of one Bokeh type (``Quad``, ``VStrip``) that have data."""
    return d.execute_script(DEEP + """
      const v = figures().filter(v => v.model.x_range.start > 1e12)[0];
      return v.model.renderers.filter(r => r.glyph && r.glyph.type === arguments[0])
        .map(r => ({n: Object.values(r.data_source.data)[0].length,
                    fill_alpha: r.glyph.fill_alpha.value, hatch: r.glyph.hatch_pattern
                      ? r.glyph.hatch_pattern.value : null,
                    line_color: r.glyph.line_color ? r.glyph.line_color.value : null}))
        .filter(g => g.n > 0);""", kind)


@browser_test
def test_a_zoomed_log_axis_has_enough_labelled_ticks(page):
    """A log price axis over less than two decades ticks linearly in steps of 1, 2 or 5: over
    50,000 .. 61,000 every 2,000 (Bokeh's default steps of 1 or 5 gave 50,000, 55,000, 60,000)."""
    d, session = page
    set_ranges(d, *session.last["x_range"], 50000.0, 61000.0)
    wait(lambda: abs(session.last["y_range"][0] - 50000.0) < 1)
    ticks = wait(lambda: d.execute_script(DEEP + """
      const v = figures().filter(v => v.model.x_range.start > 1e12)[0];
      if (Math.abs(v.model.y_range.start - 50000) > 1) return null;
      const ax = v.model.left[0];
      return [ax.ticker.type, ax.ticker.get_ticks(v.model.y_range.start, v.model.y_range.end,
                                                  v.model.y_range, NaN).major];"""))
    assert ticks == ["LogTicker", [50000, 52000, 54000, 56000, 58000, 60000]]
    shot(d, "7-log-ticks")


@browser_test
def test_a_rebuilt_figure_is_drawn_at_its_frame(page):
    """Another price axis builds a new figure: it is rasterized at (and the status line gives)
    the frame's size in the browser, not a guess."""
    d, session = page
    fig = heat_figure(d)
    size = (int(round(fig["width"])), int(round(fig["height"])))
    drawn, image_of = [], session._image_of

    def recorded(*a):  # every raster the page computes, at which size
        out = image_of(*a)
        drawn.append((session.last["width"], session.last["height"], session.last["log_axis"]))
        return out

    session._image_of = recorded
    try:
        click_button(d, "linear", nth=1)  # the price axis'
        wait(lambda: session.last["log_axis"] is False, timeout=20)
        time.sleep(1.5)  # the browser's own size report, if any
        fig = heat_figure(d)
        assert (int(round(fig["width"])), int(round(fig["height"]))) == size
        assert drawn and all((w, h) == size for w, h, _ in drawn), drawn
        wait(lambda: f"at {size[0]}x{size[1]} px" in text(d, "liqgpu-status"))
    finally:
        del session._image_of
    click_button(d, "log", nth=1)
    wait(lambda: session.last["log_axis"] is True, timeout=20)


@browser_test
def test_candles_over_liquidations_are_hollow_in_the_browser(page):
    """liquidated: from the close line (zoomed out) to candles (zoomed in) the bodies drawn
    are outlines in the candle's hue; back on intensity they are filled again."""
    d, session = page
    x0, x1 = session._default_x
    version = session.store.version
    click_button(d, "liquidated")
    wait(lambda: session.last["sel"].variable == "liquidated", timeout=20)
    set_ranges(d, x0 - 20 * (x1 - x0), x1, *session.last["y_range"])  # under 5 px a bucket
    wait(lambda: not heat_glyphs(d, "Quad") and session.last["x_range"][1] == x1)
    set_ranges(d, x0, x1, *session.last["y_range"])
    quads = wait(lambda: heat_glyphs(d, "Quad"), timeout=15)
    assert {q["fill_alpha"] for q in quads} == {0} and sum(q["n"] for q in quads) >= 50
    assert {q["line_color"] for q in quads} <= {"#26a69a", "#ef5350"}
    assert session.store.version == version  # reading liquidated: no new version
    shot(d, "8-hollow")
    click_button(d, "intensity")
    wait(lambda: (q := heat_glyphs(d, "Quad")) and {g["fill_alpha"] for g in q} == {1.0},
         timeout=15)


@browser_test
def test_no_oi_spans_are_hatched_in_the_browser(page, stores):
    """A store whose OI is missing over two stretches: two hatched strips, the key's entry and
    the note while the view ends in the second one."""
    d, session = page
    n = d.execute_script(DEEP + """
      const s = deepAll(document, e => e.tagName === 'SELECT', [])
        .filter(e => [...e.options].some(o => o.textContent.startsWith('gap.zarr')));
      if (!s.length) return 0;
      const o = [...s[0].options].find(o => o.textContent.startsWith('gap.zarr'));
      s[0].value = o.value;
      s[0].dispatchEvent(new Event('input', {bubbles: true}));
      s[0].dispatchEvent(new Event('change', {bubbles: true}));
      return 1;""")
    assert n, "no gap.zarr series to choose"
    wait(lambda: session.store.name == "gap.zarr" and session.last["no_oi"]["spans"],
         timeout=20)
    strips = wait(lambda: heat_glyphs(d, "VStrip"), timeout=15)
    assert [(g["n"], g["hatch"]) for g in strips] == [(2, "/")]
    wait(lambda: "no open-interest data since 2026-01-02T16:00:00Z" in
         text(d, "liqgpu-status"))
    assert "no OI data: nothing opened or closed" in text(d, "liqgpu-colour-key")
    time.sleep(1.0)
    shot(d, "9-no-oi")
