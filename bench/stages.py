"""Every stage of whole `liqgpu estimate` processes: start and imports, read, plan, engine,
write, commit, for mid, year and a fleet, v1 and v2 (issue 13).

Each run is one `liqgpu estimate FILES -o STORE` process started from here. A probe (patched
in from outside, liqgpu itself is not instrumented) notes, in the process:

* ``start``: interpreter start to the first line of Python (from the wall clock the bench read
  just before starting the process);
* ``imports``: to the CLI's command running (imports of liqgpu, click, numpy...);
* ``read``: the series files read and checked (``load_series``);
* ``plan``: inputs prepared, grid and engine built (``pipeline.plan``);
* ``first``: to the end of the engine's first chunk;
* ``engine``: the engine's chunks, summed (main thread);
* ``write``: the store writer's work, summed (its thread: array creation and chunk writes,
  compression included; it overlaps the engine);
* ``commit``: attributes, consolidated metadata, manifest and the atomic move;
* ``wall`` and ``peak RSS`` of the whole process.

For the year it also measures, in this process and the same run, the floors the issue compares
against: ``np.copyto`` of the output cubes' bytes (float32) and the chosen codec's raw time on
the same bytes (the cube codec the store writes, liqgpu.store.layout.CODECS); and, for the
store writer alone, the kernel's cost of its files: the same chunk files' bytes written as as
many new files by a bare loop (each timed section starts after ``os.sync()``, so the writeback
of earlier runs is not in its clock).

    python bench/stages.py                      # mid v1+v2 (5 runs each), year v2 (1), fleet 20 x 90 d
    python bench/stages.py --work mid --runs 7 --models v2
    python bench/stages.py --work year --models v1 v2 --runs 1
    python bench/stages.py --work fleet --series 200 --runs 1
    python bench/stages.py --work year --models v1 v2 --runs 5 --dir /dev/shm   # stores on tmpfs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics as st
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, threading, time
T = {"t_python": time.time()}
busy = {"engine": 0.0, "write": 0.0, "create": 0.0}
lock = threading.Lock()
def wrap(mod, name, key, first=None, mark=None):
    orig = getattr(mod, name)
    def f(*a, **k):
        t = time.time()
        if mark:
            T[mark + "_0"] = t
        try:
            return orig(*a, **k)
        finally:
            now = time.time()
            with lock:
                if key:
                    busy[key] += now - t
                if first and first not in T:
                    T[first] = now
                if mark:
                    T[mark] = now
    setattr(mod, name, f)
import liqgpu.cli_common as cc
orig_wrapper = cc.user_errors
import liqgpu.series as ser, liqgpu.pipeline as pl, liqgpu.model.engine as eng
import liqgpu.store.writer as wr, liqgpu.api as api
T["t_imports"] = time.time()
wrap(ser, "load_series", None, mark="t_read")
wrap(pl, "plan", None, mark="t_plan")
wrap(eng.Engine, "chunk", "engine", first="t_first")
wrap(wr.StoreWriter, "write", "write")
wrap(wr.StoreWriter, "prepare", "create")
wrap(wr.StoreWriter, "commit", None, mark="t_commit")
from liqgpu.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
T.update(busy)
T["t_end"] = time.time()
print("STAGES " + json.dumps(T), file=sys.stderr)
sys.exit(code)
"""


def set_aside(path: Path) -> None:
    """Move a finished run's output into the bench folder's trash, deleted at the end: on
    this machine's disk (ext4, mounted with ``discard``), deleting a few hundred MB of chunk
    files made the next process's file writes cost ~2x the kernel time (year v2, whole
    process: 1.4-2.2 s of system time after a deletion, 0.8-1.1 s without), which the next
    timed run would pay. Deleted at once where the disk has under 4 GB free."""
    if not path.exists():
        return
    if shutil.disk_usage(path.parent).free < 4e9:
        shutil.rmtree(path, ignore_errors=True)
        return
    trash = path.parent / "trash"
    trash.mkdir(exist_ok=True)
    path.rename(trash / f"{len(os.listdir(trash))}-{path.name}")


def run_once(files: list[Path], out: Path, model: str, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", PROBE, "-q", "estimate", *map(str, files), "-o", str(out),
           "--model", model, *extra]
    set_aside(out)
    errf = out.parent / "stderr.txt"
    with open(errf, "w") as fh:
        t0 = time.time()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=fh, cwd=out.parent)
        _, status, ru = os.wait4(p.pid, 0)  # this child's own peak RSS
        wall = time.time() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    err = errf.read_text()
    if p.returncode:
        raise SystemExit(err)
    line = [x for x in err.splitlines() if x.startswith("STAGES ")]
    T = json.loads(line[-1][7:])
    store = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    set_aside(out)
    start = T["t_python"] - t0
    return {
        "start": start,
        "imports": T["t_imports"] - T["t_python"],
        "read": T["t_read"] - T["t_imports"],
        "plan": T["t_plan"] - T["t_read"],
        "first": T.get("t_first", T["t_plan"]) - t0,
        "engine": T["engine"],
        "write": T["write"] + T["create"],
        "commit": T["t_commit"] - T["t_commit_0"] if "t_commit" in T else None,
        "after_engine": T["t_end"] - max(T.get("t_first", 0), T["t_plan"]),
        "wall": wall,
        "store_mb": store / 1e6,
        "rss_gb": ru.ru_maxrss / 2**20,
    }


