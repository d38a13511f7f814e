"""Click commands of the rendering module (registered on the ``liqgpu`` group by cli.py):
``render`` (heatmap), ``map`` (price profile at one time) and ``levels`` (the strongest bands).

Nothing heavy is imported here: datashader and matplotlib load inside the commands.
"""

from __future__ import annotations

import json
import math

import click

from ..cli_common import status, user_errors
from ..jsonsafe import json_safe
from ..outputs import check_out_file


def selection_options(fn):
    """Options shared by the three commands: which series, tiers and prices."""
    opts = [
        click.option("--series", default=None,
                     help="Series (exchange:symbol), symbol or exchange, comma-separated "
                          "[default: all; series of one asset are summed]."),
        click.option("--asset", default=None,
                     help="Base asset, e.g. BTC: sums its series across venues and contract "
                          "kinds in quote notional."),
        click.option("--leverage", default=None,
                     help="Leverage bands (v2: 10-25, or 20 for the band holding 20x) or tiers "
                          "(v1: 25,50), comma-separated [default: all]."),
        click.option("--price-min", type=float, default=None, help="Lowest price shown."),
        click.option("--price-max", type=float, default=None, help="Highest price shown."),
        click.option("--lookback", default=None,
                     help="Levels of positions opened in this window only, e.g. 24h; needs a "
                          "store estimated with --max-age equal to it."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def size_options(fn):
    fn = click.option("--height", type=int, default=900, show_default=True,
                      help="Pixels (450..8192).")(fn)
    fn = click.option("--width", type=int, default=1600, show_default=True,
                      help="Pixels (800..16384).")(fn)
    return fn


@click.command("render")
@click.argument("store", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@size_options
@click.option("--variable", type=click.Choice(["intensity", "liquidated", "realized"]),
              default="intensity", show_default=True,
              help="Live levels, estimated liquidations or realized liquidations.")
@click.option("--side", type=click.Choice(["both", "long", "short"]), default="both",
              show_default=True)
@click.option("--start", default=None, help="UTC start, e.g. 2026-01-05T00:00Z [default: first].")
@click.option("--end", default=None, help="UTC end [default: the end of the store].")
@selection_options
@click.option("--how", type=click.Choice(["linear", "log", "eq_hist"]), default="linear",
              show_default=True, help="Colour scaling.")
@click.option("--cmap", default="inferno", show_default=True, help="Matplotlib colour map.")
@click.option("--two-hues", is_flag=True, help="Longs and shorts in two hues (with --side both).")
@click.option("--candles/--no-candles", default=None,
              help="Candles instead of the close line [default: when a bucket is >= 5 px wide].")
@click.option("--no-price", is_flag=True, help="Draw neither the close line nor candles.")
@click.option("--overlay-liquidated", is_flag=True,
              help="Mark the estimated liquidations (sized by notional).")
@click.option("--no-realized", is_flag=True,
              help="Do not mark the realized liquidations of the store.")
@click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="auto",
              show_default=True,
              help="Where the cube is aggregated onto the pixels (cupy: on the GPU, datashader "
                   "aggregating CuPy arrays; auto: the GPU when one is usable).")
@user_errors
def render_cmd(store, out, width, height, variable, side, start, end, series, asset, leverage,
               price_min, price_max, lookback, how, cmap, two_hues, candles, no_price,
               overlay_liquidated, no_realized, backend):
    """Render a store's liquidation heatmap to a PNG (time across, price up, notional as colour)."""
    from .heatmap import render as draw

    draw(store, out=out, width=width, height=height, variable=variable, series=series,
         asset=asset, side=side, leverage=leverage, start=start, end=end, price_min=price_min,
         price_max=price_max, lookback=lookback, cmap=cmap, how=how, two_hues=two_hues,
         candles=candles, price_line=not no_price, overlay_realized=not no_realized,
         overlay_liquidated=overlay_liquidated, backend=backend)
    status(f"wrote {out}: {width}x{height}")


@click.command("map")
@click.argument("store", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--at", default=None, help="UTC time, e.g. 2026-01-20T12:00Z [default: the end].")
@size_options
@selection_options
@click.option("--no-cumulative", is_flag=True, help="Leave out the cumulative curves.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the map's numbers (notional per price bin, side and leverage).")
@user_errors
def map_cmd(store, out, at, width, height, series, asset, leverage, price_min, price_max,
            lookback, no_cumulative, csv_path):
    """Render the liquidation map at one time: levels per price, stacked by leverage."""
    from .liqmap import render_map

    check_out_file(csv_path, "--csv")  # before anything is drawn or written

    render_map(store, out=out, at=at, width=width, height=height, series=series, asset=asset,
               leverage=leverage, price_min=price_min, price_max=price_max, lookback=lookback,
               cumulative=not no_cumulative)
    status(f"wrote {out}: {width}x{height}")
    if csv_path:
        from .frames import profile, write_csv

        df = profile(store, at, series=series, asset=asset, leverage=leverage,
                     price_min=price_min, price_max=price_max, lookback=lookback)
        write_csv(df, csv_path)
        status(f"wrote {csv_path}: {len(df)} price bins")


@click.command("levels")
@click.argument("store", type=click.Path())
@click.option("--at", default=None, help="UTC time [default: the end of the store].")
@click.option("--top", type=int, default=10, show_default=True, help="How many bands.")
@click.option("--side", type=click.Choice(["both", "long", "short"]), default="both",
              show_default=True)
@click.option("--threshold", type=float, default=0.25, show_default=True,  # levels.DEFAULT_THRESHOLD
              help="A bin joins a band when it holds more than this share of its side's "
                   "largest bin (0: every non-empty bin).")
@click.option("--within", type=float, default=None,
              help="Only levels within this many percent of the close, e.g. 10 (v2's "
                   "strongest bands are the low-leverage ones far from the price) [default: "
                   "the whole grid].")
@selection_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Write the levels to this CSV file (one row per band).")
@user_errors
def levels_cmd(store, at, top, side, threshold, within, series, asset, leverage, price_min,
               price_max, lookback, as_json, csv_path):
    """List the strongest clusters of liquidation levels at one time."""
    from .levels import find_levels

    check_out_file(csv_path, "--csv")
    sel = dict(series=series, asset=asset, side=side, leverage=leverage, threshold=threshold,
               lookback=lookback, price_min=price_min, price_max=price_max, within=within)
    if csv_path:
        from .frames import levels, write_csv

        df = levels(store, at=at, top=top, **sel)
        write_csv(df, csv_path)
        status(f"wrote {csv_path}: {len(df)} levels")
        return
    bands = find_levels(store, at=at, top=top, **sel)
    if as_json:
        click.echo(json.dumps({"store": str(store), "levels": [json_safe(b) for b in bands]},
                              indent=2))
        return
    if not bands:
        click.echo("no liquidation levels in this selection")
        return
    from .select import fmt_leverage
    from .style import fmt_money, fmt_price

    b0 = bands[0]
    click.echo(f"levels at {b0['time']}  close {fmt_price(b0['close'])}")
    if b0.get("no_oi_since"):
        click.echo(f"note: no open-interest data since {b0['no_oi_since']}: no position has "
                   f"been opened or closed since (only price crossings liquidate)")
    for name, since in (b0.get("no_oi_series") or {}).items():
        click.echo(f"note: {name} has no open-interest data since {since}: its positions "
                   "there are as they were then")
    click.echo(f"{'#':>2}  {'side':<5}  {'price range':>23}  {'notional':>9}  {'share':>6}  "
               f"{'dist':>7}  dominant leverage")
    for b in bands:
        rng = f"{fmt_price(b['price_low'])} - {fmt_price(b['price_high'])}"
        dist = "" if math.isnan(b["distance_pct"]) else f"{b['distance_pct']:+.2f}%"
        tiers = ", ".join(f"{fmt_leverage(v)} {b['tiers'][fmt_leverage(v)[:-1]] * 100:.0f}%"
                          for v in b["dominant"])
        click.echo(f"{b['rank']:>2}  {b['side']:<5}  {rng:>23}  {fmt_money(b['notional']):>9}  "
                   f"{b['share'] * 100:5.1f}%  {dist:>7}  {tiers}")


COMMANDS = [render_cmd, map_cmd, levels_cmd]
