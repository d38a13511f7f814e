"""Evaluate a store as ``liqgpu evaluate`` does: read, line up, score, write the outputs.

The command parses options and calls :func:`evaluate_store`; everything it checks or writes is
done here, so a tool gets the same figures, files and errors from Python.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..events import load_realized
from ..outputs import check_out_dir, check_out_file, write_json
from .metrics import BOOTSTRAP_DRAWS, BOOTSTRAP_SEED
from .report import write_report
from .scores import evaluate
from .table import build_table
from .windows import Window, parse_window


def parse_windows(train=(), test=()) -> list[Window]:
    """``--train`` and ``--test`` texts (``START:END``) -> windows, train first."""
    return [parse_window(x, "train") for x in train] + [parse_window(x, "test") for x in test]


def evaluate_store(store, realized, *, columns=None, train=(), test=(), asset: str | None = None,
                   allow_unmatched: bool = False, draws: int = BOOTSTRAP_DRAWS,
                   seed: int = BOOTSTRAP_SEED, json_path=None, report_dir=None) -> dict:
    """Score a store's estimate against realized liquidations, next to the baselines.

    Parameters
    ----------
    store : path
        A liqgpu store (model v2 or v1).
    realized : path
        Normalized events or per-bar aggregates (:func:`liqgpu.events.load_realized`).
    columns : str or dict, optional
        Aggregate columns (``long=a,short=b[,time=c]``).
    train, test : sequence of str
        ``START:END`` windows (UTC); none: one window over everything.
    asset : str, optional
        Only the series of this base asset, summed across venues.
    allow_unmatched : bool
        Leave out events of other series (with a warning) instead of refusing them.
    draws, seed : int
        The bootstrap over days.
    json_path, report_dir : path, optional
        Also write the figures as JSON, or a folder with JSON, markdown and plots. Both paths
        are checked before any work.

    Returns
    -------
    dict
        The figures (:func:`liqgpu.evaluate.evaluate`), with ``store``, ``files`` (what was
        written) added.
    """
    from ..store import open_store

    check_out_file(json_path, "--json")
    check_out_dir(report_dir, "--report")
    windows = parse_windows(train, test)
    ds = open_store(store)
    if asset:
        from ..render.select import select

        ds = ds.sel(series=select(ds, asset=asset, name=str(store)).series)
    real = load_realized(realized, columns).for_store(ds, allow_unmatched=allow_unmatched)
    table = build_table(ds, real)
    result = evaluate(ds, real, windows or None, table=table, draws=draws, seed=seed)
    result["store"] = str(store)
    files = []
    if json_path:
        files.append(str(write_json(json_path, result)))
    if report_dir:
        files += [str(f) for f in write_report(report_dir, ds, real, result,
                                               windows or [Window("all", None, None)], table,
                                               title=f"Evaluation of {store}")]
    result["files"] = files
    return result


#: the values each model's sweep tries when an option is not given
SWEEP_DEFAULTS = {
    "v1": {"tiers": "3,5,10,20,25,50,75,100", "mmrs": "0.002,0.004,0.008",
           "entries": "hlc3,close,ohlc4", "splits": "both", "ages": "none,12h,24h,7d,30d"},
    "v2": {"churns": "0.1,0.3,1", "powers": "1,2,3", "tier_counts": "20,40",
           "entries": "close,hlc3,range:3", "mmrs": "0.004", "splits": "both", "ages": "none"},
}
_SWEEP_OPTIONS = {"churns": "--churn", "powers": "--power", "tier_counts": "--tier-count",
                  "tiers": "--tiers"}


def _age(x: str):
    return None if x.lower() in ("none", "never") else x


def sweep_space(model: str, **given):
    """The settings a sweep of ``model`` tries: comma-separated texts per option (``churns``,
    ``powers``, ``tier_counts``, ``tiers``, ``mmrs``, ``entries``, ``splits``, ``ages``), the
    defaults of :data:`SWEEP_DEFAULTS` where not given; an option of the other model is an
    error naming it."""
    from ..sweep import SweepSpace, SweepSpaceV2

    own = SWEEP_DEFAULTS[model]
    for name, value in given.items():
        if value is not None and name not in own:
            other = "v1" if model == "v2" else "v2"
            raise InputError(f"{_SWEEP_OPTIONS[name]}: is an option of the model {other} sweep; "
                             f"use --model {other}")
    vals = {k: own[k] if given.get(k) is None else given[k] for k in own}

    def lst(name, cast):
        try:
            return tuple(cast(x.strip()) for x in str(vals[name]).split(",") if x.strip())
        except ValueError:
            raise InputError(f"{vals[name]!r}: cannot read the comma-separated list") from None

    if model == "v2":
        return SweepSpaceV2(churn=lst("churns", float), power=lst("powers", float),
                            tier_count=lst("tier_counts", int), entry=lst("entries", str),
                            mmr=lst("mmrs", float), side_split=lst("splits", str),
                            max_age=lst("ages", _age))
    return SweepSpace(tiers=lst("tiers", float), mmr=lst("mmrs", float),
                      entry=lst("entries", str), side_split=lst("splits", str),
                      max_age=lst("ages", _age))


def sweep_files(inputs, realized, *, columns=None, train=(), test=(), model: str = "v2",
                every="1h", kind=None, contract_size=None, exchange=None, symbol=None,
                draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED, top: int = 10,
                keep_best=None, backend: str = "numpy", json_path=None, report_dir=None,
                **space) -> dict:
    """Tune a model on the train windows and score default and best on every window
    (``liqgpu sweep``).

    ``inputs`` are series files, or one store whose output step equals its model step; the
    settings come from :func:`sweep_space` (``space`` holds its options). Every output path is
    checked before any work. Returns what the command prints and writes: ``n_settings``,
    ``n_engine_runs``, ``sweep_s``, ``ranking`` (rows) and ``ranking_text`` (lines),
    ``best_params``, ``default`` and ``best`` (figures), ``seconds``.
    """
    import time

    from ..model.registry import default_params
    from ..series import load_series
    from ..store import check_target, is_store
    from ..sweep import evaluate_params, ranking_rows, row_text, run_sweep, series_from_store

    space = sweep_space(model, **space)
    check_out_file(json_path, "--json")
    check_out_dir(report_dir, "--report")
    if keep_best:
        if Path(keep_best).exists():  # (sweep has no --overwrite: check_target's advice)
            raise InputError(f"--keep-best {keep_best}: already exists; choose another path "
                             "or remove it")
        check_target(keep_best, overwrite=False)
    windows = parse_windows(train, test)
    train_w = [w for w in windows if w.role == "train"]
    if not train_w:
        raise InputError("--train: give at least one training window; the sweep tunes on it")
    for i, a in enumerate(train_w):  # a bucket in two train windows would count twice
        for b in train_w[i + 1:]:
            if a.overlaps(b):
                raise InputError(f"--train {a.name.split(' ', 1)[1]} and --train "
                                 f"{b.name.split(' ', 1)[1]} overlap: their common buckets "
                                 f"would count twice in the objective; give disjoint windows")
    for tr in train_w:  # what is picked on a window must not be scored on it
        for te in (w for w in windows if w.role == "test"):
            if tr.overlaps(te):
                raise InputError(f"--train {tr.name.split(' ', 1)[1]} and --test "
                                 f"{te.name.split(' ', 1)[1]} overlap: the best setting would "
                                 "be scored on data it was picked on; give disjoint windows")
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        if not is_store(Path(inputs[0])):
            raise InputError(f"{inputs[0]}: is a folder but not a liqgpu store")
        series = series_from_store(inputs[0])
    else:
        series = [load_series(p, exchange=exchange, symbol=symbol, kind=kind,
                              contract_size=contract_size) for p in inputs]
    real = load_realized(realized, columns)
    t0 = time.perf_counter()
    res = run_sweep(series, real, train_w, space=space, every=every, check=windows,
                    backend=backend)
    rows = ranking_rows(res, top)
    defaults = default_params(model)
    default_res, _ = evaluate_params(series, defaults, real, windows, every=every, draws=draws,
                                     seed=seed, backend=backend)
    best_res, best_ds = evaluate_params(series, res.best, real, windows, every=every,
                                        keep=keep_best, draws=draws, seed=seed, backend=backend)
    out = {"model": model,
           "objective": "mean over long and short of the per-bucket Spearman correlation of "
                        "estimated vs realized liquidated notional on the train windows",
           "n_settings": res.n_settings, "n_engine_runs": res.n_engine_runs,
           "seconds": round(time.perf_counter() - t0, 2), "ranking": rows,
           "best_params": res.best.to_attrs(), "default_params": defaults.to_attrs(),
           "default": default_res, "best": best_res}
    if json_path:
        write_json(json_path, out)
    if report_dir:
        _sweep_report(Path(report_dir), series, real, windows, every, backend, out,
                      [("default", defaults, default_res, None),
                       ("best", res.best, best_res, best_ds)])
    return {**out, "sweep_s": res.seconds, "ranking_text": [row_text(r) for r in rows]}


def _sweep_report(folder: Path, series, real, windows, every, backend, out, runs) -> None:
    """A report folder per run (``default``, ``best``) and ``sweep.json``."""
    import tempfile

    from ..api import estimate
    from ..store import open_store

    with tempfile.TemporaryDirectory(prefix="liqgpu-sweep-") as tmp:
        for label, params, result, ds in runs:
            if ds is None:
                estimate(series, params=params, every=every, backend=backend,
                         out=Path(tmp) / f"{label}.zarr")
                ds = open_store(Path(tmp) / f"{label}.zarr")
            write_report(folder / label, ds, real, result, windows, build_table(ds, real),
                         title=f"Sweep: {label} parameters")
    write_json(folder / "sweep.json", out)
