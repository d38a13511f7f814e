"""CPU emulations of the raw CUDA kernels (``kernels/*.cu``), for tests without a GPU.

Each function mirrors one kernel's per-thread logic (same loop, same clamping, same
grid-stride indexing, same skipping of out-of-range writes) in plain Python or numpy, so the
tests can compare it with the engine's numpy code and stand it in for a launch
(``tests/test_kernels.py`` runs the whole engine down its CUDA branch that way).

Examples
--------
>>> import numpy as np
>>> from liqgpu.testing.kernels import scatter_add_emulate
>>> t = np.zeros(3)
>>> scatter_add_emulate(t, np.array([0, 2, 2, 7]), np.array([1.0, 2.0, 3.0, 9.0]))
>>> t.tolist()
[1.0, 0.0, 5.0]
"""

from __future__ import annotations

import numpy as np

from ..backend.kernels import BLOCK

__all__ = ["diff_scatter_emulate", "first_cross_emulate", "first_cross_thread",
           "scatter_add_emulate"]


def first_cross_thread(levels, base: int, start: int, thr: float, L: int, J: int, m: int) -> int:
    """One query exactly as ``first_cross_one`` in ``kernels/first_cross.cu`` computes it.

    Parameters
    ----------
    levels : sequence of 1-d arrays
        Level j of the tables, flat.
    base : int
        ``(which * S + series) * L``.
    start : int
    thr : float
    L, J, m : int
        Table length (2**J), number of levels, chunk length.

    Returns
    -------
    int
    """
    pos = int(start)
    for j in range(J - 1, -1, -1):
        at = pos if pos < L - 1 else L - 1
        v = levels[j][base + at]
        if v > thr:
            pos += 1 << j
    return pos if pos < m else m


def first_cross_emulate(levels, which, series, start, thr, *, n_series: int, length: int, m: int,
                        grid: int | None = None, block: int = BLOCK) -> np.ndarray:
    """CPU emulation of a ``first_cross_f64`` launch, thread by thread (numpy in and out).

    Every (block, thread) of the grid runs the kernel's grid-stride loop; each query must be
    answered by exactly one thread, which the emulation asserts.

    Parameters
    ----------
    levels : sequence of 1-d numpy arrays, or a 2-d array (J, 2 * n_series * length)
    which, series, start, thr : numpy arrays (n,)
    n_series, length, m : int
        S, L and the chunk length, as passed to the kernel.
    grid : int, optional
        Number of blocks; default enough for one query a thread (as without a cap).
    block : int
        Threads per block.

    Returns
    -------
    numpy.ndarray of int64

    Examples
    --------
    >>> lv = [np.array([3.0, 1.0, 2.0, np.inf, 3.0, 1.0, 2.0, np.inf])]
    >>> lv.append(np.minimum(lv[0], np.r_[lv[0][1:], np.inf]))
    >>> lv.append(np.minimum(lv[1], np.r_[lv[1][2:], np.inf, np.inf]))
    >>> first_cross_emulate(lv, np.array([0]), np.array([0]), np.array([0]), np.array([1.5]),
    ...                     n_series=1, length=4, m=3, grid=1, block=1).tolist()
    [1]
    """
    levels = [np.asarray(lv).reshape(-1) for lv in levels]
    J = len(levels)
    n = int(np.asarray(thr).size)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    if grid is None:
        grid = -(-n // block)
    stride = grid * block
    for b in range(grid):
        for t in range(block):
            i = b * block + t
            while i < n:
                if out[i] != -1:
                    raise AssertionError(f"query {i} answered twice")
                base = (int(which[i]) * n_series + int(series[i])) * length
                out[i] = first_cross_thread(levels, base, int(start[i]), float(thr[i]),
                                            length, J, m)
                i += stride
    if (out == -1).any():
        raise AssertionError("a query was not answered")
    return out


def diff_scatter_emulate(target: np.ndarray, lo, hi, col, values) -> None:
    """numpy version of ``diff_scatter_f64`` (same skipping rules), in place on ``target``."""
    rows, width = target.shape
    lo, hi, col = (np.asarray(x, dtype=np.int64).reshape(-1) for x in (lo, hi, col))
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = (lo < hi) & (col >= 0) & (col < width)
    for r, sign in ((lo, 1.0), (hi, -1.0)):
        sel = ok & (r >= 0) & (r < rows)
        target += np.bincount(r[sel] * width + col[sel], weights=sign * v[sel],
                              minlength=target.size)[: target.size].reshape(target.shape)


def scatter_add_emulate(target: np.ndarray, index, values) -> None:
    """numpy version of ``scatter_add_f64``: ``target.flat[index] += values``, duplicates
    summed, indices outside [0, target.size) skipped; in place on ``target``."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = (index >= 0) & (index < target.size)
    np.add.at(target.reshape(-1), index[ok], values[ok])
