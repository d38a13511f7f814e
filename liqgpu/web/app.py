"""The page: a HoloViews heatmap re-aggregated by datashader on every pan and zoom, the cursor
readout, the liquidation map at the cursor's time, the top levels, and the controls (Panel).

Every figure is computed on the server from the stores named on the command line (see
:mod:`liqgpu.web.data`); the browser only sends ranges, the cursor and widget values, never a
path. Errors become one sentence on the page and a log line.
"""

from __future__ import annotations

import logging
import threading
import time as _time

import numpy as np

from ..errors import InputError
from . import data as D

log = logging.getLogger(__name__)

POLL_MS = 1000
PLOT_HEIGHT = 640
MAP_WIDTH = 300
MAX_PX = (3840, 2160)  # the largest raster computed for one view
TOP = 10
LONG_HUE, SHORT_HUE = "#35c8e8", "#f5a524"
UP_HUE, DOWN_HUE = "#26a69a", "#ef5350"  # candles


def _imports():
    import holoviews as hv
    import panel as pn

    if "bokeh" not in hv.Store.renderers:
        hv.extension("bokeh", logo=False)
    return hv, pn


def _fmt_n(v) -> str:
    return "–" if v is None else f"{v:,.0f}"


def _ms(v) -> float:
    """A bokeh/holoviews x value (datetime64, Timestamp, datetime or ms) -> ms since the epoch."""
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    return float(np.datetime64(v, "ns").astype(np.int64) / 1e6)


def _dt(ms: float) -> np.datetime64:
    return np.datetime64(int(round(ms)), "ms")


