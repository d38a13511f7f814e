"""The liquidation map: the price profile of the levels at one time.

Price across; bars of live level notional stacked by leverage tier; the close as a vertical
line; the cumulative long levels from the close downwards (what a fall to that price would
liquidate) and the cumulative short levels from the close upwards on a second axis.
"""

from __future__ import annotations

import logging
import time as _time

import numpy as np

from . import style
from .levels import profile_at
from .select import fmt_leverage, fmt_time, open_dataset

log = logging.getLogger(__name__)

HEADROOM = 1.3  # room above the tallest bar and curve for the legend


def render_map(store, *, out, at=None, width: int = 1600, height: int = 900, series=None,
               leverage=None, price_min: float | None = None, price_max: float | None = None,
               lookback=None, cumulative: bool = True, asset=None):
    """Render the liquidation map (price profile) of a store at one time to a PNG.

    Parameters
    ----------
    store : path or xarray.Dataset
    out : path
        The PNG (written to a temporary name, then moved into place).
    at : str, optional
        UTC time: the latest snapshot at or before it (no look-ahead; default: the last
        bucket's).
    width, height : int
        800x450 up to 16384x8192.
    series, leverage, lookback
        As for :func:`liqgpu.render.render`.
    price_min, price_max : float, optional
        Price range (default: where 96 % of each side's levels lie, around the close).
    cumulative : bool
        Draw the cumulative long and short curves.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> render_map("demo.zarr", out="map.png", at="2026-01-20T12:00Z")  # doctest: +SKIP
    """
    import matplotlib.patheffects as pe
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    started = _time.perf_counter()
    out = style.check_out(out)
    width, height = style.check_size(width, height)
    ds = open_dataset(store)
    sel, i, cube, close = profile_at(ds, at, series=series, leverage=leverage, lookback=lookback,
                                     price_min=price_min, price_max=price_max, asset=asset)
    edges, centres = sel.edges, sel.centres
    longs, shorts = cube[:, :, 0].sum(axis=1), cube[:, :, 1].sum(axis=1)
    lo, hi = map_view(edges, longs, shorts, close, price_min, price_max)
    a = max(0, int(np.searchsorted(edges, lo, side="right")) - 1)
    b = min(len(centres), int(np.searchsorted(edges, hi, side="left")))
    b = max(b, a + 1)

    fig, dpi = style.figure(width, height)
    windowed = price_min is not None or price_max is not None
    head, top = style.layout_header(fig, _title(ds, sel, i, longs, shorts, windowed))
    ax, (x0, y0, pw, ph) = style.pixel_axes(fig, width, height, dpi, left=0.8, right=0.95,
                                            bottom=0.5, top=top)
    # bars: bins grouped so that a bar is at least ~5 px wide
    n = b - a
    k = max(1, int(np.ceil(n / max(1, min(pw // 5, 800)))))
    starts = np.arange(a, b, k)
    ends = np.minimum(starts + k, b)
    tiers = np.add.reduceat(cube[a:b].sum(axis=2), starts - a, axis=0)  # (n_bars, K)
    left, right = edges[starts], edges[ends]
    bottom = np.zeros(len(starts))
    handles = []
    every_lev = [float(x) if not isinstance(x, str) else x for x in ds["leverage"].values]
    for j, lev in enumerate(sel.leverages):
        # a band's colour is its place among the store's bands, whatever else is selected
        k = every_lev.index(lev) if lev in every_lev else j
        colour = style.TIER_COLOURS[k % len(style.TIER_COLOURS)]
        ax.bar(left, tiers[:, j], width=(right - left) * 0.92, bottom=bottom, align="edge",
               color=colour, linewidth=0, zorder=2)
        bottom = bottom + tiers[:, j]
        handles.append(Patch(color=colour, label=fmt_leverage(lev)))
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, max(float(bottom.max()) * HEADROOM, 1.0))
    quote = sel.quote()
    style.price_axis(ax, lo, hi, log=False, n=int(pw / dpi * 1.1), axis="x")
    ax.set_xlabel(f"price ({quote})", color=style.DIM, fontsize=8.5)
    bps = sel.bin_label()
    ax.set_ylabel(f"live levels per {k} x {bps} ({quote})" if k > 1 else
                  f"live levels per {bps} ({quote})", color=style.DIM, fontsize=8.5)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: style.fmt_money(v)))
    ax.grid(axis="y", color="#ffffff", alpha=0.07, lw=0.5)

    if cumulative and np.isfinite(close):
        ax2 = ax.twinx()
        ax2.set_zorder(ax.get_zorder() + 1)
        ax2.patch.set_visible(False)
        c = centres
        below = (c < close)
        cl = np.where(below, longs, 0.0)[::-1].cumsum()[::-1]  # levels between p and the close
        cs = np.where(~below, shorts, 0.0).cumsum()
        m = slice(a, b)
        ax2.step(c[m][below[m]], cl[m][below[m]], where="mid", color=style.LONG_LIQ, lw=1.4,
                 zorder=5)
        ax2.step(c[m][~below[m]], cs[m][~below[m]], where="mid", color=style.SHORT_LIQ, lw=1.4,
                 zorder=5)
        top = max(float(cl[m].max(initial=0)), float(cs[m].max(initial=0)), 1.0)
        ax2.set_ylim(0, top * HEADROOM)
        ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: style.fmt_money(v)))
        ax2.tick_params(colors=style.FG, labelsize=8.5)
        for s in ax2.spines.values():
            s.set_color(style.SPINE)
        ax2.set_ylabel(f"cumulative levels from the close ({quote})", color=style.DIM,
                       fontsize=8.5)
        handles += [Line2D([], [], color=style.LONG_LIQ, lw=1.4,
                           label="longs liquidated if price falls to"),
                    Line2D([], [], color=style.SHORT_LIQ, lw=1.4,
                           label="shorts liquidated if price rises to")]
    if np.isfinite(close):
        ax.axvline(close, color=style.PRICE, lw=1.0, ls="--", zorder=6)
        ax.text(close, 0.012, f" close {style.fmt_price(close)} ", transform=ax.get_xaxis_transform(),
                color=style.PRICE, fontsize=8, va="bottom", ha="left", zorder=7,
                path_effects=[pe.withStroke(linewidth=2.5, foreground=style.BG)])
    leg = ax.legend(handles=handles, loc="upper center", fontsize=7.5, facecolor=style.BG,
                    edgecolor=style.SPINE, labelcolor=style.FG, framealpha=0.8,
                    ncol=max(1, min(len(handles), int(fig.get_figwidth() / 1.9))))
    leg.set_zorder(10)

    style.header(fig, head)
    meta = {"liqgpu:plot": f"{x0},{y0},{pw},{ph}", "liqgpu:price": f"{lo!r},{hi!r},linear",
            "liqgpu:close": f"{close!r}"}
    style.save_png(fig, out, dpi=dpi, meta=meta)
    log.info("wrote %s (%dx%d) in %.2fs", out, width, height, _time.perf_counter() - started)
    return out


