"""``liqgpu record`` and ``liqgpu live`` (registered on the ``liqgpu`` group by cli.py).

Venues and symbols come from options or a small TOML file::

    out = "rec"            # record: folder of the files (live: default STORE.live)
    rotate = "1h"
    [[venue]]
    exchange = "binance"
    symbols = ["BTCUSDT", "ETHUSDT"]
    # ws_url = "wss://fstream.binance.com"; rest_url = "https://fapi.binance.com"
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from ..cli_common import user_errors
from ..errors import InputError

log = logging.getLogger(__name__)


def _duration_ns(text, option) -> int:
    from .._time import parse_duration

    ns = int(round(parse_duration(text, option=option).total_seconds() * 1e9))
    if ns <= 0:
        raise InputError(f"{option}: must be > 0")
    return ns


def load_config(path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--config {p}: no such file")
    try:
        doc = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--config {p}: not TOML ({exc})") from None
    unknown = set(doc) - {"out", "rotate", "venue", "every", "grid"}
    if unknown:
        raise InputError(f"--config {p}: unknown key(s) {', '.join(sorted(unknown))}")
    venues = doc.get("venue", [])
    if not isinstance(venues, list):
        raise InputError(f"--config {p}: 'venue' must be [[venue]] tables")
    for v in venues:
        extra = set(v) - {"exchange", "symbols", "ws_url", "rest_url"}
        if extra or "exchange" not in v:
            raise InputError(f"--config {p}: a [[venue]] needs exchange and symbols (unknown: "
                             f"{', '.join(sorted(extra)) or 'none'})")
    return doc


def build_venues(config, exchange, symbols, ws_url, rest_url):
    from .venues import make_venue

    specs = []
    if config:
        specs = [(v["exchange"], list(v.get("symbols", [])), v.get("ws_url"), v.get("rest_url"))
                 for v in config.get("venue", [])]
    if exchange:
        specs.append((exchange, list(symbols), ws_url, rest_url))
    elif symbols or ws_url or rest_url:
        raise InputError("--symbol/--ws-url/--rest-url need --exchange")
    if not specs:
        raise InputError("give --exchange and --symbol, or --config with [[venue]] tables")
    names = [e for e, *_ in specs]
    if len(set(names)) != len(names):
        raise InputError(f"an exchange is given twice ({', '.join(names)}); list its symbols once")
    return [make_venue(e, s, w, r) for e, s, w, r in specs]


def _venue_options(fn):
    for opt in reversed([
        click.option("--exchange", type=click.Choice(["binance", "bybit", "okx"]), default=None,
                     help="Venue (or several through --config)."),
        click.option("--symbol", "symbols", multiple=True,
                     help="Symbol, repeatable (BTCUSDT; OKX: BTC-USDT-SWAP)."),
        click.option("--config", type=click.Path(dir_okay=False), default=None,
                     help="TOML file of [[venue]] tables (exchange, symbols, ws_url, rest_url)."),
        click.option("--ws-url", default=None, help="Websocket base URL [default: the venue's]."),
        click.option("--rest-url", default=None, help="REST base URL [default: the venue's]."),
        click.option("--rotate", default=None, help="Length of a file's period [default: 1h]."),
        click.option("--status-every", type=float, default=60.0, show_default=True,
                     help="Seconds between status lines (0: none)."),
        click.option("--timeout", type=float, default=10.0, show_default=True,
                     help="Deadline of every network operation, in seconds."),
        click.option("--idle-timeout", type=float, default=60.0, show_default=True,
                     help="Reconnect when a stream is silent this many seconds."),
        click.option("--give-up-after", default=None,
                     help="Stop (exit 2) when a stream has received nothing this long, e.g. "
                          "10m [default: keep retrying, with backoff up to 30 s, until "
                          "stopped]."),
    ]):
        fn = opt(fn)
    return fn


def _recorders(venues, out, rotate, status_every, timeout, idle_timeout, give_up_after=None,
               **hooks):
    from .recorder import Recorder

    give_up = None
    if give_up_after is not None and str(give_up_after).strip().lower() not in ("", "none"):
        give_up = _duration_ns(give_up_after, "--give-up-after") / 1e9
        if give_up <= 0:
            raise InputError("--give-up-after: give a positive duration such as 10m")
    hooks["give_up"] = give_up
    rotate_ns = _duration_ns(rotate or "1h", "--rotate")
    if rotate_ns < 2 * 60 * 10**9:
        raise InputError("--rotate: at least 2m (a bars file holds two bars or more)")
    Path(out).mkdir(parents=True, exist_ok=True)
    return [Recorder(v, out, rotate_ns=rotate_ns, status_every=status_every, timeout=timeout,
                     idle_timeout=idle_timeout, **hooks) for v in venues]


def _run(coros_factory) -> None:
    """Run until SIGINT/SIGTERM; the stop lets every task write what is complete."""

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.gather(*coros_factory(stop))

    asyncio.run(main())


def _loud(ctx) -> None:
    if not (ctx.find_root().obj or {}).get("quiet"):
        lg = logging.getLogger("liqgpu")
        if lg.level > logging.INFO or lg.level == logging.NOTSET:
            lg.setLevel(logging.INFO)


@click.command("record")
@_venue_options
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Folder of the files (bars/ and events/) [or 'out' in --config].")
@click.pass_context
@user_errors
def record_cmd(ctx, exchange, symbols, config, ws_url, rest_url, rotate, status_every, timeout,
               idle_timeout, give_up_after, out):
    """Record closed 1-minute bars (with mark price and open interest) and liquidation events
    from exchange streams into rotating Parquet files that `liqgpu ingest`, `estimate
    --realized` and `update --follow` read. Stops on SIGINT/SIGTERM after writing what is
    complete."""
    cfg = load_config(config) if config else None
    out = out or (cfg or {}).get("out")
    if not out:
        raise InputError("--out: give the folder of the files (or 'out' in --config)")
    venues = build_venues(cfg, exchange, symbols, ws_url, rest_url)
    rotate = rotate or (cfg or {}).get("rotate")
    _loud(ctx)
    recs = _recorders(venues, out, rotate, status_every, timeout, idle_timeout, give_up_after)
    _run(lambda stop: [r.run(stop) for r in recs])


@click.command("live")
@click.argument("store", type=click.Path())
@_venue_options
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Folder of the recorded files [default: STORE.live].")
@click.option("--every", default=None, help="Bucket length of a new store [default: 1m].")
@click.option("--grid", default=None, help="Grid of a new store, e.g. log:20000:300000:10 "
              "[default: half to twice the first prices, 10 bps].")
@click.option("--strict-grid", is_flag=True,
              help="Stop on new positions outside the grid instead of tracking them in 'outside'.")
@click.option("--warmup", type=int, default=2, show_default=True,
              help="Bars to record before creating a new store.")
@click.option("--max-wait", type=int, default=5, show_default=True,
              help="Minutes to wait for a lagging series before applying without it (NaN).")
@click.pass_context
@user_errors
def live_cmd(ctx, store, exchange, symbols, config, ws_url, rest_url, rotate, status_every,
             timeout, idle_timeout, give_up_after, out, every, grid, strict_grid, warmup,
             max_wait):
    """Keep STORE current: record the streams (as `liqgpu record` does) and apply each closed
    bar through `liqgpu update`'s exact, atomic path, with realized liquidations binned in."""
    from .store import LiveStore

    cfg = load_config(config) if config else None
    venues = build_venues(cfg, exchange, symbols, ws_url, rest_url)
    out = out or (cfg or {}).get("out") or f"{store}.live"
    rotate = rotate or (cfg or {}).get("rotate")
    Path(out).mkdir(parents=True, exist_ok=True)
    _loud(ctx)
    series = [(v.name, s) for v in venues for s in v.symbols]
    # the store's minutes are applied in a process of its own, warm between minutes: the
    # recorders here never wait for an update's interpreter lock, nor an update for them
    ls = LiveStore(store, out, series, every=every or (cfg or {}).get("every") or "1m",
                   grid=grid or (cfg or {}).get("grid"), allow_outside=not strict_grid,
                   warmup=warmup, max_wait=max_wait, worker=True)
    try:
        recs = _recorders(venues, out, rotate, status_every, timeout, idle_timeout,
                          give_up_after, on_bars=ls.on_bars, on_events=ls.on_events)
        _run(lambda stop: [r.run(stop) for r in recs] + [ls.run(stop)])
    finally:
        ls.close()
    lat = ls.latency()
    log.info("live: %d update(s)%s", ls.applied,
             "" if not lat.get("n") else "; latency " + ", ".join(
                 f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in lat.items()))


COMMANDS = [record_cmd, live_cmd]