def make_inputs(work: str, tmp: Path, series: int) -> list[Path]:
    sys.path.insert(0, str(REPO))
    from liqgpu.synth import synthetic_frame

    if work == "mid":
        f = tmp / "mid.parquet"
        synthetic_frame(days=30, seed=11).to_parquet(f)
        return [f]
    if work == "year":
        f = tmp / "year.parquet"
        synthetic_frame(days=365, seed=11).to_parquet(f)
        return [f]
    files = []
    for i in range(series):
        f = tmp / f"s{i:03d}.parquet"
        df = synthetic_frame(days=90, step="5min", seed=i)
        df["exchange"], df["symbol"] = f"ex{i % 10}", f"BTC{i}USDT"
        df.to_parquet(f)
        files.append(f)
    return files


def floors(out_bytes: int) -> dict:
    """np.copyto of ``out_bytes`` of float32 and the store's cube codec (Blosc, as
    ``liqgpu.store.layout.CODECS['cube']`` sets it) over them, in 64 MiB pieces (the store's
    chunks are smaller; the codec's speed per byte is what counts)."""
    import numpy as np
    from numcodecs import Blosc

    n = out_bytes // 4
    rng = np.random.default_rng(0)
    # a cube-like payload: mostly zeros with dense bands (the cubes are 7-10 % non-zero)
    src = np.zeros(n, dtype=np.float32)
    nz = rng.random(n) < 0.09
    src[nz] = rng.lognormal(10, 3, nz.sum()).astype(np.float32)
    dst = np.empty_like(src)
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(dst, src)
        ts.append(time.perf_counter() - t)
    from numcodecs import blosc

    blosc.use_threads = False  # one thread: the raw speed of the codec per core
    sys.path.insert(0, str(REPO))
    from liqgpu.store.layout import CODECS

    cfg = CODECS["cube"][0]["configuration"]
    codec = Blosc(cname=cfg["cname"], clevel=cfg["clevel"], typesize=4,
                  shuffle={"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[cfg["shuffle"]])
    piece = (64 << 20) // 4
    t = time.perf_counter()
    comp = 0
    for i in range(0, n, piece):
        comp += len(codec.encode(src[i:i + piece]))
    codec_s = time.perf_counter() - t
    return {"copyto_s": min(ts), "codec_s": codec_s, "codec_ratio": out_bytes / max(comp, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", choices=["mid", "year", "fleet"], nargs="+",
                    default=["mid", "year", "fleet"])
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--runs", type=int, default=None, help="runs per row [mid 5, others 1]")
    ap.add_argument("--series", type=int, default=20, help="fleet size [20]")
    ap.add_argument("--dir", default=None,
                    help="folder for the inputs and stores [a temporary folder on the system's "
                         "temp disk]; /dev/shm (tmpfs) takes the file system's cost of the "
                         "chunk files out of the writer's times")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="liqgpu-stages-", dir=a.dir))
    cols = ["start", "imports", "read", "plan", "first", "engine", "write", "commit", "wall"]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · commit "
          f"{_commit()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.2f} · stores in {tmp.parent}")
    print("| work | model | runs | " + " | ".join(cols) + " | peak RSS GB | store MB |")
    print("|---|---|---|" + "---|" * (len(cols) + 2))
    later = []
    try:
        for work in a.work:
            files = make_inputs(work, tmp, a.series)
            models = a.models or (["v1", "v2"] if work == "mid" else ["v2"])
            runs = a.runs or (5 if work == "mid" else 1)
            extra = ["--every", "1h"]
            for model in models:
                rows = [run_once(files, tmp / "out.zarr", model, extra) for _ in range(runs)]
                med = {c: st.median([r[c] for r in rows if r[c] is not None] or [float("nan")])
                       for c in cols + ["store_mb"]}
                print(f"| {work}{'' if work != 'fleet' else f' {a.series}x90d'} | {model} | "
                      f"{runs} | " + " | ".join(f"{med[c]:.3f}" for c in cols)
                      + f" | {max(r['rss_gb'] for r in rows):.2f} | {med['store_mb']:.1f} |",
                      flush=True)
                if work == "year":
                    later.append((model, med, files[0], runs))
            if work != "year":
                for f in files:
                    f.unlink()
        # the floors last: their arrays in this process would count in the peak RSS of the
        # processes started after them (a child's peak includes the parent's pages at fork)
        for model, med, f, runs in later:
            pairs, pairs1 = [], []  # the engine's default threads, and one (alternated)
            for _ in range(max(runs, 1)):
                pairs.append(engine_alone(f, model))
                pairs1.append(engine_alone(f, model, threads=1))
            alones = [e for e, _ in pairs]
            alone = st.median(alones)
            paired = st.median([e / c for e, c in pairs])
            alone1 = st.median([e for e, _ in pairs1])
            paired1 = st.median([e / c for e, c in pairs1])
            wa = [write_alone(f, model, tmp / "alone.zarr") for _ in range(max(runs, 1))]
            w_s = st.median([x["write_s"] for x in wa])
            c_s = st.median([x["codec_s"] for x in wa])
            r_s = st.median([x["resume_s"] for x in wa])
            f_s = st.median([x["files_s"] for x in wa])
            both = " ".join("%.2f" % (x["write_s"] / (x["codec_s"] + x["files_s"])) for x in wa)
            ratios = " ".join("%.2f" % (x["write_s"] / x["codec_s"]) for x in wa)
            fl = floors(_cube_bytes(f, model))
            print(f"\nyear {model} floors (this process, after the runs): np.copyto of the output "
                  f"cubes {fl['copyto_s']:.3f} s; the store's cube codec on them, one thread "
                  f"{fl['codec_s']:.3f} s (ratio {fl['codec_ratio']:.1f}); engine / copyto "
                  f"{med['engine'] / fl['copyto_s']:.1f}x in the store run (beside the writer), "
                  f"{alone / fl['copyto_s']:.1f}x alone (median {alone:.3f} s of "
                  f"{len(alones)} processes that run the engine and write nothing: "
                  f"{' '.join(f'{x:.3f}' for x in alones)}; paired with np.copyto in each of "
                  f"those processes: median **{paired:.1f}x**, "
                  f"{' '.join(f'{e / c:.1f}' for e, c in pairs)}; the compiled loops on "
                  f"{_threads()} thread(s), LIQGPU_THREADS; on one thread, alternated with "
                  f"those: median {alone1:.3f} s, paired {paired1:.1f}x); write busy in the "
                  f"store run / codec {med['write'] / fl['codec_s']:.2f}x", flush=True)
            print(f"year {model} write alone (the real chunks, computed first; one encoding "
                  f"thread; medians of {len(wa)} processes): writer {w_s:.3f} s, the cube codec "
                  f"over the same {wa[0]['cube_bytes'] / 1e9:.2f} GB {c_s:.3f} s: "
                  f"**{w_s / c_s:.2f}x** (per process: "
                  f"{ratios}); the same {wa[0]['files']} chunk files "
                  f"({wa[0]['file_bytes'] / 1e6:.0f} MB) written by a bare loop {f_s:.3f} s: "
                  f"writer / (codec + files) **{w_s / (c_s + f_s):.2f}x** ({both}); the resume "
                  f"group apart, {r_s:.3f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nstart: interpreter start-up; imports: to the CLI command; first: process start to the "
          "engine's first chunk; engine and write are busy times summed (write on its own thread, "
          "overlapping the engine); wall: the whole process. Medians over the runs.")