def _title(ds, sel, i, longs, shorts, windowed: bool = False) -> list[str]:
    from ..store.layout import snapshot_times

    t_end = snapshot_times(ds["time"].values[i:i + 1], sel.every, ds.attrs)[0]
    syms = sel.title_names()
    exch = ", ".join(sel.exchanges())
    what = "liquidation map"
    if sel.lookback is not None:
        from .._time import format_duration

        what += f" of positions opened in the last {format_duration(sel.lookback)}"
    quote = sel.quote()
    tiers = ("all tiers" if len(sel.leverages) == ds.sizes["leverage"] else
             "leverage " + "/".join(fmt_leverage(v) for v in sel.leverages))
    from .levels import _no_oi_by_series, _no_oi_since

    since = _no_oi_since(ds, sel, i)
    gap = (f"  ·  no OI data since {fmt_time(np.datetime64(since.rstrip('Z')))} UTC: nothing "
           "opened or closed since") if since else ""
    if not since:
        stale = _no_oi_by_series(ds, sel, i)
        gap = "".join(f"  ·  {name}: no OI data since "
                      f"{fmt_time(np.datetime64(t.rstrip('Z')))} UTC"
                      for name, t in list(stale.items())[:2])
    return [f"{syms}  ·  {exch}  —  {what}" if exch else f"{syms}  —  {what}",
            f"at {fmt_time(t_end)} UTC{gap}  ·  live levels"
            + (" between the price bounds" if windowed else "") + ": longs "
            f"{style.fmt_money(float(longs.sum()), quote)}  ·  shorts "
            f"{style.fmt_money(float(shorts.sum()), quote)}  ·  {tiers}",
            style.model_line(ds.attrs)]


def map_view(edges, longs, shorts, close, price_min=None, price_max=None) -> tuple[float, float]:
    """Default price range: from the 2nd percentile of the long levels to the 98th of the short
    levels, widened by 3 % and always holding the close."""
    g_lo, g_hi = float(edges[0]), float(edges[-1])
    c = 0.5 * (edges[:-1] + edges[1:])
    lo = hi = None
    if longs.sum() > 0:
        cl = np.cumsum(longs) / longs.sum()
        lo = float(c[int(np.searchsorted(cl, 0.02))])
    if shorts.sum() > 0:
        cs = np.cumsum(shorts) / shorts.sum()
        hi = float(c[min(len(c) - 1, int(np.searchsorted(cs, 0.98)))])
    if np.isfinite(close) and close > 0:
        lo = min(lo if lo is not None else close * 0.85, close * 0.97)
        hi = max(hi if hi is not None else close * 1.15, close * 1.03)
    lo = g_lo if lo is None else lo / 1.03
    hi = g_hi if hi is None else hi * 1.03
    if price_min is not None:
        lo = float(price_min)
    if price_max is not None:
        hi = float(price_max)
    lo, hi = max(lo, g_lo), min(hi, g_hi)
    if hi <= lo:
        lo, hi = g_lo, g_hi
    return lo, hi
