"""The look shared by the heatmap and the map: sizes, colours, number formats, titles, and the
atomic PNG write. matplotlib is imported inside functions only."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

MIN_WIDTH, MIN_HEIGHT = 800, 450
MAX_WIDTH, MAX_HEIGHT = 16384, 8192

BG = "#0b0b12"        # figure background (the dark of the tools traders use)
PLOT_BG = "#07070d"   # empty plot area: darker than the lowest colour of the map
FG = "#d2d2dc"        # text
DIM = "#8a8a9a"       # secondary text
SPINE = "#3a3a4a"
PRICE = "#f4f4f8"     # close line
UP, DOWN = "#26a69a", "#ef5350"          # candles
LONG_LIQ, SHORT_LIQ = "#ff5c7a", "#4be3a0"  # realized liquidations of longs / of shorts
EST_LIQ = "#ffffff"
TIER_COLOURS = ["#5b8def", "#38c6d9", "#6fdc8c", "#f5c84c", "#f2784b", "#d45bd8", "#a0a0b0"]


def check_size(width: int, height: int) -> tuple[int, int]:
    """Validate the PNG size (800x450 up to 16384x8192)."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise InputError(f"--width/--height: {width!r}x{height!r} are not whole numbers") from None
    if not (MIN_WIDTH <= w <= MAX_WIDTH and MIN_HEIGHT <= h <= MAX_HEIGHT):
        raise InputError(f"--width/--height: {w}x{h} is outside the supported sizes "
                         f"{MIN_WIDTH}x{MIN_HEIGHT} .. {MAX_WIDTH}x{MAX_HEIGHT}")
    return w, h


def check_out(out) -> Path:
    """The PNG path: its folder must exist and it must not be a folder."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{out}: the folder {parent} does not exist")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give a file name such as heatmap.png")
    if out.suffix.lower() != ".png":
        raise InputError(f"{out}: the output must be a .png file")
    return out


def figure(width: int, height: int):
    """A figure of exactly ``width`` x ``height`` pixels whose text scales with the image: 100
    dpi up to 900 px high, then ``height / 9`` dpi (so a 4K or 16K render looks like a 1080p one,
    only sharper)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dpi = max(100.0, height / 9.0)
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=BG)
    return fig, dpi


def pixel_axes(fig, width: int, height: int, dpi: float, *, left: float, right: float,
               bottom: float, top: float):
    """Axes whose plot area sits on whole pixels; margins in inches. Returns (ax, box) where
    ``box = (x0, y0, w, h)`` in pixels from the bottom left."""
    x0 = int(round(left * dpi))
    y0 = int(round(bottom * dpi))
    w = max(16, width - x0 - int(round(right * dpi)))
    h = max(16, height - y0 - int(round(top * dpi)))
    ax = fig.add_axes([x0 / width, y0 / height, w / width, h / height])
    ax.set_facecolor(PLOT_BG)
    for s in ax.spines.values():
        s.set_color(SPINE)
    ax.tick_params(colors=FG, labelsize=8.5, which="both")
    return ax, (x0, y0, w, h)


def fmt_money(v: float, quote: str = "") -> str:
    """``1.23B``, ``45.6M``, ``780k``, ``12.5``."""
    a = abs(v)
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            s = f"{v / div:.3g}{suf}"
            break
    else:
        s = f"{v:.3g}"
    return f"{s} {quote}".strip() if quote else s


def fmt_price(v: float) -> str:
    """Prices as traders read them: ``92,500``, ``3,412.5``, ``0.4213``."""
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:,.2f}".rstrip("0").rstrip(".")
    return f"{v:.4g}"


