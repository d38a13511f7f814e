"""The liquidation heatmap: datashader aggregates the (time x price) cube into pixels, matplotlib
draws the axes, the close price and the colour bar around it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

MAX_WIDTH, MAX_HEIGHT = 16384, 8192


def _open(store):
    from ..store import open_store

    if isinstance(store, (str, Path)):
        return open_store(store)
    return store


def render(store, *, out, width: int = 1600, height: int = 900, cmap: str = "inferno",
           how: str = "eq_hist", dpi: int = 100):
    """Render intensity summed over tiers, sides and series as a PNG heatmap.

    Parameters
    ----------
    store : path or xarray.Dataset
    out : path of the PNG to write
    width, height : int
        Image size in pixels (800x450 up to 16384x8192).
    cmap : str
        Matplotlib colour map.
    how : {'eq_hist', 'log', 'linear'}
        Colour scaling.

    Examples
    --------
    >>> render("demo.zarr", out="demo.png", width=1600, height=900)  # doctest: +SKIP
    """
    if not (16 <= width <= MAX_WIDTH and 16 <= height <= MAX_HEIGHT):
        raise InputError(f"--width/--height: {width}x{height} is outside 16x16..{MAX_WIDTH}x{MAX_HEIGHT}")
    out = Path(out)
    if not out.parent.exists():
        raise InputError(f"{out}: the folder {out.parent} does not exist")
    ds = _open(store)
    import datashader as dsh
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr

    inten = ds["intensity"].sum(["series", "leverage", "side"], dtype=np.float64)
    inten = inten.transpose("price", "time").astype(np.float64)
    t = ds["time"].values
    tnum = t.astype("datetime64[ms]").astype(np.int64).astype(np.float64)
    da = xr.DataArray(inten.values, coords={"price": ds["price"].values, "time": tnum},
                      dims=("price", "time"), name="intensity")
    edges = ds["price_edges"].values
    fig_w, fig_h = width / dpi, height / dpi
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi, facecolor="#0b0b12")
    ax = fig.add_axes([0.07, 0.09, 0.82, 0.83])
    bbox = ax.get_window_extent()
    pw, ph = max(2, int(bbox.width)), max(2, int(bbox.height))
    pmin, pmax = float(edges[0]), float(edges[-1])
    close = ds["close"].sum("series", min_count=1).values if ds.sizes["series"] == 1 else \
        ds["close"].isel(series=0).values
    fin = np.isfinite(close)
    if fin.any():  # frame the price path with its levels, not the whole grid
        span = np.nanmax(close) / np.nanmin(close)
        pmin = max(pmin, np.nanmin(close) / (span ** 0.25 * 1.15))
        pmax = min(pmax, np.nanmax(close) * (span ** 0.25 * 1.15))
    cvs = dsh.Canvas(plot_width=pw, plot_height=ph, x_range=(tnum[0], tnum[-1] + _dt(tnum)),
                     y_range=(pmin, pmax))
    agg = cvs.quadmesh(da, x="time", y="price", agg=dsh.reductions.sum("intensity"))
    img = np.asarray(agg.values, dtype=np.float64)
    img = np.where(np.isfinite(img), img, 0.0)
    shaded = _shade(img, how)
    ax.set_facecolor("#0b0b12")
    mesh = ax.imshow(shaded, origin="lower", aspect="auto", cmap=cmap,
                     extent=(_mdates(tnum[0]), _mdates(tnum[-1] + _dt(tnum)), pmin, pmax),
                     interpolation="nearest", vmin=0, vmax=1)
    tt = np.array([_mdates(x) for x in tnum + _dt(tnum) / 2])
    ax.plot(tt, close, color="#39d0ff", lw=max(0.8, height / 900), alpha=0.9, label="close")
    ax.set_ylim(pmin, pmax)
    _style(ax, fig, ds, how)
    cb = fig.colorbar(mesh, cax=fig.add_axes([0.905, 0.09, 0.015, 0.83]))
    qs = _quantile_ticks(img, how)
    cb.set_ticks(list(qs.keys()))
    cb.set_ticklabels(list(qs.values()))
    cb.ax.tick_params(colors="#c8c8d0", labelsize=8)
    cb.set_label("live liquidation notional per bin (quote)", color="#c8c8d0")
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi, facecolor=fig.get_facecolor())
        tmp.replace(out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def _dt(tnum):
    return float(tnum[1] - tnum[0]) if len(tnum) > 1 else 3_600_000.0


def _mdates(ms: float):
    import matplotlib.dates as mdates

    return mdates.date2num(np.datetime64(int(ms), "ms"))


def _shade(img: np.ndarray, how: str) -> np.ndarray:
    """Map aggregated notional to [0, 1]."""
    pos = img[img > 0]
    if pos.size == 0:
        return np.zeros_like(img)
    if how == "linear":
        return np.clip(img / pos.max(), 0, 1)
    if how == "log":
        lo, hi = np.log10(np.percentile(pos, 1)), np.log10(pos.max())
        with np.errstate(divide="ignore"):
            v = (np.log10(np.where(img > 0, img, np.nan)) - lo) / max(hi - lo, 1e-12)
        return np.nan_to_num(np.clip(v, 0, 1))
    if how == "eq_hist":
        srt = np.sort(pos)
        ranks = np.searchsorted(srt, img, side="right") / srt.size
        return np.where(img > 0, ranks, 0.0)
    raise InputError(f"--how: {how!r} is not one of linear, log, eq_hist")


def _quantile_ticks(img: np.ndarray, how: str) -> dict:
    pos = np.sort(img[img > 0])
    if pos.size == 0:
        return {0.0: "0"}
    out = {}
    for f in (0.0, 0.25, 0.5, 0.75, 1.0):
        if how == "eq_hist":
            v = pos[min(pos.size - 1, int(f * (pos.size - 1)))]
        elif how == "linear":
            v = f * pos.max()
        else:
            lo, hi = np.log10(np.percentile(pos, 1)), np.log10(pos.max())
            v = 10 ** (lo + f * (hi - lo))
        out[f] = _fmt_money(v)
    return out


def _fmt_money(v: float) -> str:
    for div, suf in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}"
    return f"{v:.3g}"


def _style(ax, fig, ds, how):
    import matplotlib.dates as mdates

    fg = "#c8c8d0"
    ax.xaxis_date()
    loc = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    ax.tick_params(colors=fg, labelsize=9)
    for s in ax.spines.values():
        s.set_color("#444455")
    ax.set_ylabel("price (quote)", color=fg)
    ax.set_xlabel("time (UTC)", color=fg)
    a = ds.attrs
    names = ", ".join(str(x) for x in ds["series"].values)
    t0 = np.datetime_as_string(ds["time"].values[0], unit="m")
    t1 = np.datetime_as_string(ds["time"].values[-1], unit="m")
    ax.set_title(f"{names}  estimated liquidation levels  {t0}Z → {t1}Z\n"
                 f"model {a.get('model')} leverages {a.get('leverages')} mmr {a.get('mmr')} "
                 f"entry {a.get('entry')} max_age {a.get('max_age')}  every {a.get('every')}  "
                 f"scale {how}", color=fg, fontsize=10)
    ax.grid(color="#ffffff", alpha=0.06)
