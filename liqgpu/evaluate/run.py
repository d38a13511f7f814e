"""Evaluate a store as ``liqgpu evaluate`` does: read, line up, score, write the outputs.

The command parses options and calls :func:`evaluate_store`; everything it checks or writes is
done here, so a tool gets the same figures, files and errors from Python.
"""

from __future__ import annotations

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
