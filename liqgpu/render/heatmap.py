"""The liquidation heatmap: time across, price up, notional as colour.

datashader aggregates the cube onto the pixel grid of the plot area (see :mod:`.raster`) and
shades it; matplotlib draws the axes, the colour bar, the title and the overlays (close line or
candles, realized and estimated liquidations) around and over it. The shaded pixels are handed
to the Agg renderer as they are, one pixel per pixel, so a 16384 x 8192 render costs no
resampling in matplotlib.
"""

from __future__ import annotations

import logging
import time as _time

import numpy as np

from ..errors import InputError
from . import style
from .raster import columns, marks, rasterize, rasterize_device, render_backend, to_ms
from .select import Selection, fmt_leverage, fmt_time, open_dataset, select

log = logging.getLogger(__name__)

MAX_WIDTH, MAX_HEIGHT = style.MAX_WIDTH, style.MAX_HEIGHT
HOWS = ("linear", "log", "eq_hist")
DEFAULT_CMAP = "inferno"
SIDE_CMAPS = {"long": "long_hue", "short": "short_hue"}
LOG_DECADES = 2.0  # the log scale shows this many decades below the top of the scale
TOP_QUANTILE = 0.998  # the top of the linear and log scales: brighter pixels saturate
CANDLE_MIN_PX = 5  # candles replace the close line when a bucket is at least this wide

WHAT = {
    "intensity": "estimated liquidation levels",
    "liquidated": "estimated liquidations",
    "realized": "realized liquidations",
}