WRITE_ALONE = r"""
import json, os, sys, time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
import numpy as np
import liqgpu
import liqgpu.store.direct as D
import liqgpu.store.writer as W
from liqgpu.pipeline import plan, resolve_params, run_to_store
from liqgpu.store.layout import CODECS
D._POOL[:] = [ThreadPoolExecutor(max_workers=1)]  # one encoding thread, as the codec's time
out = {}
def write_behind(chunks, write, depth=1, prepare=None):
    parts = list(chunks)  # the engine runs here, before the clock
    cubes = [np.ascontiguousarray(p.arrays[v]) for p in parts if hasattr(p, "b0")
             for v in ("intensity", "liquidated") if v in p.arrays]
    os.sync()  # the page cache's writeback of earlier runs not in this one's clock
    t = time.perf_counter()
    if prepare:
        prepare()
    out["create_s"] = time.perf_counter() - t
    out["resume_s"] = 0.0
    for p in parts:
        t1 = time.perf_counter()
        write(p)
        if not hasattr(p, "b0"):  # the resume group: its own line
            out["resume_s"] += time.perf_counter() - t1
    out["write_s"] = time.perf_counter() - t - out["resume_s"] - out["create_s"]
    from numcodecs import Blosc, blosc
    blosc.use_threads = False
    cfg = CODECS["cube"][0]["configuration"]
    codec = Blosc(cname=cfg["cname"], clevel=cfg["clevel"], typesize=4,
                  shuffle={"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[cfg["shuffle"]])
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        n = 0
        for c in cubes:
            flat = c.reshape(-1)
            for i in range(0, flat.size, 1 << 24):
                n += len(codec.encode(flat[i:i + (1 << 24)]))
        ts.append(time.perf_counter() - t)
    out["codec_s"] = sorted(ts)[1]
    out["cube_bytes"] = sum(c.nbytes for c in cubes)
W.write_behind = write_behind
p = plan([liqgpu.load_series(sys.argv[1])], params=resolve_params(None, sys.argv[2]), every="1h")
import threading
th = threading.Thread(target=run_to_store, args=(p, sys.argv[3]))  # the writes off the main
th.start()  # thread, as in a store run (its write-behind thread): Blosc's own threads stay off
th.join()
# the files' floor: the cube chunk files the writer wrote, their bytes written again as as many
# new files beside the store by a bare loop (the kernel's cost of the files, no encoding)
files = [(f.name, f.read_bytes()) for v in ("intensity", "liquidated")
         for f in Path(sys.argv[3], v).glob("c.*")]
ts = []
for rep in range(3):
    d = Path(sys.argv[3] + f".files{rep}")
    d.mkdir()
    os.sync()
    t = time.perf_counter()
    for name, b in files:
        fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b)
        os.close(fd)
    ts.append(time.perf_counter() - t)
out["files_s"] = sorted(ts)[1]
out["files"] = len(files)
out["file_bytes"] = sum(len(b) for _, b in files)
print("WRITE " + json.dumps(out))
"""


