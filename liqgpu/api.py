"""The public API: series in, dataset (and store) out. The CLI calls only these functions."""

from __future__ import annotations

import hashlib
import logging
import time as _time
from datetime import timedelta
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import InputError
from .model.grid import Grid
from .model.params import parse_duration
from .series import Series, load_series

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 256 * 2**20


def _as_series_list(series) -> list[Series]:
    if isinstance(series, (Series, str, Path)):
        series = [series]
    out = []
    for s in series:
        out.append(s if isinstance(s, Series) else load_series(s))
    if not out:
        raise InputError("no series given")
    return out


ORIGINS = ("clock", "start")


def clock_align(series: list[Series], every, origin: str = "clock") -> list[Series]:
    """The series with NaN bars (neutral in the model) before the earliest first bar, so the
    first output bucket starts on the clock: a 1h bucket on the hour, 30m on :00 and :30, 1d at
    midnight UTC (buckets are aligned to the Unix epoch). ``origin='start'`` keeps the first bar
    as the first bucket's start.

    Examples
    --------
    >>> import pandas as pd
    >>> from liqgpu.series import from_frame
    >>> df = pd.DataFrame({"time": pd.date_range("2026-01-01T15:55Z", periods=3, freq="5min"),
    ...                    "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "oi": 1.0})
    >>> s = clock_align([from_frame(df)], "30m")[0]
    >>> str(s.time[0]), len(s)
    ('2026-01-01T15:30:00.000000000', 8)
    """
    import dataclasses

    if origin not in ORIGINS:
        raise InputError(f"--origin {origin!r}: is not one of {', '.join(ORIGINS)}")
    if origin == "start" or not series:
        return series
    step = int(series[0].step / np.timedelta64(1, "ns"))
    n = resolve_every(every, series[0].step)
    bucket = step * n
    t0 = min(int(s.time[0].astype("datetime64[ns]").view(np.int64)) for s in series)
    lead = (t0 % bucket) // step if bucket else 0
    if not lead or (t0 % bucket) % step:
        return series
    out = []
    for s in series:
        if int(s.time[0].astype("datetime64[ns]").view(np.int64)) != t0 or \
                int(s.step / np.timedelta64(1, "ns")) != step:
            out.append(s)  # align() checks the others against this grid
            continue
        pre = (t0 - step * np.arange(lead, 0, -1, dtype=np.int64)).view("datetime64[ns]")
        cols = {k: np.concatenate([np.full(lead, np.nan), v]) for k, v in s.columns.items()}
        out.append(dataclasses.replace(
            s, time=np.concatenate([pre, s.time.astype("datetime64[ns]")]), columns=cols))
    return out


def resolve_params(params, model: str | None):
    """The parameters to run: ``params``, or ``model``'s defaults (v2 when neither is given)."""
    from .model.registry import DEFAULT_MODEL, default_params

    if params is None:
        return default_params(model or DEFAULT_MODEL)
    if model is not None and model != params.model:
        raise InputError(f"--model {model}: the parameters given are model {params.model}'s")
    return params


def resolve_every(every, step: np.timedelta64) -> int:
    """Output step as a whole number of model steps (default: 1h, or the step if longer)."""
    step_ns = int(step / np.timedelta64(1, "ns"))
    if every is None:
        every = timedelta(hours=1) if step_ns < 3600 * 10**9 else timedelta(seconds=step_ns / 1e9)
    if isinstance(every, (int, np.integer)) and not isinstance(every, bool):
        n = int(every)
    else:
        td = parse_duration(every, option="--every")
        ns = int(round(td.total_seconds() * 1e9))
        if ns % step_ns:
            raise InputError(
                f"--every {every}: must be a whole multiple of the model step "
                f"({step_ns / 1e9:g}s)"
            )
        n = ns // step_ns
    if n < 1:
        raise InputError(f"--every {every}: must be at least one model step")
    return n


def resolve_grid(grid, inputs) -> Grid:
    """The grid to use: a Grid, a spec string, or None for the default covering every level."""
    lo, hi = inputs.level_range()
    if not np.isfinite(lo):
        raise InputError("the series has no bar with a valid entry price; nothing to estimate")
    g = Grid.covering(lo, hi) if grid is None else (grid if isinstance(grid, Grid) else Grid.parse(grid))
    if hi < g.edges[0] or lo >= g.edges[-1]:
        raise InputError(
            f"--grid {g.spec}: holds none of the levels, which range from {lo:.6g} to {hi:.6g}"
        )
    return g


