"""Benchmark the engine on CuPy against numpy (run on a machine with an NVIDIA GPU).

Year workload (default): 365 days of 1-minute synthetic bars, output every 1h, the default
grid. The engine is driven directly (``prepare`` -> ``resolve_grid``/``resolve_every`` ->
``Engine.run``, as ``liqgpu.api.estimate`` does), so zarr is not timed; every chunk is consumed
(the results arrive on the host). The same run measures the device-to-device copy bandwidth
with CuPy and prints, per backend: seconds (median of the repeats), speed-up over numpy, bytes
of the float32 cubes produced, the bandwidth floor (those bytes / the copy bandwidth), the
multiple of the floor, and the peak GPU memory.

Fleet mode (``--fleet``): 200 synthetic series x 90 days of 5-minute bars passed together as
one list to ``liqgpu.estimate(..., out=STORE)``, timed end to end (store included), reported
in series per second. At the defaults the float32 cubes are about 90 GB before compression
(200 series x ~2650 bins x 2160 hours); the script prints the estimate and the free disk first.

Examples
--------
    python bench/gpu_bench.py                      # year workload, numpy and cupy
    python bench/gpu_bench.py --days 30 --repeats 1
    python bench/gpu_bench.py --fleet --fleet-series 50
    python bench/gpu_bench.py --backends numpy --days 7   # a smoke test without a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import liqgpu
from liqgpu.pipeline import DEFAULT_MEMORY_BUDGET, resolve_every, resolve_grid
from liqgpu.errors import BackendUnavailable
from liqgpu.backend import resolve
from liqgpu.model.engine import Engine, chunk_buckets_for
from liqgpu.model.inputs import prepare
from liqgpu.model.v1 import Params
from liqgpu.store import chunking


@dataclass
class Row:
    backend: str
    seconds: float  # median over the repeats
    runs: list = field(default_factory=list)
    ratio: float = float("nan")  # numpy seconds / these seconds
    out_bytes: int = 0  # float32 intensity + liquidated cubes
    floor_s: float = float("nan")
    floor_multiple: float = float("nan")
    peak_used: int | None = None  # bytes in use at the peak (cupy pool)
    peak_reserved: int | None = None  # bytes the cupy pool held at the end
    checksum: float = float("nan")  # sum of the liquidated cube (float64 accumulation)
    extra: dict = field(default_factory=dict)


class PeakTracker:
    """Peak bytes in use in CuPy's default memory pool, via an allocator hook."""

    def __init__(self, cupy):
        self.cp = cupy
        self.pool = cupy.get_default_memory_pool()
        self.peak = 0

    def __enter__(self):
        cp, pool = self.cp, self.pool
        cp.cuda.Device().synchronize()
        pool.free_all_blocks()
        self.peak = pool.used_bytes()

        def malloc(size):
            mem = pool.malloc(size)
            used = pool.used_bytes()
            if used > self.peak:
                self.peak = used
            return mem

        cp.cuda.set_allocator(malloc)
        return self

    def __exit__(self, *exc):
        self.reserved = self.pool.total_bytes()
        self.cp.cuda.set_allocator(self.pool.malloc)
        return False


