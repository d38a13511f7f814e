"""Extend a store with new bars without recomputing its history (``liqgpu update``).

A store written by :func:`liqgpu.estimate` keeps, in its ``resume`` group, the model state before
its last output bucket (every live position, the last valid OI before that step) and every input
bar. An update checks the new bars against the stored ones where they overlap, recomputes the
last bucket (it may have been partial) from the saved state and appends the new buckets: the
result equals estimating the whole history at once, to float rounding.

Crash safety: the update holds the store's lock (:mod:`liqgpu.store.atomic`) from its first read
to its swap, so two updates run one after the other. It is applied to a hard-linked clone of the
store (zarr replaces files by writing a new file and renaming it, so the original's files are
never modified), and the clone is swapped into place atomically
(:func:`liqgpu.store.atomic.commit`). A process killed at any point leaves the store at its
previous or at its new state.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import InputError
from .series import Series

log = logging.getLogger(__name__)


def update(store, series, *, allow_outside: bool = False, progress: bool = False,
           max_gap=None, defer_cleanup: bool = False, reopen: bool = True, realized=None,
           backend: str = "auto"):
    """Append new bars to a store, exactly as if the whole history had been estimated at once.

    Parameters
    ----------
    store : path
        A store written by :func:`liqgpu.estimate` (with its ``resume`` group).
    series : Series, path, or a list of them
        New bars for every series of the store (matched by ``exchange:symbol``). Bars that
        overlap the stored range must equal the stored ones.
    allow_outside : bool
        Accept new positions whose level falls outside the store's grid (they are tracked in
        ``outside``); by default such an update is refused.
    max_gap : str, optional
        Refuse new bars that start longer than this after the store's end (``--max-gap``,
        default 90d; ``'none'``: any).
    progress : bool
        Show a progress bar (on a terminal).
    realized : path, DataFrame, or a list of them, optional
        Normalized liquidation events binned (as ``estimate --realized`` does) into the buckets
        this update rewrites and appends, replacing what they held; events before the first
        rewritten bucket or of other series are left out. Without it those buckets keep what
        was binned there and new buckets start empty.
    backend : {'auto', 'numpy', 'cupy'}
        Array backend of the engine, as in :func:`liqgpu.estimate` (the store's numbers agree
        to float rounding whichever backend estimated it).
    defer_cleanup : bool
        Delete the replaced copy on a background thread (``liqgpu live``: the next minute need
        not wait for it).
    reopen : bool
        Open and return the updated store (``False``: return None).

    Returns
    -------
    xarray.Dataset or None
        The updated store, opened lazily.

    Examples
    --------
    >>> liqgpu.update("btc.zarr", "btc_new_bars.parquet")  # doctest: +SKIP
    """
    from .store.atomic import store_lock

    path = _check_store(store)
    with store_lock(path):  # read, compute and swap as the store's only writer
        _update(path, series, allow_outside=allow_outside, progress=progress,
                max_gap=max_gap, defer_cleanup=defer_cleanup, realized=realized,
                backend=backend)
    if reopen:
        from .store import open_store

        return open_store(path)
    return None


def _update(path: Path, series, *, allow_outside: bool, progress: bool, max_gap=None,
            defer_cleanup: bool = False, realized=None, backend: str = "auto") -> None:
    from .model.grid import Grid
    from .model.registry import params_from_attrs
    from .progress import progress as progress_bar
    from .store import (_quiet_zarr, make_dataset, open_store, read_group, resume_group,
                        write_behind, write_group)
    from .store.atomic import commit, crash_point

    path = _check_store(path)  # again, under the lock (a writer may have just replaced it)
    ds = open_store(path, chunks=None)
    group = read_group(path, "resume")
    if group is None:
        raise InputError(f"{path}: has no resume state (written by an older liqgpu); estimate it again")
    saved, ra = group
    _check_resume(path, ds, saved, ra)
    attrs = dict(ds.attrs)
    params = params_from_attrs(attrs)
    grid = Grid(ds["price_edges"].values, attrs["grid"])
    names = [str(x) for x in ds["series"].values]
    kinds = [str(x) for x in ds["kind"].values]
    sizes = [float(x) for x in ds["contract_size"].values]
    run = resumed_run(path, series, saved=saved, ra=ra, attrs=attrs, params=params, grid=grid,
                      names=names, kinds=kinds, sizes=sizes, allow_outside=allow_outside,
                      max_gap=max_gap, backend=backend)
    if run is None:
        return
    (inputs, engine, cb, n_every, b_first, prices, btime, full, attrs, R, T, T_new) = (
        run.inputs, run.engine, run.cb, run.n_every, run.b_first, run.prices, run.btime,
        run.full, run.attrs, run.R, run.T, run.T_new)
    meta = {k: ds[k].values for k in ("exchange", "symbol", "kind", "contract_size")}
    old_realized = ds["realized"].isel(time=b_first).values if "realized" in ds else None
    binner = None
    if realized is not None and "realized" in ds:
        from .events import EventBinner, read_events, unknown_side_rule

        events = read_events(realized, names, unknown_side_rule(attrs))  # the store's rule
        if events is not None:
            binner = EventBinner(events, names, btime, inputs.step * n_every, grid.edges)

    state = {}
    last = engine.n_buckets - 1

    def capture(eng):
        state["arrays"] = eng.state_arrays()

    def pieces():
        run = engine.run(cb, on_bucket=(last, capture))
        for chunk in progress_bar(run, -(-engine.n_buckets // cb), progress):
            part = make_dataset(chunk, names=names, time=btime, grid=grid, params=params,
                                prices=prices, b0=chunk.b0, attrs=attrs, series_meta=meta)
            if binner is not None:  # the events given, binned into these buckets
                part = binner.add_to(part, chunk.b0, chunk.b1)
            elif old_realized is not None:  # events not given: kept where they were binned
                r = np.zeros((len(names), chunk.b1 - chunk.b0, grid.n_bins, 2), np.float32)
                if chunk.b0 == 0:
                    r[:, 0] = old_realized
                part["realized"] = (("series", "time", "price", "side"), r)
            yield part

    clone, committed = None, False
    try:
        clone = _clone(path)  # (removes itself when interrupted part-way)
        crash_point("update-cloned")

        def write(part):
            _write_part(clone, part, b_first)

        with _quiet_zarr():
            write_behind(pieces(), write)
        st = state["arrays"]
        st["birth"] = st["birth"] + R  # back to the store's global steps
        arrays, rattrs = resume_group(full, inputs.step, st, last * n_every + R)
        write_group(clone, "resume", arrays, rattrs)
        _finish(clone, attrs)
        commit(clone, path, defer_cleanup=defer_cleanup)
        committed = True
    except Exception as exc:  # damage met in the clone: said of the store the user gave
        from .store.integrity import read_error

        said = exc if isinstance(exc, InputError) else read_error(exc)
        if said is not None and clone is not None and str(clone) in str(said):
            raise type(said)(str(said).replace(str(clone), str(path))) from None
        raise
    finally:
        if not committed and clone is not None:
            shutil.rmtree(clone, ignore_errors=True)
    log.info("%s: %d new bars, buckets %d.. rewritten/appended", path, T_new - T, b_first)


@dataclass
class ResumedRun:
    """What an update computes from the store's saved state and the new bars, before writing."""

    inputs: object
    engine: object
    cb: int
    n_every: int
    b_first: int  # the store's bucket that the run's bucket 0 rewrites
    prices: dict
    btime: np.ndarray
    full: list  # every bar of every series: the history's fingerprint and resume group
    attrs: dict  # the store's attributes after the update
    R: int  # the saved run's step the engine resumes at
    T: int  # steps in the store before the update
    T_new: int  # steps after it


