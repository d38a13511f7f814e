"""Click commands for exchange data: ``liqgpu ingest FORMAT ...``, ``liqgpu ingest merge`` and
``liqgpu fetch binance`` (registered on the ``liqgpu`` group by cli.py)."""

from __future__ import annotations

import json
import logging
import sys

import click

from ..cli_common import user_errors
from .ingest import FORMATS, merge_inputs, read_format, write_table

log = logging.getLogger(__name__)

_OPTIONS = {
    "market": click.option("--market", type=click.Choice(["um", "cm"]), default=None,
                           help="USDⓈ-M or COIN-M [default: from the symbol]."),
    "contract_value": click.option("--contract-value", type=float, default=None,
                                   help="Contract value (inverse: USD; linear: base units)."),
    "step": click.option("--step", default="1m", show_default=True,
                         help="Bar step to bucket ticks into."),
    "oi_unit": click.option("--oi-unit", type=click.Choice(["base", "contracts", "quote"]),
                            default="base", show_default=True, help="Unit of the OI column."),
    "kind": click.option("--kind", type=click.Choice(["linear", "inverse"]), default="linear",
                         show_default=True, help="Contract kind."),
    "mapping": click.option("--map", "mapping", default="",
                            help="FIELD=COLUMN pairs, e.g. time=open_time_ms,oi=oi_usd."),
    "side_means": click.option("--side-means", type=click.Choice(["position", "order"]),
                               default="position", show_default=True,
                               help="Side column: liquidated position (long/short) or "
                                    "liquidation order (buy/sell; sell = long liquidated)."),
    "price_kind": click.option("--price-kind", type=click.Choice(["bankruptcy", "order", "average"]),
                               default="order", show_default=True,
                               help="Which price the file publishes."),
    "exchange": click.option("--exchange", default=None, help="Exchange name [default: column]."),
    "mapping_events": click.option(
        "--map", "mapping", default="",
        help="FIELD=COLUMN pairs for the fields time, exchange, symbol, side, price, qty, "
             "notional, price_kind; e.g. time=ts,side=dir,notional=usd."),
    "exchange_events": click.option(
        "--exchange", default=None,
        help="Exchange: where the file has an exchange column, keep only its rows; else the "
             "exchange of every row [default: the column]."),
}


def _emit(table, out, fmt, as_json, overwrite, extra=None):
    from .tables import format_report

    d = write_table(table, out, fmt, overwrite=overwrite, gaps=extra)
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
    else:
        click.echo(format_report(d))
        if extra:
            click.echo("coverage  " + ", ".join(f"{k} {v}" for k, v in extra.items()))


@click.group("ingest")
def ingest():
    """Convert native exchange files (plain, .zip or .gz; files or folders) to normalized Parquet.

    Series formats give a part (price, mark or OI) or a whole series; combine parts with
    ``liqgpu ingest merge``. Event formats give realized liquidations.
    """


