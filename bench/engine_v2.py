"""Model v2 vs v1 on the numpy engine: the issue's mid and year workloads.

Rows: workload (mid: 30 days, year: 365 days of 1-minute bars; synthetic_series(seed=11)) x model
(v1, v2 defaults) x code tree (this checkout, and optionally a baseline tree such as a checkout
of main). Columns:

* ``estimate s``: ``liqgpu.estimate(s, model=..., every="1h", backend="numpy", out=<temp
  store>)`` in-process, after a 1-day warm-up run in the same process (imports, lazy modules);
* ``peak RSS MB`` of that process (the synthetic market included);
* ``engine s`` / ``engine CPU s``: the engine alone in another process (inputs prepared and a
  1-day warm-up run first, then ``make_engine`` and every chunk of ``Engine.run`` as
  ``estimate`` drives it, results dropped as a store writer would): wall and process CPU time,
  the latter less sensitive to other work on a shared machine;
* ``CLI s`` (mid only): the whole ``python -m liqgpu.cli estimate FILE --out X --backend numpy
  --every 1h [--model v1]`` process on the series written to parquet first, and its peak RSS.

Every measurement runs in its own subprocess; the trees and models alternate within each repeat
and the table shows medians, so a noisy shared machine hits all of them alike.

    python bench/engine_v2.py                        # this tree: mid x3, year x1
    python bench/engine_v2.py --baseline /tmp/main   # and a baseline tree, same run
    python bench/engine_v2.py --append               # append the table to bench/RESULTS.md
    python bench/engine_v2.py --no-estimate --no-cli # the engine alone
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


def engine_child(days: int, model: str) -> None:
    """In the subprocess: the engine alone, as ``estimate`` drives it; print JSON."""
    import numpy as np

    from liqgpu.model.engine import chunk_buckets_for, make_engine
    from liqgpu.model.inputs import prepare
    from liqgpu.pipeline import (DEFAULT_MEMORY_BUDGET, clock_align, resolve_every, resolve_grid,
                                 resolve_params)
    from liqgpu.store import chunking
    from liqgpu.synth import synthetic_series

    def setup(d):
        params = resolve_params(None, model)
        inputs = prepare(clock_align([synthetic_series(days=d, seed=11)], "1h", "clock"), params)
        grid = resolve_grid(None, inputs)
        return inputs, grid, resolve_every("1h", inputs.step), params

    def run(inputs, grid, n, params):
        eng = make_engine(inputs, grid, n, xp=np, dtype=np.float32)
        tc, _ = chunking(grid.n_bins, params.n_out, eng.n_buckets)
        cb = chunk_buckets_for(inputs.n_series, eng.ncell, n, budget_bytes=DEFAULT_MEMORY_BUDGET,
                               multiple=tc)
        cb = max(tc, -(-int(cb) // tc) * tc)
        for _ in eng.run(cb, on_bucket=(eng.n_buckets - 1, lambda e: e.state_arrays())):
            pass

    run(*setup(1))
    args = setup(days)
    t, c = time.perf_counter(), time.process_time()
    run(*args)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"s": dt, "cpu": dc, "rss": rss}))


def run_child(tree: Path, days: int, model: str, mode: str = "--child") -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, __file__, mode, str(days), model], env=env,
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
    ap.add_argument("--engine-child", nargs=2, metavar=("DAYS", "MODEL"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--baseline", type=Path, help="a baseline source tree (e.g. main)")
    ap.add_argument("--label", default="baseline", help="name of the baseline in the table")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the mid rows")
    ap.add_argument("--year-repeat", type=int, default=1, help="repeats of the year rows")
    ap.add_argument("--only", choices=sorted(DAYS), help="one workload")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI process timing")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine-only timing")
    ap.add_argument("--no-estimate", action="store_true", help="skip the estimate timing")
    ap.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    a = ap.parse_args()
    if a.child:
        child(int(a.child[0]), a.child[1])
        return
    if a.engine_child:
        engine_child(int(a.engine_child[0]), a.engine_child[1])
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
                        if not a.no_engine:
                            x = run_child(tree, DAYS[wl], model, "--engine-child")
                            res.setdefault((wl, name, model, "eng"), []).append(x)
                            print(f"{wl} {name} {model} engine {x['s']:.2f} s, "
                                  f"CPU {x['cpu']:.2f} s", flush=True)
                        if a.no_estimate:
                            continue
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

    def med(key, field="s"):
        xs = res.get(key)
        return median([x[field] for x in xs]) if xs else None

    def fmt(v, spec="%.2f"):
        return "" if v is None else spec % v

    lines = ["| workload | model | tree | engine s | engine CPU s | estimate s | runs (estimate) | "
             "peak RSS MB | CLI s | CLI peak RSS MB | v2/v1 engine | v2/v1 estimate |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for wl in ([a.only] if a.only else list(DAYS)):
        for model in ("v1", "v2"):
            for name, _ in trees:
                e, g, c = ((wl, name, model, k) for k in ("est", "eng", "cli"))
                if not (res.get(e) or res.get(g)):
                    continue
                r_eng = r_est = None
                if model == "v2":
                    if med(g) and med((wl, name, "v1", "eng")):
                        r_eng = med(g) / med((wl, name, "v1", "eng"))
                    if med(e) and med((wl, name, "v1", "est")):
                        r_est = med(e) / med((wl, name, "v1", "est"))
                lines.append(
                    f"| {wl} | {model} | {name} | {fmt(med(g))} | {fmt(med(g, 'cpu'))} | "
                    f"{fmt(med(e))} | {', '.join('%.2f' % x['s'] for x in res.get(e, []))} | "
                    f"{fmt(max([x['rss'] for x in res.get(e, [])], default=None), '%.0f')} | "
                    f"{fmt(med(c))} | "
                    f"{fmt(max([x['rss'] for x in res.get(c, [])], default=None), '%.0f')} | "
                    f"{fmt(r_eng, '%.2fx')} | {fmt(r_est, '%.2fx')} |")
    if a.baseline:  # this tree against the baseline, same run
        lines += ["", f"| workload | model | engine s: this / {a.label} | engine CPU s | "
                  "estimate s |", "|---|---|---|---|---|"]
        for wl in ([a.only] if a.only else list(DAYS)):
            for model in ("v1", "v2"):
                def ratio(kind, field="s"):
                    x, y = med((wl, "this", model, kind), field), med((wl, a.label, model, kind),
                                                                       field)
                    return f"{x:.2f} / {y:.2f} = {x / y:.2f}x" if x and y else ""
                lines.append(f"| {wl} | {model} | {ratio('eng')} | {ratio('eng', 'cpu')} | "
                             f"{ratio('est')} |")
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
