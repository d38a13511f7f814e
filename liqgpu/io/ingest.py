"""Native exchange files -> normalized tables: the formats ``liqgpu ingest`` knows, as a library.

:func:`read_format` runs one format's reader on files or folders, :func:`merge_inputs` joins
series parts (or native files given as ``FORMAT=PATH``) on one step, and :func:`write_table`
writes the result atomically and returns the report ``liqgpu ingest`` prints.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

__all__ = ["FORMATS", "merge_inputs", "read_format", "read_part", "write_table"]

#: format name -> (module, function, extra options, one-line help)
FORMATS = {
    "binance-klines": ("binance", "read_klines", ("market", "contract_value"),
                       "Binance Vision klines (USDⓈ-M or COIN-M; with or without header) -> price part."),
    "binance-mark-klines": ("binance", "read_mark_klines", ("market", "contract_value"),
                            "Binance Vision markPriceKlines -> mark_high/mark_low part."),
    "binance-metrics": ("binance", "read_metrics", ("market", "contract_value"),
                        "Binance Vision metrics (5m sum_open_interest) -> OI part."),
    "binance-liquidation-snapshot": ("binance", "read_liquidation_snapshot",
                                     ("market", "contract_value"),
                                     "Binance Vision liquidationSnapshot -> events."),
    "binance-forceorder": ("binance", "read_forceorder", ("market", "contract_value"),
                           "Binance forceOrder recordings (websocket JSON lines or CSV) -> events."),
    "bybit-liquidations": ("bybit", "read_liquidations", ("contract_value",),
                           "Bybit v5 liquidation stream recordings (JSON lines or CSV) -> events."),
    "bybit-oi": ("bybit", "read_open_interest", ("contract_value",),
                 "Bybit v5 open-interest history (JSON or CSV) -> OI part."),
    "bybit-klines": ("venues", "read_bybit_klines", (),
                     "Bybit v5 kline JSON (liqgpu fetch bybit cache or saved responses) -> price part."),
    "bybit-mark-klines": ("venues", "read_bybit_mark_klines", (),
                          "Bybit v5 mark-price-kline JSON -> mark_high/mark_low part."),
    "okx-klines": ("venues", "read_okx_klines", ("contract_value",),
                   "OKX history-candles JSON (liqgpu fetch okx cache or saved responses) -> price part."),
    "okx-mark-klines": ("venues", "read_okx_mark_klines", ("contract_value",),
                        "OKX history-mark-price-candles JSON -> mark_high/mark_low part."),
    "okx-liquidations": ("okx", "read_liquidations", ("contract_value",),
                         "OKX liquidation orders (JSON or CSV) -> events."),
    "okx-oi": ("okx", "read_open_interest", ("contract_value",),
               "OKX open-interest history (JSON or CSV) -> OI part."),
    "tardis-derivative-ticker": ("tardis", "read_derivative_ticker",
                                 ("step", "oi_unit", "kind", "contract_value"),
                                 "Tardis.dev derivative_ticker CSV -> OI + mark range part."),
    "tardis-liquidations": ("tardis", "read_liquidations", ("kind", "contract_value"),
                            "Tardis.dev liquidations CSV -> events."),
    "generic": ("generic", "read_generic",
                ("mapping", "oi_unit", "kind", "contract_value", "exchange"),
                "Any CSV/Parquet with --map FIELD=COLUMN,... -> series (or part)."),
    "generic-events": ("generic", "read_generic_events",
                       ("mapping_events", "side_means", "price_kind", "exchange_events"),
                       "Any CSV/Parquet of liquidation events with --map FIELD=COLUMN,... -> events."),
}

def read_format(fmt: str, inputs, **options):
    """Run the reader of ``fmt`` on ``inputs`` (files or folders) and return its Table."""
    import importlib

    if fmt not in FORMATS:
        raise InputError(f"{fmt!r} is not a format ({', '.join(FORMATS)})")
    mod, fn, extra, _ = FORMATS[fmt]
    reader = getattr(importlib.import_module(f"liqgpu.io.{mod}"), fn)
    # (an option's events variant, e.g. mapping_events, has its own help, the same argument)
    names = {name.removesuffix("_events") for name in extra} | {"symbol"}
    kw = {k: v for k, v in options.items() if k in names}
    return reader(list(inputs), **kw)


def read_part(path: str | Path):
    """A Parquet file written by ``liqgpu ingest`` read back as a Table."""
    import pandas as pd

    from .tables import Table

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{path}: cannot read the Parquet file ({type(exc).__name__})") from None
    if "time" not in df.columns:
        raise InputError(f"{path}: no 'time' column; not a file written by liqgpu ingest")
    kind = "events" if "side" in df.columns else "series"
    return Table(df, kind, [str(path)], len(df))


def merge_inputs(inputs, *, step=None, exchange=None, symbol=None, market=None):
    """Merge series parts on one step (``liqgpu ingest merge``).

    Each input is a Parquet part written by ``liqgpu ingest FORMAT``, or ``FORMAT=PATH`` to
    read native files directly. Returns the merged Table and the gaps per column.
    """
    from .align import merge

    tables = []
    for item in inputs:
        if "=" in item and item.split("=", 1)[0] in FORMATS:
            fmt, path = item.split("=", 1)
            opts = {"market": market} if fmt.startswith("binance") else {}
            tables.append(read_format(fmt, [path], symbol=symbol, **opts))
        elif "=" in item and not Path(item).exists() and "/" not in item.split("=", 1)[0]:
            fmt = item.split("=", 1)[0]
            raise InputError(f"{item}: {fmt!r} is not a format (FORMAT=PATH with one of "
                             f"{', '.join(sorted(FORMATS))}; or a Parquet part written by "
                             "liqgpu ingest)")
        else:
            tables.append(read_part(item))
    return merge(tables, step=step, exchange=exchange, symbol=symbol)


def write_table(table, out, fmt: str, *, overwrite: bool = False, gaps: dict | None = None) -> dict:
    """Write a Table as Parquet atomically and return its report (rows, span, coverage)."""
    from .archive import write_parquet
    from .tables import report

    if Path(out).suffix.lower() in (".csv", ".tsv", ".txt", ".json", ".jsonl", ".gz", ".zip",
                                    ".zarr", ".xlsx", ".png"):
        raise InputError(f"--out {out}: ingest writes Parquet; name the file .parquet")
    write_parquet(table.frame, out, overwrite=overwrite)
    d = report(table, out, fmt)
    if gaps:
        d["gaps_by_column"] = gaps
    return d
