"""Closed-bar-to-store latency of ``liqgpu live`` (issue 17's target: p99 under 2 s with 3 symbols
on 3 venues on the 2-core machine).

Three local exchanges (tests/live/live_server.py: Binance, Bybit and OKX message shapes on 127.0.0.1)
run in a process of their own, as real exchanges would, and replay a simulated minute every
``--minute-every`` seconds. The measured process records the 9 series (as ``liqgpu live`` does)
and keeps the stores current, each through its own update process (``liqgpu live``'s worker;
``--in-process``: the update in the recorder's process, as before); ``--layout per-symbol``: one
store per coin holding its three venues; ``one``: one store of the 9 series. Every minute's
update is a real one (exact, atomic, realized events binned). Latency: from the closed bar's
arrival at the recorder to the store updated (bars and realized) and opened again by a reader
(``liqgpu.open_store`` in a process of its own, one per store), one value per store and
minute, from the minute's first bar (a store applies a minute once all its series have it).
The first ``--warmup`` minutes create the stores (and start the update processes); the
exchanges hold after them until every store has applied them, then replay the measured minutes
on time (``warmup_s``: how long that start took).

    python bench/live_bench.py --minutes 60 --minute-every 1.0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "live"))  # live_server: the local exchanges

VENUES = {"binance": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
          "bybit": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
          "okx": ["BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP"]}
START = 1_750_712_400_000


def reader(conn) -> None:
    """A reader's process: open the store it is sent (as any reader would, liqgpu.open_store)
    and answer with its last bucket's open time (ns)."""
    import liqgpu
    import liqgpu.store  # noqa: F401 - what open_store imports, before the first minute
    import xarray  # noqa: F401

    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        if path is None:
            return
        ds = liqgpu.open_store(path, chunks=None)
        conn.send(int(ds["time"].values[-1].astype("datetime64[ns]").view(np.int64)))


