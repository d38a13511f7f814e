"""Raw CUDA kernels of the CuPy backend: where the sources are, how they compile, how they launch.

The CUDA sources live as real files, one per kernel family, in ``kernels/`` at the root of a
source checkout; the wheel carries them as ``liqgpu/kernels/*.cu`` inside the package. They
are compiled lazily with :class:`cupy.RawModule` the first time a kernel is launched and cached
per device; entry points are typed by name (``first_cross_f64``, ``scatter_add_f64``).

CuPy is imported only inside the functions that need it, so importing this module (and
locating or reading the sources) works on machines without CuPy or a GPU.

The engine reaches these launches through :mod:`liqgpu.backend.cuda`. The per-thread logic of
each kernel is mirrored on the CPU by :mod:`liqgpu.testing.kernels` (same loop, same clamping,
same grid-stride indexing), which the tests compare with the engine's numpy code.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BLOCK = 256  # threads per block of every launch
BLOCKS_PER_SM = 32  # grid cap per multiprocessor; the grid-stride loops cover the rest
COMPILE_OPTIONS = ("-std=c++17",)
SUFFIX = ".cu"


# -- locating the sources ------------------------------------------------------------------------
def _package_dir():
    """``liqgpu/kernels`` inside the installed package (a Traversable), or None."""
    try:
        d = resources.files("liqgpu").joinpath("kernels")
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - liqgpu is always importable
        return None
    return d if d.is_dir() else None


def _checkout_dir() -> Path | None:
    """``kernels/`` at the root of a source checkout (and of an editable install), or None."""
    d = Path(__file__).resolve().parents[2] / "kernels"
    return d if d.is_dir() else None


def kernel_dir():
    """The folder the kernel sources are read from.

    The package's own ``liqgpu/kernels`` (an installed wheel) comes first; a source checkout or
    an editable install, whose package has no such folder, falls back to ``<repo>/kernels``.

    Returns
    -------
    importlib.resources.abc.Traversable or pathlib.Path

    Raises
    ------
    FileNotFoundError
        When neither location holds a ``.cu`` file.

    Examples
    --------
    >>> kernel_dir().joinpath("scatter.cu").is_file()
    True
    """
    tried = []
    for d in (_package_dir(), _checkout_dir()):
        if d is None:
            continue
        tried.append(str(d))
        if any(p.name.endswith(SUFFIX) for p in d.iterdir()):
            return d
    where = ", ".join(tried) if tried else "liqgpu/kernels or <repo>/kernels"
    raise FileNotFoundError(f"no CUDA kernel sources (*{SUFFIX}) found in {where}; "
                            "reinstall liqgpu")


def kernel_paths() -> list:
    """Every kernel source file, sorted by name.

    Returns
    -------
    list of Traversable or Path
        The ``*.cu`` files of :func:`kernel_dir` (real paths unless the package is zipped).

    Examples
    --------
    >>> [p.name for p in kernel_paths()]
    ['first_cross.cu', 'scatter.cu']
    """
    d = kernel_dir()
    return sorted((p for p in d.iterdir() if p.name.endswith(SUFFIX)), key=lambda p: p.name)


def kernel_source(name: str) -> str:
    """The CUDA source of one kernel family.

    Parameters
    ----------
    name : str
        File name with or without ``.cu`` (``'first_cross'``, ``'scatter.cu'``).

    Returns
    -------
    str

    Raises
    ------
    KeyError
        When there is no such kernel file (the message lists those there are).

    Examples
    --------
    >>> "first_cross_f64" in kernel_source("first_cross")
    True
    """
    fname = name if name.endswith(SUFFIX) else name + SUFFIX
    for p in kernel_paths():
        if p.name == fname:
            return p.read_text(encoding="utf-8")
    have = ", ".join(p.name for p in kernel_paths())
    raise KeyError(f"no kernel source {fname!r}; there are: {have}")


# -- compiling and launching (CuPy only) ---------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _compiler():
    """A per-device memoized ``name -> cupy.RawModule`` (built on first use, imports CuPy)."""
    import cupy

    @cupy.memoize(for_each_device=True)
    def compile_module(name: str):
        log.debug("compiling CUDA kernels %s for device %d", name, cupy.cuda.Device().id)
        return cupy.RawModule(code=kernel_source(name), options=COMPILE_OPTIONS)

    return compile_module


def get_module(name: str):
    """The compiled :class:`cupy.RawModule` of a kernel family on the current device.

    Compilation is lazy (NVRTC, on the first ``get_function``) and cached per device.

    Parameters
    ----------
    name : str
        Kernel family, e.g. ``'first_cross'`` or ``'scatter'``.

    Examples
    --------
    >>> k = get_module("scatter").get_function("scatter_add_f64")  # doctest: +SKIP
    """
    return _compiler()(name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name)


def get_kernel(name: str, entry: str):
    """The :class:`cupy.RawKernel` ``entry`` of kernel family ``name`` on the current device."""
    return get_module(name).get_function(entry)


_MAX_BLOCKS: dict[int, int] = {}


def launch_grid(n: int) -> tuple[int]:
    """Grid for ``n`` items at :data:`BLOCK` threads a block, capped per device (grid-stride)."""
    import cupy

    dev = cupy.cuda.Device()
    cap = _MAX_BLOCKS.get(dev.id)
    if cap is None:
        cap = _MAX_BLOCKS[dev.id] = int(dev.attributes["MultiProcessorCount"]) * BLOCKS_PER_SM
    return (max(1, min(-(-int(n) // BLOCK), cap)),)


def _i64(x):
    """A C-contiguous int64 CuPy array (no copy when ``x`` already is one)."""
    import cupy

    return cupy.ascontiguousarray(cupy.asarray(x, dtype=cupy.int64))


def _f64(x):
    """A C-contiguous float64 CuPy array (no copy when ``x`` already is one)."""
    import cupy

    return cupy.ascontiguousarray(cupy.asarray(x, dtype=cupy.float64))


def first_cross(tables, which, series, start, thr, *, check: bool = False):
    """First-passage queries on the GPU: the kernel form of ``_SparseTables.first_at_or_below``.

    Parameters
    ----------
    tables : _SparseTables
        Range-minimum tables on the GPU: ``levels`` (J flat float64 arrays of 2*S*L values, or
        one (J, 2*S*L) array), ``shape`` = (2, S, L), ``L`` and ``m`` (the chunk length).
    which, series, start : cupy.ndarray of int
        Per query: table (0 lows, 1 minus highs), series, first local position to search.
    thr : cupy.ndarray of float
        Per query: the threshold (level for longs, minus the level for shorts).
    check : bool
        Check ``which``, ``series`` and ``start`` on the device first (one synchronization) and
        raise ``IndexError`` instead of reading out of bounds.

    Returns
    -------
    cupy.ndarray of int64
        Per query, the first local position >= start whose value is <= thr, else ``m``.

    Examples
    --------
    >>> pos = first_cross(tables, side, series, start, thr)  # doctest: +SKIP
    """
    import cupy

    S, L, m = int(tables.shape[1]), int(tables.L), int(tables.m)
    levels = [_f64(lv).reshape(-1) for lv in tables.levels]
    J = len(levels)
    if (1 << J) != L or any(lv.size != 2 * S * L for lv in levels):
        raise ValueError(f"tables: expected {int(np.log2(L))} levels of {2 * S * L} values")
    which, series, start, thr = _i64(which), _i64(series), _i64(start), _f64(thr)
    n = int(thr.size)
    if not (which.size == series.size == start.size == n):
        raise ValueError("which, series, start and thr must have the same size")
    out = cupy.empty(n, dtype=cupy.int64)
    if n == 0:
        return out
    if check:
        bad = ((which < 0) | (which > 1) | (series < 0) | (series >= S) | (start < 0)).any()
        if bool(bad):
            raise IndexError("first_cross: which must be 0 or 1, series in [0, S), start >= 0")
    ptrs = cupy.asarray(np.array([lv.data.ptr for lv in levels], dtype=np.uint64))
    kern = get_kernel("first_cross", "first_cross_f64")
    kern(launch_grid(n), (BLOCK,), (ptrs, which, series, start, thr, out, np.int64(n),
                                   np.int64(S), np.int64(L), np.int32(J), np.int64(m)))
    # `levels` (any converted copies) and `ptrs` may be freed once the launch is queued: CuPy's
    # pool hands memory out again in stream order, after this kernel has read it.
    return out


def scatter_add(target, index, values, *, check: bool = False) -> None:
    """``target.flat[index] += values`` on the GPU, duplicates summed (atomicAdd on float64).

    Parameters
    ----------
    target : cupy.ndarray of float64, C-contiguous
        Updated in place (any shape; indexed flat).
    index : cupy.ndarray of int
        Flat indices into ``target``. The kernel skips indices outside [0, target.size).
    values : cupy.ndarray of float
        Same size as ``index``.
    check : bool
        Raise ``IndexError`` on an out-of-range index instead (one synchronization).

    Examples
    --------
    >>> t = cupy.zeros(4); scatter_add(t, cupy.array([1, 1, 3]), cupy.array([1.0, 2.0, 5.0]))
    ... # doctest: +SKIP
    >>> t.tolist()  # doctest: +SKIP
    [0.0, 3.0, 0.0, 5.0]
    """
    _check_target(target)
    index, values = _i64(index).reshape(-1), _f64(values).reshape(-1)
    n = int(index.size)
    if values.size != n:
        raise ValueError(f"scatter_add: {n} indices but {values.size} values")
    if n == 0:
        return
    if check and bool(((index < 0) | (index >= target.size)).any()):
        raise IndexError(f"scatter_add: an index is outside [0, {target.size})")
    kern = get_kernel("scatter", "scatter_add_f64")
    kern(launch_grid(n), (BLOCK,), (target, np.int64(target.size), index, values, np.int64(n)))


def diff_scatter(target, lo, hi, col, values, *, check: bool = False) -> None:
    """Difference-array update: ``+values`` at ``(lo, col)`` and ``-values`` at ``(hi, col)``.

    A cumulative sum of ``target`` over rows then adds ``values[i]`` to rows
    ``lo[i] .. hi[i]-1`` of column ``col[i]``. Entries with ``lo >= hi`` add nothing. This fuses
    the engine's masked pair of scatter-adds (intensity spans, live amounts per step).

    Parameters
    ----------
    target : cupy.ndarray of float64, shape (rows, width), C-contiguous
        Updated in place.
    lo, hi, col : cupy.ndarray of int
        Rows where each span starts and ends (exclusive), and its column.
    values : cupy.ndarray of float
    check : bool
        Raise ``IndexError`` when a non-empty span has a row or column out of range; without
        it the kernel skips such writes.

    Examples
    --------
    >>> diff_scatter(D, o_birth, o_death, cell, W)  # doctest: +SKIP
    """
    _check_target(target)
    if target.ndim != 2:
        raise ValueError("diff_scatter: target must be 2-d (rows, width)")
    rows, width = (int(x) for x in target.shape)
    lo, hi, col = (_i64(x).reshape(-1) for x in (lo, hi, col))
    values = _f64(values).reshape(-1)
    n = int(values.size)
    if not (lo.size == hi.size == col.size == n):
        raise ValueError("diff_scatter: lo, hi, col and values must have the same size")
    if n == 0:
        return
    if check:
        span = lo < hi
        bad = span & ((lo < 0) | (hi >= rows) | (col < 0) | (col >= width))
        if bool(bad.any()):
            raise IndexError(f"diff_scatter: a span is outside the ({rows}, {width}) target")
    kern = get_kernel("scatter", "diff_scatter_f64")
    kern(launch_grid(n), (BLOCK,), (target, np.int64(rows), np.int64(width), lo, hi, col, values,
                                   np.int64(n)))


def _check_target(target) -> None:
    import cupy

    if not isinstance(target, cupy.ndarray) or target.dtype != cupy.float64:
        raise TypeError("target must be a cupy float64 array")
    if not target.flags.c_contiguous:
        raise ValueError("target must be C-contiguous (it is updated in place, indexed flat)")