def write_alone(f: Path, model: str, out: Path) -> dict:
    """The store writer alone on the year's real chunks (computed first, held in memory), with
    one encoding thread, and the cube codec on one thread over the same cubes' bytes (median of
    3): the writer's own cost per byte against the codec's, without the engine beside it. The
    arrays' creation and the resume group (other bytes, another codec) are timed apart."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", WRITE_ALONE, str(f), model, str(out)], env=env,
                       check=True, capture_output=True, text=True)
    for d in [out] + [Path(f"{out}.files{i}") for i in range(3)]:
        set_aside(d)
    return json.loads([x for x in r.stdout.splitlines() if x.startswith("WRITE ")][-1][6:])


def _threads() -> int:
    sys.path.insert(0, str(REPO))
    from liqgpu.model import jit

    return jit.threads()


def engine_alone(f: Path, model: str, threads: int | None = None) -> tuple[float, float]:
    """Seconds of the engine's chunks in a process of their own that writes nothing (the
    same plan as the store run; its compiled loops, if any, start loading before the series
    file is read, as ``liqgpu estimate`` starts them, ``liqgpu.api``): the
    engine without the writer's thread beside it on the machine's cores; and, in the same
    process right after, ``np.copyto`` of the same cubes' bytes (best of 3 into memory already
    touched): the pair is taken side by side, in the same phase of a noisy machine.
    ``threads``: the compiled loops' (``LIQGPU_THREADS``; None: the default)."""
    code = ("import sys, time, numpy as np, liqgpu\n"
            "from liqgpu.api import preload_loops\n"
            "from liqgpu.pipeline import plan, resolve_params\n"
            "params = resolve_params(None, sys.argv[2])\n"
            "preload_loops([sys.argv[1]], params)\n"
            "p = plan([liqgpu.load_series(sys.argv[1])], params=params, every='1h')\n"
            "t = time.perf_counter()\n"
            "n = 0\n"
            "for c in p.chunks():\n"
            "    n += c.intensity.size + c.liquidated.size\n"
            "e = time.perf_counter() - t\n"
            "src = np.ones(n, dtype=np.float32)\n"
            "dst = np.zeros(n, dtype=np.float32)\n"
            "ts = []\n"
            "for _ in range(3):\n"
            "    t = time.perf_counter()\n"
            "    np.copyto(dst, src)\n"
            "    ts.append(time.perf_counter() - t)\n"
            "print(e, min(ts))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if threads is not None:
        env["LIQGPU_THREADS"] = str(threads)
    r = subprocess.run([sys.executable, "-c", code, str(f), model], env=env, check=True,
                       capture_output=True, text=True)
    e, c = r.stdout.split()[-2:]
    return float(e), float(c)


def _cube_bytes(f: Path, model: str) -> int:
    """The float32 intensity + liquidated cubes of the year store (from a 2-day dry estimate's
    grid would differ; run the real one's dims through liqgpu.estimate's plan)."""
    sys.path.insert(0, str(REPO))
    import liqgpu
    from liqgpu.pipeline import plan, resolve_params

    s = liqgpu.load_series(f)
    p = plan([s], params=resolve_params(None, model), every="1h")
    return 2 * p.inputs.n_series * p.n_buckets * p.grid.n_bins * p.params.n_out * 2 * 4


def _commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                       text=True)
    return r.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
