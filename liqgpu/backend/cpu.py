"""The CPU backend: the engine's operations on numpy arrays.

The same functions as :mod:`liqgpu.backend.cuda`, chosen once by
:func:`liqgpu.backend.ops_for`; the engine's array code calls them and never tests which
backend it runs on.

Examples
--------
>>> import numpy as np
>>> from liqgpu.backend import cpu
>>> t = np.zeros((3, 2))
>>> cpu.scatter_rows(t, np.array([0, 0, 2]), np.ones((3, 2)))
>>> t.tolist()
[[2.0, 2.0], [0.0, 0.0], [1.0, 1.0]]
"""

from __future__ import annotations

import numpy as np

name = "numpy"
on_host = True  # numpy arrays in host memory: the engine's numpy-only paths apply


def to_host(x):
    """``x`` as a numpy array (here: ``x`` itself)."""
    return x


def scatter_add(target, index, values) -> None:
    """``target.flat[index] += values``, duplicates summed."""
    if values.shape[0] == 0:
        return
    flat = target.reshape(-1)
    if values.shape[0] * 2 < flat.size:  # numpy 2 add.at beats a full-size bincount here
        np.add.at(flat, index, values)
    else:
        flat += np.bincount(index, weights=values, minlength=flat.size)


def diff_scatter(target, lo, hi, col, values) -> None:
    """A difference array over rows: ``target[lo, col] += v`` and ``target[hi, col] -= v``
    where ``lo < hi`` (a cumulative sum over rows then holds v on rows [lo, hi))."""
    if values.shape[0] == 0:
        return
    span = lo < hi
    width = target.shape[1]
    c = col[span]
    idx = np.concatenate([lo[span] * width + c, hi[span] * width + c])
    scatter_add(target, idx, np.concatenate([values[span], -values[span]]))


def scatter_rows(target, rows, values) -> None:
    """``target[rows[i]] += values[i]`` for each row i (``rows`` sorted: contiguous groups)."""
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    sums = np.add.reduceat(values, starts, axis=0)
    target[rows[starts]] += sums


def first_cross(tables, which, series, start, thr, *, sorted_from=None):
    """Per query, the first position >= ``start`` of table ``which`` and series ``series``
    whose value is <= ``thr`` (the chunk length if none); see
    :meth:`liqgpu.model.engine._SparseTables.first_at_or_below`.

    ``sorted_from``: every query of a single series starts there (positions carried into a
    block), so one running minimum and a binary search answer them all; else the tables'
    binary lifting (array code shared with CuPy).
    """
    if sorted_from is not None and tables.shape[1] == 1:
        return _from_running(tables, which, thr, sorted_from)
    return tables.lift(which, series, start, thr)


def _from_running(tables, which, thr, frm):
    """Queries of a single series that all start at ``frm``: search the running minimum from
    there (computed once per start and kept on ``tables``)."""
    if getattr(tables, "_running_from", None) != frm:
        v = tables.levels[0].reshape(tables.shape)[:, 0, frm: tables.m]
        tables._running = -np.minimum.accumulate(v, axis=1)  # non-decreasing
        tables._running_from = frm
    out = np.empty(thr.shape, dtype=np.int64)
    for w in (0, 1):
        sel = which == w
        out[sel] = np.searchsorted(tables._running[w], -thr[sel], side="left") + frm
    return out