class Viewer:
    """The viewer of a set of stores; :meth:`panel` builds one page (one per browser session).

    Parameters
    ----------
    stores : sequence of path
        The stores to show (read-only; nothing else is ever opened).
    poll : float
        Seconds between checks for a changed store.

    Examples
    --------
    >>> v = Viewer(["demo.zarr"])  # doctest: +SKIP
    >>> v  # in a notebook: the page inline  # doctest: +SKIP
    """

    def __init__(self, stores, *, poll: float = POLL_MS / 1000):
        self.stores = [s if isinstance(s, D.StoreData) else D.StoreData(s) for s in stores]
        if not self.stores:
            raise InputError("name at least one store to serve")
        names = [s.name for s in self.stores]
        for k, s in enumerate(self.stores):  # two stores with one file name: tell them apart
            if names.count(s.name) > 1:
                s.name = f"{s.name} ({k + 1})"
        self.poll = float(poll)
        self.sessions: list[Session] = []
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Build each store's default planes and compile datashader's resampling (numba) for the
        layouts a pan or zoom meets, so that the first page and the first zoom are quick."""
        started = _time.perf_counter()
        for st in self.stores:
            if st.ds is None:
                continue
            try:
                view = D.View()
                ds, planes = st.view_data(view)
                (x0, x1), (y0, y1) = D.default_range(ds, view)
                e = ds["price_edges"].values
                every = float(D.every_of(ds) / np.timedelta64(1, "ms"))
                m = len(e) // 2
                few_t, few_p = (x0, x0 + 3 * every), (float(e[m]), float(e[m + 3]))
                most_t = (x0 + every, x1)
                most_p = (float(e[1]), float(e[-2]))
                # whole planes (C-contiguous) and cuts of them, pixels fewer or more than cells
                for xr_, yr in (((x0, x1), (y0, y1)), (most_t, most_p), (few_t, few_p),
                                (most_t, few_p), (few_t, most_p)):
                    D.heatmap(ds, view, x_range=xr_, y_range=yr, width=64, height=32,
                              planes=planes)
            except Exception as exc:  # noqa: BLE001 - the page reports the store's problem
                log.warning("warm-up of %s failed: %s", st.name, exc)
        try:  # one page built and thrown away: the plotting code is imported and run once
            page = Session(self)
            page.layout.get_root()
            page._close()
        except Exception as exc:  # noqa: BLE001 - a real page will report the problem
            log.warning("warm-up page failed: %s", exc)
        log.info("warmed up in %.1fs", _time.perf_counter() - started)

    def panel(self):
        """A new page (a Panel layout) for one session."""
        s = Session(self)
        with self._lock:
            self.sessions = [x for x in self.sessions if not x.closed] + [s]
        return s.layout

    def servable(self, title: str = "liqgpu"):
        return self.panel().servable(title=title)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.panel()._repr_mimebundle_(include, exclude)


class Session:
    """One page: its widgets, figures and the state they share."""

    def __init__(self, viewer: Viewer):
        hv, pn = _imports()
        self.viewer = viewer
        self.closed = False
        self.last: dict | None = None       # the last heatmap served (tests and the status line)
        self.last_readout: dict | None = None
        self.cursor_ms: float | None = None  # the time under the cursor (map and levels)
        self._bucket = None
        self._versions = {}
        self._default_x = None
        self._frame = (1200, PLOT_HEIGHT)  # the heatmap frame's size (px) the browser reported

        # -- controls ------------------------------------------------------------------------------
        options = {}
        for k, st in enumerate(viewer.stores):
            if st.ds is None:
                continue
            names = [str(x) for x in np.asarray(st.ds["series"].values)]
            syms = ([str(x) for x in np.asarray(st.ds["symbol"].values)]
                    if "symbol" in st.ds.coords else names)
            for sym in dict.fromkeys(syms):
                if syms.count(sym) > 1:
                    options[f"{st.name} · {sym} (all {syms.count(sym)} series)"] = (k, sym)
            for n in names:
                options[f"{st.name} · {n}"] = (k, n)
        self.w_series = pn.widgets.Select(label="Series", options=options, width=300,
                                          disabled=not options)
        self.w_variable = pn.widgets.RadioButtonGroup(options=list(D.VARIABLES),
                                                      value="intensity")
        self.w_side = pn.widgets.RadioButtonGroup(
            options={"longs": "long", "shorts": "short", "both": "both",
                                   "two hues": "two hues"}, value="both")
        self.w_tiers = pn.widgets.CheckButtonGroup(options={}, value=[])
        self.w_how = pn.widgets.RadioButtonGroup(options=list(D.HOWS),
                                                 value="linear")
        self.w_axis = pn.widgets.RadioButtonGroup(options=["log", "linear"],
                                                  value="log")
        self.w_lookback = pn.widgets.Select(label="Lookback", options=["all"], value="all",
                                            width=120)
        self._store_errors = ""
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False,
                                   css_classes=["liqgpu-alert"],
                                   sizing_mode="stretch_width")
        self.status = pn.pane.HTML("", css_classes=["liqgpu-status"], sizing_mode="stretch_width",
                                   styles={"font-size": "12px", "color": "#8a8a9a"})
        # the heatmap's colour key (a datashaded image carries no colour bar of its own)
        self.key = pn.pane.HTML("", css_classes=["liqgpu-colour-key"],
                                sizing_mode="stretch_width", styles={"font-size": "12px"})
        self.w_readout = pn.pane.HTML("<i>move the cursor over the heatmap</i>",
                                      css_classes=["liqgpu-readout"],
                                      sizing_mode="stretch_width",
                                      styles={"font-size": "13px", "min-height": "40px"})
        self.levels_note = pn.pane.HTML("", css_classes=["liqgpu-levels-note"],
                                        sizing_mode="stretch_width", margin=(0, 10))
        self.table = pn.pane.DataFrame(None, sizing_mode="stretch_width", index=False,
                                       css_classes=["liqgpu-levels"])
        self.plot_holder = pn.Row(sizing_mode="stretch_width")
        self._state = _State()
        self._quiet = False

        controls = pn.Row(
            self.w_series,
            pn.Column(pn.pane.HTML("<b>variable</b>", margin=(0, 5)), self.w_variable),
            pn.Column(pn.pane.HTML("<b>sides</b>", margin=(0, 5)), self.w_side),
            pn.Column(pn.pane.HTML("<b>tiers / bands</b>", margin=(0, 5)), self.w_tiers),
            pn.Column(pn.pane.HTML("<b>colour scale</b>", margin=(0, 5)), self.w_how),
            pn.Column(pn.pane.HTML("<b>price axis</b>", margin=(0, 5)), self.w_axis),
            self.w_lookback, sizing_mode="stretch_width")
        # stores that failed to load at the start: a message that stays on the page
        self._store_errors = " ".join(st.error for st in viewer.stores
                                      if st.error and st.ds is None)
        self._error(None)
        self.layout = pn.Column(
            pn.pane.HTML("<b style='font-size:16px'>liqgpu</b> &nbsp;liquidation heatmap",
                         margin=(5, 10)),
            controls, self.alert, self.status, self.key, self.w_readout, self.plot_holder,
            pn.pane.HTML("<b>top levels at the cursor's time</b> (bands of the snapshot; "
                         "dominant tiers hold at least a quarter)", margin=(5, 10)),
            self.levels_note, self.table, sizing_mode="stretch_width",
            styles={"background": "#ffffff"})
        if not options:
            return
        self.w_series.param.watch(lambda e: self._on_series(), "value")
        for w in (self.w_variable, self.w_side, self.w_tiers, self.w_how):
            w.param.watch(lambda e: self._quiet or self._on_view(), "value")
        for w in (self.w_axis, self.w_lookback):  # a new axis or time window: a new figure
            w.param.watch(lambda e: self._quiet or self._rebuild(), "value")
        self._on_series(first=True)
        self._cb = pn.state.add_periodic_callback(self._poll, period=int(viewer.poll * 1000))
        pn.state.on_session_destroyed(lambda ctx: self._close())

    # -- state ------------------------------------------------------------------------------------
    @property
    def store(self) -> D.StoreData:
        return self.viewer.stores[self.w_series.value[0]]

    @property
    def ds(self):
        return self.store.dataset(self.w_variable.value)

    def view(self) -> D.View:
        ds = self.ds
        n = ds.sizes["leverage"]
        tiers = tuple(sorted(self.w_tiers.value))
        return D.View(series=self.w_series.value[1], variable=self.w_variable.value,
                      side=self.w_side.value, tiers=None if len(tiers) == n else tiers,
                      how=self.w_how.value, log_axis=self.w_axis.value == "log",
                      lookback=None if self.w_lookback.value == "all" else self.w_lookback.value)

    def _error(self, text: str | None) -> None:
        text = " ".join(t for t in (self._store_errors, text) if t)
        self.alert.object = text
        self.alert.visible = bool(text)

    def _guard(self, fn, *args, default=None):
        """Run a callback; a user error becomes the page message, anything else a log line and a
        short page message (never a traceback in the browser)."""
        try:
            return fn(*args)
        except InputError as exc:
            self._error(str(exc))
        except Exception:  # noqa: BLE001
            log.exception("viewer callback %s failed", getattr(fn, "__name__", fn))
            self._error("The viewer could not draw this view; the server log has the details.")
        return default

    def _close(self):
        self.closed = True
        try:
            self._cb.stop()
        except Exception:  # noqa: BLE001
            pass

    # -- controls ---------------------------------------------------------------------------------
    def _on_series(self, first: bool = False):
        self._quiet = True  # the widgets are reset below: one rebuild at the end
        try:
            self._reset_controls()
        finally:
            self._quiet = False
        self._rebuild()
        self._versions[self.w_series.value[0]] = self.store.version

    def _reset_controls(self):
        ds = self.ds
        labels = {D.tier_label(v): k for k, v in enumerate(np.asarray(ds["leverage"].values))}
        self.w_tiers.options = labels
        self.w_tiers.value = list(labels.values())
        self.w_variable.options = [v for v in D.VARIABLES if v in self.store.available]
        if self.w_variable.value not in self.w_variable.options:
            self.w_variable.value = "intensity"
        age = str(ds.attrs.get("max_age", "none"))
        self.w_lookback.options = ["all"] + ([age] if age not in ("none", "", "None") else [])
        self.w_lookback.value = "all"
        from ..render.select import is_log_grid

        self.w_axis.value = "log" if is_log_grid(ds) else "linear"

    def _on_view(self):
        self._error(None)
        self._bucket = None
        self._state.bump()
        self._update_side_panels()

    # -- the figures ------------------------------------------------------------------------------
    def _rebuild(self):
        """A new figure: at the start, for another series or axis, and when a store that was
        shown whole grows."""
        self._error(None)
        built = self._guard(self._build)
        if built is not None:
            self.plot_holder[:] = [built]
        self._update_side_panels()

    def _build(self):
        hv, pn = _imports()
        from bokeh.models import CustomJSTickFormatter
        from holoviews import streams

        view = self.view()
        quotes = {str(q) for q in self.ds["quote"].values} if "quote" in self.ds.coords else set()
        quote = quotes.pop() if len(quotes) == 1 else "quote"
        # thousands, millions, billions as traders write them (Bokeh's "0.0a" writes a
        # million as "m", read as milli)
        money = CustomJSTickFormatter(code=(
            "const a = Math.abs(tick);"
            "if (a >= 1e9) return (tick / 1e9).toFixed(1) + 'B';"
            "if (a >= 1e6) return (tick / 1e6).toFixed(1) + 'M';"
            "if (a >= 1e3) return (tick / 1e3).toFixed(0) + 'k';"
            "return tick.toFixed(0);"))
        (x0, x1), (y0, y1) = D.default_range(self.ds, view)
        self._default_x = (x0, x1)
        log_axis = bool(view.log_axis)
        rng = streams.RangeXY(x_range=(_dt(x0), _dt(x1)), y_range=(y0, y1))
        # the frame's size as the browser last reported it (a new figure is drawn at it until
        # the browser reports again; at first: a guess)
        size = streams.PlotSize(width=self._frame[0], height=self._frame[1])
        state = streams.Params(self._state, ["version"])
        self._rng = rng
        common = dict(streams=[rng, size, state])
        # a log axis over less than two decades gets linear ticks from Bokeh's LogTicker: steps
        # of 1, 2 or 5 (its default, 1 or 5, labels two ticks over 60,796 .. 74,490)
        yticks = price_ticker() if log_axis else None
        img = hv.DynamicMap(self._image, **common).opts(
            responsive=True, height=PLOT_HEIGHT, logy=log_axis, xlabel="time (UTC)",
            **({"yticks": yticks} if yticks is not None else {}),
            ylabel=f"price ({quote})", active_tools=["wheel_zoom"], default_tools=["pan", "wheel_zoom",
                                                                       "box_zoom", "reset"],
            tools=["crosshair"], bgcolor="#07070d", framewise=False,
            xlim=(_dt(x0), _dt(x1)), ylim=(y0, y1))
        price = hv.DynamicMap(self._price, **common)
        dots = hv.DynamicMap(self._dots, **common)
        tag = hv.DynamicMap(self._tag, **common)
        gaps = hv.DynamicMap(self._gaps, streams=[state])
        rng.source = img
        size.source = img
        pointer = streams.PointerXY(x=None, y=None, source=img)
        pointer.add_subscriber(self._on_pointer)
        overlay = (img * gaps * price * dots * tag).opts(show_legend=False)
        mp = hv.DynamicMap(self._map, streams=[rng, streams.Params(self._state, ["version",
                                                                                  "cursor"])])
        mp = mp.opts(width=MAP_WIDTH, height=PLOT_HEIGHT, logy=log_axis,
                     **({"yticks": price_ticker()} if log_axis else {}),
                     xlabel=f"live levels ({quote})", ylabel="", yaxis="right", framewise=True,
                     tools=["hover"], xticks=3, xformatter=money,
                     show_legend=True, legend_position="top_right")
        return pn.Row(pn.pane.HoloViews(overlay, sizing_mode="stretch_width",
                                        linked_axes=False),
                      pn.pane.HoloViews(mp, width=MAP_WIDTH + 20, linked_axes=False),
                      sizing_mode="stretch_width")

    def _ranges(self, x_range, y_range):
        ds = self.ds
        if x_range is None or y_range is None:
            return D.default_range(ds, self.view())
        return (_ms(x_range[0]), _ms(x_range[1])), (float(y_range[0]), float(y_range[1]))

    def _image(self, x_range=None, y_range=None, width=None, height=None, scale=1.0, **_):
        hv, _pn = _imports()
        return self._guard(self._image_of, x_range, y_range, width, height,
                           default=None) or hv.RGB(np.zeros((2, 2, 4), np.uint8),
                                                   kdims=["time", "price"])

    def _image_of(self, x_range, y_range, width, height):
        hv, _pn = _imports()
        started = _time.perf_counter()
        (x0, x1), (y0, y1) = self._ranges(x_range, y_range)
        if width and height:
            self._frame = (int(width), int(height))
        w = int(min(max(width or self._frame[0], 100), MAX_PX[0]))
        h = int(min(max(height or self._frame[1], 100), MAX_PX[1]))
        view = self.view()
        ds, planes = self.store.view_data(view)
        hm = D.heatmap(ds, view, x_range=(x0, x1), y_range=(y0, y1), width=w, height=h,
                       planes=planes)
        hm["elapsed"] = _time.perf_counter() - started
        hm["store_version"] = self.store.version
        self.last = hm
        self._status(hm)
        bx0, by0, bx1, by1 = hm["bounds"]
        rgba = hm["rgba"][::-1]  # row 0 at the top for an RGB element
        return hv.RGB(rgba, bounds=(_dt(bx0), by0, _dt(bx1), by1), kdims=["time", "price"],
                      vdims=["R", "G", "B", "A"])

    def _status(self, hm):
        ds = self.ds
        t = ds["time"].values
        lo, hi = hm["norm"]
        scale = {"linear": f"linear 0 .. {hi:,.0f}",
                 "log": f"log {lo:,.0f} .. {hi:,.0f}",
                 "eq_hist": f"eq_hist {lo:,.0f} .. {hi:,.0f}"}[hm["how"]]
        low = 0.0 if hm["how"] == "linear" else lo
        # the top is a quantile of the pixels: brighter ones show its colour (clipped)
        top = ("&ge;" if hm.get("clipped") else "") + _money(hi)
        bars = "".join(
            f"<span class='liqgpu-key'>{name + ' ' if name else ''}{_money(low)} "
            f"<span style='display:inline-block;width:160px;height:10px;vertical-align:middle;"
            f"border:1px solid #444;background:linear-gradient(to right, {', '.join(cols)})'>"
            f"</span> {top} {hm['quote']} per bin"
            f"{' (' + hm['how'] + ')' if hm['how'] != 'linear' else ''}</span>&nbsp;&nbsp;"
            for name, cols in hm.get("key", []))
        gap = hm.get("no_oi") or {}
        if gap.get("spans"):
            bars += (
                "<span class='liqgpu-no-oi-key'><span style='display:inline-block;width:28px;"
                "height:10px;vertical-align:middle;border:1px solid #8a8f98;background:"
                "repeating-linear-gradient(135deg, #8a8f98 0 2px, #e4e6ea 2px 6px)'></span> "
                f"{D.NO_OI_LABEL}</span>")
        self.key.object = bars
        self.status.object = (
            f"<span class='liqgpu-stat'>view: {hm['n_buckets']} buckets x {hm['n_bins']} bins "
            f"({hm['bin_label']}) at {hm['width']}x{hm['height']} px, "
            f"rows_per_bin={hm['rows_per_bin']:.3g}, price {hm['y_range'][0]:,.2f} .. "
            f"{hm['y_range'][1]:,.2f}; colour {scale} {hm['quote']} per bin; "
            f"store {self.store.name} (model {ds.attrs.get('model', 'v1')}, "
            f"load {self.store.version}): {len(t)} buckets to "
            f"{_end_text(ds)}; "
            f"rendered in {hm['elapsed'] * 1000:.0f} ms</span>" + _no_oi_note(gap))

    def _price(self, x_range=None, y_range=None, width=None, **_):
        out = self._guard(self._price_of, x_range, y_range, width)
        return out if out is not None else _price_layers()

    def _price_of(self, x_range, y_range, width):
        """The close line, or candles when a bucket is wide enough on screen: solid over the
        live levels, hollow (outlines, wicks beside the body only) over liquidations, which lie
        inside the bar's range, so that the cells under a body stay seen (as the PNG)."""
        (x0, x1), _ = self._ranges(x_range, y_range)
        sel = D.selection(self.ds, self.view())
        t = sel.times
        every = sel.every
        ms = t.astype("datetime64[ns]").astype(np.int64) / 1e6
        e_ms = every / np.timedelta64(1, "ms")
        keep = (ms + e_ms >= x0) & (ms <= x1)
        px = sel.prices()
        o, hi, lo, c = (px[k][keep] for k in ("open", "high", "low", "close"))
        t = t[keep]
        bucket_px = (width or 1200) * e_ms / max(x1 - x0, 1)
        ohlc = all(np.isfinite(a).any() for a in (o, hi, lo)) and len(t)
        if not (ohlc and bucket_px >= D.CANDLE_MIN_PX):
            return _price_layers(line=(t + every, c))
        mid = t + every // 2
        half = (every * 35) // 100
        ok = np.isfinite(o) & np.isfinite(c) & np.isfinite(hi) & np.isfinite(lo)
        return _price_layers(candles=(mid[ok], o[ok], hi[ok], lo[ok], c[ok], half),
                             hollow=self.w_variable.value != "intensity")

    def _gaps(self, **_):
        out = self._guard(self._gaps_of)
        return out if out is not None else _gap_spans([])

    def _gaps_of(self):
        """The buckets without open interest, hatched over the whole height (as the PNG)."""
        return _gap_spans(D.no_oi(D.selection(self.ds, self.view()))["spans"])

    def _dots(self, x_range=None, y_range=None, width=None, height=None, **_):
        hv, _pn = _imports()
        out = self._guard(self._dots_of, x_range, y_range, width, height)
        if out is None:
            out = hv.Points([], ["time", "price"], vdims=["notional", "side", "size"])
        return out.opts(color=hv.dim("side").categorize({0: "#ff5c7a", 1: "#4be3a0"},
                                                        default="#ffffff"),
                        size="size", line_color="black", alpha=0.85, tools=["hover"])

    def _dots_of(self, x_range, y_range, width, height):
        hv, _pn = _imports()
        ds = self.ds
        view = self.view()
        if "realized" not in ds.variables or view.variable == "realized":
            return None
        (x0, x1), (y0, y1) = self._ranges(x_range, y_range)
        t_lo, t_hi = D.time_bounds(ds)
        x0, x1 = max(x0, t_lo), min(x1, t_hi)
        e = ds["price_edges"].values
        y0, y1 = max(y0, float(e[0])), min(y1, float(e[-1]))
        if not (x1 > x0 and y1 > y0):
            return None
        rview = D.View(**{**view.__dict__, "variable": "realized", "tiers": None})
        ds, planes = self.store.view_data(rview)
        sel = D.selection(ds, rview, start=D._ms_to_time(x0),
                          end=D._ms_to_time(x1) if x1 < t_hi else None, price_min=y0,
                          price_max=y1)
        m = D.marks(planes, sel, width=int(width or 1200), height=int(height or PLOT_HEIGHT))
        if m is None:
            return None
        size = 3 + 15 * np.sqrt(m.notional / m.notional.max())
        side = np.array([0 if sel.sides[k] == "long" else 1 for k in m.side])
        return hv.Points((m.time_ms.astype("datetime64[ms]"), m.price, m.notional, side, size),
                         ["time", "price"], vdims=["notional", "side", "size"],
                         label="realized liquidations")

    def _tag(self, x_range=None, y_range=None, **_):
        hv, _pn = _imports()
        out = self._guard(self._tag_of, x_range, y_range)
        if out is None:
            return hv.Labels([], ["time", "price"], "text")
        return out

    def _tag_of(self, x_range, y_range):
        """The close of the last bucket in view (the one under the view's right edge, else the
        last before it), tagged on the right edge: zoomed into an earlier stretch, the price of
        that moment, not the store's last."""
        hv, _pn = _imports()
        (x0, x1), _ = self._ranges(x_range, y_range)
        last = tag_price(D.selection(self.ds, self.view()), x0, x1)
        if last is None:
            return None
        return hv.Labels(([_dt(x1)], [last], [f" {D.fmt_price(last)} "]), ["time", "price"],
                         "text").opts(text_align="right", text_color="black",
                                      background_fill_color="#f4f4f8", text_font_size="11px",
                                      text_baseline="middle")

    def _map(self, x_range=None, y_range=None, **_):
        hv, _pn = _imports()
        out = self._guard(self._map_of, y_range)
        if out is None:
            out = hv.Rectangles([], ["notional", "price", "n1", "p1"], vdims=["side"])
        return out.opts(color=hv.dim("side").categorize({"longs": LONG_HUE,
                                                         "shorts": SHORT_HUE}),
                        line_width=0)

    def _map_of(self, y_range):
        hv, _pn = _imports()
        view = self.view()
        p = D.profile(self.ds, view, self.cursor_ms)
        if p is None:
            return None
        edges, longs, shorts, close, when = p
        _, (y0, y1) = self._ranges(None if y_range is None else (0, 1), y_range)
        a = max(0, int(np.searchsorted(edges, y0, side="right")) - 1)
        b = min(len(edges) - 1, int(np.searchsorted(edges, y1, side="left")))
        rows = []
        for name, v, show in (("longs", longs, view.side in ("long", "both", "two hues")),
                              ("shorts", shorts, view.side in ("short", "both", "two hues"))):
            if not show:
                continue
            k = np.flatnonzero(v[a:b] > 0) + a
            rows += [(0.0, edges[i], float(v[i]), edges[i + 1], name) for i in k]
        rect = hv.Rectangles(rows, ["notional", "price", "n1", "p1"], vdims=["side"],
                             label=f"snapshot {when.replace('T', ' ')}")
        top = max([r[2] for r in rows], default=1.0)
        return rect.opts(ylim=(y0, y1), xlim=(0, top * 1.05))

    # -- the cursor -------------------------------------------------------------------------------
    def _on_pointer(self, x=None, y=None, **_):
        if x is None or y is None:
            return
        self._guard(self._pointer, _ms(x), float(y))

    def _pointer(self, t_ms: float, price: float):
        r = D.readout(self.ds, self.view(), t_ms, price)
        self.last_readout = r
        if r is None:
            self.w_readout.object = "<i>outside the store</i>"
            return
        q = r["quote"]
        tiers = ", ".join(f"{name} {share * 100:.0f}%" for name, share in r["tiers"]) or "–"
        self.w_readout.object = (
            f"<span class='liqgpu-cursor' data-bucket='{r['bucket']}' data-bin='{r['bin']}' "
            f"data-long='{r['long']}' data-short='{r['short']}'>"
            f"<b>{r['time'].replace('T', ' ')} – {r['time_end'][11:]}</b> &nbsp; "
            f"price bin <b>{D.fmt_price(r['price_low'])} – {D.fmt_price(r['price_high'])}</b> "
            f"&nbsp; {r['variable']}: longs <b>{_fmt_n(r['long'])}</b> &nbsp; "
            f"shorts <b>{_fmt_n(r['short'])}</b> {q} &nbsp; dominant: {tiers}</span>")
        if r["bucket"] != self._bucket:  # the map and the levels follow the cursor's bucket
            self._bucket = r["bucket"]
            self.cursor_ms = t_ms
            self._state.cursor += 1
            self._update_levels()

    def _update_side_panels(self):
        self._state.cursor += 1
        self._update_levels()

    def _update_levels(self):
        self._guard(self._levels)

    def _levels(self):
        import pandas as pd

        rows = D.top_levels(self.ds, self.view(), self.cursor_ms, top=TOP)
        if not rows:
            self.levels_note.object = ""
            self.table.object = pd.DataFrame({"": ["no levels at this time"]})
            return
        when = rows[0]["time"].replace("T", " ").rstrip("Z")[:16]
        self.levels_note.object = _no_oi_note(
            {"since": rows[0].get("no_oi_since"), "series": rows[0].get("no_oi_series")},
            at=f"the snapshot {when}")
        self.table.object = pd.DataFrame({
            "rank": [r["rank"] for r in rows],
            "side": [r["side"] for r in rows],
            "price": [D.fmt_price(r["price"]) for r in rows],
            "band": [f"{D.fmt_price(r['price_low'])} – {D.fmt_price(r['price_high'])}"
                     for r in rows],
            "notional": [f"{r['notional']:,.0f}" for r in rows],
            "distance": [f"{r['distance_pct']:+.2f}%" for r in rows],
            "dominant": [", ".join(r["dominant"]) for r in rows],
            "snapshot": [r["time"].replace("T", " ").rstrip("Z")[:16] for r in rows],
        })

    # -- live -------------------------------------------------------------------------------------
    def _poll(self):
        self._guard(self._poll_once)

    def _poll_once(self):
        st = self.store
        if st.changed():
            st.load_in_background()  # shared by the sessions; the pages keep answering
        k = self.w_series.value[0]
        if st.error:
            self._error(f"{st.error} (showing the last good version)" if st.ds is not None
                        else st.error)
        elif str(st.path) in self.alert.object:
            self._error(None)
        if st.version == self._versions.get(k):
            return
        self._versions[k] = st.version
        log.info("session: %s changed (version %d), redrawing", st.name, st.version)
        x = None
        try:
            x = (_ms(self._rng.x_range[0]), _ms(self._rng.x_range[1]))
        except Exception:  # noqa: BLE001
            pass
        following = x is None or self._default_x is None or \
            (abs(x[0] - self._default_x[0]) < 1 and abs(x[1] - self._default_x[1]) < 1)
        if following:  # the whole store was shown: show the whole new one
            self._rebuild()
        else:  # keep the user's zoom; the data under it is redrawn
            self._state.bump()
            self._update_side_panels()