def resumed_run(path: Path, series, *, saved: dict, ra: dict, attrs: dict, params, grid,
                names: list, kinds: list, sizes: list, allow_outside: bool, max_gap,
                backend="auto", xp=None) -> ResumedRun | None:
    """The update's checks and its engine, resumed from the saved state (shared by
    :func:`update` and the warm updater of ``liqgpu live``). None when no bar is new."""
    from ._time import parse_duration
    from .model.engine import chunk_buckets_for, make_engine
    from .model.inputs import bucket_prices, prepare
    from .pipeline import as_series_list, fingerprint
    from .store import chunking
    from .store.layout import time_text

    step_ns, R, T = int(ra["step_ns"]), int(ra["resume_step"]), int(ra["n_steps"])
    every_ns = int(round(parse_duration(attrs["every"]).total_seconds() * 1e9))
    n_every = every_ns // step_ns
    bars_t = saved["bars_time"]
    t0, t_end = int(bars_t[0]), int(bars_t[-1])
    new = as_series_list(series)
    given = {}
    for s in new:  # several files of one series (consecutive days, say): joined in time order
        given[s.name] = join_series(given[s.name], s) if s.name in given else s
    if set(given) != set(names):
        raise InputError(
            f"{path}: holds series {', '.join(names)}; the update gives "
            f"{', '.join(sorted(given)) or 'none'} (give new bars for exactly the store's series)"
        )
    columns = ra["columns"]
    for i, name in enumerate(names):
        s = given[name]
        if int(s.step / np.timedelta64(1, "ns")) != step_ns:
            from .series import _fmt_step

            raise InputError(f"{s.source}: its bars are {_fmt_step(int(s.step / np.timedelta64(1, 'ns')))}"
                             f" apart, the store's model step is {_fmt_step(step_ns)}; give "
                             f"bars of the store's step")
        if s.kind != kinds[i] or s.contract_size != sizes[i]:
            raise InputError(f"{s.source}: {name} is {s.kind} with contract size "
                             f"{s.contract_size:g}; the store has {kinds[i]}, {sizes[i]:g}")
        if sorted(s.columns) != sorted(columns[i]):
            raise InputError(f"{s.source}: columns {sorted(s.columns)} differ from the store's "
                             f"{sorted(columns[i])} for {name}")
        _check_overlap(s, saved, i, t0, t_end, step_ns)

    new_end = max(int(given[n].time[-1].view(np.int64)) for n in names)
    _check_gap_after(path, given, t_end, max_gap)
    if new_end <= t_end:
        log.info("%s: no bars after the stored end; nothing to do", path)
        return None
    T_new = (new_end - t0) // step_ns + 1
    resumed = [_resumed_series(given[n], saved, i, columns[i], t0, step_ns, R, T, T_new)
               for i, n in enumerate(names)]
    oi_prev = [np.nan if x is None else x for x in ra["oi_prev"]]
    inputs = prepare(resumed, params, oi_prev=oi_prev)
    if not allow_outside:
        _check_grid(inputs, grid, T - R)

    if xp is None:
        from .backend import resolve

        _, xp = resolve(backend)
    engine = make_engine(inputs, grid, n_every, xp=xp)
    engine.load_state({k[len("state_"):]: v for k, v in saved.items() if k.startswith("state_")},
                      step_offset=R)
    tc, pc = chunking(grid.n_bins, params.n_out, engine.n_buckets, len(names))
    cb = chunk_buckets_for(len(names), engine.ncell, n_every, budget_bytes=256 * 2**20,
                           multiple=tc)
    b_first = R // n_every  # the store's bucket that this run's bucket 0 rewrites
    prices = bucket_prices(resumed, inputs.time, n_every)
    btime = inputs.time[::n_every]
    # the whole history's fingerprint: the same as estimating it at once would give
    full = [_resumed_series(given[n], saved, i, columns[i], t0, step_ns, 0, T, T_new)
            for i, n in enumerate(names)]
    attrs = dict(attrs)
    attrs["fingerprint"] = fingerprint(full, params, grid, n_every)
    attrs["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    attrs["sources"] = source_list(attrs.get("sources", []), new)
    attrs["data_end"] = time_text(np.datetime64(t0 + (T_new - 1) * step_ns + step_ns, "ns"))
    return ResumedRun(inputs, engine, cb, n_every, b_first, prices, btime, full, attrs, R, T,
                      T_new)


def join_series(a: Series, b: Series) -> Series:
    """Two files of one series as one, on their common grid: their bars in time order, NaN
    between them, the bars both hold equal (else an InputError naming the bar and column)."""
    first, second = (a, b) if a.time[0] <= b.time[0] else (b, a)
    if first.step != second.step:
        raise InputError(f"{second.source}: step {second.step} differs from {first.source}'s "
                         f"{first.step} for {first.name}")
    if (first.kind, first.contract_size) != (second.kind, second.contract_size):
        raise InputError(f"{second.source}: {second.kind} with contract size "
                         f"{second.contract_size:g}; {first.source} has {first.kind}, "
                         f"{first.contract_size:g} for {first.name}")
    if sorted(first.columns) != sorted(second.columns):
        raise InputError(f"{second.source}: columns {sorted(second.columns)} differ from "
                         f"{first.source}'s {sorted(first.columns)} for {first.name}")
    step = int(first.step / np.timedelta64(1, "ns"))
    t0 = int(first.time[0].view(np.int64))
    t_b = second.time.view(np.int64)
    if (int(t_b[0]) - t0) % step:
        raise InputError(f"{second.source}: its bars are off {first.source}'s grid of "
                         f"{first.step} for {first.name}")
    end = max(int(first.time[-1].view(np.int64)), int(t_b[-1]))
    n = (end - t0) // step + 1
    i_b = (t_b - t0) // step
    cols = {}
    for c, va in first.columns.items():
        x = np.full(n, np.nan)
        x[:va.size] = va
        vb = second.columns[c]
        both = ~np.isnan(x[i_b]) & ~np.isnan(vb)
        bad = np.flatnonzero(both & (x[i_b] != vb))
        if bad.size:
            k = int(bad[0])
            raise InputError(f"{second.source}: bar {np.datetime_as_string(second.time[k], 's')}Z, "
                             f"column {c!r}: {vb[k]:g} disagrees with {first.source}'s "
                             f"{x[i_b[k]]:g}")
        x[i_b] = np.where(np.isnan(vb), x[i_b], vb)
        cols[c] = x
    time = (t0 + step * np.arange(n, dtype=np.int64)).view("datetime64[ns]")
    return Series(time, first.step, cols, exchange=first.exchange, symbol=first.symbol,
                  kind=first.kind, contract_size=first.contract_size,
                  source=f"{first.source}+{second.source}", n_gaps=first.n_gaps + second.n_gaps)


def source_list(sources, new) -> list:
    """The store's ``sources`` and those of the new series, each listed once (``liqgpu live``
    updates a store every minute from the same sources: the list would grow without end)."""
    return list(dict.fromkeys([*sources, *(s.source for s in new)]))


def _check_gap_after(path: Path, given: dict, t_end: int, max_gap) -> None:
    """New bars that begin long after the store's end are a wrong timestamp, usually (the hole
    would become millions of NaN bars)."""
    from .series import DEFAULT_MAX_GAP, max_gap_ns

    limit = max_gap_ns(max_gap)
    for s in given.values():
        ts = s.time.view(np.int64)
        after = ts[ts > t_end]
        step = int(s.step / np.timedelta64(1, "ns"))
        if after.size and int(after[0]) - t_end > step and (limit is None
                                                             or int(after[0]) - t_end <= limit):
            from ._time import format_duration
            from datetime import timedelta

            missing = (int(after[0]) - t_end) // step - 1
            log.warning("%s: %d bar(s) (%s) missing between the store's last bar and the new "
                        "ones: stored as a gap (bars that come later cannot fill it)", s.source,
                        missing, format_duration(timedelta(microseconds=missing * step / 1000)))
        if limit is not None and after.size and int(after[0]) - t_end > limit:
            raise InputError(
                f"{s.source}: its bars after the store's end start "
                f"{np.datetime_as_string(np.int64(after[0]).view('datetime64[ns]'), unit='s')}Z, "
                f"a gap longer than --max-gap {max_gap or DEFAULT_MAX_GAP} after "
                f"{np.datetime_as_string(np.int64(t_end).view('datetime64[ns]'), unit='s')}Z "
                f"(a wrong timestamp? pass --max-gap to accept it)")


def _check_overlap(s: Series, saved: dict, i: int, t0: int, t_end: int, step_ns: int) -> None:
    ts = s.time.view(np.int64)
    if ts[0] < t0:
        raise InputError(f"{s.source}: starts at {np.datetime_as_string(s.time[0])}Z, before the "
                         "store's first bar; updates only extend a store")
    if (ts[0] - t0) % step_ns:
        raise InputError(f"{s.source}: bars are off the store's time grid")
    over = ts <= t_end
    if not over.any():
        return
    idx = (ts[over] - t0) // step_ns
    own = np.flatnonzero(np.isfinite(saved["bars_close"][i]))
    last_own = int(own[-1]) if own.size else -1
    late = (idx > last_own) & np.isfinite(s["close"][over])
    if late.any():  # the store padded this series after its end: other series went on longer
        end = (t0 + step_ns * last_own) if own.size else t0
        raise InputError(
            f"{s.source}: this series ends at {np.datetime_as_string(np.int64(end).view('datetime64[ns]'), unit='s')}Z "
            f"in the store while others go on to {np.datetime_as_string(np.int64(t_end).view('datetime64[ns]'), unit='s')}Z; "
            f"updating series that end at different times is not supported yet: estimate the "
            f"store again with all the bars")
    for c, v in s.columns.items():
        old = saved[f"bars_{c}"][i, idx]
        newv = v[over]
        same = np.isclose(old, newv, rtol=1e-12, atol=0.0, equal_nan=True)
        if not same.all():
            j = int(np.flatnonzero(~same)[0])
            when = np.datetime_as_string(s.time[over][j], unit="s")
            raise InputError(
                f"{s.source}: bar {when}Z, column '{c}': {newv[j]:g} disagrees with the stored "
                f"{old[j]:g}; overlapping bars must equal the store's"
            )


def _resumed_series(s: Series, saved: dict, i: int, cols: list, t0: int, step_ns: int,
                    start: int, T: int, T_new: int) -> Series:
    """Bars [start, T_new) of series i: the stored ones before T, the new ones after."""
    n = T_new - start
    ts = s.time.view(np.int64)
    pos = (ts - t0) // step_ns
    out = {}
    for c in cols:
        a = np.full(n, np.nan)
        stored = saved[f"bars_{c}"][i, start:T]
        a[: stored.size] = stored
        keep = pos >= T
        a[pos[keep] - start] = s[c][keep]
        out[c] = a
    time = (t0 + step_ns * np.arange(start, T_new, dtype=np.int64)).view("datetime64[ns]")
    return Series(time, np.timedelta64(step_ns, "ns"), out, s.exchange, s.symbol, s.kind,
                  s.contract_size, s.source)


def _check_grid(inputs, grid, first_new: int) -> None:
    """Refuse new positions whose level falls outside the grid (unless allowed)."""
    e = inputs.entry[:, first_new:]
    lo, hi = np.inf, -np.inf
    for s in range(e.shape[0]):
        v = e[s][np.isfinite(e[s]) & (inputs.omega[s, first_new:] > 0)
                 & (inputs.add[s, first_new:] > 0)[:, None]]
        if v.size:
            f = inputs.factors[s]
            lo = min(lo, float(v.min() * f.min()))
            hi = max(hi, float(v.max() * f.max()))
    if np.isfinite(lo) and (lo < grid.edges[0] or hi >= grid.edges[-1]):
        raise InputError(
            f"new bars open positions with levels {lo:.6g}..{hi:.6g}, beyond the store's grid "
            f"{grid.edges[0]:.6g}..{grid.edges[-1]:.6g}; estimate again with a wider --grid, "
            "or pass --allow-outside to track them in 'outside'"
        )


def _held_arrays(root: Path) -> set:
    """Names of the arrays a store holds."""
    import zarr

    return set(zarr.open_group(str(root), mode="r").array_keys())


def _write_part(root: Path, part, b_first: int) -> None:
    """Rewrite the store's bucket ``b_first`` (this run's bucket 0) and append the rest."""
    from .store import static_coords

    part = part.drop_vars(static_coords(part), errors="ignore")
    held = _held_arrays(root)  # a store of an older format lacks some (snapshot_time)
    part = part.drop_vars([v for v in part.variables if v not in held and v != "time"])
    first = part["time"].values[0]
    if first == np.datetime64(_store_time(root, b_first)):
        head, rest = part.isel(time=slice(0, 1)), part.isel(time=slice(1, None))
        head.to_zarr(root, region={"time": slice(b_first, b_first + 1)}, mode="r+",
                     consolidated=False)
        if rest.sizes["time"]:
            rest.to_zarr(root, append_dim="time", consolidated=False)
    else:
        part.to_zarr(root, append_dim="time", consolidated=False)


def _store_time(root: Path, b: int):
    import zarr

    g = zarr.open_group(str(root), mode="r")
    ms = int(g["time"][b])
    return np.datetime64(ms, "ms").astype("datetime64[ns]")


def _finish(root: Path, attrs: dict) -> None:
    from .store.writer import finish

    finish(root, attrs)


def _check_resume(path: Path, ds, saved: dict, ra: dict) -> None:
    """The resume group must describe this store (a damaged one reads as zeros: 1970)."""
    try:
        bars_t = np.asarray(saved["bars_time"], dtype=np.int64)
        n_steps, step_ns = int(ra["n_steps"]), int(ra["step_ns"])
        first = int(ds["time"].values[:1].astype("datetime64[ns]").view(np.int64)[0])
    except (KeyError, TypeError, ValueError, IndexError):
        raise InputError(f"{path}: array resume is damaged (incomplete resume state); estimate "
                         f"the store again") from None
    if bars_t.size != n_steps or not bars_t.size or step_ns <= 0 or int(bars_t[0]) != first \
            or (bars_t.size > 1 and (np.diff(bars_t) != step_ns).any()):
        raise InputError(f"{path}: array resume is damaged (its bar times do not match the "
                         f"store's, which start at {np.datetime_as_string(ds['time'].values[0], unit='s')}Z); "
                         f"estimate the store again")


# -- crash safety --------------------------------------------------------------------------------
def _clone(path: Path) -> Path:
    """A copy of the store whose files are hard links to the original's."""
    from .store.atomic import temp_path

    dst = temp_path(path, "upd")
    try:
        for dirpath, dirnames, filenames in os.walk(path):
            rel = Path(dirpath).relative_to(path)
            (dst / rel).mkdir(parents=True, exist_ok=True)
            for f in filenames:
                os.link(Path(dirpath) / f, dst / rel / f)
    except BaseException:  # a signal or an error mid-way: no half clone left beside the store
        shutil.rmtree(dst, ignore_errors=True)
        raise
    return dst


def follow(store, folder, *, interval="10s", max_polls: int | None = None,
           allow_outside: bool = False, on_update=None, backend: str = "auto") -> int:
    """Watch ``folder`` and apply each new series file (Parquet or CSV) to ``store``, those
    found in one poll in the order of their first bar (then of name). Files already applied
    are remembered in the store (``applied_files``), so a restarted follower skips them.
    Returns how many files were applied.

    A file that cannot be read, or that the store refuses, is retried at the next poll while
    it changes (a copy still being written); once it fails twice as it is, it is logged as an
    error and left alone until it changes, and the follower goes on with the others. A store
    another process is writing is retried at the next poll.

    Examples
    --------
    >>> follow("btc.zarr", "incoming/", interval="30s")  # doctest: +SKIP
    """
    import time

    import zarr

    from ._time import parse_duration
    from .series import load_series

    _check_store(store)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--follow {folder}: no such folder")
    from .store.atomic import StoreBusy

    wait = parse_duration(interval, option="--interval").total_seconds()
    if not wait > 0:
        raise InputError(f"--interval {interval}: must be a duration above zero, e.g. 10s")
    applied_n = 0
    polls = 0
    tried: dict = {}  # name -> (size, mtime) it failed as, and whether that was twice

    def refused(f: Path, key, exc) -> None:
        seen = tried.get(f.name)
        if seen is not None and seen[0] == key:
            if not seen[1]:
                log.error("%s: %s; left alone until the file changes", f, exc)
            tried[f.name] = (key, True)
        else:  # the first time as it is: perhaps still being copied
            log.info("%s: not usable yet (%s); tried again at the next poll", f, exc)
            tried[f.name] = (key, False)

    while max_polls is None or polls < max_polls:
        polls += 1
        done = set(zarr.open_group(str(store), mode="r").attrs.get("applied_files", []))
        found = []
        for f in sorted(folder.iterdir()):
            if f.name in done or f.name.startswith(".") or f.suffix.lower() not in (
                    ".parquet", ".pq", ".csv", ".gz") or not f.is_file():
                continue
            st = f.stat()
            key = (st.st_size, st.st_mtime_ns)
            if tried.get(f.name, (None, False)) == (key, True):
                continue  # refused twice as it is
            try:
                s = load_series(f)
            except InputError as exc:
                refused(f, key, exc)
                continue
            found.append((int(s.time[0].view(np.int64)), f.name, f, s, key))
        for _, _, f, s, key in sorted(found, key=lambda x: (x[0], x[1])):
            try:
                update(store, [s], allow_outside=allow_outside, backend=backend)
            except StoreBusy as exc:
                log.info("%s: %s; tried again at the next poll", f, exc)
                continue
            except InputError as exc:
                refused(f, key, exc)
                continue
            tried.pop(f.name, None)
            _remember(store, f.name)
            applied_n += 1
            if on_update:
                on_update(f)
        if max_polls is None or polls < max_polls:
            time.sleep(wait)
    return applied_n


def _remember(store, name: str) -> None:
    """Add a file name to the store's ``applied_files`` (atomic metadata rewrite)."""
    import zarr

    from .store import _quiet_zarr
    from .store.atomic import store_lock

    with store_lock(Path(store)), _quiet_zarr():
        g = zarr.open_group(str(store), mode="r+")
        g.attrs["applied_files"] = list(g.attrs.get("applied_files", [])) + [name]
        zarr.consolidate_metadata(str(store), zarr_format=3)


def _check_store(store) -> Path:
    """The local liqgpu store an update may change (a clear error otherwise)."""
    from .store.remote import is_url
    from .store import is_store

    if is_url(store):
        raise InputError(f"{store}: stores on object storage cannot be updated in place; update "
                         f"a local copy and publish it again (liqgpu publish --overwrite)")
    path = Path(store)
    if not path.exists():
        raise InputError(f"{path}: no such store")
    if not is_store(path):
        raise InputError(f"{path}: not a liqgpu store (no liqgpu attributes in zarr.json)")
    return path