def render(store, *, out, width: int = 1600, height: int = 900, variable: str = "intensity",
           series=None, side: str = "both", leverage=None, start=None, end=None,
           price_min: float | None = None, price_max: float | None = None, lookback=None,
           asset=None,
           cmap: str | None = None, how: str = "linear", two_hues: bool = False,
           candles: bool | None = None, overlay_realized: bool = True,
           overlay_liquidated: bool = False, price_line: bool = True, backend: str = "auto"):
    """Render a liquidation heatmap of a store (or dataset) to a PNG.

    Parameters
    ----------
    store : path or xarray.Dataset
        A liqgpu store (read lazily, block by block) or dataset.
    out : path
        The PNG; written to a temporary name and moved into place.
    width, height : int
        Image size in pixels, 800x450 up to 16384x8192.
    variable : {'intensity', 'liquidated', 'realized'}
        What the colour shows.
    series : str or list of str, optional
        Series names, symbols or exchanges (default all; one symbol at a time).
    side : {'both', 'long', 'short'}
    leverage : str or list of float, optional
        Tiers to include, e.g. ``'25,50'`` (default all).
    start, end : str, optional
        UTC time range (default the whole store).
    price_min, price_max : float, optional
        Price range (default: the price path and the levels near it).
    lookback : str, optional
        ``'24h'``: the last 24h of the range; the store must have ``max_age`` 24h so that its
        intensity is the levels of positions opened in that window.
    cmap : str, optional
        A matplotlib colour map (default ``inferno``, perceptual, dark at the low end).
    how : {'linear', 'log', 'eq_hist'}
        Colour scaling. ``linear`` (0 up to the 99.8th percentile of the pixels) makes the
        strong bands stand out; ``log`` shows two decades and lights up the weak levels too;
        ``eq_hist`` spreads the colours evenly over the pixel values.
    two_hues : bool
        Longs and shorts in two hues (with ``side='both'``).
    candles : bool, optional
        Candles instead of the close line (default: when a bucket is at least 5 px wide).
    overlay_realized : bool
        Mark realized liquidations when the store has them.
    overlay_liquidated : bool
        Mark the estimated liquidations (``liquidated``).
    price_line : bool
        Draw the close price (or candles).
    backend : {'auto', 'numpy', 'cupy'}
        Where the cube is aggregated onto the pixels: ``cupy`` reduces the store's blocks on
        the GPU and has datashader aggregate the CuPy arrays (``auto``: CuPy when a GPU is
        usable, else numpy). Shading and drawing stay on the host.

    Returns
    -------
    pathlib.Path
        ``out``.

    Examples
    --------
    >>> render("demo.zarr", out="demo.png", width=3840, height=2160)  # doctest: +SKIP
    >>> render("demo.zarr", out="longs.png", side="long", leverage="50,100")  # doctest: +SKIP
    """
    started = _time.perf_counter()
    out = style.check_out(out)
    width, height = style.check_size(width, height)
    if how not in HOWS:
        raise InputError(f"--how: {how!r} is not one of {', '.join(HOWS)}")
    if two_hues and side not in (None, "both"):
        raise InputError(f"--two-hues: draws longs and shorts in two hues, so it needs --side "
                         f"both, not --side {side}")
    if overlay_liquidated and variable == "liquidated":
        raise InputError("--overlay-liquidated: marks the estimated liquidations over another "
                         "variable; with --variable liquidated they are the heatmap itself")
    bname, xp = render_backend(backend)
    cmap_obj = _cmap(cmap or DEFAULT_CMAP)
    ds = open_dataset(store)
    sel = select(ds, variable=variable, series=series, side=side, leverage=leverage, start=start,
                 end=end, price_min=price_min, price_max=price_max, lookback=lookback,
                 asset=asset, name=str(store) if not hasattr(store, "variables") else "the dataset")
    px = sel.prices()
    lo, hi = price_view(sel, px, price_min, price_max)
    if variable == "intensity" and price_min is None and price_max is None:
        lo, hi = _whole_bands(sel, lo, hi)
    _narrow(sel, lo, hi)
    split = two_hues and len(sel.sides) == 2

    fig, dpi = style.figure(width, height)
    right = 1.6 if split else 1.2
    merged = sel.n_time > width - (0.8 + right) * dpi
    head, top = style.layout_header(fig, title_lines(sel, how, merged))
    ax, (x0, y0, pw, ph) = style.pixel_axes(fig, width, height, dpi, left=0.8, right=right,
                                            bottom=0.5, top=top)
    t_read = _time.perf_counter()
    cols = columns(sel, pw, xp=xp)
    log.info("read %d buckets x %d bins into %d columns in %.2fs (%s)", sel.n_time, sel.n_price,
             cols.data.shape[0], _time.perf_counter() - t_read, bname)
    groups = ([("long", [0]), ("short", [1])] if split else [("all", list(range(len(sel.sides))))])
    t_agg = _time.perf_counter()
    if xp is np:
        imgs = [rasterize(cols, idx, sel, width=pw, height=ph, y_range=(lo, hi))
                for _, idx in groups]
    else:
        imgs = [rasterize_device(cols, idx, sel, width=pw, height=ph, y_range=(lo, hi), xp=xp)
                for _, idx in groups]
        del cols
    log.info("aggregated onto %dx%d pixels in %.2fs (%s)", pw, ph, _time.perf_counter() - t_agg,
             bname)
    norm = make_norm(imgs, how)
    if split:
        cmaps = [_side_cmap("long"), _side_cmap("short")]
    else:
        cmaps = [cmap_obj]
    rgba = composite([shade(im, norm, cm) for im, cm in zip(imgs, cmaps)], imgs)
    _raster_artist(ax, rgba, x0, y0)

    t_lo, t_hi = sel.time_range
    ax.set_xlim(_dnum(t_lo), _dnum(t_hi))
    style.price_axis(ax, lo, hi, log=sel.log_grid, n=int(ph / dpi * 1.8))
    style.time_axis(ax)
    quote = sel.quote()
    ax.set_ylabel(f"price ({quote})", color=style.DIM, fontsize=8.5)
    ax.grid(color="#ffffff", alpha=0.07, lw=0.5)
    ax.set_axisbelow(False)

    handles = []
    if variable != "realized":
        handles += draw_no_oi(ax, sel)
    if price_line:
        handles += draw_price(ax, sel, px, pw, candles)
    if overlay_realized and variable != "realized" and "realized" in ds.variables:
        handles += draw_marks(ax, sel, "realized", pw, ph)
    if overlay_liquidated and variable != "liquidated":
        handles += draw_marks(ax, sel, "liquidated", pw, ph)
    if handles:
        from matplotlib.legend_handler import HandlerTuple

        labels = ["candles (up / down)" if isinstance(h, _CandleKey) else h.get_label()
                  for h in handles]
        leg = ax.legend(handles=handles, labels=labels, loc="upper left",
                        handler_map={_CandleKey: HandlerTuple(ndivide=None, pad=0.0)}, fontsize=7.5, frameon=True,
                        facecolor=style.BG, edgecolor=style.SPINE, labelcolor=style.FG,
                        framealpha=0.75)
        leg.set_zorder(10)
    if not any(np.nanmax(im, initial=0) > 0 for im in imgs):
        ax.text(0.5, 0.5, f"no {WHAT[variable]} in this selection", transform=ax.transAxes,
                ha="center", va="center", color=style.DIM, fontsize=12)

    label = f"{'live levels' if variable == 'intensity' else WHAT[variable]}: notional per " \
            f"{sel.bin_label()}" + ("" if variable == "intensity" else f" per {ds.attrs.get('every', 'bucket')}")
    label += f" ({quote})"
    bars = [("longs", cmaps[0]), ("shorts", cmaps[1])] if split else [(None, cmaps[0])]
    colour_bars(fig, norm, bars, how, quote, label, x=x0 + pw, y0=y0, h=ph, dpi=dpi, width=width,
                height=height)
    style.header(fig, head)
    meta = {"liqgpu:plot": f"{x0},{y0},{pw},{ph}",
            "liqgpu:price": f"{lo!r},{hi!r},{'log' if sel.log_grid else 'linear'}",
            "liqgpu:time": f"{np.datetime_as_string(t_lo, unit='s')}Z,"
                           f"{np.datetime_as_string(t_hi, unit='s')}Z",
            "liqgpu:scale": f"{how},{norm.vmin!r},{norm.vmax!r}"}
    style.save_png(fig, out, dpi=dpi, meta=meta)
    log.info("wrote %s (%dx%d) in %.2fs", out, width, height, _time.perf_counter() - started)
    return out