def serve(a) -> None:
    """The exchanges' process: start the three servers, print their URLs (one JSON line), run
    until stdin closes (the measuring process ends) or the deadline."""
    from live_server import ExchangeServer, Replay

    servers = {v: ExchangeServer(Replay(v, s, a.minutes, START, seed=k + 1),
                                 deadline=a.minutes * a.minute_every + 300, wait_connect=120,
                                 minute_every=a.minute_every, hold_at=a.warmup - 1).start()
               for k, (v, s) in enumerate(VENUES.items())}
    print(json.dumps({v: [srv.ws_url, srv.rest_url] for v, srv in servers.items()}), flush=True)
    for line in sys.stdin:  # "go": the stores are up, the measured minutes start
        for srv in servers.values():
            srv.release.set()
    for srv in servers.values():  # EOF: the measuring process is done (or gone)
        srv.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--minute-every", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--every", default="1m")
    ap.add_argument("--layout", choices=["one", "per-symbol"], default="per-symbol",
                    help="one store of the 9 series, or one store per symbol (its 3 venues)")
    ap.add_argument("--in-process", action="store_true",
                    help="apply the minutes in the recorder's process (no update process)")
    ap.add_argument("--dir", default=None, help="where the stores go [default: the system tmp]")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trace", default=None,
                    help="write each store-minute's times (JSON lines) to this file")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        return serve(a)

    import subprocess

    import liqgpu
    import liqgpu.api  # noqa: F401 - imported here, not by three threads at once (--in-process)
    import liqgpu.updating  # noqa: F401
    import zarr.codecs  # noqa: F401
    from liqgpu.live.recorder import Recorder
    from liqgpu.live.store import LiveStore
    from liqgpu.live.venues import make_venue

    class Measured(LiveStore):
        """LiveStore, with the times of each minute's steps kept (``seg``: per minute applied,
        first bar -> last bar of the minute -> update started -> update returned -> read)."""

        def _take(self, key, rows, t_recv):
            for r in rows:
                t = int(r["time"])
                self.last_recv[t] = max(self.last_recv.get(t, 0.0), t_recv)
            super()._take(key, rows, t_recv)

        def _done(self, end):
            t_upd = time.monotonic()
            self.reader.send(str(self.store))  # a reader (another process) sees the new minute
            assert self.reader.recv() >= int(self.bucket0)
            now = time.monotonic()
            self.update_s.append(now - self.t_apply)
            for t in sorted(x for x in self.recv if x <= end):
                self.seg.append((self.recv[t], self.last_recv.get(t, self.recv[t]),
                                 self.t_apply, t_upd, now))
            for t in [x for x in self.last_recv if x <= end]:
                del self.last_recv[t]
            super()._done(end)

        def apply(self):
            self.t_apply = time.monotonic()
            return super().apply()

    # the exchanges: a process of their own (time.monotonic is the same clock in both)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "tests" / "live")] + [p for p in sys.path if p and "site-packages" not in p]))
    exch = subprocess.Popen([sys.executable, __file__, "--serve", "--minutes", str(a.minutes),
                             "--minute-every", str(a.minute_every), "--warmup", str(a.warmup)],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    urls = json.loads(exch.stdout.readline())

    tmp = Path(tempfile.mkdtemp(prefix="live_bench_", dir=a.dir))
    series = [(v, s) for v, syms in VENUES.items() for s in syms]
    if a.layout == "one":
        groups = {"all": series}
    else:  # BTC, ETH, SOL: each store holds one coin on the three venues
        groups = {c: [(v, s) for v, s in series if s.startswith(c)] for c in ("BTC", "ETH", "SOL")}
    stores = {}
    kw = {} if a.in_process else {"worker": True}  # (the tree before the update process: none)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    readers = []
    for name, ser in groups.items():
        ls = Measured(tmp / f"{name}.zarr", tmp / "rec", ser, every=a.every, **kw)
        ls.update_s, ls.seg, ls.last_recv = [], [], {}
        ls.reader, child = ctx.Pipe()
        readers.append(ctx.Process(target=reader, args=(child,), daemon=True))
        readers[-1].start()
        stores[name] = ls
    route = {f"{v}:{s}": ls for ls in stores.values() for v, s in ls.series}

    def on_bars(exchange, symbol, rows, t_recv):
        route[f"{exchange}:{symbol}"].on_bars(exchange, symbol, rows, t_recv)

    def on_events(exchange, symbol, rows):
        route[f"{exchange}:{symbol}"].on_events(exchange, symbol, rows)

    recs = [Recorder(make_venue(v, VENUES[v], *urls[v]), tmp / "rec", on_bars=on_bars,
                     on_events=on_events, status_every=0) for v in VENUES]
    last_ns = (START + (a.minutes - 1) * 60_000) * 10**6

    async def run():
        stop = asyncio.Event()

        async def watch():
            # the first --warmup minutes create the stores and start the update processes; the
            # exchanges hold after them until every store has applied them (so no minute
            # measured waits behind the creation), then replay the rest on time
            held_ns = (START + (a.warmup - 1) * 60_000) * 10**6
            end = time.monotonic() + 300
            while (min(ls.t_end or 0 for ls in stores.values()) < held_ns
                   and time.monotonic() < end):
                await asyncio.sleep(0.05)
            times["release"] = time.monotonic()
            exch.stdin.write("go\n")
            exch.stdin.flush()
            end = time.monotonic() + a.minutes * a.minute_every + 150
            while (min(ls.t_end or 0 for ls in stores.values()) < last_ns
                   and time.monotonic() < end):
                await asyncio.sleep(0.05)
            stop.set()

        await asyncio.gather(*[r.run(stop) for r in recs],
                             *[ls.run(stop) for ls in stores.values()], watch())

    t0 = time.monotonic()
    times = {}
    try:
        asyncio.run(run())
    finally:
        wall = time.monotonic() - t0
        for ls in stores.values():
            getattr(ls, "close", lambda: None)()
            ls.reader.send(None)
        for r in readers:
            r.join(10)
        exch.stdin.close()
        exch.wait(30)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    # one latency per store and minute: from the minute's first closed bar arriving (any venue)
    # to the store holding the minute (bars and realized) and opened by a reader; update_s:
    # from apply() starting to the same point
    lat = np.array([x for ls in stores.values() for x in ls.latencies[a.warmup:]])
    upd = np.array([x for ls in stores.values() for x in ls.update_s[2:]])
    t_end = min(ls.t_end or 0 for ls in stores.values())

    def pct(x, q):
        return round(float(np.percentile(x, q)), 3) if x.size else None

    # where a minute's latency goes (medians over store-minutes): the venues' bars of the minute
    # coming in (first -> last), waiting for the update of an earlier minute, the update (in its
    # process, with the pipe), and the reader opening the store
    if a.trace:
        with open(a.trace, "w") as fh:
            for name, ls in stores.items():
                for k, x in enumerate(ls.seg):
                    fh.write(json.dumps({"store": name, "k": k, "t": [round(v - t0, 4)
                                                                      for v in x]}) + "\n")
    seg = np.array([x for ls in stores.values() for x in ls.seg[a.warmup:]]).reshape(-1, 5)
    d = np.diff(seg, axis=1) if seg.size else np.zeros((0, 4))
    d[:, 1] = np.maximum(d[:, 1], 0.0)  # a minute whose bars came in during the update before

    out = {"layout": a.layout, "stores": len(stores), "update_process": not a.in_process,
           "minutes": a.minutes, "minute_every_s": a.minute_every, "series": len(series),
           "applied_minutes": int((t_end - START * 10**6) // 60_000_000_000 + 1),
           "updates": sum(len(ls.update_s) for ls in stores.values()),
           "minutes_measured": int(lat.size),
           "latency_p50_s": pct(lat, 50), "latency_p95_s": pct(lat, 95),
           "latency_p99_s": pct(lat, 99),
           "latency_max_s": round(float(lat.max()), 3) if lat.size else None,
           "update_p50_s": pct(upd, 50), "update_p99_s": pct(upd, 99),
           "bars_in_p50_s": pct(d[:, 0], 50), "bars_in_p99_s": pct(d[:, 0], 99),
           "queued_p50_s": pct(d[:, 1], 50), "queued_p99_s": pct(d[:, 1], 99),
           "applied_p50_s": pct(d[:, 2], 50), "applied_p99_s": pct(d[:, 2], 99),
           "read_p50_s": pct(d[:, 3], 50), "read_p99_s": pct(d[:, 3], 99),
           "warmup_s": round(times.get("release", t0) - t0, 1),
           "dir": str(tmp.parent), "wall_s": round(wall, 1),
           "loadavg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
           "python": platform.python_version()}
    print(json.dumps(out, indent=2) if a.json else
          "\n".join(f"{k:>18}: {v}" for k, v in out.items()))
    return out


if __name__ == "__main__":
    main()
