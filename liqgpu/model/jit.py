"""Compiled loops (numba) for the numpy engine's large runs.

The numpy engine (:meth:`liqgpu.model.engine.Engine._block_np1`) makes a dozen passes over each
tile of new positions (levels, the first crossing by binary lifting, bins, weights, the
difference array, the dying, the survivors) and several over each block's cubes. The loops of
:mod:`.cpu_loops` do each in one pass, with the same formulas in the same order: their results
are the numpy path's bit for bit (tested), so a run may switch between the two at any block.

numba is a dependency of datashader, so it is installed with liqgpu; where it is missing (or
``LIQGPU_JIT=0``) the numpy loops run. Importing numba and loading the loops' machine code
from its cache costs about 0.6 s of a process, mostly holding the GIL (compiling them, the first
time on a machine, about 5 s more). So a run uses them only where they save clearly more than
that (:func:`wanted`), and loads them on a background thread (:func:`preload`; `liqgpu
estimate` starts it before reading its files, from their row counts, :func:`preload_if`)
while it reads, plans and runs its first blocks with the numpy loops; the engine switches as
soon as they are ready (:func:`loaded`). ``LIQGPU_JIT=1`` loads them at once and uses them
from the first block (tests).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

#: the time the compiled loops save, per new position and per output cube cell (measured on a
#: 2-core machine, year of 1-minute bars: v2 42 M positions 4.0 -> 2.7 s, v1 1.3 -> 0.75 s),
#: and the least saving for which a run loads them (their import and loading cost ~0.5 s)
SAVING_PER_POSITION = 30e-9
SAVING_PER_CELL = 3e-9
#: whole processes, year of 1-minute bars (2026-11-27): v1 (0.66 s estimated) ran 3.0 s
#: without them and 3.2 s with; v2 (1.9 s estimated) 4.9 s without, 4.6 s with
MIN_SAVING_S = 1.0

#: the most threads a block's compiled loops use (its pieces: two sides, each in halves)
MAX_THREADS = 2

_KERNELS = None  # the module once imported; False: numba cannot be imported
_READY = threading.Event()  # set once the loops are loaded (or cannot be)
_LOCK = threading.Lock()
_THREAD: threading.Thread | None = None
_HELPER: tuple | None = None  # (pid, executor): the second thread of the compiled loops


def _mode() -> str:
    mode = os.environ.get("LIQGPU_JIT", "auto").strip().lower()
    return {"0": "off", "no": "off", "false": "off", "1": "on", "yes": "on",
            "true": "on"}.get(mode, mode if mode in ("off", "on") else "auto")


def wanted(n_positions: int, n_cells: int = 0) -> bool:
    """Whether a run opening ``n_positions`` positions into cubes of ``n_cells`` cells should
    use the compiled loops: ``LIQGPU_JIT`` = ``0`` (never), ``1`` (always, where numba is
    installed), else where they save at least :data:`MIN_SAVING_S`. Imports nothing."""
    mode = _mode()
    if mode == "off" or _KERNELS is False:
        return False
    saving = n_positions * SAVING_PER_POSITION + n_cells * SAVING_PER_CELL
    if mode == "auto" and saving < MIN_SAVING_S:
        return False
    return importlib.util.find_spec("numba") is not None


def threads() -> int:
    """Threads a block's compiled loops run on: ``LIQGPU_THREADS`` (1: one after the other;
    at most :data:`MAX_THREADS`), else 2 where this process may use two processors or more.
    A block's pieces (its two sides, each in halves) add to different elements, so they run
    at once with the same results, bit for bit. Raises InputError for a value that is not a count."""
    raw = os.environ.get("LIQGPU_THREADS", "")
    if raw.strip():
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"LIQGPU_THREADS={raw!r}: must be a whole number of threads, 1 or "
                             f"more")
        return min(n, MAX_THREADS)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cpus))


def helper():
    """The second thread of the compiled loops (one per process, made on first use;
    a forked child makes its own: its parent's thread is not in it)."""
    from concurrent.futures import ThreadPoolExecutor

    global _HELPER
    with _LOCK:
        pid = os.getpid()
        if _HELPER is None or _HELPER[0] != pid:
            _HELPER = (pid, ThreadPoolExecutor(1, thread_name_prefix="liqgpu-side"))
        return _HELPER[1]


def kernels():
    """The compiled loops (:mod:`.cpu_loops`), imported here, or None where numba cannot be
    imported."""
    global _KERNELS
    with _LOCK:
        if _KERNELS is None:
            try:
                from . import cpu_loops  # imports numba

                _KERNELS = cpu_loops
            except ImportError as exc:  # numba is optional at run time: numpy loops remain
                log.info("numba unavailable (%s): the engine runs its numpy loops", exc)
                _KERNELS = False
    return _KERNELS or None


def preload() -> None:
    """Import and load the compiled loops on a background thread (once a process); with
    ``LIQGPU_JIT=1``, here and now."""
    global _THREAD
    if _mode() == "on":
        _load()
        return
    with _LOCK:
        if _THREAD is None and not _READY.is_set():
            _THREAD = threading.Thread(target=_load, name="liqgpu-jit-load", daemon=True)
            _THREAD.start()


def preload_if(n_positions: int) -> bool:
    """Start loading the compiled loops (:func:`preload`) if a run opening about
    ``n_positions`` positions will want them, counting the positions alone (a run's cube
    cells, not known yet, only add to the saving); returns whether it did."""
    if n_positions <= 0 or not wanted(n_positions):
        return False
    preload()
    return True


def loaded():
    """The compiled loops if they are loaded, else None (a run keeps its numpy loops until
    then)."""
    return (_KERNELS or None) if _READY.is_set() else None


def _load() -> None:
    global _KERNELS
    t = time.perf_counter()
    try:
        mod = kernels()
        if mod is not None:
            warm(mod)
            log.debug("compiled loops loaded in %.2f s", time.perf_counter() - t)
    except Exception:  # a failed load must not fail the run: the numpy loops give the same
        log.warning("the compiled loops could not be loaded; the numpy loops run",
                    exc_info=True)
        global _KERNELS
        _KERNELS = False
    finally:
        _READY.set()


def warm(mod, kd_dtype=np.int8, cube_dtype=np.float32) -> None:
    """Call each loop once on tiny arrays of the types a store run passes, so numba loads (or
    compiles) their machine code here rather than in the run's first block."""
    i8 = np.zeros(1, dtype=np.int64)
    f = np.zeros(1)
    kd = np.zeros(1, dtype=kd_dtype)
    i4 = np.zeros(1, dtype=np.int32)
    dying = (i4.copy(), i4.copy(), kd.copy(), f.copy())
    mod.new_positions(0, i8, i8, f, np.zeros((1, 1)), f, np.zeros((1, 2)), np.ones((1, 1)),
                      np.ones(1), np.ones(1), 2, -1, np.full(3, np.inf), np.zeros((1, 2)),
                      np.array([0.5, 2.0]), 0.0, 1.0, True, kd, 2, np.zeros(4), i8, 1.0,
                      f.copy(), np.zeros(1, dtype=np.int32), kd.copy(), f.copy(), f.copy(),
                      np.zeros(1, dtype=np.int32), 0, *dying,
                      *(x.copy() for x in dying), np.zeros((1, 2)))
    mod.carried(np.zeros((1, 2), dtype=np.int64), 0, np.ones(2), 2, False, 0, -1.0, False, f,
                i4, f, f, i4, kd, 1.0, f.copy(), i4.copy(), kd.copy(), f.copy(), f.copy(),
                i4.copy(), 0, *dying, *(x.copy() for x in dying), 0, np.zeros(2), np.zeros(2),
                np.zeros(2), np.zeros(2))
    mod.subtract_dead(np.zeros(2), i8, 2, 0, i4, i4, f)
    mod.row_weights(f, np.zeros((1, 1)), f, np.zeros((1, 2)), f, i8, np.zeros(1))
    rows = np.zeros((1, 2))
    mod.flows(1, 2, np.zeros(2), i8, rows, f, i4, kd, f, f, f, f, np.zeros(2), rows.copy(),
              rows.copy())
    # a block's part of the chunk's cubes: strided columns, or whole rows (contiguous: numba
    # compiles each memory layout apart, and would compile the other in the run)
    for cube in (np.zeros((2, 4), dtype=cube_dtype)[:, 1:3], np.zeros((2, 2), dtype=cube_dtype)):
        for out in (np.zeros((2, 4))[:, 1:3], np.zeros((2, 2))):
            mod.snapshot_cols(np.zeros(8), 1, 2, 0, 2, 1, np.ones(1), cube, out)
            mod.snap_cols(cube, out, 1, 0, 2, 1, 0.0, 0.0, 1e-12)
            mod.liquidated(np.zeros(4), i8, 0, 2, 0, 1, i4, i4, f, np.ones(1), cube, out,
                           i8.copy())
