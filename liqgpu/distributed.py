"""Distributed runs: one Dask task per series, each filling its own region of one zarr store.

The model computes every series independently, and a store holds all of them on one grid and
one time axis with the ``series`` dimension chunked by 1. So a fleet run splits cleanly:

1. the client resolves what the series share (grid, output step, union time axis: the same
   defaults as :func:`liqgpu.estimate`) and writes a *template* store: coordinates, attributes
   and the metadata of every variable at its full shape, no data;
2. one Dask task per series pads that series onto the shared time axis (NaN bars are neutral in
   the model), runs the numpy :class:`~liqgpu.model.engine.Engine` time chunk by time chunk and
   writes each chunk into its region (``to_zarr(region=...)``); regions of two series never
   share a zarr chunk, so no locks are needed, and a region write is idempotent, so a task that
   is retried (its worker died) simply writes again;
3. a task marks its series complete (``done/<index>.json``) only after all of its regions are
   written; when every series is complete the client consolidates the metadata and moves the
   store into place, atomically, like :class:`~liqgpu.store.StoreWriter`.

The template and the markers live in ``.<name>.dist-partial/`` beside the target. A run that
stops part way (a task failed past its retries, the client was killed) leaves that folder, and
``resume=True`` picks it up again, computing only the series without a marker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import time as _time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError
from .model.grid import Grid

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".dist-partial"
CLUSTERS = ("local", "cuda")
CUBE_DIMS = ("series", "time", "price", "leverage", "side")


class RunIncomplete(RuntimeError):
    """Some series failed (past their retries); the completed ones are kept for ``resume``."""


@dataclass(frozen=True)
class _Plan:
    """What every task shares (small: the time axis is the largest part)."""

    store: str  # the template store being filled
    done: str  # folder of per-series completion markers
    time: np.ndarray  # (T,) union model time axis, datetime64[ns]
    n_every: int
    n_buckets: int
    grid: Grid
    params: object  # Params (v1) or ParamsV2
    chunk_buckets: int
    tc: int  # buckets per time chunk of the store: the first chunk, as liqgpu.estimate cuts
    backend: str
    dtype: str
    jit: bool | None = None  # numpy tasks: the compiled loops (decided for the whole fleet)


def partial_path(out: str | Path) -> Path:
    """The deterministic folder where a distributed run to ``out`` keeps its unfinished work."""
    out = Path(out)
    return out.parent / f".{out.name}{PARTIAL_SUFFIX}"


def estimate_distributed(
    series,
    *,
    out: str | Path,
    params=None,
    grid: Grid | str | None = None,
    every=None,
    realized=None,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: str = "local",
    overwrite: bool = False,
    resume: bool = False,
    retries: int = 2,
    progress: bool = False,
    chunk_buckets: int | None = None,
    memory_budget: int | None = None,
    connect_timeout: float = 10.0,
    timeout: float | None = None,
    storage_options: dict | None = None,
    origin: str = "clock",
    allow_unmatched: bool = False,
    unknown_side: str = "skip",
    _on_series: Callable[[int, str], None] | None = None,  # test seam: runs first in each task
):
    """Estimate liquidation levels for many series on a Dask cluster, one task per series.

    The store written is equal to the one :func:`liqgpu.estimate` writes for the same series
    in one process (same grid, time axis, variables, encodings and attributes; ``backend`` and
    ``created`` differ).

    Parameters
    ----------
    series : Series, path, or a list of them
        Normalized series (see :func:`liqgpu.load_series`), each ``exchange:symbol`` once.
    out : path
        The zarr store to write; it appears only when every series is complete.
    params : ParamsV2 or Params, optional
        Model parameters; default model v2's defaults.
    grid : Grid or str, optional
        As in :func:`liqgpu.estimate`; default a 10 bps log grid covering every level of every
        series (one grid for the whole store).
    every : str, timedelta or int, optional
        Output step; default 1h.
    realized : path, DataFrame, or a list of them, optional
        Published liquidation events, binned into ``realized`` as :func:`liqgpu.estimate` does
        (on the client, after the tasks, time chunk by time chunk).
    workers : int, optional
        Start a local cluster of this many single-threaded worker processes (default: one per
        CPU core). Not together with ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``) to send the tasks to.
    cluster : {'local', 'cuda'}
        With ``'cuda'`` the local cluster is a ``dask_cuda.LocalCUDACluster`` (one worker per
        GPU; ``workers`` limits how many) and tasks run the CuPy backend.
    overwrite : bool
        Replace an existing store at ``out``.
    resume : bool
        Continue an interrupted run to the same ``out`` with the same inputs: series already
        complete in ``.<name>.dist-partial`` are not computed again.
    retries : int
        How many times a task that raised is tried again (a task whose worker died is
        rescheduled by the scheduler in any case, up to its ``allowed-failures``).
    progress : bool
        Show a progress bar of completed series (on a terminal).
    chunk_buckets : int, optional
        Output buckets per time chunk in a task (rounded up to whole zarr chunks); default from
        ``memory_budget``.
    memory_budget : int, optional
        Bytes one task's per-chunk cubes may take (default as in :func:`liqgpu.estimate`).
    connect_timeout : float
        Seconds to wait for the scheduler at ``scheduler``.
    timeout : float, optional
        Seconds to wait for all tasks; unlimited by default.
    storage_options : dict, optional
        For a URL ``out``: passed to fsspec (credentials, endpoint).

    Returns
    -------
    xarray.Dataset
        The store at ``out``, opened lazily (:func:`liqgpu.open_store`).

    Raises
    ------
    InputError
        Bad input, an existing ``out`` without ``overwrite``, an unreachable scheduler.
    RunIncomplete
        Some series failed; the others are kept for ``resume=True``.

    Examples
    --------
    >>> import liqgpu
    >>> from liqgpu.distributed import estimate_distributed
    >>> fleet = [liqgpu.synthetic_series(days=2, step="5min", seed=i, exchange=f"ex{i}")
    ...          for i in range(4)]
    >>> ds = estimate_distributed(fleet, out="fleet.zarr", workers=2)  # doctest: +SKIP
    >>> ds.sizes["series"]  # doctest: +SKIP
    4
    >>> estimate_distributed(fleet, out="fleet.zarr", scheduler="tcp://10.0.0.5:8786",
    ...                      overwrite=True)  # doctest: +SKIP
    """
    from .events import read_events
    from .pipeline import (DEFAULT_MEMORY_BUDGET, as_series_list, clock_align, fingerprint,
                           first_bar, resolve_every, resolve_grid, resolve_params)
    from .model import jit as _jit
    from .model.engine import chunk_buckets_for
    from .model.inputs import check_columns, prepare
    from .store import base_attrs, check_target, chunking

    series = as_series_list(series)
    from .model.inputs import check_names

    names = check_names(series)
    _check_cluster_options(workers, scheduler, cluster, retries)
    try:
        import distributed  # noqa: F401 - only to fail early, with the install command
    except ImportError:
        raise InputError("--workers/--scheduler need Dask's distributed scheduler: "
                         "pip install 'liqgpu[dist]'") from None
    from .store.remote import is_url, staged

    if is_url(out):  # computed in a local staging folder, then published (liqgpu.store.remote)
        if scheduler is not None or resume:
            raise InputError(f"{out}: an object-storage --out works with local --workers only "
                             f"(no --scheduler, no --resume); write to a shared filesystem path "
                             f"and publish it with `liqgpu publish STORE URL`")
        with staged(str(out), overwrite=overwrite, storage_options=storage_options,
                    progress=progress) as local:
            estimate_distributed(series, out=local, params=params, grid=grid, every=every,
                                 realized=realized, workers=workers, cluster=cluster,
                                 retries=retries, progress=progress, chunk_buckets=chunk_buckets,
                                 memory_budget=memory_budget, timeout=timeout,
                                 origin=origin, allow_unmatched=allow_unmatched,
                                 unknown_side=unknown_side, _on_series=_on_series)
        from .store import open_store

        return open_store(str(out), storage_options=storage_options)
    out = check_target(out, overwrite=overwrite).resolve()  # workers may run elsewhere
    params = resolve_params(params, None)
    started = _time.perf_counter()
    # bad event files fail before anything is started
    events = read_events(realized, [s.name for s in series], unknown_side)

    # -- what the series share, resolved once on the client ------------------------------------
    data_start = first_bar(series)
    series = clock_align(series, every, origin)
    check_columns(series, params)
    inputs = prepare(series, params)
    g = resolve_grid(grid, inputs)
    n_every = resolve_every(every, inputs.step)
    time = inputs.time
    step = inputs.step
    if events is not None:
        from .events import check_matched

        btime = time[::n_every]
        check_matched(events, series_names=inputs.names, start=btime[0],
                      end=btime[-1] + step * n_every, allow_unmatched=allow_unmatched)
    del inputs  # the tasks prepare their own series
    n_buckets = -(-time.size // n_every)
    tc, pc = chunking(g.n_bins, params.n_out, n_buckets, len(series))
    ncell = (g.n_bins + 1) * params.n_out * 2
    # the same chunks as a one-process run of all the series (liqgpu.estimate), so a task's
    # numbers equal that run's bit for bit (v2's churn makes rounding follow the chunks)
    cb = chunk_buckets or chunk_buckets_for(len(series), ncell, n_every, multiple=tc,
                                            budget_bytes=memory_budget or DEFAULT_MEMORY_BUDGET,
                                            n_buckets=n_buckets)
    cb = max(tc, -(-int(cb) // tc) * tc)  # whole zarr chunks: every cube write replaces chunks
    backend = "cupy" if cluster == "cuda" else "numpy"
    fp = fingerprint(series, params, g, n_every)
    attrs = base_attrs(params, g, step=step, every=step * n_every, fingerprint=fp,
                       sources=[s.source for s in series], data_end=time[-1] + step,
                       data_start=data_start)
    attrs["backend"] = f"{backend}+dask"

    # -- the template store (or the one an interrupted run left) -------------------------------
    partial = partial_path(out)
    run_info = {"fingerprint": fp, "series": names, "chunk_buckets": cb, "tc": tc, "pc": pc,
                "realized": events is not None}
    done = _reuse_partial(partial, run_info) if resume else None
    fresh = done is None
    todo = list(range(len(series))) if fresh else [i for i in range(len(series)) if i not in done]
    log.info("%d series x %d steps (every %d) on %d bins x %d tiers: %d to compute, %d already "
             "complete, %d buckets per task chunk", len(series), time.size, n_every, g.n_bins,
             params.n_tiers, len(todo), len(series) - len(todo), cb)
    plan = _Plan(store=str(partial / "store.zarr"), done=str(partial / "done"), time=time,
                 n_every=n_every, n_buckets=n_buckets, grid=g, params=params, chunk_buckets=cb,
                 tc=tc, backend=backend, dtype="float32",
                 # a worker loads them once for all its tasks: decided on the fleet's size
                 jit=_jit.wanted(len(series) * time.size * params.entry_mode[1] * params.n_tiers
                                 * 2, len(series) * n_buckets * g.n_bins * params.n_out * 2))
    with contextlib.ExitStack() as stack:
        # connect first: a wrong scheduler address fails before anything is written
        client = stack.enter_context(_client(workers, scheduler, cluster, connect_timeout)) \
            if todo else None
        if fresh:
            if partial.exists():
                log.warning("%s: discarding an earlier unfinished run (pass --resume, resume=True, "
                            "to reuse it)", partial)
                shutil.rmtree(partial)
            _write_template(partial, series, time=time, n_every=n_every, grid=g, params=params,
                            tc=tc, pc=pc, attrs=attrs, realized=events is not None)
            _write_json(partial / "run.json", run_info)
        if todo:
            try:
                _run_tasks(client, series, todo, plan, retries=retries, progress=progress,
                           timeout=timeout, hook=_on_series)
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM: what is complete stays for --resume
                n_done = sum(1 for i in range(len(series)) if _marker(plan.done, i, names[i]))
                log.warning("interrupted: %d of %d series complete, kept in %s; run the same "
                            "command with --resume to compute only the others", n_done,
                            len(series), partial)
                raise

    missing = [names[i] for i in range(len(series)) if not _marker(plan.done, i, names[i])]
    if missing:  # a task returned without its marker: never commit an incomplete store
        raise RunIncomplete(f"series {', '.join(missing)} have no completion marker in "
                            f"{partial}; rerun with --resume (resume=True)")
    if events is not None:
        _write_realized(partial / "store.zarr", events, names, time[::n_every], step * n_every,
                        g.edges, tc=tc, budget=memory_budget or DEFAULT_MEMORY_BUDGET)
    _write_resume(partial, plan, series, engine_cells=(g.n_bins + 1) * params.n_out * 2,
                  n_tiers=params.n_out)
    _commit(partial, out)
    log.info("done in %.2fs: %s", _time.perf_counter() - started, out)
    from .pipeline import warn_outside
    from .store import open_store

    ds = open_store(out)
    last = ds.isel(time=-1)
    warn_outside([float(last["intensity"].sum()), float(last["outside"].sum())],
                 ds.attrs.get("grid"))
    return ds


# ----------------------------------------------------------------------------------------------
def _check_cluster_options(workers, scheduler, cluster, retries) -> None:
    if workers is not None and scheduler is not None:
        raise InputError("--workers and --scheduler: give one of them, not both")
    whole = isinstance(workers, (int, np.integer)) and not isinstance(workers, bool)
    if workers is not None and (not whole or workers < 1):
        raise InputError(f"--workers {workers}: must be a whole number of at least 1")
    if cluster not in CLUSTERS:
        raise InputError(f"cluster {cluster!r}: must be one of {', '.join(CLUSTERS)}")
    if cluster == "cuda" and scheduler is not None:
        raise InputError("cluster 'cuda' starts a local cluster; with --scheduler, start the "
                         "CUDA workers yourself (dask cuda worker ADDRESS) instead")
    if not isinstance(retries, (int, np.integer)) or retries < 0:
        raise InputError(f"retries {retries}: must be a whole number >= 0")


class _client:
    """A distributed Client on a scheduler address or on a new local cluster; closes what it
    started."""

    def __init__(self, workers, scheduler, cluster, connect_timeout):
        self.args = workers, scheduler, cluster, connect_timeout
        self.cluster = None
        self.client = None

    def __enter__(self):
        from distributed import Client

        workers, scheduler, cluster, connect_timeout = self.args
        if scheduler is not None:
            import re

            if not re.fullmatch(r"([a-z]+://)?\[?[\w.:-]+?\]?:\d{1,5}", str(scheduler).strip()):
                raise InputError(f"--scheduler {scheduler}: not a scheduler address; give "
                                 f"tcp://HOST:PORT")
            try:
                self.client = Client(scheduler, timeout=connect_timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler "
                                 f"there within {connect_timeout:g}s ({exc})") from None
            log.info("connected to the Dask scheduler at %s", scheduler)
            return self.client
        if cluster == "cuda":
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                raise InputError("cluster 'cuda' needs dask-cuda: pip install dask-cuda "
                                 "(and the GPU extra, liqgpu[gpu])") from None
            kw = {} if workers is None else {"n_workers": int(workers)}
            self.cluster = LocalCUDACluster(threads_per_worker=1, host="127.0.0.1",
                                            dashboard_address=None, **kw)
        else:
            from distributed import LocalCluster

            n = int(workers) if workers is not None else (os.cpu_count() or 1)
            # the workers' own log lines (a heartbeat cut by the shutdown: a 30-line traceback on
            # a run that succeeded) stay quiet; a task's failure comes back through its future
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None,
                                        silence_logs=logging.CRITICAL)
        try:
            self.client = Client(self.cluster, set_as_default=False)
        except BaseException:
            self.cluster.close()
            raise
        log.info("started a local cluster of %d workers", len(self.cluster.workers))
        return self.client

    def __exit__(self, *exc) -> None:
        try:
            if self.client is not None:
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _run_tasks(client, series, todo, plan, *, retries, progress, timeout, hook) -> None:
    """Submit one task per series in ``todo`` and wait for all of them."""
    from distributed import as_completed

    from .progress import progress as _progress

    token = uuid.uuid4().hex[:8]
    futures, meta = [], {}
    for i in todo:
        # the series travels in its task, not scattered: data scattered to a worker that dies
        # is lost, while a task's own arguments stay with the scheduler for a retry
        f = client.submit(_series_task, i, series[i], plan, hook, retries=int(retries),
                          pure=False, key=f"liqgpu-series-{i}-{token}")
        futures.append(f)
        meta[f.key] = (i, series[i].name)
    failed = []
    try:
        for f in _progress(as_completed(futures, timeout=timeout, loop=client.loop),
                           len(futures), progress):
            i, name = meta[f.key]
            if f.status == "finished":
                r = f.result()
                log.debug("%s: %.2fs (peak live positions %d)", name, r["seconds"],
                          r["peak_live"])
            else:
                exc = f.exception()
                log.error("%s: failed (%s: %s)", name, type(exc).__name__, exc)
                failed.append((name, exc))
    except TimeoutError as exc:
        raise RunIncomplete(f"the tasks did not finish within {timeout:g}s; completed series "
                            f"are kept for --resume (resume=True)") from exc
    if failed:
        raise RunIncomplete(
            f"{len(failed)} of {len(futures)} series failed (first: {failed[0][0]}: "
            f"{failed[0][1]}); the completed ones are kept in {Path(plan.store).parent}, "
            f"rerun with --resume (resume=True)") from failed[0][1]


# ----------------------------------------------------------------------------------------------
def _series_task(i: int, s, plan: _Plan, hook=None) -> dict:
    """Compute series ``i`` over the shared grid and time axis and write its regions."""
    import xarray as xr

    from .backend import resolve
    from .model.engine import make_engine
    from .model.inputs import bucket_prices, prepare
    from .store import CUBE_VARS, TIER_VARS, V2_TIER_VARS, _quiet_zarr
    from .store.writer import spans_of, union_spans

    if hook is not None:
        hook(i, s.name)
    t0 = _time.perf_counter()
    _, xp = resolve(plan.backend)
    padded = _pad(s, plan.time)
    # as liqgpu.estimate runs it: on numpy on its own price span of the grid (its cubes are
    # zero elsewhere, and those chunks are not written), on CuPy over the whole grid; on one
    # thread (the cluster runs a worker a processor)
    engine = make_engine(prepare([padded], plan.params), plan.grid, plan.n_every, xp=xp,
                         dtype=np.dtype(plan.dtype), jit=plan.jit, threads=1)
    encoders = _chunk_encoders(plan.store, CUBE_VARS)
    prices = bucket_prices([padded], plan.time, plan.n_every)
    K = plan.params.n_out
    tier_vars = TIER_VARS + (V2_TIER_VARS if plan.params.model == "v2" else ())
    small = {v: np.zeros((1, plan.n_buckets, K, 2)) for v in tier_vars}
    row = slice(i, i + 1)
    saved = {}

    def capture(eng):  # the state `liqgpu update` resumes from, as liqgpu.estimate saves it
        saved.update(eng.state_arrays())

    with _quiet_zarr():
        held = []  # pieces of a time chunk cut at the resume bucket, until it is whole
        for chunk in engine.run(plan.chunk_buckets, on_bucket=(plan.n_buckets - 1, capture),
                                first=plan.tc):
            for v in tier_vars:
                small[v][:, chunk.b0:chunk.b1] = getattr(chunk, v)
            if encoders is None:
                cube = xr.Dataset({v: (CUBE_DIMS, getattr(chunk, v)) for v in CUBE_VARS})
                cube.to_zarr(plan.store, zarr_format=3, consolidated=False,
                             region={"series": row, "time": slice(chunk.b0, chunk.b1)})
                continue
            # whole chunks encoded here, as the store writer does
            held.append(chunk)
            if chunk.b1 % encoders[CUBE_VARS[0]].chunks[1] and chunk.b1 < plan.n_buckets:
                continue
            for v in CUBE_VARS:
                data = [getattr(h, v) for h in held]
                data = data[0] if len(data) == 1 else np.concatenate(data, axis=1)
                spans = functools.reduce(union_spans, [spans_of(h.spans, v) for h in held])
                _write_chunk_rows(encoders[v], i, held[0].b0, data, spans)
            held = []
        # the per-tier and price variables are small: one write covering the whole time axis
        data = {v: (("series", "time", "leverage", "side"), a) for v, a in small.items()}
        data.update({v: (("series", "time"), a) for v, a in prices.items()})
        data.update({f"bar_{v}": (("series", "time"), a) for v, a in prices.items()})
        xr.Dataset(data).to_zarr(plan.store, region={"series": row, "time": slice(None)},
                                 zarr_format=3, consolidated=False)
    seconds = _time.perf_counter() - t0
    state_file = Path(plan.done) / f"{i}.state.npz"
    tmp = state_file.with_name(f".{state_file.name}.{uuid.uuid4().hex[:8]}.npz")
    np.savez(tmp, **saved)
    os.replace(tmp, state_file)  # before the marker: a marked series always has its state
    _write_json(Path(plan.done) / f"{i}.json",
                {"series": s.name, "fingerprint": s.fingerprint(), "seconds": round(seconds, 3)})
    return {"series": s.name, "seconds": seconds, "peak_live": engine.peak_live}


def _chunk_encoders(store: str, names) -> dict | None:
    """The direct chunk encoders (:class:`~liqgpu.store.direct.ChunkEncoder`) of the template's
    arrays ``names``, or None where one of them has a layout they do not write (zarr writes
    those regions itself)."""
    from .store.direct import ChunkEncoder

    out = {}
    for v in names:
        out[v] = ChunkEncoder.for_array(Path(store) / v)
        if out[v] is None:
            return None
        out[v].pooled = False  # a task encodes in its own thread: workers are the parallelism
    return out


def _write_chunk_rows(enc, i: int, b0: int, data: np.ndarray, spans) -> None:
    """Buckets ``[b0, b0 + data.shape[1])`` of series ``i``: whole chunk rows of the time
    axis (a task's time chunks are whole zarr chunks, the last one ending at the array's
    end), each chunk encoded and written over the template's (a retried task writes the
    same bytes again)."""
    c, n = enc.chunks[1], enc.shape[1]
    if b0 % c:
        raise ValueError(f"{enc.folder.name}: bucket {b0} is not on a chunk edge")
    for r in range(b0 // c, -(-(b0 + data.shape[1]) // c)):
        lo, hi = r * c, min((r + 1) * c, n)
        enc.write_row(i, r, data[:, lo - b0:hi - b0], spans)


def _pad(s, time: np.ndarray):
    """``s`` on the shared time axis: NaN bars before and after (neutral in the model)."""
    step = int(s.step / np.timedelta64(1, "ns"))
    start = int((s.time[0].astype("datetime64[ns]").view(np.int64)
                 - time[0].astype("datetime64[ns]").view(np.int64)) // step)
    if start == 0 and s.time.size == time.size:
        return s
    cols = {}
    for k, v in s.columns.items():
        a = np.full(time.size, np.nan)
        a[start:start + v.size] = v
        cols[k] = a
    return dataclasses.replace(s, time=time.copy(), columns=cols)


def _write_template(partial: Path, series, *, time, n_every, grid, params, tc, pc, attrs,
                    realized: bool = False) -> None:
    """The store with every coordinate and attribute, and each data variable's metadata at its
    full shape (no chunks: the tasks fill the data), written directly as the one-process
    writer creates its store (:func:`liqgpu.store.direct.create_array`: no dask graph, no
    zarr; it had taken 15 s for 200 series through xarray)."""
    from .events import REALIZED_ATTRS
    from .store.direct import create_array, group_doc, put_doc
    from .store.layout import (CUBE_VARS, PRICE_VARS, TIER_VARS, V2_TIER_VARS, _Lazy,
                               make_layout, zarr_specs)
    from .store.writer import _encode

    S, K, P = len(series), params.n_out, grid.n_bins
    nb = -(-time.size // n_every)
    arrays = {v: _Lazy((S, nb, P, K, 2), np.float32) for v in CUBE_VARS}
    for v in TIER_VARS + (V2_TIER_VARS if params.model == "v2" else ()):
        arrays[v] = _Lazy((S, nb, K, 2), np.float64)
    prices = {v: _Lazy((S, nb), np.float64) for v in PRICE_VARS}
    meta = {
        "exchange": [s.exchange for s in series],
        "symbol": [s.symbol for s in series],
        "kind": [s.kind for s in series],
        "contract_size": [s.contract_size for s in series],
    }
    layout = make_layout(arrays, names=[s.name for s in series], time=time[::n_every],
                         grid=grid, params=params, prices=prices, attrs=attrs, series_meta=meta)
    if realized:  # filled by the client after the tasks (_write_realized)
        layout["realized"] = (("series", "time", "price", "side"), _Lazy((S, nb, P, 2), np.float32),
                              {**REALIZED_ATTRS, "units": layout["intensity"].attrs["units"]})
    partial.mkdir(parents=True)
    (partial / "done").mkdir()
    store = partial / "store.zarr"
    put_doc(store, group_doc(layout.attrs))
    for k, spec in zarr_specs(layout, tc, pc).items():
        data = layout[k].data
        create_array(store / k, spec, None if isinstance(data, _Lazy) else _encode(data))


def _reuse_partial(partial: Path, run_info: dict) -> set[int] | None:
    """Indices of the series complete in an earlier run of the same inputs (None: start over)."""
    info_path = partial / "run.json"
    if not info_path.exists():
        if partial.exists():
            log.warning("%s: the earlier run stopped before its store was set up; starting over",
                        partial)
        else:
            log.info("resume: no unfinished run at %s; starting a new one", partial)
        return None
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{partial}: cannot read run.json ({exc}); delete the folder to start "
                         f"over") from None
    if info != run_info:
        raise InputError(f"{partial}: the unfinished run there was for other series, parameters, "
                         f"grid or chunking; drop --resume (resume=True) to start over")
    names = run_info["series"]
    done = {i for i, n in enumerate(names) if _marker(partial / "done", i, n)}
    log.info("resume: %d of %d series already complete in %s", len(done), len(names), partial)
    return done


def _marker(done: str | Path, i: int, name: str) -> bool:
    """Whether series ``i`` (named ``name``) has its completion marker in ``done``."""
    p = Path(done) / f"{i}.json"
    try:
        return json.loads(p.read_text()).get("series") == name
    except (OSError, ValueError):
        return False


def _write_json(path: Path, obj: dict) -> None:
    """Write atomically: a reader sees the whole file or none."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _write_resume(partial: Path, plan, series, *, engine_cells: int, n_tiers: int) -> None:
    """The store's ``resume`` group from the tasks' saved states (each computed one series, so
    its cells, tiers and series index are shifted to the store's), as
    :func:`~liqgpu.model.engine.merge_states` numbers them. Streamed: each saved state is read
    when its piece of the packed arrays is written, so the client never holds the fleet's
    positions (200 series x 90 days: 20 M), and writes them once (it had loaded, shifted,
    concatenated, then packed them: 10 s of the run, on the client alone)."""
    from .store import resume_group, write_group
    from .store.resume import Pieces

    from .model.engine import state_column

    files = [Path(plan.done) / f"{i}.state.npz" for i in range(len(series))]
    heads = [_npz_heads(f) for f in files]
    lengths = [h["level"][0][0] for h in heads]

    def pieces(k):
        for i, f in enumerate(files):
            if k == "series":
                yield np.full(lengths[i], i, dtype=np.int64)
                continue
            with np.load(f) as z:
                yield state_column(k, z[k], i, ncell=engine_cells, K=n_tiers)

    state = {}
    for k, (shape, dtype) in heads[0].items():
        dtype = np.dtype(np.int64) if k == "series" else dtype
        state[k] = Pieces((sum(lengths),) + tuple(shape[1:]), dtype, lambda k=k: pieces(k))
    arrays, attrs = resume_group(series, series[0].step, state,
                                 (plan.n_buckets - 1) * plan.n_every, stream=True)
    write_group(partial / "store.zarr", "resume", arrays, attrs)