# -- pieces ---------------------------------------------------------------------------------------
def draw_no_oi(ax, sel: Selection) -> list:
    """Hatch the buckets without open interest (a gap in the OI data): the estimate opens and
    closes no position there (only price crossings liquidate), so its bands stay as they were,
    which would otherwise read as a quiet market. Returns the legend handle, if any."""
    gap = sel.no_oi()
    if not gap.any():
        return []
    from matplotlib.patches import Patch

    t = sel.times.astype("datetime64[ns]")
    _, t_hi = sel.time_range
    ends = np.append(t[1:], np.datetime64(t_hi, "ns"))
    from .levels import runs

    for a, b in runs(gap):
        ax.axvspan(_dnum(t[a]), _dnum(ends[b - 1]), facecolor="#8a8f98", alpha=0.16,
                   hatch="////", edgecolor="#8a8f98", lw=0, zorder=3)
    return [Patch(facecolor="#8a8f98", alpha=0.35, hatch="////", edgecolor="#8a8f98",
                  label="no OI data: nothing opened or closed")]


def price_view(sel: Selection, px: dict, price_min=None, price_max=None) -> tuple[float, float]:
    """The price range to show: the user's, else the price path widened by a quarter of its
    own (log) span and at least 12 % each way, inside the grid."""
    e = sel.edges
    g_lo, g_hi = float(e[0]), float(e[-1])
    lo = price_min if price_min is not None else None
    hi = price_max if price_max is not None else None
    with np.errstate(invalid="ignore"):
        low = px["low"] if np.isfinite(px["low"]).any() else px["close"]
        high = px["high"] if np.isfinite(px["high"]).any() else px["close"]
    if np.isfinite(low).any() and np.isfinite(high).any():
        p_lo, p_hi = float(np.nanmin(low)), float(np.nanmax(high))
        if p_lo > 0 and p_hi >= p_lo:
            f = max(1.12, (p_hi / p_lo) ** 0.25)
            lo = lo if lo is not None else p_lo / f
            hi = hi if hi is not None else p_hi * f
    lo = g_lo if lo is None else max(g_lo, float(lo))
    hi = g_hi if hi is None else min(g_hi, float(hi))
    if hi <= lo:
        lo, hi = g_lo, g_hi
    return lo, hi