def _make_command(fmt: str):
    mod, fn, extra, help_text = FORMATS[fmt]

    @click.argument("inputs", nargs=-1, required=True, type=click.Path())
    @click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
                  help="Parquet file to write.")
    @click.option("--symbol", default=None, help="Symbol [default: from the files]; for event "
                  "files holding many symbols, keep only this one.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
    @user_errors
    def cmd(inputs, out, symbol, as_json, overwrite, **options):
        table = read_format(fmt, inputs, symbol=symbol, **options)
        _emit(table, out, fmt, as_json, overwrite)

    for name in reversed(extra):
        cmd = _OPTIONS[name](cmd)
    return click.command(fmt, help=help_text)(cmd)


for _fmt in FORMATS:
    ingest.add_command(_make_command(_fmt))


@ingest.command("merge")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Series Parquet to write.")
@click.option("--step", default=None, help="Model step, e.g. 1m, 5m [default: the coarsest input's].")
@click.option("--symbol", default=None, help="Symbol [default: the parts'].")
@click.option("--exchange", default=None, help="Exchange [default: the parts'].")
@click.option("--market", type=click.Choice(["um", "cm"]), default=None,
              help="Binance market for FORMAT=PATH inputs [default: from the symbol].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@user_errors
def merge_cmd(inputs, out, step, symbol, exchange, market, as_json, overwrite):
    """Merge series parts (klines, mark prices, OI at any steps, or OI snapshots at irregular
    times: the last one in each bar) into one series on --step.

    Each INPUT is a Parquet part written by `liqgpu ingest FORMAT`, or FORMAT=PATH to read
    native files directly, e.g. binance-klines=raw/klines/ binance-metrics=raw/metrics/.
    Resampling: open=first, high=max, low=min, close=last, oi=the last value the bar holds,
    volumes summed, each over the bars it holds (the first and last bar may hold fewer than a
    whole step's); a bar with no OI value stays NaN (a gap): OI is never carried into a later
    bar.
    """
    table, gaps = merge_inputs(inputs, step=step, exchange=exchange, symbol=symbol,
                               market=market)
    _emit(table, out, "merge", as_json, overwrite, extra=gaps)


@click.group("fetch")
def fetch():
    """Download public exchange archives."""


@fetch.command("binance")
@click.argument("symbol")
@click.option("--start", required=True, help="First day (YYYY-MM-DD, UTC).")
@click.option("--end", required=True, help="Last day, inclusive (YYYY-MM-DD, UTC).")
@click.option("--market", type=click.Choice(["um", "cm"]), default=None,
              help="USDⓈ-M or COIN-M [default: from the symbol].")
@click.option("--data", "datatypes", default="klines,metrics,markPriceKlines", show_default=True,
              help="Comma-separated: klines, markPriceKlines, indexPriceKlines, "
                   "premiumIndexKlines, metrics, liquidationSnapshot.")
@click.option("--interval", default="1m", show_default=True, help="Kline interval.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Folder.")
@click.option("--base-url", default="https://data.binance.vision", show_default=True)
@click.option("--monthly/--daily-only", default=True, show_default=True,
              help="Use monthly archives for whole past months.")
@click.option("--retries", type=int, default=3, show_default=True,
              help="Attempts per archive (connection errors, 5xx, checksum mismatch).")
@click.option("--backoff", type=float, default=0.5, show_default=True, hidden=True,
              help="Seconds before the first retry (doubles each time).")
@click.option("--skip-missing", is_flag=True, help="Log and skip archives that do not exist (404).")
@click.option("--timeout", type=click.FloatRange(min=0.01), default=60.0, show_default=True,
              help="Seconds per network read; a whole download must end within 10 times this.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@user_errors
def fetch_binance(symbol, start, end, market, datatypes, interval, out, base_url, monthly,
                  retries, backoff, skip_missing, timeout, as_json):
    """Download Binance Vision archives of SYMBOL, verify checksums, resume where it stopped."""
    from .binance import market_of
    from .fetch import fetch_binance as run

    ctx = click.get_current_context()
    quiet = bool((ctx.find_root().obj or {}).get("quiet", False))
    summary = run(symbol, start=start, end=end, market=market_of(symbol, market),
                  datatypes=[d.strip() for d in datatypes.split(",") if d.strip()],
                  interval=interval, out=out, base_url=base_url, monthly=monthly,
                  retries=retries, backoff=backoff, skip_missing=skip_missing,
                  progress=not quiet and sys.stderr.isatty(), timeout=timeout)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"{out}: {summary['downloaded']} downloaded, {summary['present']} already "
                   f"complete, {summary['missing']} missing, {summary['bytes']} bytes")
        for folder in summary["folders"]:
            click.echo(f"  {folder}")


def _venue_command(venue: str, example: str):
    """``liqgpu fetch bybit|okx``: REST history into a cache and a normalized series (see
    :mod:`liqgpu.io.venues`)."""
    from .venues import DATASETS, DEFAULTS

    @click.option("--symbol", required=True, help=f"Instrument, e.g. {example}.")
    @click.option("--start", required=True, help="First day (YYYY-MM-DD, UTC).")
    @click.option("--end", required=True, help="Last day, inclusive (YYYY-MM-DD, UTC).")
    @click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Folder.")
    @click.option("--interval", default="1m", show_default=True,
                  help="Kline interval: 1m, 5m, 15m, 30m, 1h, 4h (OI: the same, at least 5m).")
    @click.option("--step", default=None, help="Series step [default: --interval].")
    @click.option("--data", "datatypes", default=",".join(DATASETS[venue]), show_default=True,
                  help="Comma-separated datasets to fetch.")
    @click.option("--base-url", default=DEFAULTS[venue]["base_url"], show_default=True)
    @click.option("--timeout", type=float, default=30.0, show_default=True,
                  help="Seconds per request.")
    @click.option("--deadline", type=float, default=3600.0, show_default=True,
                  help="Seconds for the whole run; a rerun resumes.")
    @click.option("--rate", type=float, default=DEFAULTS[venue]["rate"], show_default=True,
                  help="Requests per second.")
    @click.option("--retries", type=int, default=5, show_default=True,
                  help="Attempts per request (429, 5xx, connection errors, truncated bodies).")
    @click.option("--backoff", type=float, default=0.5, show_default=True, hidden=True)
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
    @user_errors
    def cmd(symbol, start, end, out, interval, step, datatypes, base_url, timeout, deadline, rate,
            retries, backoff, as_json, category=None, contract_value=None):
        from .venues import fetch_venue

        ctx = click.get_current_context()
        quiet = bool((ctx.find_root().obj or {}).get("quiet", False))
        s = fetch_venue(venue, symbol, start=start, end=end, out=out, interval=interval,
                        step=step, category=category, contract_value=contract_value,
                        datasets=[d.strip() for d in datatypes.split(",") if d.strip()],
                        base_url=base_url, timeout=timeout, deadline=deadline, rate=rate,
                        retries=retries, backoff=backoff,
                        progress=not quiet and sys.stderr.isatty())
        if as_json:
            click.echo(json.dumps(s, indent=2, default=str))
            return
        click.echo(f"{out}: {s['fetched']} day part(s) fetched, {s['present']} already complete, "
                   f"{s['incomplete']} not over yet; {s['requests']} request(s), "
                   f"{s['retries']} retried")
        if s.get("series"):
            click.echo(f"series    {s['series']} ({s['rows']} bars; "
                       + ", ".join(f"{k} {v}" for k, v in s["coverage"].items()) + ")")
        if s.get("events"):
            click.echo(f"events    {s['events']} ({s['event_rows']} liquidations)")
        for n in s["notes"]:
            click.echo(f"note      {n}")

    if venue == "bybit":
        cmd = click.option("--category", type=click.Choice(["linear", "inverse"]), default=None,
                           help="Bybit category [default: from the symbol].")(cmd)
    else:
        cmd = click.option("--contract-value", type=float, default=None,
                           help="OKX ctVal (linear: base units; inverse: USD) when not built in."
                           )(cmd)
    helps = {"bybit": "Download Bybit v5 klines, mark-price klines and open-interest history "
                      "(REST) into a normalized series; resumable.",
             "okx": "Download OKX klines, mark-price klines, open-interest history and recent "
                    "liquidation orders (REST) into a normalized series and events; resumable."}
    return click.command(venue, help=helps[venue])(cmd)


fetch.add_command(_venue_command("bybit", "BTCUSDT or BTCUSD"))
fetch.add_command(_venue_command("okx", "BTC-USDT-SWAP or BTC-USD-SWAP"))


COMMANDS = [ingest, fetch]
