"""The parts of the prepared GPU run (bench/gpu/run.sh), one function each, each writing one
JSON record. Every part takes ``--backend numpy|cupy``; ``--dry`` (LIQGPU_GPU_DRYRUN=1 in
run.sh) shrinks the sizes and lets numpy pose as CuPy (bench/gpu/fakecupy.py) for the CuPy
calls this file makes itself, so the whole run is exercised on a CPU first. Dry records say
so (``"dry": true``); their numbers are CPU numbers.

    python bench/gpu/parts.py env --out DIR
    python bench/gpu/parts.py year --backend cupy --model v2 --out DIR
    python bench/gpu/parts.py fleet --backend cupy --out DIR
    python bench/gpu/parts.py render --out DIR          # numpy and cupy, same store
    python bench/gpu/parts.py daskcuda --backend cupy --out DIR
    python bench/gpu/parts.py summary --out DIR         # the records -> summary.json/.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import inspect
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PARTS = ("env", "pytest", "year", "render", "fleet", "daskcuda")

# sizes: (real run, dry run)
SIZES = {
    "year_days": (365, 3),
    "year_repeats": (3, 1),
    "fleet_series": (200, 3),
    "fleet_days": (90, 2),
    "render_days": (365, 3),
    "render_px": ((16384, 8192), (1600, 900)),
    "dask_series": (4, 2),
    "dask_days": (14, 1),
}


class Skip(Exception):
    """A part (or one of its rows) cannot run here for a known reason: logged, not fatal."""


def size(name, dry):
    return SIZES[name][1 if dry else 0]


def cupy_module(backend, dry):
    """The module that this file's own CuPy calls go to (None for numpy)."""
    if backend != "cupy":
        return None
    if dry:
        sys.path.insert(0, str(HERE))
        import fakecupy

        return fakecupy
    import cupy

    return cupy


def engine_backend(backend, dry) -> str:
    """The backend name liqgpu itself runs: numpy in a dry run, whatever was asked otherwise."""
    return "numpy" if dry else backend


def model_kwargs(model: str) -> dict:
    """``{"model": model}`` where liqgpu.estimate takes one; v1 alone before model v2 lands."""
    import liqgpu

    if "model" in inspect.signature(liqgpu.estimate).parameters:
        return {"model": model}
    if model == "v1":
        return {}
    raise Skip(f"model {model}: liqgpu.estimate has no model= option at this commit")


