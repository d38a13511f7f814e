"""Whole-process `liqgpu estimate` of one file, old tree vs new tree, in alternating processes.

For each run: wall time of the process, its CPU time (user + sys, less sensitive to other work
on a shared machine), and the time from the start of the Python code to the engine's first
chunk (interpreter start-up excluded). Medians and new/old ratios at the end.

    python bench/estimate_process.py mid.parquet --old /tmp/old655 --new . -n 7
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics as st
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = r"""
import sys, time
t0 = time.perf_counter()
import liqgpu.model.engine as eng
orig = eng.Engine.chunk
def chunk(self, *a, **k):
    if not getattr(eng, "_seen", False):
        eng._seen = True
        print(f"FIRST {time.perf_counter() - t0:.4f}", file=sys.stderr)
    return orig(self, *a, **k)
eng.Engine.chunk = chunk
from liqgpu.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    if exc.code:
        raise
"""


def run_once(tree: Path, src: Path, out: Path, probe: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    args = ["estimate", str(src), "-o", str(out), "-q"]
    cmd = [sys.executable, "-c", PROBE, *args] if probe else \
        [sys.executable, "-m", "liqgpu.cli", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    # cwd outside both trees: `python -m`/`-c` put the working folder first on sys.path
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(r.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    first = [float(x.split()[1]) for x in r.stderr.splitlines() if x.startswith("FIRST")]
    shutil.rmtree(out, ignore_errors=True)
    return {"wall": wall, "cpu": cpu, "first": first[0] if first else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--new", type=Path, required=True)
    ap.add_argument("-n", type=int, default=7)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    res = {"old": {"wall": [], "cpu": [], "first": []}, "new": {"wall": [], "cpu": [], "first": []}}
    try:
        for i in range(a.n):
            for name, tree in (("old", a.old), ("new", a.new)):
                w = run_once(tree.resolve(), a.src, tmp / f"{name}.zarr", probe=False)
                f = run_once(tree.resolve(), a.src, tmp / f"{name}.zarr", probe=True)
                res[name]["wall"].append(w["wall"])
                res[name]["cpu"].append(w["cpu"])
                res[name]["first"].append(f["first"])
                print(f"{i} {name} wall {w['wall']:.2f} cpu {w['cpu']:.2f} "
                      f"first-step {f['first']:.3f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()}")
    for m in ("wall", "cpu", "first"):
        o, n = st.median(res["old"][m]), st.median(res["new"][m])
        print(f"{m:6s} old {o:.3f}  new {n:.3f}  new/old {n / o:.2f}")


if __name__ == "__main__":
    main()
