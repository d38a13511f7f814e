"""``liqgpu evaluate`` and ``liqgpu sweep``: accuracy against realized liquidations.

Registered by :mod:`liqgpu.cli` from ``COMMANDS``. Heavy imports happen inside the commands.
Bad input is one sentence and exit code 2, with nothing written.
"""

from __future__ import annotations


import click

from ..cli_common import contract_options, user_errors

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


bootstrap_options = [
    click.option("--bootstrap", "draws", type=click.IntRange(min=0), default=2000,
                 show_default=True,
                 help="Bootstrap draws over UTC days for the confidence interval of "
                      "'estimate minus best baseline' Spearman per side (0: none)."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed of the bootstrap."),
]


@click.command("evaluate")
@click.argument("store", type=click.Path())
@_add(realized_options)
@_add(bootstrap_options)
@click.option("--allow-unmatched", is_flag=True,
              help="Leave out events of series the store does not hold [default: an error].")
@click.option("--asset", default=None,
              help="Evaluate the series of this base asset (e.g. BTC), summed across venues "
                   "[default: every series of the store].")
@user_errors
def evaluate_cmd(store, realized_path, realized_columns, train, test, json_path, report_dir,
                 draws, seed, allow_unmatched, asset):
    """Accuracy of a store's estimate against realized liquidations, next to baselines.

    The store may hold model v2 (the default) or v1; its parameters are reported. Timing: per
    bucket and side, estimated vs realized liquidated notional (Spearman, Pearson of log1p,
    share of realized notional in the estimate's top-10% buckets), the Spearman of per-day sums
    (complete UTC days) and a bootstrap over days (resampled with replacement) giving a 95%
    interval for "estimate minus best baseline" Spearman per side. Levels (events with prices):
    share of realized notional in the top-decile bins of the intensity profile just before each
    event, and lift over a uniform spread across the bucket's range, for the events whose price
    lies in their bucket's [low, high]. Baselines: price range x OI, |return| x OI, uniform. A
    store bucket its bars do not fill whole (ending after the store's data_end, or starting
    before its data_start where the store has one) is left out.
    """
    from . import format_text
    from .run import evaluate_store

    result = evaluate_store(store, realized_path, columns=realized_columns, train=train,
                            test=test, asset=asset, allow_unmatched=allow_unmatched, draws=draws,
                            seed=seed, json_path=json_path, report_dir=report_dir)
    click.echo(format_text(result))
    if json_path:
        click.echo(f"wrote {json_path}")
    if report_dir:
        click.echo(f"wrote {len(result['files']) - bool(json_path)} files into {report_dir}")


@click.command("sweep")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@_add(realized_options)
@click.option("--model", type=click.Choice(["v2", "v1"]), default="v2", show_default=True,
              help="Model to tune: v2 (churn; the default) or v1.")
@click.option("--every", default="1h", show_default=True, help="Output step of the estimate.")
@contract_options
@click.option("--exchange", default=None, help="Exchange of series files.")
@click.option("--symbol", default=None, help="Symbol of series files.")
@click.option("--churn", "churns", default=None,
              help="v2: churn rates per hour to try [default: 0.1,0.3,1].")
@click.option("--power", "powers", default=None,
              help="v2: weight powers α to try (weights power:α) [default: 1,2,3].")
@click.option("--tier-count", "tier_counts", default=None,
              help="v2: tier counts K to try (tiers log:2:150:K) [default: 20,40].")
@click.option("--tiers", default=None,
              help="v1: candidate leverage tiers; weight sets are built on them "
                   "[default: 3,5,10,20,25,50,75,100].")
@click.option("--mmr", "mmrs", default=None,
              help="Maintenance-margin rates to try [default: v2 0.004; v1 0.002,0.004,0.008].")
@click.option("--entry", "entries", default=None,
              help="Entry prices to try [default: v2 close,hlc3,range:3; v1 hlc3,close,ohlc4].")
@click.option("--side-split", "splits", default=None,
              help="Side splits to try (taker needs volume columns) [default: both].")
@click.option("--max-age", "ages", default=None,
              help="Max ages to try [default: v2 none; v1 none,12h,24h,7d,30d].")
@_add(bootstrap_options)
@click.option("--top", type=int, default=10, show_default=True, help="Settings to list.")
@click.option("--keep-best", default=None, type=click.Path(),
              help="Also write the best setting's store here.")
@click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="numpy",
              show_default=True, help="Array backend of the engine runs.")
@user_errors
def sweep_cmd(inputs, realized_path, realized_columns, train, test, json_path, report_dir, model,
              every, kind, contract_size, exchange, symbol, churns, powers, tier_counts, tiers,
              mmrs, entries, splits, ages, draws, seed, top, keep_best, backend):
    """Tune model parameters on --train windows, report default and best on --test windows.

    INPUTS are series files (or one store whose output step equals its model step). The
    objective, maximised on the train windows only (test windows are never used to pick), is
    the mean over longs and shorts of the per-bucket Spearman correlation of estimated vs
    realized liquidated notional. Model v2 (default) sweeps churn, weight power, tier count and
    entry; model v1 (--model v1) sweeps weight sets over --tiers, mmr, entry and max age.
    """
    from . import format_text
    from .run import sweep_files

    r = sweep_files(inputs, realized_path, columns=realized_columns, train=train, test=test,
                    model=model, every=every, kind=kind, contract_size=contract_size,
                    exchange=exchange, symbol=symbol, churns=churns, powers=powers,
                    tier_counts=tier_counts, tiers=tiers, mmrs=mmrs, entries=entries,
                    splits=splits, ages=ages, draws=draws, seed=seed, top=top,
                    keep_best=keep_best, backend=backend, json_path=json_path,
                    report_dir=report_dir)
    click.echo(f"model {model}: swept {r['n_settings']} settings ({r['n_engine_runs']} engine "
               f"runs) in {r['sweep_s']:.1f}s; objective: mean over sides of train Spearman")
    for line in r["ranking_text"]:
        click.echo(line)
    click.echo("\n== default parameters")
    click.echo(format_text(r["default"]))
    if r["best_params"] == r.get("default_params"):
        click.echo("\n== best parameters: the defaults (above)")
    else:
        click.echo("\n== best parameters, as estimate options: "
                   + params_as_options(r["best_params"]))
        click.echo(format_text(r["best"]))
    if json_path:
        click.echo(f"wrote {json_path}")
    if report_dir:
        click.echo(f"wrote {report_dir}")


def params_as_options(attrs: dict) -> str:
    """A store's (or a sweep's) model parameters as the ``liqgpu estimate`` options that give
    them (tiers and weights by their spec where they have one, e.g. ``log:2:150:40``)."""
    def nums(v):
        return ",".join(f"{float(x):.6g}" for x in v)

    out = [f"--model {attrs.get('model', 'v2')}"]
    lev = attrs.get("leverages_spec") or nums(attrs.get("leverages", []))
    wts = attrs.get("weights_spec") or nums(attrs.get("weights", []))
    out += [f"--leverages {lev}", f"--weights {wts}"]
    if attrs.get("bands"):
        out.append(f"--bands {nums(attrs['bands'])}")
    for key in ("churn", "mmr", "entry", "side_split", "closure", "max_age"):
        if attrs.get(key) is not None:
            out.append(f"--{key.replace('_', '-')} {attrs[key]}")
    return " ".join(out)


COMMANDS = [evaluate_cmd, sweep_cmd]