def _state_class():
    import param

    class State(param.Parameterized):
        version = param.Integer(0)
        cursor = param.Integer(0)

        def bump(self):
            self.version += 1

    return State


def _State():
    return _state_class()()


GAP_HUE = "#8a8f98"  # the hatching of the buckets without open interest (as the PNG's)


def _no_oi_note(gap: dict, at: str = "the view's end") -> str:
    """The page's note where ``at`` lies in a gap of the open interest (as ``liqgpu levels``
    says it): nothing was opened or closed since, so the levels there look current but are
    not. HTML; empty when there is no gap."""
    import html

    notes = []
    if gap.get("since"):
        notes.append(f"no open-interest data since {gap['since']} (at {at}): no position has "
                     "been opened or closed since (only price crossings liquidate)")
    for name, since in (gap.get("series") or {}).items():
        notes.append(f"{name} has no open-interest data since {since} (at {at}): its "
                     "positions there are as they were then")
    return "".join(f"<div class='liqgpu-no-oi' style='color:#b45309;font-weight:bold'>note: "
                   f"{html.escape(n)}</div>" for n in notes)


def _gap_spans(spans):
    """Hatched time spans (a list of (start, end) ms)."""
    hv, _pn = _imports()
    a = np.array([s[0] for s in spans], dtype=np.int64).astype("datetime64[ms]")
    b = np.array([s[1] for s in spans], dtype=np.int64).astype("datetime64[ms]")
    return hv.VSpans((a, b), label=D.NO_OI_LABEL).opts(
        fill_color=GAP_HUE, fill_alpha=0.16, line_width=0, hooks=[_hatch])


