"""The one estimate pipeline: series -> model -> store (or an in-memory dataset).

Every way of estimating shares these steps: the series list, the parameters, aligning the first
bucket on the clock, the output step and the grid, the fingerprint, the engine run in time
chunks with a progress bar, and the write-behind store writer. :func:`liqgpu.estimate` is the
public face; ``update``, the distributed tasks and ``sweep`` use the pieces they need.

Arrows point one way: ``api -> pipeline -> (model, store)``; nothing here imports the API.

Examples
--------
>>> import liqgpu
>>> from liqgpu import pipeline
>>> s = liqgpu.synthetic_series(days=1, seed=1)
>>> run = pipeline.plan([s], pipeline.resolve_params(None, None), every="1h", backend="numpy")
>>> run.n_buckets
24
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

from .errors import InputError
from .model.grid import Grid
from ._time import parse_duration
from .progress import progress as progress_bar
from .series import Series, load_series

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 256 * 2**20


def as_series_list(series) -> list[Series]:
    """One series, a path, a pandas DataFrame of bars (as :func:`liqgpu.series.from_frame`
    reads it) or a list of them, as a non-empty list of :class:`Series`."""
    if isinstance(series, (Series, str, Path)) or _is_frame(series) \
            or not hasattr(series, "__iter__"):
        series = [series]
    out = []
    for s in series:
        if isinstance(s, Series):
            out.append(s)
        elif _is_frame(s):
            from .series import from_frame

            out.append(from_frame(s))
        elif isinstance(s, (str, Path)):
            out.append(load_series(s))
        else:
            raise InputError(f"series: a {type(s).__name__} is not a series; give a "
                             "liqgpu.Series, a file path or a DataFrame of bars")
    if not out:
        raise InputError("no series given")
    return out


def _is_frame(x) -> bool:
    """A pandas DataFrame (without importing pandas for the check)."""
    return type(x).__name__ == "DataFrame" and type(x).__module__.startswith("pandas")


ORIGINS = ("clock", "start")


def check_run_options(dtype, chunk_buckets, memory_budget) -> None:
    """``dtype`` (of the output cubes: float32 or float64), ``chunk_buckets`` and
    ``memory_budget`` (positive, when given), as :func:`liqgpu.estimate` takes them."""
    try:
        shown = np.dtype(dtype).name
        ok = np.dtype(dtype) in (np.float32, np.float64)
    except TypeError:
        shown, ok = repr(dtype), False
    if not ok:
        raise InputError(f"dtype: {shown}: the cubes are float32 (default) or float64")
    for name, v in (("chunk_buckets", chunk_buckets), ("memory_budget", memory_budget)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                              or v <= 0):
            raise InputError(f"{name}: {v!r} must be a positive whole number")


def first_bar(series: list[Series]) -> "np.datetime64 | None":
    """The open of the earliest first bar with a price of ``series`` (before any clock
    alignment's NaN bars): the store's ``data_start``."""
    firsts = []
    for s in series:
        ok = np.flatnonzero(np.isfinite(np.asarray(s["close"], dtype=np.float64)))
        if ok.size:
            firsts.append(s.time[int(ok[0])].astype("datetime64[ns]"))
    return min(firsts) if firsts else None


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
    if not hasattr(params, "entry_mode"):
        raise InputError(f"params: a {type(params).__name__} is not model parameters; give "
                         "liqgpu.Params(...) (v1) or liqgpu.model.v2.params.Params(...) (v2), "
                         "e.g. liqgpu.model.v2.params.Params(churn=0.3)")
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


def _extreme_prices(inputs) -> str:
    """Where each series' lowest low and highest high are (file, bar time): what a wrong
    price usually is when the default grid comes out too large."""
    from .store.layout import time_text

    parts = []
    for s in getattr(inputs, "series", None) or []:
        lo, hi = np.asarray(s["low"], np.float64), np.asarray(s["high"], np.float64)
        if not (np.isfinite(lo).any() and np.isfinite(hi).any()):
            continue
        i, j = int(np.nanargmin(lo)), int(np.nanargmax(hi))
        parts.append(f"{s.source}: lowest low {lo[i]:.6g} at {time_text(s.time[i])}, highest "
                     f"high {hi[j]:.6g} at {time_text(s.time[j])}")
    return ("; ".join(parts[:3]) + " (a wrong price?)") if parts else "check the prices"


def resolve_grid(grid, inputs) -> Grid:
    """The grid to use: a Grid, a spec string, or None for the default covering every level."""
    lo, hi = inputs.level_range()
    if not np.isfinite(lo):
        raise InputError("the series has no bar with a valid entry price; nothing to estimate")
    if grid is None:
        try:
            g = Grid.covering(lo, hi)
        except InputError:  # a price far from the others: say where, not "--grid"
            from .model.grid import MAX_BINS

            raise InputError(f"the default grid (10 bps over every level the series can "
                             f"produce, {lo:.6g} .. {hi:.6g}) would hold more than {MAX_BINS} "
                             f"bins; {_extreme_prices(inputs)}, or give --grid") from None
    else:
        g = grid if isinstance(grid, Grid) else Grid.parse(grid)
    if hi < g.edges[0] or lo >= g.edges[-1]:
        raise InputError(
            f"--grid {g.spec}: holds none of the levels, which range from {lo:.6g} to {hi:.6g}"
        )
    return g


def fingerprint(series: list[Series], params, grid: Grid, every: int) -> str:
    """The identity of a run: its bars, metadata, parameters, grid and output step."""
    h = hashlib.sha256()
    for s in series:
        h.update(s.fingerprint().encode())
    h.update(repr(sorted(params.to_attrs().items())).encode())
    h.update(grid.edges.tobytes())
    h.update(str(every).encode())
    return "sha256:" + h.hexdigest()




@dataclass(eq=False)
class Plan:
    """One resolved run: aligned series, prepared inputs, grid, output step, engine, chunking
    and the store's attributes. Made by :func:`plan`; run by :func:`run_to_store` or
    :func:`run_in_memory`."""

    series: list
    params: object
    inputs: object
    grid: Grid
    n_every: int
    engine: object
    tc: int
    pc: int
    chunk_buckets: int
    prices: dict
    btime: np.ndarray
    attrs: dict
    meta: dict
    dtype: object = np.float32
    resume: dict = field(default_factory=dict)
    #: series groups ``(s0, s1)`` that :func:`run_to_store` runs one after another, each over
    #: the whole time range, so one time chunk holds one group's cubes (see :func:`series_groups`)
    groups: list = field(default_factory=list)

    @property
    def n_buckets(self) -> int:
        return self.engine.n_buckets

    @property
    def names(self) -> list[str]:
        return self.inputs.names

    @property
    def every(self) -> np.timedelta64:
        return self.inputs.step * self.n_every

    @property
    def last(self) -> int:
        """The last bucket: the run is cut before it, where ``liqgpu update`` resumes."""
        return self.engine.n_buckets - 1

    def capture(self, eng) -> None:
        """Keep the engine's state before the last bucket (the cut is made with or without a
        store, so both give bit-identical numbers)."""
        self.resume.setdefault("state", eng.state_arrays())

    def chunks(self, progress: bool = False):
        """The engine's :class:`~liqgpu.model.engine.ChunkResult` s, in time order."""
        from .model.engine import chunk_edges

        run = self.engine.run(self.chunk_buckets, on_bucket=(self.last, self.capture),
                              first=self.tc)
        n = len(chunk_edges(self.n_buckets, self.chunk_buckets, self.last, self.tc))
        return progress_bar(run, n, progress)


