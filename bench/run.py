"""liqgpu benchmarks: prints a table of workloads x backends.

Workloads (issue 2):
  mid   30 days of 1-minute bars, 5 tiers, log grid 10 bps, hourly output, store written
  year  365 days of 1-minute bars, same settings, estimate + write to zarr
  demo  `liqgpu demo` from the command line to PNG (30 days, 15-minute output)
  render16k  a 16384x8192 heatmap of the year workload's store (issue 5)

Each measurement runs in a fresh subprocess so its peak RSS is its own; times are medians of
``--repeat`` runs inside that process (the synthetic market is generated before timing).

    python bench/run.py                 # mid + year + demo, numpy, reference ratio on mid
    python bench/run.py --only mid --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

WORKLOADS = {"mid": 30, "year": 365, "render16k": 365}


def one(workload: str, backend: str, repeat: int) -> dict:
    """Run inside the child process: time `repeat` runs, report the median and peak RSS."""
    import numpy as np

    import liqgpu
    from liqgpu.model.inputs import prepare
    from liqgpu.model.v1 import Params
    from liqgpu.synth import synthetic_series

    days = WORKLOADS[workload]
    s = synthetic_series(days=days, seed=11)
    params = Params()
    times = []
    tmp = Path(tempfile.mkdtemp(prefix="liqgpu-bench-"))
    try:
        if workload == "render16k":
            from liqgpu.render import render

            store = tmp / "year.zarr"
            ds = liqgpu.estimate(s, every="1h", backend="numpy", out=store)
            bins = ds.sizes["price"]
            for i in range(repeat):
                t = time.perf_counter()
                render(store, out=tmp / "year16k.png", width=16384, height=8192)
                times.append(time.perf_counter() - t)
        elif backend == "reference":
            from liqgpu.model.v1 import reference_estimate
            from liqgpu.pipeline import resolve_grid

            grid = resolve_grid(None, prepare([s], params))
            t = time.perf_counter()
            out = reference_estimate(s, params, grid, every=60)
            times.append(time.perf_counter() - t)
            bins = grid.n_bins
        else:
            for i in range(repeat):
                out = tmp / f"run{i}.zarr"
                t = time.perf_counter()
                ds = liqgpu.estimate(s, every="1h", backend=backend, out=out)
                times.append(time.perf_counter() - t)
                bins = ds.sizes["price"]
                shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "workload": workload,
        "backend": backend,
        "steps": len(s),
        "bins": int(bins),
        "tiers": params.n_tiers,
        "median_s": float(np.median(times)),
        "runs": len(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(workload: str, backend: str, repeat: int) -> dict:
    cmd = [sys.executable, __file__, "--child", workload, backend, str(repeat)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{workload}/{backend} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def demo(repeat: int) -> dict:
    import statistics

    exe = shutil.which("liqgpu") or None
    times = []
    for _ in range(repeat):
        d = tempfile.mkdtemp(prefix="liqgpu-demo-")
        cmd = [exe] if exe else [sys.executable, "-m", "liqgpu.cli"]
        t = time.perf_counter()
        subprocess.run(cmd + ["-q", "demo", "--out", d], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
        shutil.rmtree(d, ignore_errors=True)
    return {"workload": "demo (CLI to PNG)", "backend": "numpy", "steps": 43200, "bins": "",
            "tiers": 5, "median_s": statistics.median(times), "runs": repeat, "peak_rss_mb": None}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, {cpu}, Python {platform.python_version()}"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("WORKLOAD", "BACKEND", "REPEAT"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=["mid", "year", "demo", "render16k"], action="append")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true", help="skip the slow reference run")
    args = ap.parse_args()
    if args.child:
        w, b, r = args.child
        print(json.dumps(one(w, b, int(r))))
        return
    todo = args.only or ["mid", "year", "demo", "render16k"]
    rows = []
    ref = None
    if "mid" in todo and not args.no_reference:
        ref = child("mid", "reference", 1)
        rows.append(ref)
    for w in ("mid", "year"):
        if w in todo:
            rows.append(child(w, args.backend, args.repeat))
    if "demo" in todo:
        rows.append(demo(args.repeat))
    if "render16k" in todo:
        rows.append(child("render16k", "numpy", max(1, args.repeat // 2)))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"liqgpu bench, {stamp}, commit {commit()}, {machine()}")
    print()
    print("| workload | backend | steps | bins | tiers | median s | runs | peak RSS MB | vs reference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = ""
        if ref is not None and r["workload"] == "mid":
            ratio = f"{ref['median_s'] / r['median_s']:.0f}x" if r is not ref else "1x"
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else ""
        print(f"| {r['workload']} | {r['backend']} | {r['steps']} | {r['bins']} | {r['tiers']} | "
              f"{r['median_s']:.3f} | {r['runs']} | {rss} | {ratio} |")


if __name__ == "__main__":
    main()
