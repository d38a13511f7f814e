"""Model v2 vs v1 on the numpy engine: the issue's mid and year workloads.

Rows: workload (mid: 30 days, year: 365 days of 1-minute bars; synthetic_series(seed=11)) x model
(v1, v2 defaults) x code tree (this checkout, and optionally a baseline tree such as a checkout
of main). Columns:

* ``estimate s``: ``liqgpu.estimate(s, model=..., every="1h", backend="numpy", out=<temp
  store>)`` in-process, after a 1-day warm-up run in the same process (imports, lazy modules);
* ``peak RSS MB`` of that process (the synthetic market included);
* ``CLI s`` (mid only): the whole ``python -m liqgpu.cli estimate FILE --out X --backend numpy
  --every 1h [--model v1]`` process on the series written to parquet first, and its peak RSS.

Every measurement runs in its own subprocess; the trees and models alternate within each repeat
and the table shows medians, so a noisy shared machine hits all of them alike.

    python bench/engine_v2.py                        # this tree: mid x3, year x1
    python bench/engine_v2.py --baseline /tmp/main   # and a baseline tree, same run
    python bench/engine_v2.py --append               # append the table to bench/RESULTS.md
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

ROOT = Path(__file__).resolve().parents[1]
DAYS = {"mid": 30, "year": 365}


def child(days: int, model: str) -> None:
    """In the subprocess: warm up, time one estimate with a store written, print JSON."""
    import liqgpu
    from liqgpu.synth import synthetic_series

    tmp = Path(tempfile.mkdtemp(prefix="liqgpu-bench-"))
    try:
        liqgpu.estimate(synthetic_series(days=1, seed=1), model=model, every="1h",
                        backend="numpy", out=tmp / "warm.zarr")
        s = synthetic_series(days=days, seed=11)
        t = time.perf_counter()
        liqgpu.estimate(s, model=model, every="1h", backend="numpy", out=tmp / "x.zarr")
        dt = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"s": dt, "rss": rss}))


def run_child(tree: Path, days: int, model: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, __file__, "--child", str(days), model], env=env,
                         capture_output=True, text=True, check=True, cwd=tree)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cli(tree: Path, parquet: Path, model: str) -> dict:
    """The whole CLI process: wall seconds and its peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = Path(tempfile.mkdtemp(prefix="liqgpu-cli-"))
    try:
        cmd = [sys.executable, "-m", "liqgpu.cli", "estimate", str(parquet), "--out",
               str(out / "x.zarr"), "--backend", "numpy", "--every", "1h", "--model", model]
        t = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=tree, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        if status != 0:
            raise RuntimeError(f"{cmd}: exit {status}: {p.stderr.read().decode()[-2000:]}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"s": dt, "rss": ru.ru_maxrss / 1024}


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def commit_of(tree: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree,
                             capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=tree, capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "?"


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, metavar=("DAYS", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--baseline", type=Path, help="a baseline source tree (e.g. main)")
    ap.add_argument("--label", default="baseline", help="name of the baseline in the table")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the mid rows")
    ap.add_argument("--year-repeat", type=int, default=1, help="repeats of the year rows")
    ap.add_argument("--only", choices=sorted(DAYS), help="one workload")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI process timing")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    a = ap.parse_args()
    if a.child:
        child(int(a.child[0]), a.child[1])
        return

    trees = [("this", ROOT)] + ([(a.label, a.baseline.resolve())] if a.baseline else [])
    res: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="liqgpu-bench-"))
    try:
        parquet = None
        if not a.no_cli and a.only in (None, "mid"):
            sys.path.insert(0, str(ROOT))
            from liqgpu.synth import synthetic_frame

            parquet = tmp / "mid.parquet"
            synthetic_frame(days=DAYS["mid"], seed=11).to_parquet(parquet, index=False)
        for wl in ([a.only] if a.only else list(DAYS)):
            reps = a.repeat if wl == "mid" else a.year_repeat
            for r in range(reps):
                for name, tree in trees:
                    for model in ("v1", "v2"):
                        x = run_child(tree, DAYS[wl], model)
                        res.setdefault((wl, name, model, "est"), []).append(x)
                        print(f"{wl} {name} {model} estimate {x['s']:.2f} s, "
                              f"{x['rss']:.0f} MB", flush=True)
                        if parquet is not None and wl == "mid":
                            y = run_cli(tree, parquet, model)
                            res.setdefault((wl, name, model, "cli"), []).append(y)
                            print(f"{wl} {name} {model} CLI {y['s']:.2f} s, {y['rss']:.0f} MB",
                                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lines = ["| workload | tree | model | estimate s (median) | runs | peak RSS MB | CLI s "
             "(median) | CLI peak RSS MB | v2/v1 (estimate) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for wl in ([a.only] if a.only else list(DAYS)):
        for name, _ in trees:
            for model in ("v1", "v2"):
                e = res.get((wl, name, model, "est"))
                if not e:
                    continue
                c = res.get((wl, name, model, "cli"))
                ratio = ""
                if model == "v2" and res.get((wl, name, "v1", "est")):
                    ratio = "%.2fx" % (median([x["s"] for x in e])
                                       / median([x["s"] for x in res[(wl, name, "v1", "est")]]))
                lines.append(
                    f"| {wl} | {name} | {model} | {median([x['s'] for x in e]):.2f} | "
                    f"{', '.join('%.2f' % x['s'] for x in e)} | "
                    f"{max(x['rss'] for x in e):.0f} | "
                    + (f"{median([x['s'] for x in c]):.2f} | {max(x['rss'] for x in c):.0f}"
                       if c else " | ") + f" | {ratio} |")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    head = [f"### {when} · commit {commit_of(ROOT)} · numpy engine, model v2 vs v1 "
            "(bench/engine_v2.py)", "",
            f"Machine: {machine()}; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f} (shared)."]
    if a.baseline:
        head.append(f"Baseline tree `{a.label}`: {a.baseline} (commit {commit_of(a.baseline)}).")
    head += ["", "Workloads: synthetic_series(days=30 | 365, seed=11), 1-minute bars, default "
             "parameters of each model, hourly output, store written (temp dir); one process "
             "per measurement, alternating trees and models.", ""]
    table = "\n".join(head + lines) + "\n"
    print()
    print(table)
    if a.append:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
