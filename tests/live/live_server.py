"""A local exchange for the live tests: websocket and HTTP servers on 127.0.0.1 that replay
minutes of bars, mark prices, open interest and liquidations in each venue's message shapes
(see :mod:`liqgpu.live.venues` for the shapes and where they come from), far faster than real
time, with faults on demand.

Bars are a seeded random walk (the shared data holds no 1-minute bars with mark price and OI);
liquidation events are either synthetic or real Binance ``!forceOrder@arr`` rows from
``../shared/data/real/binance_forceorder_ws_snippets`` moved onto the replayed hour.

One coordinator task pushes minute after minute to whoever is connected; Binance's minutes wait
(up to a bound) for the recorder's open-interest request, as a live venue's clock would.
Everything stops by itself: ``stop()``, or the context manager.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

MIN = 60_000
DISCONNECT = object()


def _s(x, nd):
    return f"{x:.{nd}f}"


class Replay:
    """The replayed data: per symbol, minute bars (values as the venue prints them) and events."""

    def __init__(self, venue: str, symbols, minutes: int, start_ms: int, seed: int = 1,
                 events: dict | None = None, event_rate: float = 0.7):
        self.venue, self.symbols, self.n, self.start = venue, list(symbols), minutes, start_ms
        rng = np.random.default_rng(seed)
        self.bars, self.events = {}, {}
        for k, sym in enumerate(self.symbols):
            p = {0: 60000.0, 1: 3000.0, 2: 150.0}.get(k, 100.0)
            if events and sym in events and events[sym]:
                p = float(events[sym][0]["price"])
            oi = 80_000.0 / (1 + k * 10)
            rows = []
            for i in range(minutes):
                o = p
                c = float(_s(o * np.exp(rng.normal(0, 8e-4)), 2))
                h = float(_s(max(o, c) * (1 + abs(rng.normal(0, 3e-4))), 2))
                lo = float(_s(min(o, c) * (1 - abs(rng.normal(0, 3e-4))), 2))
                v = float(_s(rng.uniform(50, 500), 3))
                vb = float(_s(v * rng.uniform(0.3, 0.7), 3))
                q = float(_s(v * c, 2))
                oi = float(_s(oi * (1 + rng.normal(0, 1e-3)), 3))
                marks = [float(_s(rng.uniform(lo, h), 2)) for _ in range(3)]
                rows.append({"t": start_ms + i * MIN, "open": o, "high": h, "low": lo,
                             "close": c, "volume": v, "taker_buy_volume": vb,
                             "quote_volume": q, "oi": oi, "marks": marks,
                             "mark_high": max(marks), "mark_low": min(marks)})
                p = c
            self.bars[sym] = rows
            if events is not None:
                self.events[sym] = list(events.get(sym, []))
            else:
                evs = []
                for i, r in enumerate(rows):
                    for _ in range(rng.poisson(event_rate)):
                        evs.append({"T": r["t"] + int(rng.integers(1, MIN - 1)),
                                    "side": str(rng.choice(["SELL", "BUY"])),
                                    "price": float(_s(rng.uniform(r["low"], r["high"]), 2)),
                                    "qty": float(_s(rng.uniform(0.001, 2.0), 3))})
                self.events[sym] = sorted(evs, key=lambda e: e["T"])

    def minute_events(self, sym, i):
        t0 = self.start + i * MIN
        return [e for e in self.events[sym] if t0 <= e["T"] < t0 + MIN]

    # -- messages --------------------------------------------------------------------------------
    def script(self, i: int) -> dict:
        """Messages of minute ``i`` by websocket path: ``{path: [(tag, text)]}``; tag 'close:SYM'
        marks a closed bar."""
        return getattr(self, f"_{self.venue}")(i)

    def _binance(self, i):
        out = []
        for sym in self.symbols:
            r = self.bars[sym][i]
            t = r["t"]
            low = sym.lower()

            def kline(closed, r=r, t=t, sym=sym, low=low):
                k = {"t": t, "T": t + MIN - 1, "s": sym, "i": "1m", "f": 1, "L": 2,
                     "o": _s(r["open"], 2), "c": _s(r["close"], 2), "h": _s(r["high"], 2),
                     "l": _s(r["low"], 2), "v": _s(r["volume"], 3), "n": 10, "x": closed,
                     "q": _s(r["quote_volume"], 2), "V": _s(r["taker_buy_volume"], 3),
                     "Q": "0", "B": "0"}
                return json.dumps({"stream": f"{low}@kline_1m",
                                   "data": {"e": "kline", "E": t + (MIN if closed else 20_000),
                                            "s": sym, "k": k}})

            def mark(j, r=r, t=t, sym=sym, low=low):
                return json.dumps({"stream": f"{low}@markPrice@1s",
                                   "data": {"e": "markPriceUpdate", "E": t + 10_000 + j * 20_000,
                                            "s": sym, "p": _s(r["marks"][j], 2), "i": "0",
                                            "P": "0", "r": "0.0001", "T": t + 3_600_000}})

            msgs = [("", mark(0)), ("", kline(False))]
            for e in self.minute_events(sym, i):
                o = {"s": sym, "S": e["side"], "o": "LIMIT", "f": "IOC", "q": repr(e["qty"]),
                     "p": _s(e.get("order_price", e["price"] * 1.001), 2),
                     "ap": e.get("ap_text", _s(e["price"], 2)), "X": "FILLED",
                     "l": repr(e["qty"]), "z": repr(e["qty"]), "T": e["T"]}
                msgs.append(("", json.dumps({"stream": "!forceOrder@arr",
                                             "data": {"e": "forceOrder", "E": e["T"] + 5,
                                                      "o": o}})))
            msgs += [("", mark(1)), ("", mark(2)), (f"close:{sym}", kline(True))]
            out += msgs
        return {"/stream": out}

    def _bybit(self, i):
        out = []
        for sym in self.symbols:
            r = self.bars[sym][i]
            t = r["t"]

            def kline(closed, r=r, t=t, sym=sym):
                return json.dumps({"topic": f"kline.1.{sym}", "type": "snapshot",
                                   "ts": t + (MIN if closed else 20_000),
                                   "data": [{"start": t, "end": t + MIN - 1, "interval": "1",
                                             "open": _s(r["open"], 2), "close": _s(r["close"], 2),
                                             "high": _s(r["high"], 2), "low": _s(r["low"], 2),
                                             "volume": _s(r["volume"], 3),
                                             "turnover": _s(r["quote_volume"], 2),
                                             "confirm": closed,
                                             "timestamp": t + (MIN if closed else 20_000)}]})

            def ticker(j, oi=False, r=r, t=t, sym=sym):
                d = {"symbol": sym, "markPrice": _s(r["marks"][j], 2)}
                if oi:
                    d["openInterest"] = _s(r["oi"], 3)
                return json.dumps({"topic": f"tickers.{sym}", "type": "delta",
                                   "ts": t + 10_000 + j * 20_000, "cs": 1, "data": d})

            msgs = [("", ticker(0)), ("", kline(False))]
            evs = self.minute_events(sym, i)
            if evs:
                data = [{"T": e["T"], "s": sym, "S": "Buy" if e["side"] == "SELL" else "Sell",
                         "v": repr(e["qty"]), "p": _s(e["price"], 2)} for e in evs]
                msgs.append(("", json.dumps({"topic": f"allLiquidation.{sym}",
                                             "type": "snapshot", "ts": evs[-1]["T"] + 5,
                                             "data": data})))
            msgs += [("", ticker(1)), ("", ticker(2, oi=True)), (f"close:{sym}", kline(True))]
            out += msgs
        return {"/": out}

    def _okx(self, i):
        pub, bus = [], []
        for sym in self.symbols:
            r = self.bars[sym][i]
            t = r["t"]

            def candle(closed, r=r, t=t, sym=sym):
                row = [str(t), _s(r["open"], 2), _s(r["high"], 2), _s(r["low"], 2),
                       _s(r["close"], 2), "1", _s(r["volume"], 3), _s(r["quote_volume"], 2),
                       "1" if closed else "0"]
                return json.dumps({"arg": {"channel": "candle1m", "instId": sym}, "data": [row]})

            for j in range(3):
                pub.append(("", json.dumps({"arg": {"channel": "mark-price", "instId": sym},
                                            "data": [{"instId": sym, "instType": "SWAP",
                                                      "markPx": _s(r["marks"][j], 2),
                                                      "ts": str(t + 10_000 + j * 20_000)}]})))
            pub.append(("", json.dumps({"arg": {"channel": "open-interest", "instId": sym},
                                        "data": [{"instId": sym, "instType": "SWAP",
                                                  "oi": _s(r["oi"] * 100, 1),
                                                  "oiCcy": _s(r["oi"], 3), "oiUsd": "1",
                                                  "ts": str(t + 55_000)}]})))
            pub.append(("", json.dumps({"arg": {"channel": "mark-price", "instId": sym},
                                        "data": [{"instId": sym, "instType": "SWAP",
                                                  "markPx": _s(r["marks"][2], 2),
                                                  "ts": str(t + 59_500)}]})))
            evs = self.minute_events(sym, i)
            if evs:
                cv = _okx_ctval(sym)
                det = [{"bkPx": _s(e["price"], 2), "side": e["side"].lower(), "posSide": "net",
                        "sz": repr(e["qty"] / cv), "ts": str(e["T"])} for e in evs]
                pub.append(("", json.dumps({"arg": {"channel": "liquidation-orders",
                                                    "instType": "SWAP"},
                                            "data": [{"instId": sym, "instType": "SWAP",
                                                      "details": det}]})))
            bus += [("", candle(False)), (f"close:{sym}", candle(True))]
        return {"/public": pub, "/business": bus}

    # -- what a recorder should write ------------------------------------------------------------
    def expected_bars(self, sym):
        import pandas as pd

        rows = self.bars[sym]
        df = pd.DataFrame({k: [r[k] for r in rows] for k in
                           ("t", "open", "high", "low", "close", "volume", "quote_volume", "oi",
                            "mark_high", "mark_low", "taker_buy_volume")})
        df["time"] = pd.to_datetime(df.pop("t"), unit="ms", utc=True)
        if self.venue != "binance":
            df = df.drop(columns=["taker_buy_volume"])
        return df

    def expected_events(self, sym):
        out = []
        for e in self.events[sym]:
            side = "long" if e["side"] == "SELL" else "short"
            out.append((e["T"] * 1_000_000, side, e["price"], e["qty"] * e["price"]))
        return sorted(out)

    # -- REST ------------------------------------------------------------------------------------
    def rest(self, path, q, server):
        if path == "/fapi/v1/openInterest":
            sym = q["symbol"]
            i = server.closed.get(sym, -1)
            server.oi_served[sym] = i
            if i < 0:
                return {"code": -1, "msg": "no data"}, 400
            r = self.bars[sym][i]
            return {"symbol": sym, "openInterest": _s(r["oi"], 3), "time": r["t"] + MIN + 40}, 200
        mark = "markprice" in path.lower().replace("-", "")
        if path in ("/fapi/v1/klines", "/fapi/v1/markPriceKlines"):
            sym, a, b = q["symbol"], int(q["startTime"]), int(q["endTime"])
            rows = [r for r in self.bars[sym] if a <= r["t"] <= b][: int(q.get("limit", 500))]
            return [[r["t"], _s(r["open"], 2), _s(r["mark_high"] if mark else r["high"], 2),
                     _s(r["mark_low"] if mark else r["low"], 2), _s(r["close"], 2),
                     _s(r["volume"], 3), r["t"] + MIN - 1, _s(r["quote_volume"], 2), 10,
                     _s(r["taker_buy_volume"], 3), "0", "0"] for r in rows], 200
        if path in ("/v5/market/kline", "/v5/market/mark-price-kline"):
            sym, a, b = q["symbol"], int(q["start"]), int(q["end"])
            rows = [r for r in self.bars[sym] if a <= r["t"] <= b][: int(q.get("limit", 200))]
            lst = [[str(r["t"]), _s(r["open"], 2), _s(r["mark_high"] if mark else r["high"], 2),
                    _s(r["mark_low"] if mark else r["low"], 2), _s(r["close"], 2),
                    _s(r["volume"], 3), _s(r["quote_volume"], 2)] for r in reversed(rows)]
            return {"retCode": 0, "result": {"symbol": sym, "category": "linear",
                                             "list": lst}}, 200
        if path in ("/api/v5/market/history-candles", "/api/v5/market/history-mark-price-candles"):
            sym, a, b = q["instId"], int(q["before"]), int(q["after"])
            rows = [r for r in self.bars[sym] if a < r["t"] < b]
            rows = rows[-int(q.get("limit", 100)):]
            lst = [[str(r["t"]), _s(r["open"], 2), _s(r["mark_high"] if mark else r["high"], 2),
                    _s(r["mark_low"] if mark else r["low"], 2), _s(r["close"], 2), "1",
                    _s(r["volume"], 3), _s(r["quote_volume"], 2), "1"] for r in reversed(rows)]
            return {"code": "0", "data": lst}, 200
        return {"msg": "not found"}, 404


def _okx_ctval(sym):
    from liqgpu.io.okx import contract_value

    return contract_value(sym)


class ExchangeServer:
    """Serve a :class:`Replay` on 127.0.0.1 (a websocket server and an HTTP server).

    Faults (sets of minute indices): ``drop`` (the minute's messages are never sent),
    ``dup`` (every message of the minute twice), ``swap`` (minute i's closed bar after minute
    i+1's), ``malformed`` (junk frames before the minute), ``disconnect`` (the connection is
    closed in the middle of the minute; what it had not sent is lost). ``gap_on_reconnect``:
    minutes lost each time a client comes back (time passes while it is away). ``rest_fail``:
    that many REST requests answered 500 first. ``hold_at``: pause after that minute until
    ``release`` is set. ``minute_every``: seconds between simulated minutes (0: as fast as the
    recorder takes them).
    """

    def __init__(self, replay: Replay, *, drop=(), dup=(), swap=(), malformed=(), disconnect=(),
                 gap_on_reconnect: int = 0, rest_fail: int = 0, pace: bool = True,
                 wait_connect: float = 30.0, deadline: float = 120.0, hold_at: int | None = None,
                 minute_every: float = 0.0):
        self.r = replay
        self.drop, self.dup, self.swap = set(drop), set(dup), set(swap)
        self.malformed, self.disconnect = set(malformed), set(disconnect)
        self.gap_on_reconnect, self.rest_fail = gap_on_reconnect, rest_fail
        self.pace, self.wait_connect, self.deadline = pace, wait_connect, deadline
        self.closed: dict = {}
        self.oi_served: dict = {}
        self.conns: dict = {}
        self.minute = -1
        self.sent_closes = 0
        self.connections = 0
        self.done = threading.Event()
        self.hold_at, self.release = hold_at, threading.Event()
        self.minute_every = minute_every
        self.ready = threading.Event()
        self.send_times: dict = {}
        self.paths = list(replay.script(0).keys()) if replay.n else ["/"]

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.rest_url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self._thread, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("websocket server did not start")
        base = f"ws://127.0.0.1:{self.port}"
        self.ws_url = base if self.r.venue != "bybit" else base + "/"
        return self

    def stop(self):
        if getattr(self, "loop", None) and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)
        self.http.shutdown()
        self.http.server_close()

    def _thread(self):
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self):
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()
        self._conn_changed = asyncio.Event()
        async with serve(self._ws, "127.0.0.1", 0, ping_interval=None) as srv:
            self.port = srv.sockets[0].getsockname()[1]
            self.ready.set()
            coord = asyncio.create_task(self._coordinate())
            stopper = asyncio.create_task(self._stop.wait())
            killer = asyncio.create_task(asyncio.sleep(self.deadline))
            await asyncio.wait({stopper, killer}, return_when=asyncio.FIRST_COMPLETED)
            for t in (coord, stopper, killer):
                t.cancel()
            for ws in list(self.conns.values()):
                await ws.close()

    # -- websocket -------------------------------------------------------------------------------
    def _path_of(self, ws):
        p = ws.request.path.split("?")[0]
        if self.r.venue == "binance":
            return "/stream"
        return p if p in self.paths else "/"

    async def _ws(self, ws):
        path = self._path_of(ws)
        self.connections += 1
        self.conns[path] = ws
        self._conn_changed.set()
        try:
            async for msg in ws:
                if msg == "ping":
                    await ws.send("pong")
                elif isinstance(msg, str) and '"op": "ping"' in msg.replace('":"', '": "'):
                    await ws.send(json.dumps({"op": "pong", "success": True}))
                elif self.r.venue in ("bybit", "okx") and "subscribe" in msg:
                    await ws.send(json.dumps({"success": True, "op": "subscribe"})
                                  if self.r.venue == "bybit" else
                                  json.dumps({"event": "subscribe", "arg": {}}))
        except Exception:  # noqa: BLE001 - a client gone is normal here
            pass
        finally:
            if self.conns.get(path) is ws:
                del self.conns[path]
                self._conn_changed.set()

    async def _wait_all_connected(self, timeout):
        end = time.monotonic() + timeout
        while not all(p in self.conns for p in self.paths):
            self._conn_changed.clear()
            left = end - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._conn_changed.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True

    async def _send(self, path, text):
        ws = self.conns.get(path)
        if ws is None:
            return False
        try:
            await ws.send(text)
            return True
        except Exception:  # noqa: BLE001
            return False

    async def _coordinate(self):
        await self._wait_all_connected(self.wait_connect)
        await asyncio.sleep(0.05)  # subscriptions
        seen_conns = self.connections
        held = {}  # swapped closes
        i = 0
        t0 = time.monotonic()
        while i < self.r.n:
            if self.minute_every:  # a simulated minute every `minute_every` seconds
                await asyncio.sleep(max(0.0, t0 + i * self.minute_every - time.monotonic()))
            if self.connections != seen_conns and self.gap_on_reconnect:
                seen_conns = self.connections
                # minutes pass while the client is away, but never past the replay's last: at a
                # venue later minutes always come, and the first closed bar after a gap brings
                # the REST backfill of the minutes before it
                i = min(i + self.gap_on_reconnect, self.r.n - 1)
                continue
            seen_conns = self.connections
            script = self.r.script(i)
            if i in self.malformed:
                for p in self.paths:
                    for junk in ('{"stream": "x", "data": {"e": "kline", "k": {}}}',
                                 "{not json at all", "[1, 2, 3]", '{"topic": "kline.1.X"}',
                                 '{"arg": {"channel": "candle1m"}, "data": [["x"]]}'):
                        await self._send(p, junk)
            lost = False
            if i not in self.drop:
                for p in self.paths:
                    msgs = script[p]
                    cut = len(msgs) // 2 if i in self.disconnect else None
                    for n, (tag, text) in enumerate(msgs):
                        if cut is not None and n == cut:
                            ws = self.conns.get(p)
                            if ws is not None:
                                await ws.close()
                            lost = True
                            break
                        if tag.startswith("close:") and i in self.swap:
                            held.setdefault(i + 1, []).append((p, tag, text))
                            continue
                        sym = tag[6:] if tag.startswith("close:") else None
                        before = self.closed.get(sym)
                        if sym:  # before the send: the recorder's OI request may come (on the
                            self.closed[sym] = i  # HTTP thread) before this coroutine resumes
                        ok = await self._send(p, text)
                        if i in self.dup:
                            await self._send(p, text)
                        if sym and not ok:
                            if before is None:
                                self.closed.pop(sym, None)
                            else:
                                self.closed[sym] = before
                        if sym and ok:
                            self.sent_closes += 1
                            self.send_times[(sym, i)] = time.monotonic()
                            await self._pace(sym, i)
                        if not ok and p not in self.conns:
                            lost = True
                            break
            for p, tag, text in held.pop(i, []):
                await self._send(p, text)
            self.minute = i
            if i == self.hold_at:  # pause here until the test says so
                while not self.release.is_set():
                    await asyncio.sleep(0.01)
                t0 = time.monotonic() - i * self.minute_every  # the next minute comes on time
            i += 1
            if lost:
                await self._wait_all_connected(self.wait_connect)
                await asyncio.sleep(0.05)
        self.done.set()

    async def _pace(self, sym, i):
        if not (self.pace and self.r.venue == "binance"):
            return
        end = time.monotonic() + 2.0
        while self.oi_served.get(sym, -1) < i and time.monotonic() < end:
            if sym not in {s for s in self.r.symbols} or "/stream" not in self.conns:
                return
            await asyncio.sleep(0.0005)

    # -- REST ------------------------------------------------------------------------------------
    def _handler_class(self):
        server = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                if server.rest_fail > 0:
                    server.rest_fail -= 1
                    body, code = {"msg": "busy"}, 500
                else:
                    body, code = server.r.rest(u.path, q, server)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return H


def real_forceorder_events(real_data, symbol="BTCUSDT", start_ms=None):
    """Real ``!forceOrder@arr`` rows of ``symbol`` from the shared data, moved so that the
    busiest session starts at ``start_ms``: ``[{T, side, price (average), qty (filled),
    order_price}]``."""
    import pandas as pd

    f = real_data / "binance_forceorder_ws_snippets" / "binance_um_forceorder_all_symbols.csv"
    df = pd.read_csv(f, dtype=str, keep_default_na=False)
    df = df[df["symbol"] == symbol].copy()
    df["t"] = df["order_trade_time_ms"].astype(np.int64)
    df = df.sort_values("t")
    # the longest run of events with less than 10 minutes between them
    brk = np.flatnonzero(np.diff(df["t"].to_numpy()) > 10 * MIN)
    starts = np.r_[0, brk + 1]
    ends = np.r_[brk + 1, len(df)]
    k = int(np.argmax(ends - starts))
    s = df.iloc[starts[k]:ends[k]]
    t0 = int(s["t"].iloc[0]) // MIN * MIN
    out = []
    for _, r in s.iterrows():
        ap = r["average_price"]
        out.append({"T": int(r["t"]) - t0 + start_ms, "side": r["side"].upper(),
                    "price": float(ap) if ap not in ("", "None") and float(ap) > 0
                    else float(r["price"]), "order_price": float(r["price"]),
                    "ap_text": ap if ap not in ("", "None") else "0",
                    "qty": float(r["order_filled_accumulated_quantity"] or r["original_quantity"])})
    return out