def fingerprint(series: list[Series], params, grid: Grid, every: int) -> str:
    h = hashlib.sha256()
    for s in series:
        h.update(s.fingerprint().encode())
    h.update(repr(sorted(params.to_attrs().items())).encode())
    h.update(grid.edges.tobytes())
    h.update(str(every).encode())
    return "sha256:" + h.hexdigest()


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
        and published there, root metadata last (:mod:`liqgpu.remote`).
    overwrite : bool
        Replace an existing store at ``out``.
    chunk_buckets : int, optional
        Output buckets per time chunk (default from ``memory_budget``).
    memory_budget : int
        Bytes the engine's per-chunk cubes may take.
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
    from .model.backend import resolve
    from .model.engine import chunk_buckets_for, make_engine
    from .model.inputs import bucket_prices, prepare
    from .remote import is_url, staged
    from .store import (CUBE_VARS, TIER_VARS, V2_TIER_VARS, Group, Part, StoreSummary, StoreWriter,
                        _Lazy, base_attrs, chunking, make_dataset, make_layout, open_store)

    if out is not None and is_url(out):
        with staged(str(out), overwrite=overwrite, storage_options=storage_options,
                    progress=progress) as local:
            summary = estimate(series, params=params, model=model, grid=grid, every=every,
                               backend=backend, out=local, origin=origin,
                               allow_unmatched=allow_unmatched, chunk_buckets=chunk_buckets,
                               memory_budget=memory_budget, progress=progress, dtype=dtype,
                               realized=realized, reopen=False)
        if not reopen:
            summary.path = str(out)
            return summary
        return open_store(str(out), storage_options=storage_options)
    series = _as_series_list(series)
    params = resolve_params(params, model)
    if out is not None:  # fail on the target before any work
        from .store import check_target

        check_target(out, overwrite=overwrite)
    name, xp = resolve(backend)
    started = _time.perf_counter()
    events = _load_realized(realized)  # a bad events file fails before the expensive work
    series = clock_align(series, every, origin)
    inputs = prepare(series, params)
    g = resolve_grid(grid, inputs)
    n_every = resolve_every(every, inputs.step)
    engine = make_engine(inputs, g, n_every, xp=xp, dtype=dtype)
    tc, pc = chunking(g.n_bins, params.n_out, engine.n_buckets)
    cb = chunk_buckets or chunk_buckets_for(inputs.n_series, engine.ncell, n_every,
                                            budget_bytes=memory_budget, multiple=tc)
    # whole zarr chunks, as distributed tasks use: v2's churn makes rounding follow the chunks,
    # so both paths cut the time axis the same way and agree bit for bit
    cb = max(tc, -(-int(cb) // tc) * tc)
    prices = bucket_prices(series, inputs.time, n_every)
    btime = inputs.time[:: n_every]
    attrs = base_attrs(params, g, step=inputs.step, every=inputs.step * n_every,
                       fingerprint=fingerprint(series, params, g, n_every),
                       sources=[s.source for s in series])
    attrs["backend"] = name
    meta = {
        "exchange": [s.exchange for s in series],
        "symbol": [s.symbol for s in series],
        "kind": [s.kind for s in series],
        "contract_size": [s.contract_size for s in series],
    }
    log.info("estimating %d series x %d steps (every %d) with model %s on %d bins x %d tiers "
             "(%d leverage cells) with %s, %d buckets per chunk", inputs.n_series,
             inputs.n_steps, n_every, params.model, g.n_bins, params.n_tiers, params.n_out, name,
             cb)

    if events is not None:
        from .realized import check_matched

        check_matched(events, series_names=inputs.names, start=btime[0],
                      end=btime[-1] + inputs.step * n_every, allow_unmatched=allow_unmatched)
    binner = _RealizedBinner(events, inputs.names, btime, inputs.step * n_every, g.edges) \
        if events is not None else None

    resume = {}
    last = engine.n_buckets - 1

    def capture(eng):  # the state before the last bucket, where `liqgpu update` resumes (the
        # cut is made with or without `out`, so both give bit-identical numbers)
        resume.setdefault("state", eng.state_arrays())

    def chunks():
        run = engine.run(cb, on_bucket=(last, capture))
        return _progress(run, -(-engine.n_buckets // cb), progress)

    if out is None:
        import xarray as xr

        def pieces():
            for chunk in chunks():
                ds = make_dataset(chunk, names=inputs.names, time=btime, grid=g, params=params,
                                  prices=prices, b0=chunk.b0, attrs=attrs, series_meta=meta)
                if binner is not None:
                    ds = binner.add_to(ds, chunk.b0, chunk.b1)
                    if chunk.b1 == engine.n_buckets:
                        attrs["realized_summary"] = binner.finish()
                        ds.attrs.update(attrs)
                yield ds

        parts = list(pieces())
        ds = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time", data_vars="minimal",
                                                        coords="minimal", compat="override",
                                                        join="override")
        ds.attrs.update(attrs)
        result = ds
    else:
        S, K, nb = inputs.n_series, params.n_out, engine.n_buckets
        shapes = {v: (S, nb, g.n_bins, K, 2) for v in CUBE_VARS}
        shapes.update({v: (S, nb, K, 2) for v in TIER_VARS})
        if params.model == "v2":
            shapes.update({v: (S, nb, K, 2) for v in V2_TIER_VARS})
        dtypes = {v: np.dtype(dtype) if v in CUBE_VARS else np.float64 for v in shapes}
        layout = make_layout({v: _Lazy(shapes[v], dtypes[v]) for v in shapes},
                             names=inputs.names, time=btime, grid=g, params=params,
                             prices=prices, attrs=attrs, series_meta=meta)
        if binner is not None:
            layout["realized"] = (("series", "time", "price", "side"),
                                  _Lazy((S, nb, g.n_bins, 2), np.float32),
                                  {**REALIZED_ATTRS, "units": layout["intensity"].attrs["units"]})

        def resume_part():
            return Group("resume", *resume_group(series, inputs.step, resume["state"],
                                                 last * n_every))

        def parts():
            for chunk in chunks():
                arrays = {v: getattr(chunk, v) for v in shapes}
                if binner is not None:
                    arrays["realized"] = binner.cube(chunk.b0, chunk.b1)
                    if chunk.b1 == nb:
                        layout.attrs["realized_summary"] = binner.finish()
                yield Part(chunk.b0, chunk.b1, arrays)
                if chunk.b1 == last:  # the engine stands before the last bucket: the resume
                    # state, written while the last bucket is computed
                    capture(engine)
                    yield resume_part()
            if last == 0:
                yield resume_part()

        with StoreWriter(out, overwrite=overwrite, tc=tc, pc=pc) as w:
            w.start(layout)
            _write_behind(parts(), w.write)
            w.commit()
        result = open_store(out) if reopen else StoreSummary(out, layout)
    log.info("done in %.2fs (peak live positions %d)", _time.perf_counter() - started,
             engine.peak_live)
    return result


def resume_group(series: list[Series], step: np.timedelta64, state: dict, resume_step: int):
    """What `liqgpu update` needs to continue a run exactly: the live positions before step
    ``resume_step`` (the start of the last bucket), the last valid OI before it per series, and
    every input bar on the common time axis (to check overlaps and recompute the last bucket)."""
    from .model.inputs import align, last_valid_before
    from .series import OPTIONAL, REQUIRED

    time, offsets = align(series)
    T = time.size
    cols = [c for c in REQUIRED + OPTIONAL if any(c in s.columns for s in series)]
    arrays = {f"state_{k}": v for k, v in state.items()}
    arrays["bars_time"] = time.astype("datetime64[ns]").view(np.int64)
    for c in cols:
        a = np.full((len(series), T), np.nan)
        for i, s in enumerate(series):
            if c in s.columns:
                a[i, offsets[i]] = s[c]
        arrays[f"bars_{c}"] = a
    oi_prev = []
    for i in range(len(series)):
        oi_prev.append(last_valid_before(arrays["bars_oi"][i], resume_step))
    attrs = {
        "resume_step": int(resume_step),
        "n_steps": int(T),
        "step_ns": int(step / np.timedelta64(1, "ns")),
        "oi_prev": [None if not np.isfinite(x) else x for x in oi_prev],
        "columns": [[c for c in cols if c in s.columns] for s in series],
    }
    return arrays, attrs


def _write_behind(chunks: Iterable, write, depth: int = 1) -> None:
    """Write each chunk on a second thread while the next one is computed.

    At most ``depth`` finished chunks wait in the queue, so memory stays bounded; compression
    (numcodecs releases the GIL) overlaps the engine. An error on either side stops both and is
    raised here; after an error (or Ctrl-C, SIGTERM) on the producer's side, chunks still queued
    are not written.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    failed: list[BaseException] = []
    done = object()
    stop = threading.Event()  # the producer failed (or was interrupted): write no more

    def writer():
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if not stop.is_set():
                    write(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failed.append(exc)
            while q.get() is not done:  # drain so the producer never blocks
                pass

    t = threading.Thread(target=writer, name="liqgpu-writer", daemon=True)
    t.start()
    try:
        for ds in chunks:
            if failed:
                break
            q.put(ds)
    except BaseException:
        stop.set()  # what is queued would be thrown away with the temporary store
        raise
    finally:
        q.put(done)
        t.join()
    if failed:
        raise failed[0]


def _load_realized(realized):
    """Normalized events from paths and/or DataFrames, sorted by time (or None)."""
    if realized is None or (isinstance(realized, (list, tuple)) and not realized):
        return None
    import pandas as pd

    from .io.events import load_events, validate_events

    items = realized if isinstance(realized, (list, tuple)) else [realized]
    frames = [validate_events(x) if isinstance(x, pd.DataFrame) else load_events(x) for x in items]
    ev = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return ev.sort_values("time", kind="stable").reset_index(drop=True)


REALIZED_ATTRS = {"units": "quote notional",
                  "long_name": "liquidations published by the exchange, binned on the grid"}


class _RealizedBinner:
    """Bins events chunk by chunk (memory bounded like the engine), one summary at the end."""

    def __init__(self, events, names, btime, every, edges):
        from .io.tables import time_ns

        self.ev, self.names, self.btime, self.every, self.edges = events, names, btime, every, edges
        self.t = time_ns(events["time"])
        self.summary = None

    def add_to(self, ds, b0: int, b1: int):
        ds["realized"] = (("series", "time", "price", "side"), self.cube(b0, b1),
                          {**REALIZED_ATTRS, "units": ds["intensity"].attrs["units"]}
                          if "intensity" in ds else dict(REALIZED_ATTRS))
        return ds

    def cube(self, b0: int, b1: int) -> np.ndarray:
        """Buckets [b0, b1) binned: (series, time, price, side) float32."""
        from .realized import bin_realized

        lo = self.btime[b0].astype("datetime64[ns]").view(np.int64)
        hi = (self.btime[b1 - 1] + self.every).astype("datetime64[ns]").view(np.int64)
        first = b0 == 0
        last = b1 == self.btime.size
        i0 = 0 if first else int(np.searchsorted(self.t, lo, side="left"))
        i1 = self.t.size if last else int(np.searchsorted(self.t, hi, side="left"))
        cube, summ = bin_realized(self.ev.iloc[i0:i1], series_names=self.names,
                                  time=self.btime[b0:b1], every=self.every, edges=self.edges,
                                  return_summary=True, log_left_out=False)
        self._merge(summ)
        return cube.astype(np.float32)

    def _merge(self, summ: dict) -> None:
        if self.summary is None:
            self.summary = summ
            return
        for k, v in summ.items():
            if isinstance(v, dict):
                self.summary[k]["count"] += v["count"]
                self.summary[k]["notional"] += v["notional"]
            elif k != "events":
                self.summary[k] += v
        self.summary["events"] += summ["events"]

    def finish(self) -> dict:
        s = self.summary or {"events": 0, "binned": 0, "notional_binned": 0.0}
        left = {k: v["count"] for k, v in s.items() if isinstance(v, dict) and v["count"]}
        if left:
            log.warning("realized: %d of %d events not binned (%s)", s["events"] - s["binned"],
                        s["events"], ", ".join(f"{k} {v}" for k, v in left.items()))
        return s


def _progress(it: Iterable, total: int, enabled: bool):
    if not enabled or total <= 1:
        yield from it
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("estimating"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("chunks", total=total)
        for x in it:
            yield x
            bar.advance(task)


def store_info(path) -> dict:
    """Summary of a store: dims, series, time and price range, parameters, totals per side.

    Examples
    --------
    >>> store_info("demo.zarr")["dims"]  # doctest: +SKIP
    {'series': 1, 'time': 2880, 'price': 702, 'leverage': 5, 'side': 2}
    """
    from .store import open_store

    ds = open_store(path, chunks=None)
    a = ds.attrs
    times = ds["time"].values
    totals = {}
    for v in ("added", "liquidated", "outside_liquidated", "closed", "churned", "expired"):
        if v not in ds:
            continue
        dims = [d for d in ds[v].dims if d != "side"]
        s = ds[v].sum(dims).values
        totals[v] = {"long": float(s[0]), "short": float(s[1])}
    last = ds["intensity"].isel(time=-1).sum(["series", "price", "leverage"]).values
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
    }