#: a default view with a band of the last snapshot (a bin of at least EDGE_CUT of the strongest
#: in view) within EDGE_NEAR of an edge is widened, by at most EDGE_REACH, to show the band
#: whole with a margin
EDGE_CUT, EDGE_NEAR, EDGE_REACH = 0.5, 1.01, 1.05


def _whole_bands(sel: Selection, lo: float, hi: float) -> tuple[float, float]:
    """The default view ``[lo, hi]``, an edge moved out (by 5 % at most) where a strong band of
    the last selected snapshot sits on it, half shown (reads one bucket's profile)."""
    da = sel.cube()
    prof = np.asarray(da.isel(time=-1).sum([d for d in da.dims if d not in ("time", "price")])
                      .values, dtype=np.float64)
    e = sel.edges
    n = prof.size
    a = max(0, int(np.searchsorted(e, lo, side="right")) - 1)
    b = min(n - 1, int(np.searchsorted(e, hi, side="left")) - 1)
    if n == 0 or b < a:
        return lo, hi
    top = float(np.nanmax(prof[a:b + 1], initial=0.0))
    if not top > 0:
        return lo, hi
    faint = 0.2 * EDGE_CUT * top  # where a band ends
    near_hi = np.flatnonzero(e[1:b + 2] >= hi / EDGE_NEAR)
    if near_hi.size and prof[near_hi[0]:b + 1].max() >= EDGE_CUT * top and (
            prof[b] >= faint or (b + 1 < n and prof[b + 1] >= faint)):  # the band goes on
        k = b
        while k + 1 < n and prof[k + 1] >= faint and e[k + 2] * EDGE_NEAR <= hi * EDGE_REACH:
            k += 1
        hi = min(max(hi, float(e[k + 1]) * EDGE_NEAR), hi * EDGE_REACH, float(e[-1]))
    near_lo = np.flatnonzero(e[a:b + 1] <= lo * EDGE_NEAR)
    if near_lo.size and prof[a:a + near_lo[-1] + 1].max() >= EDGE_CUT * top and (
            prof[a] >= faint or (a > 0 and prof[a - 1] >= faint)):
        j = a
        while j > 0 and prof[j - 1] >= faint and e[j - 1] / EDGE_NEAR >= lo / EDGE_REACH:
            j -= 1
        lo = max(min(lo, float(e[j]) / EDGE_NEAR), lo / EDGE_REACH, float(e[0]))
    return lo, hi


def _narrow(sel: Selection, lo: float, hi: float) -> None:
    """Keep only the bins that overlap [lo, hi] (nothing else is read)."""
    e = sel.edges
    a = max(0, int(np.searchsorted(e, lo, side="right")) - 1)
    b = min(len(e) - 1, int(np.searchsorted(e, hi, side="left")))
    sel.p0, sel.p1 = sel.p0 + a, sel.p0 + max(b, a + 1)


def _dnum(t) -> float:
    import matplotlib.dates as mdates

    return float(mdates.date2num(np.datetime64(t, "ms")))


def _cmap(name):
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise InputError(f"--cmap: {name!r} is not a matplotlib colour map (try inferno, "
                         "viridis, magma, plasma, turbo)") from None


def _side_cmap(side: str):
    """Two hues for two sides: longs blue-cyan, shorts orange-yellow, both from the same
    neutral dark (just above the empty plot area's), so the faintest values do not paint the
    two sides of the price in two colours: hue comes with notional."""
    from matplotlib.colors import LinearSegmentedColormap

    stops = {
        "long": ["#12131c", "#1b3a8c", "#1f7fd1", "#35c8e8", "#c8f6ff"],
        "short": ["#12131c", "#7a1f1a", "#d14a1f", "#f5a524", "#fff2b8"],
    }[side]
    return LinearSegmentedColormap.from_list(f"liqgpu_{side}", stops)


