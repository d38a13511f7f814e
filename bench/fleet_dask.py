"""Fleet benchmark of distributed runs (issue 7): series per second on 1, 2 and 4 local workers.

Workload: N synthetic BTC-like series (``synthetic_series(days=D, step="5min", seed=i,
exchange=f"ex{i % 10}", symbol=f"BTC{i}")``: similar prices, so one shared 10 bps grid stays
narrow), default model parameters, hourly output, the store written (zarr v3, Blosc lz4).
Each worker count runs :func:`liqgpu.distributed.estimate_distributed` on a fresh
``LocalCluster`` (single-threaded worker processes); the time includes starting the cluster,
the client-side grid resolution and the template, the tasks, and the atomic commit. The fleet
is generated once, before any timing.

    python bench/fleet_dask.py                          # 200 series x 90 days (issue 7)
    python bench/fleet_dask.py --series 24 --baseline   # smaller fleet, plus liqgpu.estimate

The issue's workload (200 series x 90 days) writes about 6 GB of compressed store per run and
takes tens of minutes on a 2-core machine; run a smaller fleet there and say so.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--days", type=float, default=90)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--every", default="1h")
    ap.add_argument("--baseline", action="store_true",
                    help="also time liqgpu.estimate on the whole fleet in this process")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the stores")
    args = ap.parse_args()

    import liqgpu
    from liqgpu.distributed import estimate_distributed
    from liqgpu.synth import synthetic_series

    work = Path(tempfile.mkdtemp(prefix="liqgpu-fleet-", dir=args.dir))
    t = time.perf_counter()
    fleet = [synthetic_series(days=args.days, step="5min", seed=i, exchange=f"ex{i % 10}",
                              symbol=f"BTC{i}") for i in range(args.series)]
    print(f"fleet: {args.series} series x {args.days:g} days of 5-minute bars "
          f"({len(fleet[0])} bars each), generated in {time.perf_counter() - t:.1f}s")
    rows = []
    try:
        if args.baseline:
            out = work / "baseline.zarr"
            t = time.perf_counter()
            ds = liqgpu.estimate(fleet, every=args.every, backend="numpy", out=out)
            rows.append(("liqgpu.estimate (1 process)", time.perf_counter() - t, du(out),
                         dict(ds.sizes)))
            shutil.rmtree(out)
        for w in args.workers:
            out = work / f"fleet-{w}.zarr"
            t = time.perf_counter()
            ds = estimate_distributed(fleet, out=out, every=args.every, workers=w)
            rows.append((f"{w} worker{'s' if w > 1 else ''}", time.perf_counter() - t, du(out),
                         dict(ds.sizes)))
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    sizes = rows[0][3]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip() or "?"
    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · commit {commit} · "
          f"{os.cpu_count()} cores · {platform.processor() or platform.machine()} · "
          f"Python {platform.python_version()}")
    print(f"store: {sizes['series']} series x {sizes['time']} hours x {sizes['price']} bins x "
          f"{sizes['leverage']} tiers x 2 sides\n")
    base = next((s for name, s, _, _ in rows if name.startswith("1 worker")), None)
    print("| run | seconds | series/s | speed-up vs 1 worker | store GB |")
    print("|---|---|---|---|---|")
    for name, secs, size, _ in rows:
        speed = f"{base / secs:.2f}x" if base else ""
        print(f"| {name} | {secs:.1f} | {args.series / secs:.3f} | {speed} | {size / 1e9:.2f} |")


if __name__ == "__main__":
    main()