def commit() -> str:
    """LIQGPU_COMMIT when the run command sets it (the device machine's copy of .git can be
    stale: three runs on 2026-11-27 reported 03b9088 while later commits ran), else git's."""
    if os.environ.get("LIQGPU_COMMIT"):
        return os.environ["LIQGPU_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True).stdout.strip() or "unknown"
    except OSError:
        return os.environ.get("LIQGPU_COMMIT", "unknown")


# -- CuPy measurement helpers ---------------------------------------------------------------------
class PeakTracker:
    """Peak bytes in use in CuPy's default memory pool, via an allocator hook."""

    def __init__(self, cp):
        self.cp, self.peak, self.reserved = cp, 0, 0

    def __enter__(self):
        if self.cp is None:
            return self
        cp = self.cp
        self.pool = cp.get_default_memory_pool()
        cp.cuda.Device().synchronize()
        self.pool.free_all_blocks()
        self.peak = self.pool.used_bytes()

        def malloc(size):
            mem = self.pool.malloc(size)
            self.peak = max(self.peak, self.pool.used_bytes())
            return mem

        cp.cuda.set_allocator(malloc)
        return self

    def __exit__(self, *exc):
        if self.cp is not None:
            self.cp.cuda.Device().synchronize()
            self.reserved = self.pool.total_bytes()
            self.cp.cuda.set_allocator(self.pool.malloc)
        return False


def copy_seconds(cp, nbytes: int, repeats: int = 20) -> dict:
    """Median device-to-device copy time of ``nbytes`` (CUDA events), and the bandwidth
    counting bytes read plus bytes written."""
    n = max(1, int(nbytes) // 4)
    src = cp.arange(n, dtype=cp.float32)
    dst = cp.empty_like(src)
    cp.copyto(dst, src)  # warm up
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        cp.copyto(dst, src)
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    ok = bool(np.all(cp.asnumpy(dst[-3:]) == cp.asnumpy(src[-3:])))
    del src, dst
    cp.get_default_memory_pool().free_all_blocks()
    if not ok:
        raise RuntimeError("device copy check failed")
    med = statistics.median(times)
    return {"bytes": 4 * n, "seconds": med, "min_seconds": min(times),
            "bandwidth_bytes_per_s": 2 * 4 * n / med if med > 0 else None}


class Split:
    """Where a liqgpu.estimate run spends its time, by patching in timers:

    * ``engine_s``: inside the engine's chunk generator (device compute + its copies to host);
    * ``transfer_s``/``transfer_bytes``: device-to-host copies (``cupy.asnumpy``), the device
      synchronized before each so pending compute is not counted as transfer;
    * ``compression_s``: Blosc encoding (summed over the writer's threads, so it can exceed
      the wall time it overlaps), ``compressed_in``/``compressed_out`` bytes;
    * ``store_write_s``: wall time of the store writer's ``write`` (a thread beside the engine).

    ``compute_s`` = engine_s - transfer_s. Patches are undone on exit; one that cannot be made
    leaves its figure None (noted in ``missing``).
    """

    def __init__(self, cp):
        self.cp = cp
        self.t = {"engine_s": 0.0, "transfer_s": 0.0, "transfer_bytes": 0, "compression_s": 0.0,
                  "compressed_in": 0, "compressed_out": 0, "store_write_s": 0.0}
        self.lock = threading.Lock()
        self.undo = []
        self.missing = []

    def _patch(self, obj, name, wrapper_factory, label):
        try:
            orig = getattr(obj, name)
        except AttributeError:
            self.missing.append(label)
            return
        setattr(obj, name, wrapper_factory(orig))
        self.undo.append((obj, name, orig))

    def _add(self, key, v):
        with self.lock:
            self.t[key] += v

    def __enter__(self):
        cp, pc = self.cp, time.perf_counter
        if cp is not None and not getattr(cp, "POSING", False):
            def asnumpy_factory(orig):
                def asnumpy(a, *args, **kw):
                    cp.cuda.Device().synchronize()
                    t = pc()
                    r = orig(a, *args, **kw)
                    self._add("transfer_s", pc() - t)
                    self._add("transfer_bytes", int(getattr(r, "nbytes", 0)))
                    return r
                return asnumpy
            # the engine's copies all go through the CUDA backend's to_host (pinned or not)
            from liqgpu.backend import cuda as be_cuda

            self._patch(be_cuda, "to_host", asnumpy_factory, "transfer")
        try:
            import numcodecs.blosc as nb

            def enc_factory(orig):
                def encode(codec, buf):
                    t = pc()
                    r = orig(codec, buf)
                    self._add("compression_s", pc() - t)
                    self._add("compressed_in", int(getattr(np.asarray(buf), "nbytes", 0)))
                    self._add("compressed_out", len(r))
                    return r
                return encode
            self._patch(nb.Blosc, "encode", enc_factory, "compression")
        except ImportError:
            self.missing.append("compression")
        try:
            from liqgpu import store

            def write_factory(orig):
                def write(w, *a, **k):
                    t = pc()
                    try:
                        return orig(w, *a, **k)
                    finally:
                        self._add("store_write_s", pc() - t)
                return write
            self._patch(store.StoreWriter, "write", write_factory, "store_write")
        except ImportError:
            self.missing.append("store_write")
        from liqgpu.model import engine as eng_mod

        def make_factory(orig):
            def make_engine(*a, **k):
                eng = orig(*a, **k)
                run = eng.run

                def timed_run(*ra, **rk):
                    g = run(*ra, **rk)
                    while True:
                        t = pc()
                        try:
                            x = next(g)
                        except StopIteration:
                            return
                        finally:
                            self._add("engine_s", pc() - t)
                        yield x
                eng.run = timed_run
                return eng
            return make_engine
        self._patch(eng_mod, "make_engine", make_factory, "engine")
        return self

    def __exit__(self, *exc):
        for obj, name, orig in reversed(self.undo):
            setattr(obj, name, orig)
        return False

    def result(self) -> dict:
        r = dict(self.t)
        for m in self.missing:
            for k in list(r):
                if k.startswith(m):
                    r[k] = None
        if "engine" in self.missing or r["engine_s"] == 0.0:
            r["engine_s"] = None  # the model did not go through model.engine.make_engine
        r["compute_s"] = (r["engine_s"] - (r["transfer_s"] or 0.0)
                          if r["engine_s"] is not None else None)
        r["missing"] = self.missing
        return r


# -- parts ----------------------------------------------------------------------------------------
def part_env(args) -> dict:
    rec = {"python": sys.version.split()[0], "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "commit": commit(),
           "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    vers = {}
    for m in ("numpy", "cupy", "numba", "pandas", "xarray", "zarr", "numcodecs", "dask",
              "distributed", "dask_cuda", "datashader", "pyarrow", "liqgpu"):
        try:
            mod = importlib.import_module(m)
            vers[m] = getattr(mod, "__version__", "?")
            vers[m + "_file"] = str(Path(getattr(mod, "__file__", "") or "").parent)
        except Exception as exc:  # noqa: BLE001
            vers[m] = f"missing ({type(exc).__name__}: {exc})"[:200]
    rec["versions"] = vers
    cp = cupy_module("cupy", args.dry) if (args.dry or _has_cupy()) else None
    if cp is not None:
        try:
            n = cp.cuda.runtime.getDeviceCount()
            props = cp.cuda.runtime.getDeviceProperties(0)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            dev = cp.cuda.Device(0)
            rec["device"] = {
                "count": n, "name": name, "total_memory": int(props.get("totalGlobalMem", 0)),
                "multiprocessors": int(props.get("multiProcessorCount", 0)),
                "compute_capability": str(dev.compute_capability),
                "driver_version": int(cp.cuda.runtime.driverGetVersion()),
                "runtime_version": int(cp.cuda.runtime.runtimeGetVersion()),
                "cupy": cp.__version__, "posing": bool(getattr(cp, "POSING", False)),
            }
        except Exception as exc:  # noqa: BLE001
            rec["device"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        from numba import cuda as ncuda

        rec["numba_cuda_available"] = bool(ncuda.is_available())
    except Exception as exc:  # noqa: BLE001
        rec["numba_cuda_available"] = f"no ({type(exc).__name__}: {exc})"[:200]
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.sm,"
                            "clocks.mem,temperature.gpu,power.draw", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        rec["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    return rec


def _has_cupy() -> bool:
    try:
        import cupy  # noqa: F401

        return True
    except Exception:  # noqa: BLE001
        return False


def year_series(days, dry):
    import liqgpu

    return liqgpu.synthetic_series(days=days, seed=11)


def part_year(args) -> dict:
    """The year workload (365 days of 1-minute bars, hourly output, default grid and model),
    engine to host, no store: median seconds, the float32 output cube's bytes and, on CuPy,
    the device-to-device copy time of that many bytes and the multiple of it."""
    import liqgpu

    kw = model_kwargs(args.model)
    cp = cupy_module(args.backend, args.dry)
    be = engine_backend(args.backend, args.dry)
    days, repeats = size("year_days", args.dry), args.repeats or size("year_repeats", args.dry)
    t = time.perf_counter()
    s = year_series(days, args.dry)
    rec = {"model": args.model, "backend": args.backend, "engine_backend": be, "days": days,
           "steps": len(s), "series_s": time.perf_counter() - t}
    if True:  # first-call costs (imports; on CuPy NVRTC and kernel compiles) stay out
        t = time.perf_counter()
        liqgpu.estimate(year_series(2, args.dry), every="1h", backend=be, **kw)
        rec["warmup_s"] = time.perf_counter() - t
    runs, splits = [], []
    with PeakTracker(cp) as pk:
        for _ in range(repeats):
            with Split(cp) as sp:
                t = time.perf_counter()
                ds = liqgpu.estimate(s, every="1h", backend=be, **kw)
                runs.append(time.perf_counter() - t)
            splits.append(sp.result())
    out_bytes = int(sum(ds[v].size * 4 for v in ("intensity", "liquidated") if v in ds))
    rec.update(seconds=statistics.median(runs), runs=runs, split=splits[-1],
               out_bytes=out_bytes, dims={k: int(v) for k, v in ds.sizes.items()},
               attrs_backend=ds.attrs.get("backend"), attrs_model=ds.attrs.get("model"),
               checksum_liquidated=float(np.nansum(ds["liquidated"].values, dtype=np.float64)),
               checksum_intensity=float(np.nansum(ds["intensity"].values, dtype=np.float64)))
    if cp is not None:
        rec["peak_gpu_bytes"], rec["gpu_pool_bytes"] = pk.peak, pk.reserved
        cs = copy_seconds(cp, out_bytes)
        rec["copy"] = cs
        rec["x_copy"] = rec["seconds"] / cs["seconds"] if cs["seconds"] > 0 else None
        comp = (rec["split"] or {}).get("compute_s")
        rec["x_copy_compute"] = comp / cs["seconds"] if comp and cs["seconds"] > 0 else None
    return rec


def _fleet_series(i_days):
    import liqgpu

    i, days = i_days
    return liqgpu.synthetic_series(days=days, step="5min", seed=i, exchange=f"ex{i % 10}",
                                   symbol=f"BTC{i}")


def make_fleet(n, days):
    """n synthetic series (seeds 0..n-1) of 5-minute bars, made by forked processes (one per
    core; before any CUDA context exists here): 200 x 90 days took 55 s in one process."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(i, days) for i in range(n)]
    workers = min(n, os.cpu_count() or 1)
    if workers < 2:
        return [_fleet_series(j) for j in jobs]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
        return list(ex.map(_fleet_series, jobs, chunksize=max(1, n // (4 * workers))))


def part_fleet(args) -> dict:
    """200 series x 90 days of 5-minute bars, one liqgpu.estimate, store written: series/s and
    the split of compute, transfer and compression (see Split)."""
    import liqgpu

    kw = model_kwargs(args.model)
    cp = cupy_module(args.backend, args.dry)
    be = engine_backend(args.backend, args.dry)
    n = args.series or size("fleet_series", args.dry)
    days = args.days or size("fleet_days", args.dry)
    t = time.perf_counter()
    fleet = make_fleet(n, days)
    rec = {"model": args.model, "backend": args.backend, "engine_backend": be, "series": n,
           "days": days, "bars": len(fleet[0]), "made_s": time.perf_counter() - t}
    work = Path(tempfile.mkdtemp(prefix="liqgpu-fleet-", dir=args.tmp))
    rec["free_disk_bytes"] = shutil.disk_usage(work).free
    _note(args, f"fleet: {n} series x {days} days made in {rec['made_s']:.1f}s; writing to {work}")
    from liqgpu.model import engine as eng

    orig_chunk, t_run, last = eng.Engine.chunk, [time.perf_counter()], [time.perf_counter()]

    def chunk(self, b0, b1, **kw):  # progress in the log, so a run cut short says its rate
        r = orig_chunk(self, b0, b1, **kw)
        now = time.perf_counter()
        if now - last[0] > 10 or b1 >= self.n_buckets:
            last[0] = now
            _note(args, f"fleet: buckets {b1}/{self.n_buckets} after {now - t_run[0]:.1f}s")
        return r

    eng.Engine.chunk = chunk
    try:
        out = work / "fleet.zarr"
        t_run[0] = time.perf_counter()
        with PeakTracker(cp) as pk, Split(cp) as sp:
            t = time.perf_counter()
            ds = liqgpu.estimate(fleet, every="1h", backend=be, out=out, **kw)
            rec["seconds"] = time.perf_counter() - t
        rec["split"] = sp.result()
        rec["series_per_s"] = n / rec["seconds"]
        rec["store_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        rec["dims"] = {k: int(v) for k, v in ds.sizes.items()}
        rec["attrs_backend"] = ds.attrs.get("backend")
        if cp is not None:
            rec["peak_gpu_bytes"], rec["gpu_pool_bytes"] = pk.peak, pk.reserved
    finally:
        eng.Engine.chunk = orig_chunk
        shutil.rmtree(work, ignore_errors=True)
    return rec


def part_profile(args) -> dict:
    """Where the year's engine time goes on this backend: one run of the year workload under
    line_profiler (the engine's block, chunk and finish methods and the backend's kernels,
    line by line; run.sh sets CUDA_LAUNCH_BLOCKING=1 so each line's GPU time is its own) and
    cProfile (functions). The tables go to the log and the record (top lines by time)."""
    import cProfile
    import io
    import pstats

    import liqgpu
    from liqgpu.backend import cuda as be_cuda
    from liqgpu.backend import kernels as be_kernels
    from liqgpu.model import engine as eng

    kw = model_kwargs(args.model)
    be = engine_backend(args.backend, args.dry)
    days = args.days or size("year_days", args.dry)
    s = year_series(days, args.dry)
    liqgpu.estimate(year_series(2, args.dry), every="1h", backend=be, **kw)  # warm-up
    rec = {"model": args.model, "backend": args.backend, "engine_backend": be, "days": days,
           "launch_blocking": os.environ.get("CUDA_LAUNCH_BLOCKING")}
    try:
        from line_profiler import LineProfiler
    except ImportError:
        LineProfiler = None
        rec["line_profiler"] = "missing"
    funcs = [eng.Engine.chunk, eng.Engine._block, eng.Engine._finish, eng.Engine._blocks,
             eng._SparseTables.__init__, eng._SparseTables.first_at_or_below,
             be_cuda.to_host, be_kernels.first_cross, be_kernels.scatter_add,
             be_kernels.diff_scatter]
    t = time.perf_counter()
    if LineProfiler is not None:
        lp = LineProfiler(*funcs)
        lp.enable_by_count()
        liqgpu.estimate(s, every="1h", backend=be, **kw)
        lp.disable_by_count()
        rec["line_seconds"] = time.perf_counter() - t
        buf = io.StringIO()
        lp.print_stats(stream=buf, output_unit=1e-3, stripzeros=True)
        text = buf.getvalue()
        print(text, flush=True)
        lines = []
        for (fn, first, name), timings in lp.get_stats().timings.items():
            for lineno, hits, total in timings:
                lines.append((total * lp.get_stats().unit, hits, f"{Path(fn).name}:{lineno} {name}"))
        lines.sort(reverse=True)
        rec["top_lines"] = [{"s": round(s_, 4), "hits": h, "where": w} for s_, h, w in lines[:40]]
    pr = cProfile.Profile()
    t = time.perf_counter()
    pr.enable()
    liqgpu.estimate(s, every="1h", backend=be, **kw)
    pr.disable()
    rec["cprofile_seconds"] = time.perf_counter() - t
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf).sort_stats("tottime")
    st.print_stats(45)
    print(buf.getvalue(), flush=True)
    rec["top_functions"] = [
        {"tottime": round(v[2], 4), "cumtime": round(v[3], 4), "calls": v[1],
         "where": f"{Path(k[0]).name}:{k[1]} {k[2]}"}
        for k, v in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:40]]
    return rec


def _note(args, msg):
    print(f"[{args.part}] {msg}", flush=True)


def part_render(args) -> dict:
    """The year store rendered at 16384x8192 on numpy and on CuPy: whole render, and the
    aggregation alone (store blocks -> columns -> datashader onto the plot area's pixels)."""
    import liqgpu
    from liqgpu.render import heatmap, raster, style
    from liqgpu.render.select import select

    dry = args.dry
    width, height = size("render_px", dry)
    days = size("render_days", dry)
    backends = ["numpy", "cupy"]
    work = Path(tempfile.mkdtemp(prefix="liqgpu-render-", dir=args.tmp))
    rec = {"width": width, "height": height, "days": days, "rows": {}}
    try:
        store = work / "year.zarr"
        t = time.perf_counter()
        est_backend = "numpy" if dry else ("cupy" if _has_cupy() else "numpy")
        liqgpu.estimate(year_series(days, dry), every="1h", backend=est_backend, out=store)
        rec["store_s"], rec["store_backend"] = time.perf_counter() - t, est_backend
        sel = select(liqgpu.open_store(store))
        fig, dpi = style.figure(width, height)
        ax, (x0, y0, pw, ph) = style.pixel_axes(fig, width, height, dpi, left=0.8, right=1.2,
                                                bottom=0.5, top=0.6)
        import matplotlib.pyplot as plt

        plt.close(fig)
        lo, hi = float(sel.edges[0]), float(sel.edges[-1])
        rec["plot_px"] = [int(pw), int(ph)]
        imgs = {}
        for b in backends:
            row = {}
            if b == "cupy" and dry:
                sys.modules.setdefault("cupyx", _fake_cupyx())
                xp = _NumpyPosing()
                render_backend = "numpy"
                row["posing"] = True
            elif b == "cupy":
                name, xp = raster.render_backend("cupy")
                render_backend = "cupy"
            else:
                xp, render_backend = np, "numpy"
            times = []
            for _ in range(2):  # the first CuPy pass compiles numba.cuda and CuPy kernels
                t = time.perf_counter()
                cols = raster.columns(sel, pw, xp=xp)
                t_cols = time.perf_counter() - t
                if xp is np:
                    img = raster.rasterize(cols, [0, 1], sel, width=pw, height=ph,
                                           y_range=(lo, hi))
                else:
                    img = raster.rasterize_device(cols, [0, 1], sel, width=pw, height=ph,
                                                  y_range=(lo, hi), xp=xp)
                times.append((time.perf_counter() - t, t_cols))
                del cols
            row["aggregate_s"], row["columns_s"] = times[-1]
            row["aggregate_first_s"] = times[0][0]
            imgs[b] = img
            png = work / f"year16k-{b}.png"
            t = time.perf_counter()
            heatmap.render(store, out=png, width=width, height=height, backend=render_backend)
            row["render_s"] = time.perf_counter() - t
            row["png_bytes"] = png.stat().st_size
            rec["rows"][b] = row
            _note(args, f"render {b}: aggregate {row['aggregate_s']:.2f}s, whole render "
                        f"{row['render_s']:.2f}s")
        a, g = imgs["numpy"], imgs["cupy"]
        both = np.isfinite(a) & np.isfinite(g)
        rec["pixels_finite_both"] = float(both.mean())
        rec["rel_l1_cupy_vs_numpy"] = float(np.abs(g[both] - a[both]).sum()
                                            / max(np.abs(a[both]).sum(), 1e-300))
        rec["mass_ratio_cupy_over_numpy"] = float(np.nansum(g, dtype=np.float64)
                                                  / max(np.nansum(a, dtype=np.float64), 1e-300))
        rec["aggregate_speedup"] = (rec["rows"]["numpy"]["aggregate_s"]
                                    / rec["rows"]["cupy"]["aggregate_s"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rec


class _NumpyPosing:
    """numpy under another name: raster's device branch, on the CPU (dry run only)."""

    POSING = True

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asnumpy(x):
        return np.asarray(x)


def _fake_cupyx():
    from types import SimpleNamespace

    return SimpleNamespace(scatter_add=lambda t, i, v: np.add.at(t, np.asarray(i), v))


def part_daskcuda(args) -> dict:
    """``liqgpu estimate --workers 1 --backend cupy`` (dask-cuda's LocalCUDACluster) on a small
    fleet of series files, through the command line as a user runs it."""
    import liqgpu.synth as synth

    n = size("dask_series", args.dry)
    days = size("dask_days", args.dry)
    be = engine_backend(args.backend, args.dry)
    work = Path(tempfile.mkdtemp(prefix="liqgpu-dask-", dir=args.tmp))
    rec = {"series": n, "days": days, "backend": args.backend, "engine_backend": be,
           "model": args.model}
    try:
        files = []
        for i in range(n):
            p = work / f"BTC{i}.parquet"
            synth.synthetic_frame(days=days, step="5min", seed=i).to_parquet(p, index=False)
            files.append(str(p))
        out = work / "fleet.zarr"
        cmd = [sys.executable, "-m", "liqgpu.cli", "estimate", *files, "--out", str(out),
               "--workers", "1", "--backend", be, "--every", "1h"]
        help_text = subprocess.run([sys.executable, "-m", "liqgpu.cli", "estimate", "--help"],
                                   capture_output=True, text=True).stdout
        if "--model" in help_text:
            cmd += ["--model", args.model]
        elif args.model != "v1":
            raise Skip(f"model {args.model}: `liqgpu estimate` has no --model at this commit")
        rec["command"] = " ".join(cmd[1:])
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        rec["seconds"] = time.perf_counter() - t
        rec["exit_code"] = r.returncode
        rec["output_tail"] = (r.stdout + r.stderr)[-3000:]
        print(r.stdout + r.stderr, flush=True)
        if r.returncode != 0:
            raise RuntimeError(f"estimate exited {r.returncode}: {(r.stderr or r.stdout)[-500:]}")
        import liqgpu

        ds = liqgpu.open_store(out)
        rec["attrs_backend"] = ds.attrs.get("backend")
        rec["series_per_s"] = n / rec["seconds"]
        rec["store_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rec


# -- summary --------------------------------------------------------------------------------------
def _fmt(x, spec=".3g"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def part_summary(args) -> dict:
    """Read every record under --out/records and write summary.json and summary.md."""
    out = Path(args.out)
    dest = Path(args.dest or args.out)
    dest.mkdir(parents=True, exist_ok=True)
    recs = {}
    for p in sorted((out / "records").glob("*.json")):
        recs[p.stem] = json.loads(p.read_text())
    status = {}
    sf = out / "records" / "status.txt"
    if sf.exists():
        for line in sf.read_text().splitlines():
            k, _, v = line.partition(" ")
            status[k] = v
    env = recs.get("env", {}).get("result", {})
    dev = env.get("device", {})
    lines = [f"# liqgpu GPU run{' (DRY RUN: numpy posing as CuPy, CPU numbers)' if args.dry else ''}",
             "",
             f"commit {env.get('commit', '?')} · {env.get('date_utc', '?')} · device "
             f"{dev.get('name', '?')} (cc {dev.get('compute_capability', '?')}, driver "
             f"{dev.get('driver_version', '?')}, CUDA runtime {dev.get('runtime_version', '?')},"
             f" CuPy {dev.get('cupy', '?')}) · nvidia-smi: {env.get('nvidia_smi', '-')}",
             "", "| part | status | seconds | key figures |", "|---|---|---|---|"]
    for key in sorted(set(recs) | set(status)):
        r = recs.get(key, {})
        res = r.get("result") or {}
        figs = ""
        if key.startswith("year"):
            figs = (f"{_fmt(res.get('seconds'))} s/run, out {_fmt(res.get('out_bytes'))} B, "
                    f"x copy {_fmt(res.get('x_copy'))}, peak GPU {_fmt(res.get('peak_gpu_bytes'))} B")
        elif key.startswith("fleet"):
            sp = res.get("split") or {}
            figs = (f"{_fmt(res.get('series_per_s'))} series/s; compute {_fmt(sp.get('compute_s'))}"
                    f" s, transfer {_fmt(sp.get('transfer_s'))} s, compression "
                    f"{_fmt(sp.get('compression_s'))} s (thread sum), store write "
                    f"{_fmt(sp.get('store_write_s'))} s; peak GPU {_fmt(res.get('peak_gpu_bytes'))} B")
        elif key == "render":
            rows = res.get("rows", {})
            figs = "; ".join(f"{b}: aggregate {_fmt(v.get('aggregate_s'))} s, render "
                             f"{_fmt(v.get('render_s'))} s" for b, v in rows.items())
            figs += f"; rel L1 cupy vs numpy {_fmt(res.get('rel_l1_cupy_vs_numpy'))}"
        elif key.startswith("daskcuda"):
            figs = (f"exit {res.get('exit_code')}, {_fmt(res.get('series_per_s'))} series/s, "
                    f"backend attr {res.get('attrs_backend')}")
        elif key == "profile":
            top = (res.get("top_lines") or [])[:3]
            figs = (f"line-profiled run {_fmt(res.get('line_seconds'))} s, cProfile run "
                    f"{_fmt(res.get('cprofile_seconds'))} s; top lines: "
                    + ", ".join(f"{x['where']} {_fmt(x['s'])} s" for x in top))
        elif key == "pytest":
            figs = res.get("line", "")
        st = status.get(key, "?")
        if r.get("status") and st in ("ok", "?"):
            st = r["status"]  # skipped or failed inside a part that exited cleanly
        if r.get("error"):
            figs = (figs + " " if figs else "") + f"error: {r['error'][:200]}"
        lines.append(f"| {key} | {st} | {_fmt(r.get('seconds'))} | {figs} |")
    for key in ("year-v1", "year-v2"):
        g, c = recs.get(f"{key}-numpy", {}).get("result"), recs.get(f"{key}-cupy", {}).get("result")
        if g and c and c.get("seconds"):
            lines.append("")
            gs, cs_ = g.get("split") or {}, c.get("split") or {}

            def ratio(a, b):
                return f"{a / b:.1f}x" if a and b else "-"

            lines.append(
                f"{key}: whole in-memory estimate {ratio(g['seconds'], c['seconds'])} numpy's; "
                f"engine with its copies to the host {ratio(gs.get('engine_s'), cs_.get('engine_s'))}"
                f" ({_fmt(gs.get('engine_s'))} s vs {_fmt(cs_.get('engine_s'))} s); engine compute "
                f"alone {ratio(gs.get('compute_s'), cs_.get('compute_s'))} "
                f"({_fmt(cs_.get('compute_s'))} s, {_fmt(c.get('x_copy_compute'))}x the output "
                f"cube's device copy; whole estimate {_fmt(c.get('x_copy'))}x)")
    md = "\n".join(lines) + "\n"
    (dest / "summary.md").write_text(md)
    summary = {"dry": args.dry, "env": env, "status": status, "parts": recs}
    (dest / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(md)
    return {"parts": sorted(recs)}


def pytest_record(args) -> dict:
    """Read the pytest log's closing line (run.sh runs pytest itself)."""
    log = Path(args.log) if args.log else None
    text = log.read_text(errors="replace") if log and log.exists() else ""
    import re

    line = next((x.strip("= ") for x in reversed(text.splitlines())
                 if re.search(r"\d+ (passed|failed|skipped|deselected|error)", x)), "")
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|"
                                                 r"errors?|xfailed|xpassed)", line)}
    return {"line": line, "counts": counts}


FUNCS = {"env": part_env, "year": part_year, "fleet": part_fleet, "render": part_render,
         "daskcuda": part_daskcuda, "profile": part_profile, "summary": part_summary,
         "pytest": pytest_record}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=sorted(FUNCS))
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="cupy")
    ap.add_argument("--model", default="v1")
    ap.add_argument("--out", required=True, help="folder; the record goes to OUT/records/")
    ap.add_argument("--name", default=None, help="record name [default: the part]")
    ap.add_argument("--dry", action="store_true",
                    default=os.environ.get("LIQGPU_GPU_DRYRUN") == "1")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--series", type=int, default=None)
    ap.add_argument("--days", type=float, default=None)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--log", default=None)
    ap.add_argument("--dest", default=None, help="summary: where summary.json/.md go")
    args = ap.parse_args(argv)
    if args.part == "summary":
        part_summary(args)
        return 0
    rec_dir = Path(args.out) / "records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or args.part
    rec = {"part": args.part, "backend": args.backend, "model": args.model, "dry": args.dry}
    t = time.perf_counter()
    code = 0
    try:
        rec["result"] = FUNCS[args.part](args)
        rec["status"] = "ok"
    except Skip as exc:
        rec["status"], rec["error"] = "skipped", str(exc)
        print(f"[{name}] skipped: {exc}", flush=True)
    except Exception as exc:  # noqa: BLE001 - one part's failure is logged, the run goes on
        rec["status"], rec["error"] = "failed", f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        code = 1
    rec["seconds"] = time.perf_counter() - t
    (rec_dir / f"{name}.json").write_text(json.dumps(rec, indent=1, default=str))
    print(f"[{name}] {rec['status']} in {rec['seconds']:.1f}s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