def _sample(imgs, n: int = 2_000_000) -> np.ndarray:
    """Positive pixel values (a strided sample of at most ``n``)."""
    vals = []
    for im in imgs:
        flat = im.ravel()
        step = max(1, flat.size // n)
        v = flat[::step]
        vals.append(v[np.isfinite(v) & (v > 0)])
    return np.concatenate(vals) if vals else np.zeros(0)


def make_norm(imgs, how: str):
    """A matplotlib norm from the pixel values: ``linear`` 0..top, ``log`` :data:`LOG_DECADES`
    decades below top (top: the :data:`TOP_QUANTILE` of the non-empty pixels), ``eq_hist`` the
    pixel quantiles."""
    from matplotlib.colors import FuncNorm, LogNorm, Normalize

    vmax = max((float(np.nanmax(im, initial=0)) for im in imgs), default=0.0)
    if not (vmax > 0):
        return Normalize(0.0, 1.0)
    pos = _sample(imgs)
    if how in ("linear", "log") and pos.size:
        vmax = float(np.quantile(pos, TOP_QUANTILE)) or vmax
    if how == "linear":
        return Normalize(0.0, vmax, clip=True)
    if how == "log":
        vmin = max(float(pos.min()) if pos.size else vmax / 10, vmax / 10**LOG_DECADES)
        return LogNorm(vmin=min(vmin, vmax / 1.0001), vmax=vmax, clip=True)
    q = np.quantile(pos, np.linspace(0, 1, 257)) if pos.size else np.array([0.0, vmax])
    q = np.maximum.accumulate(q)
    q = q + np.arange(q.size) * (vmax * 1e-12 + 1e-300)
    lv = np.linspace(0, 1, q.size)

    def fwd(x):
        return np.interp(x, q, lv)

    def inv(y):
        return np.interp(y, lv, q)

    n = FuncNorm((fwd, inv), vmin=float(q[0]), vmax=float(q[-1]), clip=True)
    n.quantiles = q
    return n


def shade(img: np.ndarray, norm, cmap) -> np.ndarray:
    """datashader shading of normalized values: (h, w, 4) uint8, transparent where empty."""
    import datashader.transfer_functions as tf
    import xarray as xr
    from matplotlib.colors import to_hex

    with np.errstate(invalid="ignore", divide="ignore"):
        empty = ~(np.isfinite(img) & (img > 0))
        v = np.ma.getdata(norm(np.where(empty, np.float32(1.0), img).astype(np.float32)))
    v = np.clip(np.nan_to_num(np.asarray(v, dtype=np.float32), nan=0.0), 0.0, 1.0)
    v[empty] = np.nan
    colours = [to_hex(c) for c in cmap(np.linspace(0, 1, 256))]
    h, w = v.shape
    da = xr.DataArray(v, dims=("y", "x"), coords={"y": np.arange(h), "x": np.arange(w)})
    im = tf.shade(da, cmap=colours, how="linear", span=(0.0, 1.0))
    return np.asarray(im.data).view(np.uint8).reshape(h, w, 4)


def composite(rgbas: list[np.ndarray], imgs: list[np.ndarray]) -> np.ndarray:
    """One image: the first, or per pixel the side with more notional."""
    if len(rgbas) == 1:
        return rgbas[0]
    a, b = (np.nan_to_num(im, nan=0.0) for im in imgs)
    return np.where((b > a)[..., None], rgbas[1], rgbas[0])


def _raster_artist(ax, rgba: np.ndarray, x0: int, y0: int) -> None:
    """Hand the pixels to the renderer unresampled (row 0 at the bottom of the plot area)."""
    from matplotlib.artist import Artist

    class _Pixels(Artist):
        def draw(self, renderer):
            if not self.get_visible():
                return
            gc = renderer.new_gc()
            gc.set_clip_rectangle(ax.bbox)
            renderer.draw_image(gc, x0, y0, self._rgba)
            gc.restore()

    art = _Pixels()
    art._rgba = np.ascontiguousarray(rgba)
    art.set_zorder(0.5)
    ax.add_artist(art)


def draw_price(ax, sel: Selection, px: dict, pw: int, candles: bool | None) -> list:
    """The close line, or candles when zoomed in; returns legend handles."""
    import matplotlib.patheffects as pe
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.lines import Line2D

    close = px["close"]
    if not np.isfinite(close).any():
        return []
    t = sel.times
    every_ms = sel.every / np.timedelta64(1, "ms")
    x = to_ms(t) / 86_400_000.0  # matplotlib date numbers are days since the epoch
    w = every_ms / 86_400_000.0
    o, h, l = px["open"], px["high"], px["low"]
    bucket_px = pw / max(sel.n_time, 1)
    ohlc = np.isfinite(o).any() and np.isfinite(h).any() and np.isfinite(l).any()
    use_candles = ohlc and (bucket_px >= CANDLE_MIN_PX if candles is None else bool(candles))
    if use_candles:
        ok = np.isfinite(o) & np.isfinite(close) & np.isfinite(h) & np.isfinite(l)
        up = close >= o
        cx = x + w / 2
        half = w * 0.35
        # liquidations sit inside the bar's range, under its body: there the bodies are hollow
        # outlines, so the cells they cover stay visible
        hollow = sel.variable != "intensity"
        for mask, colour in ((ok & up, style.UP), (ok & ~up, style.DOWN)):
            if not mask.any():
                continue
            segs = np.stack([np.c_[cx[mask], l[mask]], np.c_[cx[mask], h[mask]]], axis=1)
            if hollow:  # the wick above and below the body only
                b0, b1 = np.minimum(o[mask], close[mask]), np.maximum(o[mask], close[mask])
                segs = np.concatenate([
                    np.stack([np.c_[cx[mask], l[mask]], np.c_[cx[mask], b0]], axis=1),
                    np.stack([np.c_[cx[mask], b1], np.c_[cx[mask], h[mask]]], axis=1)])
            ax.add_collection(LineCollection(segs, colors=colour, linewidths=0.8, zorder=3))
            b0, b1 = np.minimum(o[mask], close[mask]), np.maximum(o[mask], close[mask])
            b1 = np.where(b1 - b0 < b0 * 1e-5, b0 * (1 + 1e-5), b1)
            xs0, xs1 = cx[mask] - half, cx[mask] + half
            polys = np.stack([np.c_[xs0, b0], np.c_[xs1, b0], np.c_[xs1, b1], np.c_[xs0, b1]],
                             axis=1)
            if hollow:
                ax.add_collection(PolyCollection(polys, facecolors="none", edgecolors=colour,
                                                 linewidths=1.0, zorder=3.1))
            else:
                ax.add_collection(PolyCollection(polys, facecolors=colour, edgecolors="#000000",
                                                 linewidths=0.3, zorder=3.1))
        return [_CandleKey(Line2D([], [], color=style.UP, lw=4),
                           Line2D([], [], color=style.DOWN, lw=4))]
    lw = 1.0
    sparse = sel.variable != "intensity"  # events sit on the path: keep the line out of the way
    ax.plot(x + w, close, color=style.PRICE, lw=0.7 if sparse else lw, alpha=0.5 if sparse else 0.95, zorder=3, solid_joinstyle="round",
            path_effects=[pe.Stroke(linewidth=lw + 1.4, foreground="#000000", alpha=0.55),
                          pe.Normal()])
    return [Line2D([], [], color=style.PRICE, lw=1.5, label="close")]


class _CandleKey(tuple):
    """Legend key of the candles: an up and a down swatch side by side."""

    def __new__(cls, *handles):
        return super().__new__(cls, handles)


def draw_marks(ax, sel: Selection, variable: str, pw: int, ph: int) -> list:
    """Liquidations as marks sized by notional (area proportional); returns legend handles."""
    from matplotlib.lines import Line2D

    if variable not in sel.ds.variables:
        return []
    sub = Selection(**{**sel.__dict__, "variable": variable})
    m = marks(sub, variable, n_cols=max(1, pw // 4), n_rows=max(1, ph // 5))
    if m.notional.size == 0:
        return []
    x = m.time_ms / 86_400_000.0
    size = 4 + 110 * m.notional / m.notional.max()
    handles = []
    if variable == "realized":
        for k, name in enumerate(sel.sides):
            hit = m.side == k
            if not hit.any():
                continue
            colour = style.LONG_LIQ if name == "long" else style.SHORT_LIQ
            ax.scatter(x[hit], m.price[hit], s=size[hit], c=colour, alpha=0.8, linewidths=0.4,
                       edgecolors="#000000", zorder=4)
            handles.append(Line2D([], [], ls="", marker="o", color=colour,
                                  label=f"realized {name} liquidations"))
    else:
        ax.scatter(x, m.price, s=size, facecolors="none", edgecolors=style.EST_LIQ, alpha=0.75,
                   linewidths=0.6, zorder=4)
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", color=style.EST_LIQ,
                              label="estimated liquidations"))
    return handles


def colour_bars(fig, norm, bars, how, quote, label, *, x, y0, h, dpi, width, height) -> None:
    """One colour bar per hue, right of the plot, ticks in quote currency."""
    import matplotlib.cm as cm
    from matplotlib.ticker import FuncFormatter

    gap, bw = int(0.18 * dpi), int(0.13 * dpi)
    for i, (name, cmap) in enumerate(bars):
        cx = x + gap + i * (bw + int(0.3 * dpi))
        cax = fig.add_axes([cx / width, y0 / height, bw / width, h / height])
        sm = cm.ScalarMappable(norm=norm, cmap=cmap)
        cb = fig.colorbar(sm, cax=cax, extend="neither" if hasattr(norm, "quantiles")
                          else "max")
        cb.outline.set_edgecolor(style.SPINE)
        cax.tick_params(colors=style.FG, labelsize=7.5)
        if hasattr(norm, "quantiles"):
            q = norm.quantiles
            ticks = [float(q[int(f * (q.size - 1))]) for f in (0, 0.25, 0.5, 0.75, 0.9, 1.0)]
            cb.set_ticks(ticks)
            cb.set_ticklabels([style.fmt_money(t) for t in ticks])
        else:
            if how == "log":
                from matplotlib.ticker import LogLocator, NullLocator

                cax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                cax.yaxis.set_minor_locator(NullLocator())
            cax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: style.fmt_money(v)))
            cax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        if i < len(bars) - 1:  # one scale for all hues: labels on the last bar only
            cax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: ""))
        if name:
            cax.set_title(name, color=style.FG, fontsize=7)
        if i == len(bars) - 1:
            cb.set_label(label, color=style.DIM, fontsize=8)


def title_lines(sel: Selection, how: str, merged: bool) -> list[str]:
    a = sel.ds.attrs
    syms = sel.title_names()
    exch = ", ".join(sel.exchanges())
    what = WHAT[sel.variable]
    if sel.lookback is not None:
        from .._time import format_duration

        what += f" of positions opened in the last {format_duration(sel.lookback)}"
    first = f"{syms}  ·  {exch}  —  {what}" if exch else f"{syms}  —  {what}"
    t_lo, t_hi = sel.time_range
    all_tiers = len(sel.leverages) == sel.ds.sizes["leverage"]
    tiers = ("all tiers" if all_tiers else
             "leverage " + "/".join(fmt_leverage(v) for v in sel.leverages))
    sides = "longs + shorts" if len(sel.sides) == 2 else f"{sel.sides[0]}s only"
    second = (f"{fmt_time(t_lo)} → {fmt_time(t_hi)} UTC  ·  {sides}  ·  "
              + (f"{tiers}  ·  " if sel.variable != "realized" else "")
              + f"scale {how}" + ("  ·  buckets averaged per pixel column" if merged else ""))
    return [first, second, style.model_line(a)]
