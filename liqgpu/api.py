"""The public API: series in, dataset (and store) out. The CLI calls only these functions.

The work is done by :mod:`liqgpu.pipeline` (series -> model -> store); this module resolves the
options, loads realized events, and returns what the caller asked for.
"""

from __future__ import annotations

import logging
import time as _time
from pathlib import Path

import numpy as np

from .errors import InputError  # noqa: F401 - re-exported
from .events import REALIZED_ATTRS, EventBinner, check_matched, read_events
from .model.grid import Grid
from .pipeline import DEFAULT_MEMORY_BUDGET, as_series_list, resolve_params

log = logging.getLogger(__name__)


def estimate(
    series,
    *,
    params=None,
    model: str | None = None,
    grid: Grid | str | None = None,
    every=None,
    backend: str = "auto",
    out: str | Path | None = None,
    overwrite: bool = False,
    chunk_buckets: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
    dtype=np.float32,
    realized=None,
    storage_options: dict | None = None,
    origin: str = "clock",
    allow_unmatched: bool = False,
    reopen: bool = True,
    unknown_side: str = "skip",
):
    """Estimate liquidation levels (model v2 by default, or v1) for one or more series.

    Parameters
    ----------
    series : Series, path, or a list of them
        Normalized series (see :func:`liqgpu.load_series`). Several series share one grid and
        time axis (the ``series`` dimension).
    params : ParamsV2 or Params, optional
        Model parameters (their class names the model); default the MODEL.md defaults of
        ``model``.
    model : {'v2', 'v1'}, optional
        The model when ``params`` is not given (default ``'v2'``); must agree with ``params``.
    grid : Grid or str, optional
        ``'log:START:STOP:BPS'``, ``'linear:START:STOP:STEP'`` or a :class:`Grid`; default a
        10 bps log grid covering every level the series can produce.
    every : str, timedelta or int, optional
        Output step (``'1h'``) or a whole number of model steps; default 1h.
    backend : {'auto', 'numpy', 'cupy'}
        Resolved once here; ``auto`` uses CuPy when a GPU is usable.
    out : path or URL, optional
        Write a zarr store there (atomically) and return it opened lazily; without it the
        dataset is built in memory. A URL (``s3://bucket/btc.zarr``) is computed on local disk
        and published there, root metadata last (:mod:`liqgpu.store.remote`).
    overwrite : bool
        Replace an existing store at ``out``.
    chunk_buckets : int, optional
        Output buckets per time chunk (default from ``memory_budget``).
    memory_budget : int
        Bytes the engine's per-chunk cubes may take; on the CPU, a fleet runs in series groups
        whose chunk cubes and engines (inputs, live positions) fit it, one group at a time.
    progress : bool
        Show a progress bar (on a terminal).
    dtype : numpy dtype
        Dtype of ``intensity`` and ``liquidated`` (float32 in stores).
    realized : path, DataFrame, or a list of them, optional
        Normalized liquidation events (``liqgpu ingest``) binned on the same buckets and grid
        into ``realized`` (series, time, price, side), matched to series by ``exchange:symbol``.
    storage_options : dict, optional
        For a URL ``out``: passed to fsspec (credentials, endpoint).
    origin : {'clock', 'start'}
        ``clock`` (default): output buckets start on the clock (1h on the hour, 30m on :00/:30,
        aligned to the Unix epoch, UTC), the first one partial; ``start``: at the first bar.
    allow_unmatched : bool
        Leave out (with a warning) realized events of no series of the store or outside its
        time range; by default they are an error.
    unknown_side : {'skip', 'split'}
        Realized events whose side is not published (Hyperliquid's): left out of ``realized``
        (counted in its summary), or half to each side.
    reopen : bool
        With ``out``: open the written store and return it (``False``: return a
        :class:`~liqgpu.store.StoreSummary` of its sizes and attributes, without importing
        xarray; the command line uses it).

    Returns
    -------
    xarray.Dataset
        Dimensions ``series, time, price, leverage, side`` (MODEL.md, "The dataset").

    Examples
    --------
    >>> import liqgpu
    >>> s = liqgpu.synthetic_series(days=2, seed=1)
    >>> ds = liqgpu.estimate(s, every="1h", backend="numpy")
    >>> sorted(ds.sizes.items())[:2]
    [('leverage', 5), ('price', ...)]
    >>> [str(x) for x in ds.leverage.values]
    ['2-10', '10-25', '25-50', '50-100', '100-150']
    """
    from .backend import resolve
    from .pipeline import plan, run_in_memory, run_to_store
    from .store import StoreSummary, open_store
    from .store.remote import is_url, staged

    if out is not None and is_url(out):
        with staged(str(out), overwrite=overwrite, storage_options=storage_options,
                    progress=progress) as local:
            summary = estimate(series, params=params, model=model, grid=grid, every=every,
                               backend=backend, out=local, origin=origin,
                               allow_unmatched=allow_unmatched, chunk_buckets=chunk_buckets,
                               memory_budget=memory_budget, progress=progress, dtype=dtype,
                               realized=realized, reopen=False, unknown_side=unknown_side)
        if not reopen:
            summary.path = str(out)
            return summary
        return open_store(str(out), storage_options=storage_options)
    series = as_series_list(series)
    params = resolve_params(params, model)
    if out is not None:  # fail on the target before any work
        from .store import check_target

        check_target(out, overwrite=overwrite)
    backend = resolve(backend)
    started = _time.perf_counter()
    # a bad events file fails before the expensive work
    events = read_events(realized, [s.name for s in series], unknown_side)
    run = plan(series, params, grid=grid, every=every, origin=origin, backend=backend,
               dtype=dtype, chunk_buckets=chunk_buckets, memory_budget=memory_budget)
    binner = None
    if events is not None:
        check_matched(events, series_names=run.names, start=run.btime[0],
                      end=run.btime[-1] + run.every, allow_unmatched=allow_unmatched)
        binner = EventBinner(events, run.names, run.btime, run.every, run.grid.edges)
    if out is None:
        result = run_in_memory(run, progress=progress, binner=binner)
    else:
        layout = run_to_store(run, out, overwrite=overwrite, progress=progress, binner=binner,
                              realized_attrs=REALIZED_ATTRS)
        result = open_store(out) if reopen else StoreSummary(out, layout)
    log.info("done in %.2fs (peak live positions %d)", _time.perf_counter() - started,
             run.engine.peak_live)
    return result


