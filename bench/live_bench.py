"""Closed-bar-to-store latency of ``liqgpu live`` (issue 17's target: p99 under 2 s with 3 symbols
on 3 venues on the 2-core machine).

Three local exchanges (tests/live_server.py: Binance, Bybit and OKX message shapes on 127.0.0.1)
replay a simulated minute every ``--minute-every`` seconds; one process records the 9 series and
keeps the stores current through ``update`` (``--layout per-symbol``: one store per coin holding
its three venues; ``one``: one store of the 9 series). Latency: from the closed bar's arrival at
the recorder to the store updated (bars and realized) and opened again by a reader, one value per
store and minute, from the minute's first bar (a store applies a minute once all its series have
it). The first ``--warmup`` minutes (store creation) are left out.

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

VENUES = {"binance": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
          "bybit": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
          "okx": ["BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP"]}
START = 1_750_712_400_000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--minute-every", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--every", default="1m")
    ap.add_argument("--layout", choices=["one", "per-symbol"], default="per-symbol",
                    help="one store of the 9 series, or one store per symbol (its 3 venues)")
    ap.add_argument("--dir", default=None, help="where the stores go [default: the system tmp]")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    import liqgpu
    from live_server import ExchangeServer, Replay
    from liqgpu.live.recorder import Recorder
    from liqgpu.live.store import LiveStore
    from liqgpu.live.venues import make_venue

    class Measured(LiveStore):
        def _done(self, end):
            ds = liqgpu.open_store(self.store)  # a reader sees the new minute
            assert ds["time"].values[-1] >= np.datetime64(int(self.bucket0), "ns")
            self.update_s.append(time.monotonic() - self.t_apply)
            super()._done(end)
            self.ends.append((end, time.monotonic()))

        def apply(self):
            self.t_apply = time.monotonic()
            return super().apply()

        def _realized(self, old_bucket):
            t = time.monotonic()
            super()._realized(old_bucket)
            self.realized_s.append(time.monotonic() - t)

    tmp = Path(tempfile.mkdtemp(prefix="live_bench_", dir=a.dir))
    servers = [ExchangeServer(Replay(v, s, a.minutes, START, seed=k + 1), deadline=a.minutes *
                              a.minute_every + 120, minute_every=a.minute_every).start()
               for k, (v, s) in enumerate(VENUES.items())]
    series = [(v, s) for v, syms in VENUES.items() for s in syms]
    if a.layout == "one":
        groups = {"all": series}
    else:  # BTC, ETH, SOL: each store holds one coin on the three venues
        groups = {c: [(v, s) for v, s in series if s.startswith(c)] for c in ("BTC", "ETH", "SOL")}
    stores = {}
    for name, ser in groups.items():
        ls = Measured(tmp / f"{name}.zarr", tmp / "rec", ser, every=a.every)
        ls.update_s, ls.ends, ls.realized_s = [], [], []
        stores[name] = ls
    route = {f"{v}:{s}": ls for ls in stores.values() for v, s in ls.series}

    def on_bars(exchange, symbol, rows, t_recv):
        route[f"{exchange}:{symbol}"].on_bars(exchange, symbol, rows, t_recv)

    def on_events(exchange, symbol, rows):
        route[f"{exchange}:{symbol}"].on_events(exchange, symbol, rows)

    recs = [Recorder(make_venue(v, VENUES[v], srv.ws_url, srv.rest_url), tmp / "rec",
                     on_bars=on_bars, on_events=on_events, status_every=0)
            for v, srv in zip(VENUES, servers)]
    last_ns = (START + (a.minutes - 1) * 60_000) * 10**6

    async def run():
        stop = asyncio.Event()

        async def watch():
            end = time.monotonic() + a.minutes * a.minute_every + 60
            while (min(ls.t_end or 0 for ls in stores.values()) < last_ns
                   and time.monotonic() < end):
                await asyncio.sleep(0.05)
            stop.set()

        await asyncio.gather(*[r.run(stop) for r in recs],
                             *[ls.run(stop) for ls in stores.values()], watch())

    t0 = time.monotonic()
    asyncio.run(run())
    wall = time.monotonic() - t0
    for s in servers:
        s.stop()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    # one latency per store and minute: from the minute's first closed bar arriving (any venue)
    # to the store holding the minute (bars and realized) and opened by a reader; update_s:
    # from apply() starting to the same point
    lat = np.array([x for ls in stores.values() for x in ls.latencies[a.warmup:]])
    upd = np.array([x for ls in stores.values() for x in ls.update_s[2:]])
    t_end = min(ls.t_end or 0 for ls in stores.values())
    out = {"layout": a.layout, "stores": len(stores), "minutes": a.minutes,
           "minute_every_s": a.minute_every, "series": len(series),
           "applied_minutes": int((t_end - START * 10**6) // 60_000_000_000 + 1),
           "updates": sum(len(ls.update_s) for ls in stores.values()),
           "minutes_measured": int(lat.size),
           "latency_p50_s": float(np.percentile(lat, 50)) if lat.size else None,
           "latency_p99_s": float(np.percentile(lat, 99)) if lat.size else None,
           "latency_max_s": float(lat.max()) if lat.size else None,
           "update_p50_s": float(np.percentile(upd, 50)) if upd.size else None,
           "update_p99_s": float(np.percentile(upd, 99)) if upd.size else None,
           "realized_binning_p50_s": float(np.percentile(
               [x for ls in stores.values() for x in ls.realized_s] or [np.nan], 50)),
           "dir": str(tmp.parent), "wall_s": round(wall, 1),
           "loadavg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps(out, indent=2) if a.json else
          "\n".join(f"{k:>18}: {v}" for k, v in out.items()))
    return out


if __name__ == "__main__":
    main()
