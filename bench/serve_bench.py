"""Benchmark of `liqgpu serve` (issue 16): pan/zoom re-render time of a year store at 1920x1080,
and the first page load of the demo store in chromium.

* re-render: the viewer's aggregation callback (liqgpu.web.data.heatmap: cut the view from the
  planes, datashader resampling to 1920x1080, shading), the server side of every pan and zoom,
  on a year-like store (365 days of synthetic 5-minute bars, hourly output, the default grid);
  median of ``--repeat`` runs per view after the warm-up the server does before serving.
* first page load: `liqgpu.serve` of the demo store (`liqgpu demo` defaults: 30 days of 1-minute
  bars, 15-minute output) in a background thread, then headless chromium: seconds from the
  request to the heatmap drawn (the session rendered it and the page holds both figures' canvas).

    python bench/serve_bench.py                      # builds the stores in a temporary folder
    python bench/serve_bench.py --year /tmp/year.zarr --keep   # reuse / keep the year store
    python bench/serve_bench.py --append             # and append the results to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAY = 86_400_000.0


def year_store(path: Path) -> float:
    import liqgpu

    t = time.perf_counter()
    s = liqgpu.synthetic_series(days=365, step="5min", seed=7)
    liqgpu.estimate(s, every="1h", backend="numpy", out=path, overwrite=True)
    return time.perf_counter() - t


def demo_store(path: Path) -> None:
    import liqgpu

    s = liqgpu.synthetic_series(days=30, seed=7)
    liqgpu.estimate(s, every="15m", backend="numpy", out=path, overwrite=True)


def rerender(path: Path, repeat: int) -> dict:
    from liqgpu.web import data as D
    from liqgpu.web.app import Viewer

    out = {}
    t = time.perf_counter()
    v = Viewer([path])
    out["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    v.warm()
    out["warm_s"] = time.perf_counter() - t
    st = v.stores[0]
    view = D.View()
    ds, planes = st.view_data(view)
    out["dims"] = dict(ds.sizes)
    (x0, x1), (y0, y1) = D.default_range(ds, view)
    mid = x0 + 200 * DAY
    c = float(ds["close"].values[0, int(ds.sizes["time"] * 200 / 365)])
    views = {
        "whole year": ((x0, x1), (y0, y1)),
        "year, panned 5 days": ((x0 + 5 * DAY, x1 + 5 * DAY), (y0, y1)),
        "month": ((mid, mid + 30 * DAY), (c / 1.4, c * 1.4)),
        "week": ((mid, mid + 7 * DAY), (c / 1.2, c * 1.2)),
        "week, panned 1 day": ((mid + DAY, mid + 8 * DAY), (c / 1.2, c * 1.2)),
        "day": ((mid, mid + DAY), (c / 1.08, c * 1.08)),
    }
    rows = []
    for name, (xr_, yr) in views.items():
        ts, hm = [], None
        for _ in range(repeat):
            t = time.perf_counter()
            hm = D.heatmap(ds, view, x_range=xr_, y_range=yr, width=1920, height=1080,
                           planes=planes)
            ts.append(time.perf_counter() - t)
        rows.append((name, statistics.median(ts), max(ts), hm["n_buckets"], hm["n_bins"],
                     hm["level"]))
    out["rows"] = rows
    t = time.perf_counter()
    st.view_data(D.View(tiers=(2, 3, 4)))
    out["tiers_s"] = time.perf_counter() - t
    out["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def page_load(path: Path) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from liqgpu.web.app import Viewer
    from liqgpu.web.server import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    v = Viewer([path])
    th = serve(None, viewer=v, port=port, threaded=True)
    start_s = time.perf_counter() - t
    o = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1920,1080"):
        o.add_argument(a)
    o.binary_location = shutil.which("chromium")
    d = webdriver.Chrome(options=o, service=Service(shutil.which("chromedriver")))
    js = """
      function n(root) { let k = 0; for (const el of root.querySelectorAll('*')) {
        if (el.tagName === 'CANVAS') k++; if (el.shadowRoot) k += n(el.shadowRoot); } return k; }
      return n(document);"""
    loads = []
    try:
        for _ in range(3):
            before = len(v.sessions)
            t = time.perf_counter()
            d.get(f"http://127.0.0.1:{port}/")
            while time.perf_counter() - t < 60:
                if (len(v.sessions) > before and v.sessions[-1].last is not None
                        and d.execute_script(js) >= 2):
                    break
                time.sleep(0.05)
            loads.append(time.perf_counter() - t)
    finally:
        d.quit()
        th.stop()
    return {"server_start_s": start_s, "loads": loads}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--year", type=Path, help="the year store (built there when absent)")
    ap.add_argument("--keep", action="store_true", help="keep the stores built")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--append", action="store_true", help="append to bench/RESULTS.md")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="liqgpu-serve-bench-"))
    try:
        year = args.year or tmp / "year.zarr"
        built = None
        if not year.exists():
            built = year_store(year)
        rr = rerender(year, args.repeat)
        demo = tmp / "demo.zarr"
        demo_store(demo)
        pl = page_load(demo)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    dims = " x ".join(f"{v} {k}" for k, v in rr["dims"].items() if k != "price_edge")
    lines = [
        "",
        "## liqgpu serve: pan/zoom re-render and first page load "
        f"({datetime.now(timezone.utc):%Y-%m-%d})",
        "",
        f"Machine: {machine()}; commit {commit}; `python bench/serve_bench.py`. CPU only; the",
        "machine was shared with other jobs (1-minute load average "
        f"{load_before:.1f} at the start, {load_after:.1f} at the end), so single runs vary.",
        "",
        f"Year store: 365 days of synthetic 5-minute bars, hourly output ({dims}; "
        + (f"estimated in {built:.0f} s; " if built else "")
        + f"loaded into memory in {rr['load_s']:.1f} s, warm-up (default planes, datashader "
        f"compiled) {rr['warm_s']:.1f} s, peak RSS {rr['rss_gb']:.2f} GB). One re-render = "
        "`liqgpu.web.data.heatmap` at 1920x1080 (what the server does on each pan or zoom).",
        "",
        "| view | median s | max s | buckets | bins | pyramid level |",
        "|---|---|---|---|---|---|",
    ]
    for name, med, mx, nb, np_, lvl in rr["rows"]:
        lines.append(f"| {name} | {med:.3f} | {mx:.3f} | {nb} | {np_} | {lvl} |")
    lines += [
        "",
        f"A change of tiers (new planes for the year store): {rr['tiers_s']:.2f} s.",
        "",
        f"First page load of the demo store (30 days, 15-minute output) in headless chromium at "
        f"1920x1080, server started and warmed in {pl['server_start_s']:.1f} s: "
        + ", ".join(f"{x:.2f} s" for x in pl["loads"])
        + " (first, second, third page; request to heatmap drawn).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