def plan(series: list[Series], params, *, grid=None, every=None, origin: str = "clock",
         backend="auto", dtype=np.float32, chunk_buckets: int | None = None,
         memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Plan:
    """Resolve a run: clock alignment, inputs, grid, output step, engine and time chunks.

    ``backend``: a name (resolved here) or an already resolved ``(name, xp)`` pair.
    """
    from .backend import ops_for, resolve
    from .model.engine import chunk_buckets_for, make_engine, series_engine_bytes
    from .model.inputs import FleetInputs, bucket_prices, check_columns, prepare
    from .store.layout import base_attrs, chunking

    check_run_options(dtype, chunk_buckets, memory_budget)
    name, xp = resolve(backend) if isinstance(backend, str) else backend
    data_start = first_bar(series)
    series = clock_align(series, every, origin)
    # on the host, each series runs in its own engine, a series group at a time: the inputs
    # are prepared a group at a time too (a batched GPU engine takes every series' at once)
    check_columns(series, params)
    inputs = FleetInputs(series, params) if ops_for(xp).on_host else prepare(series, params)
    g = resolve_grid(grid, inputs)
    n_every = resolve_every(every, inputs.step)
    engine = make_engine(inputs, g, n_every, xp=xp, dtype=dtype)
    tc, pc = chunking(g.n_bins, params.n_out, engine.n_buckets, inputs.n_series)
    cb = chunk_buckets or chunk_buckets_for(inputs.n_series, engine.ncell, n_every,
                                            budget_bytes=memory_budget, multiple=tc,
                                            n_buckets=engine.n_buckets)
    # whole zarr chunks, as distributed tasks use: v2's churn makes rounding follow the chunks,
    # so both paths cut the time axis the same way and agree bit for bit
    cb = max(tc, -(-int(cb) // tc) * tc)
    groups = series_groups(engine, inputs.n_series, cb, g.n_bins, params.n_out, dtype,
                           memory_budget,
                           engine_bytes=series_engine_bytes(params, inputs.step, inputs.n_steps,
                                                            g.n_bins, cb, n_every))
    prices = bucket_prices(series, inputs.time, n_every)
    btime = inputs.time[:: n_every]
    attrs = base_attrs(params, g, step=inputs.step, every=inputs.step * n_every,
                       fingerprint=fingerprint(series, params, g, n_every),
                       sources=[s.source for s in series],
                       data_end=inputs.time[-1] + inputs.step, data_start=data_start)
    attrs["backend"] = name
    meta = {
        "exchange": [s.exchange for s in series],
        "symbol": [s.symbol for s in series],
        "kind": [s.kind for s in series],
        "contract_size": [s.contract_size for s in series],
    }
    log.info("estimating %d series x %d steps (every %d) with model %s on %d bins x %d tiers "
             "(%d leverage cells) with %s, %d buckets per chunk, %d series group(s)",
             inputs.n_series, inputs.n_steps, n_every, params.model, g.n_bins, params.n_tiers,
             params.n_out, name, cb, len(groups))
    return Plan(series=series, params=params, inputs=inputs, grid=g, n_every=n_every,
                engine=engine, tc=tc, pc=pc, chunk_buckets=cb, prices=prices, btime=btime,
                attrs=attrs, meta=meta, dtype=dtype, groups=groups)


def chunk_cube_bytes(n_series: int, chunk_buckets: int, n_bins: int, n_out: int, dtype) -> int:
    """Bytes of one time chunk's output cubes (``intensity`` and ``liquidated``) on the whole
    grid: what a store run holds per chunk in flight (computed, queued, being written)."""
    return 2 * n_series * chunk_buckets * n_bins * n_out * 2 * np.dtype(dtype).itemsize


def series_groups(engine, n_series: int, chunk_buckets: int, n_bins: int, n_out: int, dtype,
                  budget: int, engine_bytes: int = 0) -> list[tuple[int, int]]:
    """Consecutive series groups ``(s0, s1)`` whose chunk cubes, and engines of
    ``engine_bytes`` a series (:func:`~liqgpu.model.engine.series_engine_bytes`), fit
    ``budget`` (at least one series a group; one group when all fit). The chunk length stays
    the whole run's, so every group cuts time as a one-group run does and the store is the
    same bit for bit. Only the per-series engines (numpy) split; a batched (GPU) engine runs as
    one group.

    Examples
    --------
    >>> from liqgpu.model.engine import SeriesEngines
    >>> eng = SeriesEngines.__new__(SeriesEngines)
    >>> series_groups(eng, 5, 24, 100, 5, np.float32, budget=3 * 2 * 24 * 100 * 5 * 2 * 4)
    [(0, 3), (3, 5)]
    """
    from .model.engine import SeriesEngines

    per = chunk_cube_bytes(1, chunk_buckets, n_bins, n_out, dtype) + int(engine_bytes)
    size = n_series if not isinstance(engine, SeriesEngines) else \
        max(1, min(n_series, int(budget) // max(per, 1)))
    return [(s0, min(s0 + size, n_series)) for s0 in range(0, n_series, size)]


def run_in_memory(p: Plan, *, progress: bool = False, binner=None, realized_attrs=None):
    """Run ``p`` and return the whole dataset (xarray).

    Each chunk's arrays are copied into whole-run arrays allocated up front, and one dataset
    is made from them at the end (concatenating a dataset per chunk copied the year's 1.8 GB
    cubes a second time). ``binner``: realized events binned per chunk (``cube(b0, b1)``,
    ``finish()``).
    """
    from .model.engine import CHUNK_FIELDS, ChunkResult
    from .store.layout import make_dataset

    full: dict = {}
    realized = None
    for chunk in p.chunks(progress):
        b0, b1 = chunk.b0, chunk.b1
        if b0 == 0 and b1 == p.n_buckets and binner is None:  # one chunk: its own arrays
            full = {f: getattr(chunk, f) for f in CHUNK_FIELDS}
            break
        for f in CHUNK_FIELDS:
            x = getattr(chunk, f)
            if x is None:
                full.setdefault(f, None)
                continue
            if full.get(f) is None:
                full[f] = np.empty((x.shape[0], p.n_buckets) + x.shape[2:], dtype=x.dtype)
            full[f][:, b0:b1] = x
        if binner is not None:
            cube = binner.cube(b0, b1)
            if realized is None:
                realized = np.empty((cube.shape[0], p.n_buckets) + cube.shape[2:],
                                    dtype=cube.dtype)
            realized[:, b0:b1] = cube
        del chunk
    whole = ChunkResult(b0=0, b1=p.n_buckets, **full)
    at_end = [0.0, 0.0]
    end_notional(whole, at_end)
    warn_outside(at_end, p.attrs.get("grid"))
    ds = make_dataset(whole, names=p.names, time=p.btime, grid=p.grid, params=p.params,
                      prices=p.prices, b0=0, attrs=p.attrs, series_meta=p.meta)
    if binner is not None:
        from .events import REALIZED_ATTRS

        ds["realized"] = (("series", "time", "price", "side"), realized,
                          {**REALIZED_ATTRS, "units": ds["intensity"].attrs["units"]})
        p.attrs["realized_summary"] = binner.finish()
    ds.attrs.update(p.attrs)
    return ds


def store_layout(p: Plan, *, realized_attrs: dict | None = None):
    """The :class:`~liqgpu.store.layout.Layout` of ``p``'s store: every variable at its full
    shape (``realized`` too when ``realized_attrs`` is given)."""
    from .store.layout import CUBE_VARS, TIER_VARS, V2_TIER_VARS, _Lazy, make_layout

    S, K, nb, P = p.inputs.n_series, p.params.n_out, p.n_buckets, p.grid.n_bins
    shapes = {v: (S, nb, P, K, 2) for v in CUBE_VARS}
    shapes.update({v: (S, nb, K, 2) for v in TIER_VARS})
    if p.params.model == "v2":
        shapes.update({v: (S, nb, K, 2) for v in V2_TIER_VARS})
    layout = make_layout({v: _Lazy(shapes[v], np.dtype(p.dtype) if v in CUBE_VARS
                               else np.float64) for v in shapes},
                         names=p.names, time=p.btime, grid=p.grid, params=p.params,
                         prices=p.prices, attrs=p.attrs, series_meta=p.meta)
    if realized_attrs is not None:
        layout["realized"] = (("series", "time", "price", "side"), _Lazy((S, nb, P, 2), np.float32),
                              {**realized_attrs, "units": layout["intensity"].attrs["units"]})
    return layout


def run_to_store(p: Plan, out, *, overwrite: bool = False, progress: bool = False, binner=None,
                 realized_attrs: dict | None = None):
    """Run ``p`` into a new store at ``out`` (atomically, under its lock) with the direct
    writer; compression runs on the write-behind thread while the engine computes.

    The series run in ``p.groups``, one group after another over the whole time range, each
    (group, time chunk) written as a region of the full-shape arrays: memory holds one group's
    chunk cubes, and the store is the one a single group writes, bit for bit (the resume state
    numbered as one engine over every series numbers it; ``realized`` binned in its own pass
    over the same time chunks when there are several groups).

    Returns the store's :class:`~liqgpu.store.layout.Layout` (sizes and attributes as written).
    """
    from .model.engine import chunk_edges
    from .store.resume import resume_group
    from .store.writer import Group, Part, StoreWriter, write_behind

    layout = store_layout(p, realized_attrs=realized_attrs if binner is not None else None)
    names = [v for v in layout.data_vars if v in CHUNK_VARS]
    last, nb = p.last, p.n_buckets
    groups = p.groups or [(0, p.inputs.n_series)]
    one = len(groups) == 1
    spill = None if one else _StateSpill(out)

    def capture(gi, eng):
        if one:
            p.capture(eng)
        elif gi not in spill:
            s0 = groups[gi][0]
            spill.add(gi, _merge_group_states([eng.state_arrays()], [(s0, None)],
                                              ncell=p.engine.ncell, B=p.engine.B))

    def state():
        if one:
            return p.resume["state"]
        return spill.pieces(len(groups))

    def resume_part():
        return Group("resume", *resume_group(p.series, p.inputs.step, state(), last * p.n_every,
                                             stream=True))

    # the first chunk is one time chunk, the first results sooner (the distributed tasks cut
    # the same way: v2's rounding follows the chunks)
    edges = chunk_edges(nb, p.chunk_buckets, last, p.tc)

    at_end = [0.0, 0.0]  # live notional in the grid and outside it, at the last snapshot

    def parts():
        for gi, (s0, s1) in enumerate(groups):
            eng = p.engine if one else p.engine.group(s0, s1)
            for chunk in eng.run(p.chunk_buckets, first=p.tc,
                                 on_bucket=(last, lambda e, gi=gi: capture(gi, e))):
                if chunk.b1 == nb:
                    end_notional(chunk, at_end)
                arrays = {v: getattr(chunk, v) for v in names}
                if binner is not None and one:
                    arrays["realized"] = binner.cube(chunk.b0, chunk.b1)
                    if chunk.b1 == nb:
                        layout.attrs["realized_summary"] = binner.finish()
                yield Part(chunk.b0, chunk.b1, arrays, s0=s0, spans=chunk.spans)
                if chunk.b1 == last:  # the engine stands before the last bucket
                    capture(gi, eng)
                    if gi == len(groups) - 1:  # the resume state, written while the last
                        yield resume_part()  # bucket is computed
            if not one:  # its resume state is kept: its engines' positions are not needed
                eng.drop_state()
                del eng  # with its inputs (a FleetInputs' group)
        if last == 0:
            yield resume_part()
        if binner is not None and not one:  # every series' events at once, chunk by chunk
            for b0, b1 in edges:
                yield Part(b0, b1, {"realized": binner.cube(b0, b1)})
            layout.attrs["realized_summary"] = binner.finish()

    n_parts = len(edges) * len(groups) + 1 + (len(edges) if binner is not None and not one else 0)
    try:
        with StoreWriter(out, overwrite=overwrite, tc=p.tc, pc=p.pc) as w:
            w.start(layout)
            write_behind(progress_bar(parts(), n_parts, progress), w.write, prepare=w.prepare)
            w.commit()
    except OSError as exc:
        if exc.filename is not None:
            raise
        from .outputs import as_write_error  # a chunk's write (no file name): the store's

        raise as_write_error(exc, out) from None
    finally:
        if spill is not None:
            spill.close()
    warn_outside(at_end, layout.attrs.get("grid"))
    return layout


#: the share of the live notional off the grid at the end above which a run warns
OUTSIDE_WARN = 0.10


def end_notional(chunk, acc: list) -> None:
    """Add the live notional of a chunk's last bucket, in the grid and outside it, to
    ``acc`` (float64 sums)."""
    import numpy as _np

    acc[0] += float(_np.asarray(chunk.intensity[:, -1], dtype=_np.float64).sum())
    if getattr(chunk, "outside", None) is not None:
        acc[1] += float(_np.asarray(chunk.outside[:, -1], dtype=_np.float64).sum())


def warn_outside(at_end, grid) -> None:
    """A warning when much of the live notional at the end lies off the grid (a --grid that
    leaves most levels out: they are kept in 'outside', and maps and heatmaps miss them)."""
    inside, outside = at_end
    total = inside + outside
    if total > 0 and outside > OUTSIDE_WARN * total:
        log.warning("%.0f%% of the live notional at the end lies off the grid %s (kept in "
                    "'outside'; heatmaps and maps do not show it): widen --grid, or leave it "
                    "out to cover every level", 100.0 * outside / total, grid)


class _StateSpill:
    """The resume states of finished series groups, on disk until the resume group is written
    (a fleet's live positions would otherwise be held to the end): one ``.npy`` file per group
    and state array, in a hidden temporary beside the store (``.NAME.tmp-*``: what a killed run
    leaves there is removed by the next writer, :func:`liqgpu.store.atomic.recover`)."""

    def __init__(self, out):
        from .store.atomic import temp_path

        self.dir = temp_path(Path(out), "tmp")
        self.files: dict = {}  # group -> {key: (path, shape, dtype)}

    def __contains__(self, gi) -> bool:
        return gi in self.files

    def add(self, gi: int, arrays: dict) -> None:
        self.dir.mkdir(exist_ok=True)
        entry = {}
        for k, v in arrays.items():
            path = self.dir / f"{gi}.{k}.npy"
            np.save(path, v)
            entry[k] = (path, v.shape, v.dtype)
        self.files[gi] = entry

    def pieces(self, n_groups: int) -> dict:
        """Every group's state as one :class:`~liqgpu.store.resume.Pieces` per array (the
        groups' in order, read from disk as written), as :func:`_merge_group_states` joins
        them."""
        from .store.resume import Pieces

        first = self.files[0]
        out = {}
        for k, (_, shape, dtype) in first.items():
            entries = [self.files[gi][k] for gi in range(n_groups)]
            n = sum(e[1][0] for e in entries)
            out[k] = Pieces((n,) + tuple(shape[1:]), dtype,
                            lambda entries=entries: (np.load(e[0]) for e in entries))
        return out

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _merge_group_states(states: list[dict], groups: list, *, ncell: int, B: int) -> dict:
    """The live positions of series groups (each numbered from its own series 0), numbered as
    one engine over every series numbers them (:func:`~liqgpu.model.engine.merge_states`)."""
    out = []
    for st, (s0, _s1) in zip(states, groups):
        st = dict(st)
        st["cell"] = st["cell"] + int(s0) * int(ncell)
        st["kd"] = st["kd"] + int(s0) * 2 * int(B)
        st["series"] = st["series"] + int(s0)
        out.append(st)
    return {k: np.concatenate([st[k] for st in out]) for k in out[0]}


#: the engine's per-chunk variables, as named in stores
CHUNK_VARS = ("intensity", "liquidated", "added", "closed", "expired", "outside",
              "outside_liquidated", "churned")