def estimate_files(paths, out, *, params=None, model: str | None = None, exchange=None,
                   symbol=None, kind=None, contract_size=None, step=None, max_bars=None,
                   max_gap=None, grid=None, every=None, backend: str = "auto",
                   overwrite: bool = False, origin: str = "clock", realized=None,
                   allow_unmatched: bool = False, workers: int | None = None,
                   scheduler: str | None = None, resume: bool = False,
                   progress: bool = False, unknown_side: str = "skip"):
    """``liqgpu estimate``: series files to a store, in this process or as Dask tasks.

    The series files are read and checked (:func:`liqgpu.load_series`) after the target is;
    ``workers`` (a local cluster) or ``scheduler`` (a cluster's address) run one task per series
    (:func:`liqgpu.distributed.estimate_distributed`, on CUDA workers with ``backend='cupy'``),
    else :func:`estimate` runs here.

    Returns
    -------
    summary, int
        What was written (a :class:`~liqgpu.store.writer.StoreSummary` or, for Dask runs, the
        store opened) and the number of Dask tasks (0 for a run in this process).
    """
    from .series import load_series
    from .store import check_target

    distributed = workers is not None or scheduler is not None
    if resume and not distributed:
        raise InputError("--resume: only with --workers or --scheduler")
    if distributed and backend == "cupy" and scheduler is not None:
        raise InputError("--backend cupy with --scheduler: not supported; start CUDA workers "
                         "with dask-cuda and use --workers on a GPU machine, or drop --backend")
    check_target(out, overwrite=overwrite)
    if not distributed:
        from .store.direct import preload

        preload()
    params = resolve_params(params, model)
    if not distributed and backend != "cupy":  # a large run: the compiled loops load now,
        preload_loops(paths, params)  # beside the reading, not beside the first blocks
    series = [load_series(p, exchange=exchange, symbol=symbol, kind=kind,
                          contract_size=contract_size, step=step, max_bars=max_bars,
                          max_gap=max_gap) for p in paths]
    realized = list(realized) if realized else None
    if distributed:
        from .distributed import estimate_distributed

        ds = estimate_distributed(series, out=out, params=params, grid=grid, every=every,
                                  realized=realized, workers=workers, scheduler=scheduler,
                                  cluster="cuda" if backend == "cupy" else "local",
                                  overwrite=overwrite, resume=resume, origin=origin,
                                  allow_unmatched=allow_unmatched, progress=progress,
                                  unknown_side=unknown_side)
        return ds, len(series)
    return estimate(series, params=params, grid=grid, every=every, backend=backend, out=out,
                    overwrite=overwrite, origin=origin, allow_unmatched=allow_unmatched,
                    progress=progress, realized=realized, reopen=False,
                    unknown_side=unknown_side), 0