def _hatch(plot, element):
    """HoloViews has no hatch option for spans: set it on the Bokeh glyph (a VStrip)."""
    glyph = plot.handles.get("glyph")
    if glyph is not None and hasattr(glyph, "hatch_pattern"):
        glyph.hatch_pattern, glyph.hatch_color = "/", GAP_HUE
        glyph.hatch_alpha, glyph.hatch_scale, glyph.hatch_weight = 0.55, 10.0, 1.0


def price_ticker():
    """Ticks of a log price axis: Bokeh's LogTicker with steps of 1, 2 or 5 and about eight
    labels (under two decades it ticks linearly)."""
    from bokeh.models import LogTicker

    return LogTicker(mantissas=[1, 2, 5], desired_num_ticks=8)


def _price_layers(line=None, candles=None, hollow: bool = False):
    """The price overlay, always the same eight layers (most of them empty), each in one fixed
    style, so that a frame's change (line to candles, solid to hollow) only changes data: a
    style mapped from data (the candle's hue from an up column) that a layer did not have when
    Bokeh built it fails to update (a numeric colour mapper given hex colours).

    ``line``: the close line's (times, closes); ``candles``: (mid, open, high, low, close) of
    whole bars. Solid candles: grey wicks through the body, filled bodies (live levels).
    ``hollow``: outlines in the candle's hue and wicks above and below the body only
    (liquidations lie inside the bar's range, under its body: the cells there stay seen)."""
    hv, _pn = _imports()
    dims = ["time", "price", "t1", "p1"]
    layers = {k: [] for k in ("wick", "body_up", "body_down", "side_up", "side_down",
                              "box_up", "box_down")}
    if candles is not None:
        m, o, hi, lo, c, half = candles
        b0, b1 = np.minimum(o, c), np.maximum(o, c)
        for name, k in (("up", c >= o), ("down", c < o)):
            box = (m[k] - half, b0[k], m[k] + half, b1[k])
            if hollow:
                mm = np.concatenate([m[k], m[k]])
                layers[f"side_{name}"] = (mm, np.concatenate([lo[k], b1[k]]), mm,
                                          np.concatenate([b0[k], hi[k]]))
                layers[f"box_{name}"] = box
            else:
                layers[f"body_{name}"] = box
        if not hollow:
            layers["wick"] = (m, lo, m, hi)
    out = hv.Curve([] if line is None else line, "time", "price").opts(color="#f4f4f8",
                                                                       line_width=1.2)
    out = out * hv.Segments(layers["wick"], dims).opts(color="#bbbbbb", line_width=1)
    for name, hue in (("up", UP_HUE), ("down", DOWN_HUE)):
        out = out * hv.Rectangles(layers[f"body_{name}"], dims).opts(
            fill_color=hue, line_color="black", line_width=0.3)
    for name, hue in (("up", UP_HUE), ("down", DOWN_HUE)):
        out = out * hv.Segments(layers[f"side_{name}"], dims).opts(color=hue, line_width=1)
        out = out * hv.Rectangles(layers[f"box_{name}"], dims).opts(
            fill_alpha=0.0, line_color=hue, line_width=1.2)
    return out


def tag_price(sel, x0: float, x1: float) -> float | None:
    """The close the page tags at the right edge of a view from ``x0`` to ``x1`` (ms): that of
    the last bucket starting before ``x1`` and ending after ``x0`` that has one; None when no
    bucket in view has a close."""
    ms = sel.times.astype("datetime64[ns]").astype(np.int64) / 1e6
    e_ms = sel.every / np.timedelta64(1, "ms")
    c = sel.prices()["close"]
    ok = np.flatnonzero(np.isfinite(c) & (ms < x1) & (ms + e_ms > x0))
    return float(c[ok[-1]]) if ok.size else None


def _money(x: float) -> str:
    """A notional as the colour key writes it: 0, 950, 12k, 3.4M, 1.2B."""
    a = abs(x)
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _end_text(ds) -> str:
    """Where a store's bars end: its data_end, else the end of its last bucket."""
    from ..store.layout import data_end, time_text

    end = data_end(ds.attrs)
    if end is None:
        end = ds["time"].values[-1].astype("datetime64[ns]") + D.every_of(ds)
    return time_text(np.datetime64(end, "m"))

