"""The CUDA backend: the engine's operations on CuPy arrays.

The same functions as :mod:`liqgpu.backend.cpu`, chosen once by
:func:`liqgpu.backend.ops_for`; the hot spots are raw kernels whose sources are the files in
``kernels/`` (:mod:`liqgpu.backend.kernels` compiles and launches them). CuPy is imported
inside the functions, so this module imports on machines without it.

Examples
--------
>>> from liqgpu.backend import cuda
>>> cuda.name, cuda.on_host
('cupy', False)
>>> cuda.scatter_add(target, index, values)  # doctest: +SKIP
"""

from __future__ import annotations

from . import kernels

name = "cupy"
on_host = False  # device arrays: the engine's numpy-only paths do not apply


PINNED_MIN_BYTES = 1 << 20  # smaller copies go through cupy.asnumpy (pageable)


def to_host(x):
    """``x`` copied to a numpy array; from 1 MiB up, into page-locked (pinned) host memory.

    A copy to pageable memory goes through the driver's staging buffers: the year's output
    cubes (1.8 GB) came back at under 2 GB/s on an H200. Pinned memory comes from CuPy's pinned
    memory pool, which keeps freed blocks for reuse, so a run's consecutive chunks reuse the
    same few buffers once the previous chunk's arrays are dropped.
    """
    import cupy

    if x.nbytes < PINNED_MIN_BYTES:
        return cupy.asnumpy(x)
    import cupyx

    x = cupy.ascontiguousarray(x)
    out = cupyx.empty_pinned(x.shape, dtype=x.dtype)
    x.get(out=out)
    return out


def scatter_add(target, index, values) -> None:
    """``target.flat[index] += values``, duplicates summed (atomic adds, ``scatter.cu``)."""
    if values.shape[0] == 0:
        return
    kernels.scatter_add(target, index, values)


def diff_scatter(target, lo, hi, col, values) -> None:
    """A difference array over rows: ``target[lo, col] += v`` and ``target[hi, col] -= v``
    where ``lo < hi``, in one fused kernel (``scatter.cu``)."""
    if values.shape[0] == 0:
        return
    kernels.diff_scatter(target, lo, hi, col, values)


def scatter_rows(target, rows, values) -> None:
    """``target[rows[i]] += values[i]`` for each row i."""
    import cupyx

    cupyx.scatter_add(target, rows, values)


def first_cross(tables, which, series, start, thr, *, sorted_from=None):
    """Per query, the first position >= ``start`` whose value is <= ``thr`` (the chunk length
    if none): the tables' binary lifting, one thread per query (``first_cross.cu``).
    ``sorted_from`` is a hint for the CPU and is not needed here."""
    return kernels.first_cross(tables, which, series, start, thr)