def copy_bandwidth(cupy, nbytes: int = 1 << 30, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes per second (bytes read + bytes written)."""
    n = nbytes // 8
    src = cupy.arange(n, dtype=cupy.float64)
    dst = cupy.empty_like(src)
    cupy.copyto(dst, src)  # warm up
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    best = math.inf
    for _ in range(repeats):
        start.record()
        cupy.copyto(dst, src)
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    if not bool((dst[-3:] == src[-3:]).all()):
        raise RuntimeError("copy check failed")
    del src, dst
    cupy.get_default_memory_pool().free_all_blocks()
    return 2 * n * 8 / best


def year_problem(days: float, every: str, seed: int):
    series = liqgpu.synthetic_series(days=days, seed=seed)
    params = Params()
    inputs = prepare([series], params)
    grid = resolve_grid(None, inputs)
    n_every = resolve_every(every, inputs.step)
    return inputs, grid, n_every, params


def run_engine(inputs, grid, n_every, params, xp, memory_budget: int):
    """One full engine run; returns (seconds, float32 cube bytes, checksum, peak live)."""
    engine = Engine(inputs, grid, n_every, xp=xp, dtype=np.float32)
    tc, _ = chunking(grid.n_bins, params.n_tiers, engine.n_buckets)
    cb = chunk_buckets_for(inputs.n_series, engine.ncell, n_every, budget_bytes=memory_budget,
                           multiple=tc)
    nbytes = 0
    total = 0.0
    t = time.perf_counter()
    for chunk in engine.run(cb):  # chunks come back to the host: the device is synchronized
        nbytes += chunk.intensity.nbytes + chunk.liquidated.nbytes
        total += float(chunk.liquidated.sum(dtype=np.float64))
    seconds = time.perf_counter() - t
    return seconds, nbytes, total, engine.peak_live


def bench_year(args, backends) -> list[Row]:
    inputs, grid, n_every, params = year_problem(args.days, args.every, args.seed)
    print(f"year workload: {inputs.n_series} series x {inputs.n_steps} steps, {grid.n_bins} "
          f"bins x {params.n_tiers} tiers x 2 sides, every {n_every} steps", flush=True)
    rows = []
    for name, xp in backends:
        if name == "cupy" and not args.no_warmup:  # NVRTC and CuPy kernel compiles
            w_in, w_grid, w_every, w_params = year_problem(2, args.every, args.seed)
            run_engine(w_in, w_grid, w_every, w_params, xp, args.memory_budget)
        runs, peak_used, peak_res = [], None, None
        for _ in range(args.repeats):
            if name == "cupy":
                with PeakTracker(xp) as pk:
                    s, nbytes, total, live = run_engine(inputs, grid, n_every, params, xp,
                                                        args.memory_budget)
                peak_used = max(peak_used or 0, pk.peak)
                peak_res = max(peak_res or 0, pk.reserved)
            else:
                s, nbytes, total, live = run_engine(inputs, grid, n_every, params, xp,
                                                    args.memory_budget)
            runs.append(s)
            print(f"  {name}: {s:.3f}s", flush=True)
        rows.append(Row(name, statistics.median(runs), runs, out_bytes=nbytes,
                        peak_used=peak_used, peak_reserved=peak_res, checksum=total,
                        extra={"peak_live_positions": live}))
    return rows


def bench_fleet(args, backends) -> list[Row]:
    t = time.perf_counter()
    series = [liqgpu.synthetic_series(days=args.fleet_days, step=args.fleet_step, seed=1000 + i,
                                      symbol=f"SYN{i:04d}USDT")
              for i in range(args.fleet_series)]
    print(f"fleet: {len(series)} series x {len(series[0])} bars of {args.fleet_step} "
          f"(made in {time.perf_counter() - t:.1f}s)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="liqgpu-fleet-", dir=args.tmp))
    inputs = prepare(series, Params())
    grid = resolve_grid(None, inputs)
    n_every = resolve_every(args.every, inputs.step)
    cubes = 2 * 4 * len(series) * grid.n_bins * Params().n_tiers * 2 * -(-inputs.n_steps // n_every)
    free = shutil.disk_usage(tmp).free
    print(f"  {grid.n_bins} bins; float32 cubes {_fmt_bytes(cubes)} before compression; "
          f"{_fmt_bytes(free)} free in {tmp}", flush=True)
    if cubes > free:
        print("  warning: the store may not fit (zstd shrinks the empty cells); scale down with "
              "--fleet-series/--fleet-days or pass --tmp", flush=True)
    rows = []
    try:
        for name, xp in backends:
            runs, peak_used, peak_res, size = [], None, None, 0
            for _ in range(args.repeats):
                out = tmp / f"fleet-{name}.zarr"

                def once():
                    t0 = time.perf_counter()
                    liqgpu.estimate(series, every=args.every, backend=name, out=out,
                                    overwrite=True, memory_budget=args.memory_budget)
                    return time.perf_counter() - t0

                if name == "cupy":
                    with PeakTracker(xp) as pk:
                        s = once()
                    peak_used = max(peak_used or 0, pk.peak)
                    peak_res = max(peak_res or 0, pk.reserved)
                else:
                    s = once()
                size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
                runs.append(s)
                print(f"  {name}: {s:.2f}s ({len(series) / s:.2f} series/s)", flush=True)
                shutil.rmtree(out, ignore_errors=True)
            med = statistics.median(runs)
            rows.append(Row(name, med, runs, peak_used=peak_used, peak_reserved=peak_res,
                            extra={"series_per_s": len(series) / med, "store_bytes": size}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def finish(rows: list[Row], bandwidth: float | None) -> None:
    base = next((r.seconds for r in rows if r.backend == "numpy"), None)
    for r in rows:
        r.ratio = base / r.seconds if base else float("nan")
        if bandwidth and r.out_bytes:
            r.floor_s = r.out_bytes / bandwidth
            r.floor_multiple = r.seconds / r.floor_s


def _fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def _fmt(x, spec) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def print_table(rows: list[Row], *, fleet: bool) -> None:
    if fleet:
        head = ["backend", "seconds", "ratio", "series/s", "store", "peak GPU used",
                "GPU pool"]
        body = [[r.backend, _fmt(r.seconds, ".2f"), _fmt(r.ratio, ".2f"),
                 _fmt(r.extra["series_per_s"], ".2f"), _fmt_bytes(r.extra["store_bytes"]),
                 _fmt_bytes(r.peak_used), _fmt_bytes(r.peak_reserved)] for r in rows]
    else:
        head = ["backend", "seconds", "ratio", "output", "floor s", "x floor", "peak GPU used",
                "GPU pool"]
        body = [[r.backend, _fmt(r.seconds, ".3f"), _fmt(r.ratio, ".2f"),
                 _fmt_bytes(r.out_bytes), _fmt(r.floor_s, ".4f"), _fmt(r.floor_multiple, ".1f"),
                 _fmt_bytes(r.peak_used), _fmt_bytes(r.peak_reserved)] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    print(line(head))
    print(line(["-" * w for w in widths]))
    for b in body:
        print(line(b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="numpy,cupy",
                    help="comma-separated backends to time (default numpy,cupy)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per backend (median)")
    ap.add_argument("--days", type=float, default=365, help="year workload: days of 1m bars")
    ap.add_argument("--every", default="1h", help="output step")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--memory-budget", type=int, default=DEFAULT_MEMORY_BUDGET,
                    help="engine bytes per chunk (as liqgpu.estimate)")
    ap.add_argument("--no-warmup", action="store_true", help="time the first CuPy run too")
    ap.add_argument("--fleet", action="store_true", help="the fleet workload instead")
    ap.add_argument("--fleet-series", type=int, default=200)
    ap.add_argument("--fleet-days", type=float, default=90)
    ap.add_argument("--fleet-step", default="5min")
    ap.add_argument("--tmp", default=None, help="folder for the fleet's stores")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    backends = []
    for b in names:
        try:
            backends.append(resolve(b))
        except BackendUnavailable as exc:
            print(f"gpu_bench: no usable GPU: {exc}", file=sys.stderr)
            print("gpu_bench: run this on a machine with an NVIDIA GPU and CuPy "
                  "(pip install 'liqgpu[gpu]'), or pass --backends numpy for a smoke test",
                  file=sys.stderr)
            return 2
    cupy = next((xp for n, xp in backends if n == "cupy"), None)
    if cupy is not None:
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        gpu_name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        print(f"device {dev.id}: {gpu_name}, CuPy {cupy.__version__}", flush=True)

    rows = bench_fleet(args, backends) if args.fleet else bench_year(args, backends)
    bandwidth = copy_bandwidth(cupy) if cupy is not None else None
    finish(rows, bandwidth)
    print()
    print_table(rows, fleet=args.fleet)
    if bandwidth:
        print(f"\ndevice-to-device copy bandwidth: {bandwidth / 1e9:.0f} GB/s (read + write); "
              "floor = float32 cube bytes / that bandwidth")
    if not args.fleet and len(rows) > 1:
        ref = rows[0].checksum
        for r in rows[1:]:
            rel = abs(r.checksum - ref) / max(abs(ref), 1e-300)
            print(f"liquidated total {r.backend} vs {rows[0].backend}: relative difference "
                  f"{rel:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"workload": "fleet" if args.fleet else "year", "args": vars(args),
             "bandwidth_bytes_per_s": bandwidth, "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