def price_axis(ax, lo: float, hi: float, *, log: bool, n: int, axis: str = "y") -> None:
    """Price ticks at round numbers (whatever the scale) with trader formatting."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    a = ax.yaxis if axis == "y" else ax.xaxis
    if log:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)
    if log and hi / lo > 2.5:
        ticks = log_ticks(lo, hi, max(3, n))
    else:
        ticks = MaxNLocator(nbins=max(3, n), steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        ticks = [t for t in ticks if lo <= t <= hi]
    a.set_major_locator(FixedLocator(ticks))
    a.set_minor_locator(NullLocator())
    a.set_major_formatter(FuncFormatter(lambda v, _: fmt_price(v)))


def log_ticks(lo: float, hi: float, n: int) -> list[float]:
    """Round prices (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8 x 10^k) about evenly spaced on a log axis,
    at most ``n`` of them.

    Examples
    --------
    >>> log_ticks(40_000, 750_000, 8)
    [40000.0, 60000.0, 100000.0, 150000.0, 250000.0, 400000.0, 600000.0]
    """
    import math

    cands = sorted(m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1,
                                                 math.ceil(math.log10(hi)) + 1)
                   for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8))
    cands = [c for c in cands if lo <= c <= hi]
    if len(cands) <= n:
        return cands
    gap = math.log(hi / lo) / n
    out = [cands[0]]
    for c in cands[1:]:
        if math.log(c / out[-1]) >= gap * 0.999:
            out.append(c)
    return out


def time_axis(ax) -> None:
    """UTC dates with concise labels."""
    import matplotlib.dates as mdates

    loc = mdates.AutoDateLocator(tz="UTC", minticks=4, maxticks=12)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz="UTC"))
    ax.set_xlabel("time (UTC)", color=DIM, fontsize=8.5)


def model_line(attrs: dict) -> str:
    """One line with the model parameters of a store."""
    def seq(v):
        try:
            return "/".join(f"{float(x):g}" for x in v)
        except (TypeError, ValueError):
            return str(v)

    parts = [f"model {attrs.get('model', '?')}"]
    if attrs.get("model") == "v2":  # 40 tiers do not fit a line: their specs and the bands
        n = len(attrs.get("leverages", []))
        parts.append(f"{n} tiers {attrs.get('leverages_spec') or seq(attrs['leverages'])}")
        parts.append(f"weights {attrs.get('weights_spec') or seq(attrs['weights'])}")
        parts.append(f"bands {seq(attrs.get('bands', []))}x")
        parts.append(f"churn {float(attrs.get('churn', 0)):g}/h")
    else:
        if "leverages" in attrs:
            parts.append(f"tiers {seq(attrs['leverages'])}x")
        if "weights" in attrs:
            parts.append(f"weights {seq(attrs['weights'])}")
    if "mmr" in attrs:
        parts.append(f"mmr {float(attrs['mmr']) * 100:g}%")
    for k in ("entry", "side_split", "closure", "max_age", "every"):
        if k in attrs:
            parts.append(f"{k.replace('_', ' ')} {attrs[k]}")
    return SEP.join(parts)


TITLE_PT, LINE_PT = 11.5, 8.5
SEP = "  ·  "


def layout_header(fig, lines: list[str]) -> tuple[list[str], float]:
    """Wrap the title lines to the figure's width; returns (lines, inches they need)."""
    width_in = fig.get_figwidth() * 0.975
    out = []
    for i, text in enumerate(lines):
        size = TITLE_PT if i == 0 else LINE_PT
        chars = max(20, int(width_in * 72 / (size * (0.62 if i == 0 else 0.56))))
        cur = ""
        for part in text.split(SEP):  # wrap between items, never inside one
            if cur and len(cur) + len(SEP) + len(part) > chars:
                out.append((cur, i == 0))
                cur = part
            else:
                cur = f"{cur}{SEP}{part}" if cur else part
        out.append((cur, i == 0))
    need = 0.14 + sum((TITLE_PT if first else LINE_PT) * 1.5 / 72 for _, first in out) + 0.08
    return out, need


def header(fig, lines) -> None:
    """Draw title lines from :func:`layout_header` at the top left: the first larger."""
    h = fig.get_figheight()
    y = 1.0 - 0.12 / h
    for text, first in lines:
        size = TITLE_PT if first else LINE_PT
        fig.text(0.012, y, text, color=FG if first else DIM, fontsize=size,
                 fontweight="bold" if first else "normal", va="top", ha="left")
        y -= (size * 1.5 / 72) / h


def save_png(fig, out: Path, *, dpi: float, meta: dict | None = None) -> Path:
    """Write the figure to a temporary name beside ``out`` and move it into place.

    ``meta`` goes into PNG text chunks (e.g. where the plot area is and what it spans, so that
    other tools, and the tests, can map pixels back to prices and times)."""
    import matplotlib.pyplot as plt

    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp.png")
    big = fig.get_figwidth() * fig.get_figheight() * dpi * dpi > 20e6
    try:
        fig.savefig(tmp, dpi=dpi, facecolor=fig.get_facecolor(), format="png",
                    metadata={"Software": "liqgpu", **(meta or {})},
                    pil_kwargs={"compress_level": 1 if big else 6})
        os.replace(tmp, out)
    except OSError as exc:
        from ..outputs import as_write_error

        raise as_write_error(exc, out) from None
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return out