def _npz_heads(path: Path) -> dict:
    """``{name: (shape, dtype)}`` of the arrays in an ``np.savez`` file, from their headers
    (format 1.0, or 2.0 for a header over 64 KiB: what ``np.savez`` writes for plain dtypes)."""
    import zipfile

    fmt = np.lib.format
    out = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            with zf.open(name) as fh:
                version = fmt.read_magic(fh)
                if version not in ((1, 0), (2, 0)):
                    raise RuntimeError(f"{path}: {name} has .npy format {version}, not one "
                                       f"np.savez writes for a saved state")
                read = fmt.read_array_header_1_0 if version == (1, 0) else \
                    fmt.read_array_header_2_0
                shape, _, dtype = read(fh)
            out[name.removesuffix(".npy")] = (tuple(shape), np.dtype(dtype))
    return out


def _write_realized(store: Path, events, names, btime, every, edges, *, tc: int,
                    budget: int) -> None:
    """Bin the events into the template's ``realized`` (every series at once, a few zarr time
    chunks per write, within ``budget`` bytes) and put the summary in the root attributes, as
    :func:`liqgpu.estimate` does."""
    import xarray as xr
    import zarr

    from .events import EventBinner
    from .jsonsafe import json_safe
    from .store import _quiet_zarr

    nb = btime.size
    per_bucket = len(names) * (edges.size - 1) * 2 * 8 * 2  # float64 cube + float32 copy
    step = max(tc, budget // max(per_bucket, 1) // tc * tc)
    binner = EventBinner(events, names, btime, every, edges)
    with _quiet_zarr():
        for b0 in range(0, nb, step):
            b1 = min(nb, b0 + step)
            ds = binner.add_to(xr.Dataset(), b0, b1)
            ds.to_zarr(store, region={"series": slice(None), "time": slice(b0, b1)},
                       zarr_format=3, consolidated=False)
    summary = json_safe(binner.finish())
    zarr.open_group(str(store), mode="r+", zarr_format=3).attrs["realized_summary"] = summary


def _commit(partial: Path, out: Path) -> None:
    """Consolidate the metadata and move the store into place (replacing an old one) atomically,
    as the target's only writer (:mod:`liqgpu.store.atomic`)."""
    from .store import finish
    from .store.atomic import commit, store_lock

    store = partial / "store.zarr"
    finish(store)
    with store_lock(out):
        commit(store, out)
    shutil.rmtree(partial, ignore_errors=True)
