"""``liqgpu evaluate`` and ``liqgpu sweep``: accuracy against realized liquidations.

Registered by :mod:`liqgpu.cli` from ``COMMANDS``. Heavy imports happen inside the commands.
Bad input is one sentence and exit code 2, with nothing written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from .cli_common import contract_options, user_errors
from .errors import InputError


def _windows(train, test):
    from .evaluate import parse_window

    return [parse_window(x, "train") for x in train] + [parse_window(x, "test") for x in test]


def _check_out_file(path, option: str) -> None:
    if path is None:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: the folder {parent} is not writable")


def _check_out_dir(path, option: str) -> None:
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{option} {path}: exists and is not a folder")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: the folder {parent} does not exist")


def _write_json(path, data) -> None:
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, p)


realized_options = [
    click.option("--realized", "realized_path", required=True, type=click.Path(dir_okay=False),
                 help="Realized liquidations: normalized events (time, side, price, notional) "
                      "or aggregates (time + long/short notional columns), Parquet or CSV."),
    click.option("--realized-columns", default=None,
                 help="Aggregates: long=COLUMN,short=COLUMN[,time=COLUMN] "
                      "[default: auto-detected]."),
    click.option("--train", multiple=True, metavar="START:END",
                 help="Training window (UTC dates; START..END when times hold ':'); repeatable."),
    click.option("--test", multiple=True, metavar="START:END",
                 help="Test window; repeatable."),
    click.option("--json", "json_path", default=None, type=click.Path(),
                 help="Write the figures as JSON to this file."),
    click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
                 help="Write JSON, a markdown summary and plots into this folder."),
]


def _add(opts):
    def deco(fn):
        for o in reversed(opts):
            fn = o(fn)
        return fn
    return deco


@click.command("evaluate")
@click.argument("store", type=click.Path())
@_add(realized_options)
@user_errors
def evaluate_cmd(store, realized_path, realized_columns, train, test, json_path, report_dir):
    """Accuracy of a store's estimate against realized liquidations, next to baselines.

    Timing: per bucket and side, estimated vs realized liquidated notional (Spearman, Pearson of
    log1p, share of realized notional in the estimate's top-10% buckets). Levels (events with
    prices): share of realized notional in the top-decile bins of the intensity profile just
    before each event, and lift over a uniform spread across the bucket's range. Baselines:
    price range x OI, |return| x OI, uniform.
    """
    from .evaluate import build_table, evaluate, format_text, load_realized, write_report
    from .store import open_store

    _check_out_file(json_path, "--json")
    _check_out_dir(report_dir, "--report")
    windows = _windows(train, test)
    ds = open_store(store)
    realized = load_realized(realized_path, realized_columns).for_store(ds)
    table = build_table(ds, realized)
    result = evaluate(ds, realized, windows or None, table=table)
    result["store"] = str(store)
    click.echo(format_text(result))
    if json_path:
        _write_json(json_path, result)
        click.echo(f"wrote {json_path}")
    if report_dir:
        from .evaluate import Window

        files = write_report(report_dir, ds, realized, result,
                             windows or [Window("all", None, None)], table,
                             title=f"Evaluation of {store}")
        click.echo(f"wrote {len(files)} files into {report_dir}")


def _tuple(cast):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return tuple(cast(x.strip()) for x in str(value).split(",") if x.strip())
        except ValueError:
            raise click.BadParameter(f"{value!r}: cannot read the comma-separated list") from None
    return parse


def _age(x: str):
    return None if x.lower() in ("none", "never") else x


@click.command("sweep")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@_add(realized_options)
@click.option("--every", default="1h", show_default=True, help="Output step of the estimate.")
@contract_options
@click.option("--exchange", default=None, help="Exchange of series files.")
@click.option("--symbol", default=None, help="Symbol of series files.")
@click.option("--tiers", callback=_tuple(float), default="3,5,10,20,25,50,75,100",
              show_default=True, help="Candidate leverage tiers; weight sets are built on them.")
@click.option("--mmr", "mmrs", callback=_tuple(float), default="0.002,0.004,0.008",
              show_default=True, help="Maintenance-margin rates to try.")
@click.option("--entry", "entries", callback=_tuple(str), default="hlc3,close,ohlc4",
              show_default=True, help="Entry prices to try.")
@click.option("--side-split", "splits", callback=_tuple(str), default="both", show_default=True,
              help="Side splits to try (taker needs volume columns).")
@click.option("--max-age", "ages", callback=_tuple(_age), default="none,12h,24h,7d,30d",
              show_default=True, help="Max ages to try.")
@click.option("--top", type=int, default=10, show_default=True, help="Settings to list.")
@click.option("--keep-best", default=None, type=click.Path(),
              help="Also write the best setting's store here.")
@user_errors
def sweep_cmd(inputs, realized_path, realized_columns, train, test, json_path, report_dir, every,
              kind, contract_size, exchange, symbol, tiers, mmrs, entries, splits, ages, top,
              keep_best):
    """Tune model parameters on --train windows, report default and best on --test windows.

    INPUTS are series files (or one store whose output step equals its model step). The
    objective, maximised on the train windows only, is the mean over longs and shorts of the
    per-bucket Spearman correlation of estimated vs realized liquidated notional.
    """
    from .evaluate import evaluate, format_text, load_realized, write_report
    from .model.params import Params
    from .series import load_series
    from .store import check_target, is_store
    from .sweep import SweepSpace, evaluate_params, ranking_rows, run_sweep, series_from_store

    _check_out_file(json_path, "--json")
    _check_out_dir(report_dir, "--report")
    if keep_best:
        check_target(keep_best, overwrite=False)
    windows = _windows(train, test)
    train_w = [w for w in windows if w.role == "train"]
    if not train_w:
        raise InputError("--train: give at least one training window; the sweep tunes on it")
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        if not is_store(Path(inputs[0])):
            raise InputError(f"{inputs[0]}: is a folder but not a liqgpu store")
        series = series_from_store(inputs[0])
    else:
        series = [load_series(p, exchange=exchange, symbol=symbol, kind=kind,
                              contract_size=contract_size) for p in inputs]
    realized = load_realized(realized_path, realized_columns)
    space = SweepSpace(tiers=tiers, mmr=mmrs, entry=entries, side_split=splits, max_age=ages)
    t0 = time.perf_counter()
    res = run_sweep(series, realized, train_w, space=space, every=every,
                    check=windows)
    click.echo(f"swept {res.n_settings} settings ({res.n_engine_runs} engine runs) in "
               f"{res.seconds:.1f}s; objective: mean over sides of train Spearman")
    rows = ranking_rows(res, top)
    for r in rows:
        click.echo(f"  #{r['rank']:<3} {r['objective']:+.4f} (log1p r {r['pearson_log1p']:+.3f})"
                   f"  {r['weights_name']:<16} mmr {r['mmr']:g} entry {r['entry']} split "
                   f"{r['side_split']} max_age {r['max_age']}")
    default_res, _ = evaluate_params(series, Params(), realized, windows, every=every)
    best_res, best_ds = evaluate_params(series, res.best, realized, windows, every=every,
                                        keep=keep_best)
    click.echo("\n== default parameters")
    click.echo(format_text(default_res))
    click.echo("\n== best parameters: " + json.dumps(res.best.to_attrs()))
    click.echo(format_text(best_res))
    out = {"objective": "mean over long and short of the per-bucket Spearman correlation of "
                        "estimated vs realized liquidated notional on the train windows",
           "n_settings": res.n_settings, "n_engine_runs": res.n_engine_runs,
           "seconds": round(time.perf_counter() - t0, 2), "ranking": rows,
           "best_params": res.best.to_attrs(), "default": default_res, "best": best_res}
    if json_path:
        _write_json(json_path, out)
        click.echo(f"wrote {json_path}")
    if report_dir:
        import tempfile

        from .api import estimate
        from .evaluate import build_table
        from .store import open_store

        folder = Path(report_dir)
        with tempfile.TemporaryDirectory(prefix="liqgpu-sweep-") as tmp:
            for label, params, result in (("default", Params(), default_res),
                                          ("best", res.best, best_res)):
                if label == "best" and best_ds is not None:
                    ds = best_ds
                else:
                    estimate(series, params=params, every=every, backend="numpy",
                             out=Path(tmp) / f"{label}.zarr")
                    ds = open_store(Path(tmp) / f"{label}.zarr")
                write_report(folder / label, ds, realized, result, windows,
                             build_table(ds, realized), title=f"Sweep: {label} parameters")
        _write_json(folder / "sweep.json", out)
        click.echo(f"wrote {report_dir}")


COMMANDS = [evaluate_cmd, sweep_cmd]
