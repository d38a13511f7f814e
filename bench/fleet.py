"""Fleet benchmark in one process (issue 13 item 4): wall time, peak RSS and store size of
``liqgpu.estimate`` over a fleet, for one or more source trees (old vs new) side by side.

Workload: N synthetic BTC-like series (``synthetic_series(days=D, step="5min", seed=i,
exchange=f"ex{i % 10}", symbol=f"BTC{i}")``), hourly output, the store written, numpy backend.
Each (tree, model) runs in a fresh child process (``PYTHONPATH=<tree>``); its peak RSS is the
child's ``ru_maxrss`` (``os.wait4``). The fleet is generated in the child before the clock
starts. Runs alternate between trees (``--repeat`` rounds), so a loaded machine hits each alike.

    python bench/fleet.py --trees /work/wt/fleet /tmp/old655 --series 50 --days 90
    python bench/fleet.py --trees . --series 200 --days 90 --models v2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
import liqgpu
n, days, model, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
fleet = [liqgpu.synthetic_series(days=days, step="5min", seed=i, exchange=f"ex{i % 10}",
                                 symbol=f"BTC{i}") for i in range(n)]
t = time.perf_counter()
import inspect
kw = {"reopen": False} if "reopen" in inspect.signature(liqgpu.estimate).parameters else {}
s = liqgpu.estimate(fleet, model=None if model == "default" else model, every="1h",
                    backend="numpy", out=out, **kw)
secs = time.perf_counter() - t
sizes = dict(s.sizes)
print(json.dumps({"secs": secs, "sizes": {k: int(v) for k, v in sizes.items()},
                  "file": liqgpu.__file__}))
"""


def du(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def run_one(tree: Path, n: int, days: float, model: str, work: Path) -> dict:
    out = work / "fleet.zarr"
    env = dict(os.environ, PYTHONPATH=str(tree))
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(n), str(days), model, str(out)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=str(work))
    t = time.perf_counter()
    stdout, stderr = "", ""
    _pid, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    stdout, stderr = p.stdout.read(), p.stderr.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"{tree} {model}: exit {p.returncode}\n{stderr[-3000:]}")
    r = json.loads(stdout.strip().splitlines()[-1])
    r.update(rss_gb=ru.ru_maxrss * 1024 / 1e9, process_s=wall)
    r["store_gb"], r["store_files"] = du(out)
    r["store_gb"] /= 1e9
    shutil.rmtree(out)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=Path, nargs="+", default=[Path(__file__).parents[1]])
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--days", type=float, default=90)
    ap.add_argument("--models", nargs="+", default=["default"],
                    help="'default' (each tree's own default), v1, v2")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the stores")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="liqgpu-fleet1-", dir=args.dir))
    rows = []
    try:
        for rep in range(args.repeat):
            for model in args.models:
                for tree in args.trees:
                    r = run_one(tree.resolve(), args.series, args.days, model, work)
                    r.update(tree=str(tree), model=model, rep=rep)
                    print(json.dumps(r), flush=True)
                    rows.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def commit(tree):
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, cwd=tree).stdout.strip()
        return c or tree.name

    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} cores · "
          f"{platform.processor() or platform.machine()} · Python {platform.python_version()} · "
          f"{args.series} series x {args.days:g} days of 5-minute bars, hourly")
    print("| tree | model | estimate s | process s | peak RSS GB | store GB | files |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {commit(Path(r['tree']))} | {r['model']} | {r['secs']:.1f} | "
              f"{r['process_s']:.1f} | {r['rss_gb']:.2f} | {r['store_gb']:.2f} | "
              f"{r['store_files']} |")


if __name__ == "__main__":
    main()
