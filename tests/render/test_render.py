"""The heatmap and the map: pixels where the data says, no stripes, bad input refused."""

from __future__ import annotations

import math
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_levels import hand_dataset, known_dataset, write_store

from liqgpu.cli import main
from liqgpu.errors import InputError
from liqgpu.render import render, render_map
from liqgpu.render.raster import columns, marks, rasterize
from liqgpu.render.select import select

W, H = 800, 450


def load(path):
    from PIL import Image

    im = Image.open(path)
    return np.asarray(im.convert("RGB")).astype(np.float64), dict(im.text), im.size


def plot_box(meta):
    return [int(v) for v in meta["liqgpu:plot"].split(",")]


def row_of(meta, price, height=H) -> int:
    """Image row (from the top) of a price."""
    x0, y0, w, h = plot_box(meta)
    lo, hi, scale = meta["liqgpu:price"].split(",")
    f = (math.log(price / float(lo)) / math.log(float(hi) / float(lo)) if scale == "log"
         else (price - float(lo)) / (float(hi) - float(lo)))
    return int(round(height - (y0 + f * h)))


def col_of(meta, frac) -> int:
    x0, y0, w, h = plot_box(meta)
    return int(round(x0 + frac * w))


def brightness(img, row, meta):
    x0, y0, w, h = plot_box(meta)
    return img[row, x0 + w // 4: x0 + 3 * w // 4].mean()


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    import liqgpu

    path = tmp_path_factory.mktemp("store") / "tiny.zarr"
    liqgpu.estimate(liqgpu.synthetic_series(days=2, seed=3), every="1h", backend="numpy",
                    out=path)
    return path


def banded():
    """Longs at bins 12..16 (10x, 5 M), shorts at 44..47 (50x, 2 M), close at bin 30."""
    ds = hand_dataset(n_time=48)
    ds["intensity"].values[0, :, 12:17, 0, 0] = 5e6
    ds["intensity"].values[0, :, 44:48, 1, 1] = 2e6
    return ds


# -- the image --------------------------------------------------------------------------------
def test_heatmap_bands_and_price_line(tmp_path):
    ds = banded()
    e, c = ds["price_edges"].values, ds["price"].values
    out = render(ds, out=tmp_path / "h.png", width=W, height=H, price_min=e[5],
                 price_max=e[55], candles=False)
    img, meta, size = load(out)
    assert size == (W, H)
    assert img.std() > 10  # not blank
    band, short, empty = (brightness(img, row_of(meta, c[i]), meta) for i in (14, 45, 24))
    assert band > empty + 60 and short > empty + 30
    assert band > short  # 5 M is brighter than 2 M on the linear default
    assert empty < 20  # empty bins stay dark
    # the close line (constant at bin 30) is near-white across the plot
    r = row_of(meta, c[30])
    x0, y0, w, h = plot_box(meta)
    strip = img[r - 1: r + 2, x0 + 5: x0 + w - 5].min(axis=2).max(axis=0)
    assert (strip > 180).mean() > 0.9
    assert {"liqgpu:plot", "liqgpu:price", "liqgpu:scale", "liqgpu:time"} <= set(meta)


def test_side_and_leverage_selection(tmp_path):
    ds = banded()
    e, c = ds["price_edges"].values, ds["price"].values
    out = render(ds, out=tmp_path / "s.png", width=W, height=H, side="short", price_min=e[5],
                 price_max=e[55], price_line=False)
    img, meta, _ = load(out)
    assert brightness(img, row_of(meta, c[14]), meta) < 20  # the long band is gone
    assert brightness(img, row_of(meta, c[45]), meta) > 100  # the short band is the maximum
    out = render(ds, out=tmp_path / "l.png", width=W, height=H, leverage="50",
                 price_min=e[5], price_max=e[55], price_line=False, how="log")
    img, meta, _ = load(out)
    assert brightness(img, row_of(meta, c[14]), meta) < 20  # 10x only in the long band


@pytest.mark.parametrize("n_price, rows", [(60, 301), (700, 301), (301, 301), (457, 120)])
def test_no_stripes(n_price, rows):
    """Uniform levels give a uniform image, whether bins are finer or coarser than pixels."""
    ds = hand_dataset(n_time=30, n_price=n_price)
    ds["intensity"].values[:] = 1e6
    sel = select(ds)
    cols = columns(sel, 500)
    e = sel.edges
    img = rasterize(cols, [0, 1], sel, width=500, height=rows, y_range=(e[0], e[-1]))
    assert img.shape == (rows, 500)
    inner = img[1:-1, 1:-1]
    assert np.isfinite(inner).all()
    np.testing.assert_allclose(inner, 4e6, rtol=1e-6)


def test_columns_blockwise_equals_direct():
    ds = hand_dataset(n_time=50, n_price=12)
    rng = np.random.default_rng(0)
    ds["intensity"].values[:] = rng.random(ds["intensity"].shape).astype(np.float32)
    sel = select(ds, leverage="50", side="long")
    got = columns(sel, 7, block_bytes=200)  # a few buckets per block
    assert got.merged
    a = ds["intensity"].values[0, :, :, 1, 0].astype(np.float64)
    centre = np.arange(50) + 0.5  # hours
    col = np.floor(centre / (50 / 7)).astype(int)
    want = np.stack([a[col == j].mean(axis=0) for j in range(7)])
    np.testing.assert_allclose(got.data[:, :, 0], want, rtol=1e-5)
    # fewer buckets than columns: each bucket its own column
    got = columns(sel, 80, block_bytes=200)
    assert not got.merged
    np.testing.assert_allclose(got.data[:, :, 0], a, rtol=1e-6)


def test_realized_marks(tmp_path):
    ds = hand_dataset(n_time=24, realized=True)
    c = ds["price"].values
    ds["realized"].values[0, 10, 20, 0] = 5e6  # longs liquidated at bin 20 in bucket 10
    ds["realized"].values[0, 3, 40, 1] = 1e6
    sel = select(ds, variable="realized")
    m = marks(sel, "realized", n_cols=200, n_rows=100)
    assert sorted(m.notional.tolist()) == [1e6, 5e6]
    k = int(np.argmax(m.notional))
    assert m.price[k] == pytest.approx(c[20]) and m.side[k] == 0
    out = render(ds, out=tmp_path / "r.png", width=W, height=H, price_line=False,
                 price_min=c[5], price_max=c[55])
    img, meta, _ = load(out)
    px = img[row_of(meta, c[20]), col_of(meta, 10.5 / 24)]
    assert px[0] > 200 and px[1] < 150  # the red mark of long liquidations


def test_lookback(tmp_path):
    ds = banded()
    ds.attrs["max_age"] = "6h"
    path = write_store(ds, tmp_path / "lb.zarr")
    out = render(path, out=tmp_path / "lb.png", width=W, height=H, lookback="6h")
    _, meta, _ = load(out)
    assert meta["liqgpu:time"] == "2026-01-02T18:00:00Z,2026-01-03T00:00:00Z"
    with pytest.raises(InputError, match="--max-age 24h"):
        render(path, out=tmp_path / "x.png", width=W, height=H, lookback="24h")
    assert not (tmp_path / "x.png").exists()


def test_map_bars_and_close(tmp_path):
    ds = known_dataset()
    e, c = ds["price_edges"].values, ds["price"].values
    out = render_map(ds, out=tmp_path / "m.png", width=W, height=H, price_min=e[5],
                     price_max=e[50])
    img, meta, size = load(out)
    assert size == (W, H)
    x0, y0, w, h = plot_box(meta)
    lo, hi, _ = meta["liqgpu:price"].split(",")

    def x(p):
        return int(round(x0 + (p - float(lo)) / (float(hi) - float(lo)) * w))

    bottom = H - y0 - 3
    from matplotlib.colors import to_rgb

    tier10 = np.array(to_rgb("#5b8def")) * 255
    assert np.abs(img[bottom, x(c[12])] - tier10).max() < 30  # a 10x bar at bin 12
    assert img[bottom, x(c[25])].max() < 40  # no bar between the bands
    assert float(meta["liqgpu:close"]) == pytest.approx(c[30])


# -- the command line -----------------------------------------------------------------------
def test_cli_render_and_map(tiny_store, tmp_path):
    r = CliRunner().invoke(main, ["render", str(tiny_store), "-o", str(tmp_path / "a.png"),
                                  "--width", "800", "--height", "450", "--two-hues",
                                  "--overlay-liquidated", "--how", "eq_hist"])
    assert r.exit_code == 0, r.output
    img, meta, size = load(tmp_path / "a.png")
    assert size == (800, 450) and img.std() > 10
    r = CliRunner().invoke(main, ["render", str(tiny_store), "-o", str(tmp_path / "b.png"),
                                  "--width", "900", "--height", "500", "--side", "long",
                                  "--leverage", "25,50", "--how", "log", "--start",
                                  "2026-01-02T00:00Z"])
    assert r.exit_code == 0, r.output
    _, meta, size = load(tmp_path / "b.png")
    assert size == (900, 500)
    assert meta["liqgpu:time"].startswith("2026-01-02T00:00:00Z")
    r = CliRunner().invoke(main, ["map", str(tiny_store), "-o", str(tmp_path / "m.png"),
                                  "--at", "2026-01-02T06:00Z", "--width", "800", "--height",
                                  "450"])
    assert r.exit_code == 0, r.output
    assert load(tmp_path / "m.png")[2] == (800, 450)


@pytest.mark.parametrize("args, words", [
    (["--series", "kraken:DOGEUSD"], "is not in the store"),
    (["--leverage", "200"], "is neither a band"),
    (["--leverage", "1-2"], "is neither a band"),
    (["--start", "2026-01-02T00:00", "--end", "2026-01-02T00:00"], "end must come after"),
    (["--price-min", "1", "--price-max", "2"], "below the store's price grid"),
    (["--start", "2030-01-01"], "outside the store's time range"),
    (["--width", "20000"], "outside the supported sizes"),
    (["--height", "100"], "outside the supported sizes"),
    (["--lookback", "24h"], "--max-age 24h"),
    (["--variable", "realized"], "no 'realized' variable"),
    (["--cmap", "not-a-map"], "is not a matplotlib colour map"),
    (["--two-hues", "--side", "long"], "--two-hues: draws longs and shorts in two hues"),
    (["--variable", "liquidated", "--overlay-liquidated"], "they are the heatmap itself"),
])
def test_cli_bad_input(tiny_store, tmp_path, args, words):
    out = tmp_path / "bad.png"
    r = CliRunner().invoke(main, ["render", str(tiny_store), "-o", str(out)] + args)
    assert r.exit_code == 2, r.output
    assert words in r.output
    assert isinstance(r.exception, SystemExit)  # a handled error, not an escaped exception
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_the_system_refuses_is_one_sentence(tiny_store):
    """A PNG path in a folder the system will not create files in (/proc): the path and the
    system's reason, exit 2, no traceback."""
    r = CliRunner().invoke(main, ["render", str(tiny_store), "-o", "/proc/liqgpu-test.png"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert r.output.strip() == "Error: /proc/liqgpu-test.png: No such file or directory"


def test_cli_not_a_store(tmp_path):
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text('{"attributes": {}}')
    for cmd in (["render"], ["map"], ["levels"]):
        extra = ["-o", str(tmp_path / "o.png")] if cmd != ["levels"] else []
        r = CliRunner().invoke(main, cmd + [str(tmp_path / "junk.zarr")] + extra)
        assert r.exit_code == 2 and "not a liqgpu store" in r.output, r.output
    r = CliRunner().invoke(main, ["map", str(tmp_path / "missing.zarr"), "-o",
                                  str(tmp_path / "o.png")])
    assert r.exit_code == 2 and "no such store" in r.output
    assert not (tmp_path / "o.png").exists()


def test_out_folder_missing(tiny_store, tmp_path):
    r = CliRunner().invoke(main, ["render", str(tiny_store), "-o", str(tmp_path / "no" / "x.png")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_import_stays_light():
    code = ("import sys, liqgpu, liqgpu.cli, liqgpu.render; "
            "bad = [m for m in ('datashader', 'matplotlib') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("variable,hollow", [("intensity", False), ("liquidated", True)])
def test_candle_bodies_are_hollow_over_liquidations(variable, hollow):
    """Over the liquidated (and realized) cubes, whose cells sit inside the bars' ranges, the
    candles' bodies are outlines; over the live levels they are filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from liqgpu.render.heatmap import draw_price

    ds = known_dataset()
    ds["open"].values[0, ::2] *= 1.01  # down bars among the up (open = close) ones
    sel = select(ds, variable=variable)
    fig, ax = plt.subplots()
    try:
        draw_price(ax, sel, sel.prices(), 2000, candles=True)
        bodies = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bodies) == 2  # up, down
        for b in bodies:
            alpha = b.get_facecolor()[:, 3] if len(b.get_facecolor()) else np.zeros(1)
            assert (alpha == 0).all() if hollow else (alpha > 0).all()
    finally:
        plt.close(fig)


def test_liqgpu_render_stays_callable_whatever_was_imported_first(tiny_store, tmp_path):
    """`liqgpu.render(...)` draws after liqgpu.levels, liqgpu.profile or a module of the
    render package has been imported (the package, bound over the function by Python's
    import system, used to be 'not callable')."""
    for first in ("liqgpu.levels", "liqgpu.profile", "__import__('liqgpu.render.select')",
                  "liqgpu.render"):
        out = tmp_path / f"{len(first)}.png"
        code = (f"import liqgpu; {first}; liqgpu.render({str(tiny_store)!r}, out={str(out)!r}); "
                f"import liqgpu.render.select; liqgpu.render({str(tiny_store)!r}, "
                f"out={str(out)!r}.replace('.png', 'b.png'))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 0, (first, r.stderr[-800:])
        assert out.exists() and out.with_name(out.stem + "b.png").exists()


def test_default_view_shows_a_band_on_its_edge_whole(tmp_path):
    """The default price view (the path widened by 12 %) would end inside the strongest band
    (bins 40-42 around 152); it is moved out to show the band whole, by 5 % at most, and not
    when the user gives the price range."""
    ds = known_dataset()
    ds["intensity"].values[0, :, 40:43, 0, 1] = [5e6, 9e6, 5e6]  # the strongest, on the edge
    e = ds["price_edges"].values
    close = float(ds["close"].values[0, -1])
    path = write_store(ds, tmp_path / "k.zarr")
    render(path, out=tmp_path / "a.png", width=W, height=H)
    lo, hi, _ = load(tmp_path / "a.png")[1]["liqgpu:price"].split(",")
    assert float(hi) >= e[43] and float(hi) <= close * 1.12 * 1.05 + 1e-9
    assert float(lo) == pytest.approx(close / 1.12)  # nothing strong on the lower edge
    render(path, out=tmp_path / "b.png", width=W, height=H, price_max=close * 1.12)
    assert float(load(tmp_path / "b.png")[1]["liqgpu:price"].split(",")[1]) == \
        pytest.approx(close * 1.12)
