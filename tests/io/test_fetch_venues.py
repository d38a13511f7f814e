"""liqgpu fetch bybit|okx against a local http.server replaying venue-shaped REST responses.

The server below answers with the shapes the venues document for their public v5 APIs (values
are generated here, no exchange data):

- Bybit ``GET /v5/market/kline`` -> ``{"retCode":0,"result":{"category","symbol","list":[[
  startTime, open, high, low, close, volume, turnover], ...]}}`` newest first, rows with
  ``start <= t <= end``, at most ``limit``; ``/v5/market/mark-price-kline`` the same with
  ``[startTime, open, high, low, close]``; ``/v5/market/open-interest`` ``list: [{openInterest,
  timestamp}]`` newest first in ``[startTime, endTime]`` with ``nextPageCursor`` pagination.
  (bybit-exchange.github.io/docs/v5/market/kline, .../mark-kline, .../open-interest)
- OKX ``GET /api/v5/market/history-candles`` -> ``{"code":"0","data":[[ts, o, h, l, c, vol,
  volCcy, volCcyQuote, confirm], ...]}`` newest first, ``after`` = older than, ``before`` = newer
  than, limit 100; ``history-mark-price-candles`` ``[ts, o, h, l, c, confirm]``;
  ``/api/v5/rubik/stat/contracts/open-interest-history`` ``[[ts, oi, oiCcy, oiUsd]]`` with
  ``begin`` (newer than) / ``end`` (older than); ``/api/v5/public/liquidation-orders``
  ``[{instId, details: [{bkPx, side, posSide, sz, ts}]}]``. (okx.com/docs-v5/en/)
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from liqgpu.cli import main
from liqgpu.errors import InputError
from liqgpu.io.rest import RestClient
from liqgpu.io.venues import fetch_venue

D0 = 1772323200000  # 2026-03-01T00:00:00Z
MIN = 60_000
DAY = 86_400_000


def px(t):
    return 60000.0 + (t - D0) // MIN


def bar(t, step):
    """The bar opening at t of ``step`` ms, aggregated from the 1-minute formulas."""
    last = t + step - MIN
    vols = [1 + (m // MIN) % 5 for m in range(t, t + step, MIN)]
    return {"o": px(t) - 0.5, "h": px(last) + 2, "l": px(t) - 3, "c": px(last),
            "v": sum(vols), "q": sum(v * px(m) for v, m in zip(vols, range(t, t + step, MIN))),
            "mo": px(t), "mh": px(last) + 1, "ml": px(t) - 2}


class Exchange:
    """Generated history for one symbol and the faults to inject; ``requests`` logs each call."""

    def __init__(self, days=2):
        self.end = D0 + days * DAY  # bars up to end, OI snapshots up to end inclusive
        self.requests: list[tuple[str, dict]] = []
        self.faults: list[tuple[callable, str]] = []  # (match(path, q), action) used once
        self.broken = None  # match(path, q) -> always HTTP 400

    def bars(self, step_ms):
        return list(range(D0, self.end, step_ms))

    def snapshots(self, step_ms):
        return list(range(D0 + step_ms, self.end + 1, step_ms))


def _bybit(ex: Exchange, path: str, q: dict):
    step = {"1": MIN, "5": 5 * MIN}.get(q.get("interval"), 5 * MIN)
    if path in ("/v5/market/kline", "/v5/market/mark-price-kline"):
        lim = min(int(q.get("limit", 200)), 1000)
        ts = [t for t in ex.bars(step) if int(q["start"]) <= t <= int(q["end"])][::-1][:lim]
        b = {t: bar(t, step) for t in ts}
        if path == "/v5/market/kline":
            rows = [[str(t), str(b[t]["o"]), str(b[t]["h"]), str(b[t]["l"]), str(b[t]["c"]),
                     str(b[t]["v"]), str(b[t]["q"])] for t in ts]
        else:
            rows = [[str(t), str(b[t]["mo"]), str(b[t]["mh"]), str(b[t]["ml"]), str(b[t]["c"])]
                    for t in ts]
    else:  # open-interest
        oi_step = {"5min": 5 * MIN, "15min": 15 * MIN}[q["intervalTime"]]
        ts = [t for t in ex.snapshots(oi_step)
              if int(q["startTime"]) <= t <= int(q["endTime"])][::-1]
        off = int(q.get("cursor") or 0)
        lim = min(int(q.get("limit", 50)), 200)
        page = ts[off:off + lim]
        rows = [{"openInterest": str(1000 + (t - D0) // (5 * MIN)), "timestamp": str(t)}
                for t in page]
        nxt = str(off + lim) if off + lim < len(ts) else ""
        return {"retCode": 0, "retMsg": "OK", "result": {
            "symbol": q["symbol"], "category": q["category"], "list": rows,
            "nextPageCursor": nxt}, "time": 0}
    return {"retCode": 0, "retMsg": "OK", "result": {
        "category": q["category"], "symbol": q["symbol"], "list": rows}, "time": 0}


def _okx(ex: Exchange, path: str, q: dict):
    lim = min(int(q.get("limit", 100)), 100)
    if "candles" in path:
        step = {"1m": MIN, "5m": 5 * MIN}[q["bar"]]
        lo = int(q.get("before", -1))
        hi = int(q.get("after", 1 << 62))
        ts = [t for t in ex.bars(step) if lo < t < hi][::-1][:lim]
        b = {t: bar(t, step) for t in ts}
        if "mark-price" in path:
            rows = [[str(t), str(b[t]["mo"]), str(b[t]["mh"]), str(b[t]["ml"]), str(b[t]["c"]),
                     "1"] for t in ts]
        else:
            rows = [[str(t), str(b[t]["o"]), str(b[t]["h"]), str(b[t]["l"]), str(b[t]["c"]),
                     str(100 * b[t]["v"]), str(b[t]["v"]), str(b[t]["q"]), "1"] for t in ts]
    elif "open-interest-history" in path:
        step = {"5m": 5 * MIN}[q["period"]]
        lo, hi = int(q.get("begin", -1)), int(q.get("end", 1 << 62))
        ts = [t for t in ex.snapshots(step) if lo < t < hi][::-1][:lim]
        rows = [[str(t), str(100000 + 100 * ((t - D0) // step)), str(1000 + (t - D0) // step),
                 "1"] for t in ts]
    else:  # liquidation-orders: 3 per hour, two of them in the same millisecond
        lo, hi = int(q.get("before", -1)), int(q.get("after", 1 << 62))
        ev = []
        for h in range(0, (ex.end - D0) // 3_600_000):
            t = D0 + h * 3_600_000 + 17_000
            ev += [(t, "sell", "long", "3", px(t) - 100), (t, "buy", "short", "5", px(t) + 100),
                   (t + 1000, "sell", "long", "2", px(t) - 50)]
        ev = [e for e in ev if lo < e[0] < hi]
        ev.sort(key=lambda e: -e[0])
        ev = ev[:lim]
        rows = [{"instId": q["uly"] + "-SWAP", "instType": "SWAP", "uly": q["uly"],
                 "totalLoss": "", "details": [
                     {"bkLoss": "0", "bkPx": str(p), "ccy": "", "posSide": ps, "side": s,
                      "sz": sz, "ts": str(t)} for t, s, ps, sz, p in ev]}] if ev else []
    return {"code": "0", "msg": "", "data": rows}


@pytest.fixture
def exchange():
    ex = Exchange()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body: bytes, headers=None, length=None):
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            u = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(u.query))
            ex.requests.append((u.path, q))
            if ex.broken and ex.broken(u.path, q):
                return self._send(400, b'{"retCode":10001,"code":"51000","msg":"bad"}')
            for i, (match, action) in enumerate(ex.faults):
                if match(u.path, q):
                    del ex.faults[i]
                    if action == "429":
                        return self._send(429, b"{}", {"Retry-After": "0.05"})
                    if action == "500":
                        return self._send(500, b"oops")
                    if action == "redirect":
                        return self._send(302, b"", {"Location": self.path})
                    doc = json.dumps(_route(u.path, q)).encode()
                    if action == "truncated":  # a complete HTTP body holding half a document
                        return self._send(200, doc[: len(doc) // 2])
                    if action == "venue-busy":
                        busy = {"retCode": 10006, "retMsg": "Too many visits!", "result": {}}
                        return self._send(200, json.dumps(busy).encode())
            doc = _route(u.path, q)
            if doc is None:
                return self._send(404, b"{}")
            self._send(200, json.dumps(doc).encode())

    def _route(path, q):
        if path.startswith("/v5/market/"):
            return _bybit(ex, path, q)
        if path.startswith("/api/v5/"):
            return _okx(ex, path, q)
        return None

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    ex.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield ex
    srv.shutdown()
    srv.server_close()


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


NOW = D0 + 30 * DAY


# -- the client ----------------------------------------------------------------------------------
def test_client_retries_429_with_retry_after_500_and_truncated_json(exchange):
    pauses = []
    exchange.faults = [(lambda p, q: True, "429"), (lambda p, q: True, "500"),
                       (lambda p, q: True, "truncated")]
    c = RestClient(exchange.url, venue="bybit", rate=0, backoff=0.01, retries=5,
                   sleep=lambda s: (pauses.append(s), time.sleep(s)))
    doc = c.get("/v5/market/kline", {"category": "linear", "symbol": "BTCUSDT", "interval": "1",
                                     "start": D0, "end": D0 + 10 * MIN, "limit": 5})
    assert len(doc["result"]["list"]) == 5
    assert c.requests == 4 and c.retried == 3
    assert pauses[0] == pytest.approx(0.05)  # the server's Retry-After, not the backoff
    # then exponential backoff with full jitter: attempt k waits at most backoff * 2**k
    assert all(p <= 0.01 * 2 ** k for k, p in enumerate(pauses[1:], start=1))


def test_client_refuses_redirect_loop_size_cap_and_deadline(exchange):
    exchange.faults = [(lambda p, q: True, "redirect")] * 3
    c = RestClient(exchange.url, venue="okx", rate=0, backoff=0)
    with pytest.raises(InputError, match="redirect .* refused"):
        c.get("/api/v5/market/history-candles", {"instId": "BTC-USDT-SWAP", "bar": "1m"})
    assert len(exchange.requests) == 1  # no loop, no retry
    exchange.faults = []
    small = RestClient(exchange.url, venue="okx", rate=0, max_bytes=100)
    with pytest.raises(InputError, match="byte cap"):
        small.get("/api/v5/market/history-candles", {"instId": "BTC-USDT-SWAP", "bar": "1m"})
    clock = [0.0]
    timed = RestClient(exchange.url, venue="okx", rate=0, deadline=5, clock=lambda: clock[0])
    clock[0] = 6.0
    with pytest.raises(InputError, match="overall deadline of 5 s"):
        timed.get("/api/v5/market/history-candles", {"instId": "BTC-USDT-SWAP", "bar": "1m"})
    n = len(exchange.requests)
    always = RestClient(exchange.url, venue="okx", rate=0, backoff=0, retries=2)
    exchange.faults = [(lambda p, q: True, "500")] * 2
    with pytest.raises(InputError, match="HTTP 500 after 2 attempt"):
        always.get("/api/v5/market/history-candles", {"instId": "BTC-USDT-SWAP", "bar": "1m"})
    assert len(exchange.requests) == n + 2


def test_rate_limiter_spaces_requests(exchange):
    c = RestClient(exchange.url, venue="okx", rate=20)
    t = time.monotonic()
    for _ in range(5):
        c.get("/api/v5/market/history-candles", {"instId": "BTC-USDT-SWAP", "bar": "1m",
                                                 "limit": 1})
    assert time.monotonic() - t >= 4 / 20 - 0.01


# -- options refused before any request ----------------------------------------------------------
@pytest.mark.parametrize("args,msg", [
    (["bybit", "--symbol", "BTCUSDT&category=spot"], "not a Bybit symbol"),
    (["bybit", "--symbol", "../../etc/passwd"], "not a Bybit symbol"),
    (["okx", "--symbol", "BTC-USDT-SWAP/../../x"], "not an OKX symbol"),
    (["okx", "--symbol", "BTCUSDT"], "not an OKX symbol"),
    (["bybit", "--symbol", "BTCUSDT", "--interval", "1m&limit=99999"], "--interval"),
    (["bybit", "--symbol", "BTCUSDT", "--interval", "3m"], "--interval"),
    (["bybit", "--symbol", "BTCUSDT", "--data", "klines,liquidations"],
     "no liquidation history over REST"),
    (["bybit", "--symbol", "BTCUSDT", "--category", "inverse"], "is a linear contract"),
    (["okx", "--symbol", "PEPE-USDT-SWAP"], "contract value unknown"),
    (["okx", "--symbol", "BTC-USDT-SWAP", "--base-url", "file:///etc"], "--base-url"),
    (["okx", "--symbol", "BTC-USDT-SWAP", "--timeout", "0"], "--timeout"),
])
def test_bad_options_exit_2_without_a_request(exchange, tmp_path, args, msg):
    venue, rest = args[0], args[1:]
    extra = [] if "--base-url" in rest else ["--base-url", exchange.url]
    r = run("fetch", venue, *rest, "--start", "2026-03-01", "--end", "2026-03-01",
            "--out", tmp_path / "o", *extra)
    assert r.exit_code == 2, r.output
    assert msg in r.output and len(r.output.strip().splitlines()) == 1
    assert exchange.requests == []
    assert not (tmp_path / "o").exists()
    r = run("fetch", "okx", "--symbol", "BTC-USDT-SWAP", "--start", "2026-03-02",
            "--end", "2026-03-01", "--out", tmp_path / "o", "--base-url", exchange.url)
    assert r.exit_code == 2 and "before --start" in r.output


# -- whole runs ----------------------------------------------------------------------------------
def expected_series(step_min: int, days: int, venue: str) -> pd.DataFrame:
    """The normalized series, computed by hand from the generator's formulas."""
    step = step_min * MIN
    t = np.arange(D0, D0 + days * DAY, step, dtype=np.int64)
    m1 = [np.arange(b, b + step, MIN) for b in t]  # the 1m bars inside each bar
    close = np.array([px(x[-1]) for x in m1], dtype=float)
    open_ = np.array([px(x[0]) - 0.5 for x in m1], dtype=float)
    vol1 = [(1 + (x // MIN) % 5).astype(float) for x in m1]
    k = (t + step - D0) // (5 * MIN)  # the OI snapshot at the bar's close
    df = pd.DataFrame({
        "time": pd.to_datetime(t, unit="ms", utc=True),
        "open": open_, "high": close + 2, "low": np.array([px(x[0]) - 3 for x in m1], float),
        "close": close,
        "oi": (1000 + k).astype(float),
        "mark_high": close + 1, "mark_low": np.array([px(x[0]) - 2 for x in m1], float),
        "volume": np.array([v.sum() for v in vol1]),
        "quote_volume": np.array([(v * np.array([px(y) for y in x])).sum()
                                  for v, x in zip(vol1, m1)]),
    })
    df["exchange"], df["symbol"] = venue, "BTCUSDT" if venue == "bybit" else "BTC-USDT-SWAP"
    df["kind"], df["contract_size"] = "linear", 1.0
    return df


@pytest.mark.parametrize("venue,symbol", [("bybit", "BTCUSDT"), ("okx", "BTC-USDT-SWAP")])
def test_output_equals_hand_computed_series(exchange, tmp_path, venue, symbol):
    s = fetch_venue(venue, symbol, start="2026-03-01", end="2026-03-02", out=tmp_path,
                    interval="5m", base_url=exchange.url, rate=0, now_ms=NOW)
    got = pd.read_parquet(s["series"])
    want = expected_series(5, 2, venue)
    cols = ["time", "open", "high", "low", "close", "oi", "mark_high", "mark_low", "volume",
            "quote_volume", "exchange", "symbol", "kind", "contract_size"]
    pd.testing.assert_frame_equal(got[cols].reset_index(drop=True), want[cols],
                                  check_dtype=False)
    assert s["fetched"] == 2 * (3 if venue == "bybit" else 4) and s["present"] == 0
    assert s["coverage"]["oi_missing_bars"] == 0 and s["coverage"]["price_missing_bars"] == 0
    if venue == "okx":  # paged 100 at a time, newest first
        kl = [q for p, q in exchange.requests if p.endswith("/history-candles")]
        assert len(kl) == 2 * 3  # 288 bars a day: 100 + 100 + 88
        ev = pd.read_parquet(s["events"])
        assert len(ev) == 3 * 48  # two orders share a millisecond: both kept
        first = ev.iloc[:3]
        assert list(first["side"]) == ["long", "short", "long"]
        assert first["qty"].iloc[0] == pytest.approx(3 * 0.01)  # sz contracts x ctVal 0.01 BTC
        assert first["price_kind"].iloc[0] == "bankruptcy"
    else:
        assert any("no liquidation history" in n for n in s["notes"])
        oi = [q for p, q in exchange.requests if p.endswith("/open-interest")]
        assert len(oi) == 2 * 2  # 288 snapshots a day, 200 a page, cursor pagination
        assert all(q["intervalTime"] == "5min" for q in oi)


def test_one_minute_series_and_estimate_runs_on_it(exchange, tmp_path):
    r = run("fetch", "bybit", "--symbol", "btcusdt", "--start", "2026-03-01", "--end",
            "2026-03-01", "--out", tmp_path / "raw", "--base-url", exchange.url, "--rate", "0",
            "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    df = pd.read_parquet(s["series"])
    assert len(df) == 1440 and df["close"].iloc[0] == 60000.0
    # OI every 5 minutes sits on the last 1m bar of each 5m bar (its close); the rest is a gap
    assert df["oi"].notna().sum() == 288 and df["oi"].iloc[4] == 1001.0
    assert np.isnan(df["oi"].iloc[0])
    kl = [q for p, q in exchange.requests if p.endswith("/kline")]
    assert len(kl) == 2 and kl[0]["end"] == str(D0 + DAY - 1)  # 1000 + 440, newest first
    store = tmp_path / "s.zarr"
    r = run("estimate", s["series"], "--out", store, "--backend", "numpy", "--every", "1h")
    assert r.exit_code == 0, r.output
    assert store.exists()


def test_faults_are_retried_and_the_result_is_unchanged(exchange, tmp_path):
    exchange.faults = [
        (lambda p, q: p.endswith("/history-candles") and "after" in q, "429"),
        (lambda p, q: p.endswith("history-mark-price-candles"), "500"),
        (lambda p, q: "open-interest-history" in p, "truncated"),
        (lambda p, q: "open-interest-history" in p, "venue-busy"),
    ]
    s = fetch_venue("okx", "BTC-USDT-SWAP", start="2026-03-01", end="2026-03-02",
                    out=tmp_path, interval="5m", base_url=exchange.url, rate=0, backoff=0.01,
                    now_ms=NOW)
    assert s["retries"] == 4 and exchange.faults == []
    got = pd.read_parquet(s["series"])
    assert got["oi"].notna().all() and len(got) == 576


def test_resume_fetches_only_the_missing_days(exchange, tmp_path):
    exchange.end = D0 + 4 * DAY
    exchange.broken = lambda p, q: p.endswith("/kline") and int(q["end"]) > D0 + 2 * DAY
    with pytest.raises(InputError, match="HTTP 400"):
        fetch_venue("bybit", "BTCUSDT", start="2026-03-01", end="2026-03-04", out=tmp_path,
                    interval="5m", base_url=exchange.url, rate=0, now_ms=NOW)
    cache = tmp_path / "cache" / "bybit" / "BTCUSDT"
    assert sorted(p.name for p in (cache / "klines" / "5m").iterdir()) == \
        ["2026-03-01.json", "2026-03-02.json"]  # nothing half-written
    assert not list(tmp_path.glob("*.parquet"))
    exchange.broken = None
    exchange.requests.clear()
    s = fetch_venue("bybit", "BTCUSDT", start="2026-03-01", end="2026-03-04", out=tmp_path,
                    interval="5m", base_url=exchange.url, rate=0, now_ms=NOW)
    assert s["present"] == 2 * 3 + 0 and s["fetched"] == 2 * 3
    starts = {int(q.get("start") or q.get("startTime")) for p, q in exchange.requests}
    assert min(starts) >= D0 + 2 * DAY  # days 1 and 2 were not asked for again
    assert len(pd.read_parquet(s["series"])) == 4 * 288
    # a tampered cache file fails its checksum and that day alone is fetched again
    f = cache / "oi" / "5m" / "2026-03-01.json"
    doc = json.loads(f.read_text())
    doc["result"]["list"][0]["openInterest"] = "1"
    f.write_text(json.dumps(doc))
    exchange.requests.clear()
    s = fetch_venue("bybit", "BTCUSDT", start="2026-03-01", end="2026-03-04", out=tmp_path,
                    interval="5m", base_url=exchange.url, rate=0, now_ms=NOW)
    assert s["fetched"] == 1 and {p for p, q in exchange.requests} == {"/v5/market/open-interest"}


def test_bybit_inverse_units(exchange, tmp_path):
    s = fetch_venue("bybit", "BTCUSD", start="2026-03-01", end="2026-03-01", out=tmp_path,
                    interval="5m", base_url=exchange.url, rate=0, now_ms=NOW,
                    datasets=["klines", "oi"])
    df = pd.read_parquet(s["series"])
    b = bar(D0, 5 * MIN)
    assert df["kind"].iloc[0] == "inverse" and df["contract_size"].iloc[0] == 1.0
    # inverse: volume counts 1-USD contracts (-> quote), turnover is base; OI in contracts
    assert df["quote_volume"].iloc[0] == b["v"] and df["volume"].iloc[0] == b["q"]
    assert df["oi"].iloc[0] == 1001.0
    assert {q["category"] for p, q in exchange.requests} == {"inverse"}


def test_day_not_over_is_fetched_again(exchange, tmp_path):
    now = D0 + DAY + 6 * 3_600_000  # 2026-03-02 06:00
    exchange.end = now - now % (5 * MIN)
    s = fetch_venue("bybit", "BTCUSDT", start="2026-03-01", end="2026-03-02", out=tmp_path,
                    interval="5m", base_url=exchange.url, rate=0, now_ms=now)
    assert s["fetched"] == 3 and s["incomplete"] == 3
    s = fetch_venue("bybit", "BTCUSDT", start="2026-03-01", end="2026-03-02", out=tmp_path,
                    interval="5m", base_url=exchange.url, rate=0, now_ms=now)
    assert s["present"] == 3 and s["incomplete"] == 3
    n = len(exchange.requests)
    with pytest.raises(InputError, match="has not started"):
        fetch_venue("bybit", "BTCUSDT", start="2026-03-01", end="2026-03-09", out=tmp_path,
                    base_url=exchange.url, rate=0, now_ms=now)
    assert len(exchange.requests) == n


def test_deadline_stops_the_run_and_a_rerun_resumes(exchange, tmp_path):
    exchange.end = D0 + 3 * DAY
    r = run("fetch", "okx", "--symbol", "BTC-USDT-SWAP", "--start", "2026-03-01", "--end",
            "2026-03-03", "--out", tmp_path, "--base-url", exchange.url, "--interval", "5m",
            "--rate", "10", "--deadline", "1.0", "--data", "klines,oi")
    assert r.exit_code == 2 and "deadline" in r.output, r.output
    done = len(list((tmp_path / "cache").rglob("*.json")))
    assert 0 < done < 6
    r = run("fetch", "okx", "--symbol", "BTC-USDT-SWAP", "--start", "2026-03-01", "--end",
            "2026-03-03", "--out", tmp_path, "--base-url", exchange.url, "--interval", "5m",
            "--rate", "0", "--data", "klines,oi", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["present"] == done and s["fetched"] == 6 - done
    r = run("fetch", "okx", "--symbol", "BTC-USDT-SWAP", "--start", "2026-03-01", "--end",
            "2026-03-03", "--out", tmp_path, "--base-url", exchange.url, "--interval", "5m",
            "--rate", "0", "--data", "klines,oi")
    assert r.exit_code == 0, r.output
    assert "0 day part(s) fetched, 6 already complete" in r.output and "0 request(s)" in r.output
    assert "series    " in r.output and "note      no liquidation" not in r.output


@pytest.mark.parametrize("venue,symbol", [("bybit", "BTCUSDT"), ("okx", "BTC-USDT-SWAP")])
def test_ingest_merge_reads_the_cache(exchange, tmp_path, venue, symbol):
    s = fetch_venue(venue, symbol, start="2026-03-01", end="2026-03-02", out=tmp_path,
                    interval="5m", base_url=exchange.url, rate=0, now_ms=NOW,
                    datasets=["klines", "mark", "oi"])
    c = tmp_path / "cache" / venue / symbol
    out = tmp_path / "merged.parquet"
    r = run("ingest", "merge", f"{venue}-klines={c / 'klines' / '5m'}",
            f"{venue}-mark-klines={c / 'mark' / '5m'}", f"{venue}-oi={c / 'oi' / '5m'}",
            "--step", "5m", "--symbol", symbol, "--out", out)  # OKX OI rows name no instId
    assert r.exit_code == 0, r.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(s["series"]))
    r = run("ingest", f"{venue}-klines", c / "klines" / "5m", "--symbol",
            "ETHUSDT" if venue == "bybit" else "ETH-USDT-SWAP", "--out", tmp_path / "x.parquet")
    assert r.exit_code == 2 and "not --symbol" in r.output