def preload_loops(paths, params) -> bool:
    """Start loading the compiled loops on a thread if a run of the series files ``paths``
    with ``params`` will want them (:func:`liqgpu.model.jit.preload_if`, from the files' row
    counts); returns whether it did."""
    from .model import jit

    return jit.preload_if(rows_hint(paths) * params.entry_mode[1] * params.n_tiers * 2)


def rows_hint(paths) -> int:
    """About how many bars the series files hold, before reading them: a Parquet file's row
    count from its footer, a CSV file's size over 60 bytes a row (0 for what cannot be read;
    reading the files checks them)."""
    import os

    n = 0
    for p in paths:
        try:
            if str(p).lower().endswith((".parquet", ".pq")):
                import pyarrow.parquet as pq

                n += pq.read_metadata(p).num_rows
            else:
                n += os.path.getsize(p) // 60
        except Exception:  # noqa: BLE001 - a hint only; load_series reports a bad file
            continue
    return n


def side_totals(da, budget: int = 64 * 2**20) -> np.ndarray:
    """``da`` summed over every dimension but ``side``, in float64, read a few time chunks at
    a time (at most about ``budget`` bytes of them at once): a cube's totals in bounded memory,
    however long the store."""
    dims = list(da.dims)
    k = dims.index("side")
    out = np.zeros(da.sizes["side"], np.float64)
    nt = da.sizes.get("time", 1)
    per_t = max(1, da.size // max(nt, 1) * da.dtype.itemsize)
    tc = 1
    if "time" in dims:
        tc = (da.encoding.get("chunks") or (1,) * len(dims))[dims.index("time")] or 1
    step = nt if per_t * nt <= budget else max(tc, budget // per_t // tc * tc)
    for t0 in range(0, nt, step):
        part = da.isel(time=slice(t0, t0 + step)) if "time" in dims else da
        v = np.moveaxis(part.values.astype(np.float64), k, -1)
        out += v.reshape(-1, out.size).sum(axis=0)
    return out


def store_info(path, *, verify: bool = False) -> dict:
    """Summary of a store: dims, series, time and price range, parameters, totals per side.

    With ``verify``, the store's integrity is checked first (every chunk of its manifest present
    with its size and decoding; :func:`liqgpu.store.integrity.verify`) and reported under
    ``verified``; a damaged store is an :class:`InputError` naming the array. Local stores only.

    Examples
    --------
    >>> store_info("demo.zarr")["dims"]  # doctest: +SKIP
    {'series': 1, 'time': 2880, 'price': 702, 'leverage': 5, 'side': 2}
    """
    from .store import open_store

    checked = None
    if verify:
        from .store.integrity import verify as verify_store
        from .store.remote import is_url

        if is_url(path):
            raise InputError(f"{path}: --verify checks local stores; verify the local copy "
                             "before publishing it")
        open_store(path, chunks=None)  # a liqgpu store at all (its errors are clearer)
        checked = verify_store(path)
    ds = open_store(path, chunks=None)
    a = ds.attrs
    times = ds["time"].values
    totals = {}
    for v in ("added", "liquidated", "outside_liquidated", "closed", "churned", "expired",
              "realized"):
        if v in ds:
            s = side_totals(ds[v])
            totals[v] = {"long": float(s[0]), "short": float(s[1])}
    last = side_totals(ds["intensity"].isel(time=[-1]))
    out_last = ds["outside"].isel(time=-1).sum(["series", "leverage"]).values
    totals["live_at_end"] = {"long": float(last[0] + out_last[0]),
                             "short": float(last[1] + out_last[1])}
    from .model.registry import params_from_attrs

    return {
        "path": str(path),
        "series": [str(x) for x in ds["series"].values],
        "dims": {k: int(v) for k, v in ds.sizes.items() if k != "price_edge"},
        "time_start": str(np.datetime_as_string(times[0], unit="s")) + "Z",
        "time_end": str(np.datetime_as_string(times[-1], unit="s")) + "Z",
        "data_end": a.get("data_end"),
        "quote": str(ds["quote"].values[0]) if "quote" in ds.coords and ds.sizes["series"] and
        len({str(q) for q in ds["quote"].values}) == 1 else None,
        "step": a.get("step"),
        "every": a.get("every"),
        "price_min": float(ds["price_edges"].values[0]),
        "price_max": float(ds["price_edges"].values[-1]),
        "grid": a.get("grid"),
        "params": params_from_attrs(a).to_attrs(),
        "totals": totals,
        "engine_version": a.get("engine_version"),
        "fingerprint": a.get("fingerprint", ""),
        "created": a.get("created"),
        **({"verified": checked} if checked is not None else {}),
    }
