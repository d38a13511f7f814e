"""The ``liqgpu`` command line: one click group; commands call the public API only.

Bad input of any kind is one sentence on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import click

from .errors import InputError

log = logging.getLogger("liqgpu")


from .cli_common import (Group, UserError, contract_options, series_limit_options,  # noqa: E402,F401
                         status, user_errors)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else
                                           logging.INFO if verbose == 1 else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%dT%H:%M:%SZ"))
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger("liqgpu")
    root.handlers[:] = [handler]
    root.setLevel(level)


class _Main(Group):
    """The group, with the commands that live beside their modules (rendering, exchange data,
    evaluation, live recording, the viewer) registered on first need: ``liqgpu estimate``
    starts without importing them."""

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and _register_plugins():
            cmd = super().get_command(ctx, name)
        return cmd

    def list_commands(self, ctx):
        _register_plugins()
        return super().list_commands(ctx)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.version_option(package_name="liqgpu")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Estimate crypto-futures liquidation levels and render liquidation heatmaps."""
    _setup_logging(verbose, quiet)
    _exit_cleanly_on_sigterm()
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C: writers remove their temporary folders on the way out."""
    import signal
    import threading

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _progress_enabled() -> bool:
    ctx = click.get_current_context()
    return not ctx.find_root().obj.get("quiet", False) and sys.stderr.isatty()


# -- shared options ---------------------------------------------------------------------------
def model_options(fn):
    """Every model parameter as an option (v2 by default; defaults from MODEL.md)."""
    opts = [
        click.option("--model", type=click.Choice(["v2", "v1"]), default="v2", show_default=True,
                     help="Estimation model (MODEL.md): v2 'churn' (default) or v1."),
        click.option("--leverages", default=None,
                     help="Leverage tiers: log:LMIN:LMAX:K or a comma-separated list "
                          "[default: v2 log:2:150:40; v1 5,10,25,50,100]."),
        click.option("--weights", default=None,
                     help="Share of new OI per tier: power:ALPHA (v2) or a list summing to 1 "
                          "[default: v2 power:2; v1 0.15,0.3,0.25,0.2,0.1]."),
        click.option("--bands", default=None,
                     help="v2: leverage band edges of the output [default: 2,10,25,50,100,150]."),
        click.option("--churn", type=float, default=None,
                     help="v2: turnover rate per hour [default: 0.3]."),
        click.option("--mmr", type=float, default=None,
                     help="Maintenance-margin rate [default: 0.004]."),
        click.option("--entry", default=None,
                     help="Entry price of new positions: close, hlc3, ohlc4, vwap, or range:N "
                          "(v2) [default: v2 close; v1 hlc3]."),
        click.option("--side-split", type=click.Choice(["both", "taker"]), default=None,
                     help="How new OI splits between longs and shorts [default: both]."),
        click.option("--closure", type=click.Choice(["proportional", "none"]), default=None,
                     help="What a fall in OI does to live positions [default: proportional]."),
        click.option("--max-age", default=None,
                     help="Positions older than this expire (e.g. 24h, 7d) [default: never]."),
        click.option("--grid", "grid", default=None,
                     help="log:START:STOP:BPS or linear:START:STOP:STEP "
                          "[default: log, 10 bps, covering every level]."),
        click.option("--step", default=None, help="Model step, e.g. 1m, 5m [default: the input's]."),
        click.option("--every", default=None, help="Output step, e.g. 1h [default: 1h]."),
        click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="auto",
                     show_default=True, help="Array backend."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _params(model, leverages, weights, bands, churn, mmr, entry, side_split, closure, max_age):
    from .model.registry import params_from_options

    return params_from_options(model, leverages=leverages, weights=weights, bands=bands,
                               churn=churn, mmr=mmr, entry=entry, side_split=side_split,
                               closure=closure, max_age=max_age)


# -- commands -----------------------------------------------------------------------------------
@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(), help="Store to write (STORE.zarr).")
@contract_options
@click.option("--realized", "realized", multiple=True, type=click.Path(dir_okay=False),
              help="Normalized liquidation events (liqgpu ingest) to bin into 'realized'; "
                   "repeatable.")
@click.option("--allow-unmatched", is_flag=True,
              help="Leave out realized events of no series or outside the time range "
                   "[default: an error].")
@click.option("--unknown-side", type=click.Choice(["skip", "split"]), default="skip",
              show_default=True,
              help="Realized events whose side is not published (Hyperliquid's): left out, "
                   "or half to each side.")
@click.option("--exchange", default=None, help="Exchange name [default: from the file].")
@click.option("--symbol", default=None, help="Symbol [default: from the file or its name].")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--workers", type=int, default=None,
              help="Run one Dask task per series on a local cluster of N worker processes.")
@click.option("--scheduler", default=None,
              help="Run one Dask task per series on the cluster at this address (tcp://HOST:PORT).")
@click.option("--origin", type=click.Choice(["clock", "start"]), default="clock",
              show_default=True,
              help="Output buckets start on the clock (1h on the hour, 30m on :00/:30, UTC) or "
                   "at the first bar.")
@click.option("--resume", is_flag=True,
              help="With --workers/--scheduler: continue an interrupted run, skipping the series "
                   "already complete.")
@series_limit_options
@model_options
@user_errors
def estimate(inputs, out, kind, contract_size, realized, allow_unmatched, unknown_side, exchange,
             symbol, overwrite, workers,
             scheduler, origin, resume, max_bars, max_gap, model, leverages, weights, bands, churn,
             mmr, entry, side_split,
             closure, max_age, grid, step, every, backend):
    """Estimate liquidation levels from normalized series files into a zarr store."""
    from .api import estimate_files

    params = _params(model, leverages, weights, bands, churn, mmr, entry, side_split, closure,
                     max_age)
    t = time.perf_counter()
    ds, tasks = estimate_files(inputs, out, params=params, exchange=exchange, symbol=symbol,
                               kind=kind, contract_size=contract_size, step=step,
                               max_bars=max_bars, max_gap=max_gap, grid=grid, every=every,
                               backend=backend, overwrite=overwrite, origin=origin,
                               realized=realized, allow_unmatched=allow_unmatched,
                               workers=workers, scheduler=scheduler, resume=resume,
                               progress=_progress_enabled(), unknown_side=unknown_side)
    how = f" (Dask, {tasks} series)" if tasks else ""
    status(f"wrote {out}: {_describe(ds)} in {time.perf_counter() - t:.2f}s{how}")
    if "realized" in ds:
        r = ds.attrs.get("realized_summary", {})
        split = ("; events of unknown side half to each side"
                 if r.get("unknown_side_rule") == "split" else "")
        status(f"realized: {r.get('binned', 0)} of {r.get('events', 0)} events binned "
               f"({r.get('notional_binned', 0.0):,.0f} quote){split}")


@main.command()
@click.argument("store", type=click.Path())
@click.argument("inputs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--exchange", default=None, help="Exchange name [default: from the file].")
@click.option("--symbol", default=None, help="Symbol [default: from the file or its name].")
@click.option("--allow-outside", is_flag=True,
              help="Accept new levels beyond the store's grid (tracked in 'outside').")
@click.option("--follow", "follow", type=click.Path(file_okay=False), default=None,
              help="Watch this folder and apply new series files as they arrive (each poll's "
                   "in the order of their bars; a file refused twice as it is is logged and "
                   "left alone).")
@click.option("--interval", default="10s", show_default=True, help="Polling interval of --follow.")
@click.option("--max-polls", type=int, default=None,
              help="Stop --follow after this many polls [default: run until interrupted].")
@click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="auto",
              show_default=True, help="Array backend of the engine.")
@series_limit_options
@user_errors
def update(store, inputs, exchange, symbol, allow_outside, follow, interval, max_polls, backend,
           max_bars, max_gap):
    """Append new bars to STORE without recomputing its history (exactly as a full estimate)."""
    import numpy as np

    from .series import load_series
    from .updating import follow as follow_folder
    from .updating import update as run

    if not inputs and follow is None:
        raise InputError("give new series files, or --follow FOLDER")
    if inputs:
        series = [load_series(p, exchange=exchange, symbol=symbol, max_bars=max_bars,
                              max_gap=max_gap) for p in inputs]
        t = time.perf_counter()
        ds = run(store, series, allow_outside=allow_outside, progress=_progress_enabled(),
                 max_gap=max_gap, backend=backend)
        times = ds["time"].values  # the time axis only: no need to read the cubes for one line
        span = " .. ".join(str(np.datetime_as_string(x, unit="s")) + "Z"
                           for x in (times[0], times[-1]))
        status(f"updated {store}: now {span} ({times.size} buckets) in "
               f"{time.perf_counter() - t:.2f}s")
    if follow is not None:
        n = follow_folder(store, follow, interval=interval, max_polls=max_polls,
                          allow_outside=allow_outside, backend=backend,
                          on_update=lambda f: status(f"applied {f}"))
        status(f"follow: {n} file(s) applied")


@main.command()
@click.option("--out", "-o", default="liqgpu-demo", show_default=True, type=click.Path(),
              help="Folder for demo.zarr and demo.png.")
@click.option("--days", type=float, default=30, show_default=True, help="Days of 1-minute bars.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the market.")
@click.option("--every", default="15m", show_default=True, help="Output step.")
@click.option("--width", type=int, default=1600, show_default=True,
              help="Heatmap image width in pixels.")
@click.option("--height", type=int, default=900, show_default=True,
              help="Heatmap image height in pixels.")
@click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="auto",
              show_default=True)
@click.option("--model", type=click.Choice(["v2", "v1"]), default="v2", show_default=True,
              help="Estimation model (MODEL.md).")
@click.option("--max-age", default=None,
              help="Positions older than this expire (e.g. 24h); lets render --lookback work.")
@user_errors
def demo(out, days, seed, every, width, height, backend, model, max_age):
    """Synthetic market -> estimate -> store -> heatmap PNG (no network, no files needed)."""
    from .demo import demo as run

    r = run(out, days=days, seed=seed, every=every, width=width, height=height, backend=backend,
            model=model, max_age=max_age, progress=_progress_enabled())
    status(f"wrote {r['store']}: {_describe(r['dataset'])} (estimated in {r['estimate_s']:.2f}s)")
    status(f"wrote {r['png']}: {width}x{height} heatmap ({r['total_s']:.2f}s in all)")


@main.command()
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--verify", is_flag=True,
              help="Also check the store's integrity (before anything is printed): every chunk "
                   "in its manifest present with its size, every chunk decoding (checksums); "
                   "exit 2 naming a damaged array, else a 'verified' line.")
@user_errors
def info(store, as_json, verify):
    """Dimensions, parameters, time and price range and totals of a store."""
    from .api import store_info

    d = store_info(store, verify=verify)
    checked = d.get("verified")
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"store     {store}")
    click.echo(f"series    {', '.join(d['series'])}")
    click.echo("dims      " + ", ".join(f"{k}={v}" for k, v in d["dims"].items()))
    end = f", bars to {d['data_end']}" if d.get("data_end") else ""
    click.echo(f"time      {d['time_start']} .. {d['time_end']} (bucket opens; every "
               f"{d['every']}, model step {d['step']}{end})")
    click.echo(f"price     {d['price_min']:.6g} .. {d['price_max']:.6g} ({d['grid']})")
    p = d["params"]
    if p["model"] == "v2":
        lev = p.get("leverages_spec") or ",".join(f"{x:g}" for x in p["leverages"])
        w = p.get("weights_spec") or ",".join(f"{x:.4g}" for x in p["weights"])
        click.echo(f"model     v2: {len(p['leverages'])} tiers {lev} weights {w} bands "
                   f"{','.join(f'{x:g}' for x in p['bands'])} churn {p['churn']:g}/h "
                   f"mmr {p['mmr']} entry {p['entry']} side_split {p['side_split']} "
                   f"closure {p['closure']} max_age {p['max_age']}")
    else:
        click.echo(f"model     {p['model']}: leverages {p['leverages']} weights {p['weights']} "
                   f"mmr {p['mmr']} entry {p['entry']} side_split {p['side_split']} "
                   f"closure {p['closure']} max_age {p['max_age']}")
    unit = f" {d['quote']}" if d.get("quote") else ""
    for k, v in d["totals"].items():
        click.echo(f"{k:<19} long {v['long']:.6g}{unit}  short {v['short']:.6g}{unit}")
    click.echo(f"engine    liqgpu {d['engine_version']}, fingerprint {d['fingerprint'][:23]}...")
    if checked is not None:
        how = "manifest and checksums" if checked["manifest"] else \
            "checksums only (no manifest: written by an older liqgpu)"
        click.echo(f"verified  {checked['arrays']} arrays, {checked['chunks']} chunks: intact "
                   f"({how})")


@main.command()
@click.argument("store", type=click.Path())
@click.argument("url")
@click.option("--overwrite", is_flag=True, help="Replace a liqgpu store already at URL.")
@user_errors
def publish(store, url, overwrite):
    """Upload a local store to object storage (s3://, gs://, az://, any fsspec URL).

    Every object goes up before the root metadata, so readers see the whole store or none.
    """
    from .store.remote import publish as upload

    t = time.perf_counter()
    upload(store, url, overwrite=overwrite, progress=_progress_enabled())
    status(f"published {store} to {url} in {time.perf_counter() - t:.2f}s")


def _describe(ds) -> str:
    s = ds.sizes
    what = "bands" if ds.attrs.get("model") == "v2" else "tiers"
    return (f"{s['series']} series x {s['time']} buckets x {s['price']} bins x "
            f"{s['leverage']} {what} x 2 sides")


_PLUGINS_DONE = []


def _register_plugins() -> bool:
    """Add the commands that live beside their module (rendering, exchange data, evaluation,
    live recording, the viewer); False when already done."""
    if _PLUGINS_DONE:
        return False
    _PLUGINS_DONE.append(True)
    from .render.commands import COMMANDS as render_commands

    for cmd in render_commands:
        main.add_command(cmd)
    try:
        from .io.commands import COMMANDS as io_commands
    except ImportError:  # exchange-data commands not built yet
        io_commands = []
    for cmd in io_commands:
        main.add_command(cmd)
    from .evaluate.commands import COMMANDS as evaluate_commands

    for cmd in evaluate_commands:
        main.add_command(cmd)
    from .live.commands import COMMANDS as live_commands  # record, live

    for cmd in live_commands:
        main.add_command(cmd)
    from .web.commands import serve  # the browser viewer

    main.add_command(serve)
    return True


if __name__ == "__main__":  # pragma: no cover
    main()
