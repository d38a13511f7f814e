"""History fetchers for Bybit and OKX (REST), written straight into the normalized series.

``liqgpu fetch bybit|okx`` pages through the venues' public market-data endpoints day by day
(UTC), keeps each complete day of each dataset in a resumable cache, and then writes one
normalized series file (what ``liqgpu ingest merge`` writes and ``liqgpu estimate`` reads) and,
where the venue publishes them, a normalized liquidation-events file.

What each venue publishes (public v5 APIs, no key):

====================  ====================================  =======================================
dataset               Bybit                                 OKX
====================  ====================================  =======================================
klines                ``GET /v5/market/kline`` (limit       ``GET /api/v5/market/history-candles``
                      1000, newest first, ``start/end``)    (limit 100, newest first, ``after`` =
                                                            older than; 20 requests / 2 s)
mark-price klines     ``GET /v5/market/mark-price-kline``   ``GET /api/v5/market/history-mark-
                      (limit 1000)                          price-candles`` (limit 100; 10 / 2 s)
open interest         ``GET /v5/market/open-interest``      ``GET /api/v5/rubik/stat/contracts/
                      (``intervalTime`` 5min..1d, limit     open-interest-history`` (period 5m..;
                      200, ``nextPageCursor``; base units   limit 100; the latest 1,440 entries
                      linear, USD contracts inverse)        only, i.e. 5 days at 5m, 60 days at
                                                            1H; rows ``[ts, oi, oiCcy, oiUsd]``;
                                                            10 requests / 2 s per instrument)
liquidations          none over REST: only the websocket    ``GET /api/v5/public/liquidation-
                      ``liquidation``/``allLiquidation``    orders`` (``instType``, ``uly``,
                      streams (record them and use          ``state=filled``; recent orders only,
                      ``liqgpu ingest bybit-liquidations``) the last days; older days come back
                                                            empty)
====================  ====================================  =======================================

Bybit's documented IP limit is 600 requests per 5 s; the defaults here stay far below both
venues' limits (``--rate``). Neither venue publishes checksums for REST responses; each cached
day file carries the SHA-256 of its payload, verified when a rerun reuses it.

Why plain REST and not an exchange library such as ccxt: one small client
(:mod:`liqgpu.io.rest`) gives every request a timeout and the whole run one deadline, a rate
limit, retries with backoff and a size cap, and it points at a test server on 127.0.0.1 with a
``--base-url``. An exchange library would not spare the raw endpoints either: ccxt lists OKX's
per-instrument ``open-interest-history`` among its implicit raw methods
(``public_get_rubik_stat_contracts_open_interest_history``), and one project reports that its
unified ``fetchOpenInterestHistory`` reads the coarser ``open-interest-volume`` statistics
instead (not checked here); Bybit has no liquidation history to fetch at all.

Conversions reuse the ingest readers: OI through :func:`liqgpu.io.bybit.read_open_interest` /
:func:`liqgpu.io.okx.read_open_interest` (an OI snapshot at T belongs to the bar closing at T;
OKX linear OI in base units from ``oiCcy``, inverse in contracts of ``ctVal`` USD), OKX
liquidations through :func:`liqgpu.io.okx.read_liquidations`, and the parts are joined by
:func:`liqgpu.io.align.merge`. Kline volumes: Bybit linear ``volume`` is base and ``turnover``
quote; Bybit inverse ``volume`` counts 1-USD contracts and ``turnover`` is base; OKX ``volCcy``
is base and ``volCcyQuote`` quote (inverse: contracts x ctVal USD). OKX bars still open
(``confirm`` = 0) are left out.

Cache layout: ``OUT/cache/{venue}/{SYMBOL}/{dataset}/{interval}/{YYYY-MM-DD}.json``, each file the
venue's own response shape for that day (rows ascending) plus a ``liqgpu`` header (day, rows,
pages, complete, sha256); files are written to a temporary name and renamed. A day that has not
ended yet is stored as incomplete and fetched again by the next run; complete days are skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from ..errors import InputError
from .rest import Retryable, RestClient

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: Kline intervals accepted (all venues): name -> seconds.
INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14400}
BYBIT_KLINE = {"1m": "1", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "4h": "240"}
BYBIT_OI = {"5m": "5min", "15m": "15min", "30m": "30min", "1h": "1h", "4h": "4h"}
OKX_BAR = {"1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1H", "4h": "4H"}
OKX_OI = {"5m": "5m", "15m": "15m", "30m": "30m", "1h": "1H", "4h": "4H"}

BYBIT_SYMBOL = re.compile(r"^[A-Z0-9]{2,12}(USDT|USDC|USD|PERP)(-?[0-9]{2}[A-Z]{3}[0-9]{2}|[A-Z][0-9]{2})?$")
OKX_INST = re.compile(r"^[A-Z0-9]{1,12}-(USDT|USDC|USD)-(SWAP|[0-9]{6})$")
DATASETS = {"bybit": ("klines", "mark", "oi"), "okx": ("klines", "mark", "oi", "liquidations")}
DEFAULTS = {"bybit": {"base_url": "https://api.bybit.com", "rate": 10.0},
            "okx": {"base_url": "https://www.okx.com", "rate": 4.0}}
MAX_PAGES = 2000  # per day and dataset: a guard against a server that never ends a listing
MAX_DAYS = 3660


# -- options -------------------------------------------------------------------------------------
def check_symbol(venue: str, symbol) -> str:
    """The symbol upper-cased, or an InputError: it goes into URLs and paths only after this."""
    s = str(symbol or "").strip().upper()
    pat = BYBIT_SYMBOL if venue == "bybit" else OKX_INST
    if not pat.match(s):
        eg = "BTCUSDT, BTCUSD, BTCUSDH25" if venue == "bybit" else "BTC-USDT-SWAP, BTC-USD-SWAP"
        name = "a Bybit" if venue == "bybit" else "an OKX"
        raise InputError(f"--symbol: {str(symbol)[:40]!r} is not {name} symbol (like {eg})")
    return s


def check_interval(interval) -> str:
    s = str(interval or "").strip()
    if s not in INTERVALS:
        raise InputError(f"--interval: {s[:20]!r} is not one of {', '.join(INTERVALS)}")
    return s


def oi_interval(interval: str) -> str:
    """The OI period fetched with ``interval`` klines: the same, at least 5m (the finest)."""
    return "5m" if INTERVALS[interval] < 300 else interval


def _day(text, option: str) -> date:
    try:
        return datetime.strptime(str(text).strip(), "%Y-%m-%d").date()
    except ValueError:
        raise InputError(f"{option}: {str(text)[:30]!r} is not a date YYYY-MM-DD") from None


def days_of(start, end) -> list[date]:
    d0, d1 = _day(start, "--start"), _day(end, "--end")
    if d1 < d0:
        raise InputError(f"--end {end} is before --start {start}")
    n = (d1 - d0).days + 1
    if n > MAX_DAYS:
        raise InputError(f"--start/--end: {n} days; at most {MAX_DAYS} per run")
    return [d0 + timedelta(days=i) for i in range(n)]


def day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)


# -- venue error codes ---------------------------------------------------------------------------
def _bybit_classify(url, doc):
    if not isinstance(doc, dict) or "retCode" not in doc:
        raise Retryable("not a Bybit v5 response (no retCode)")
    code = doc.get("retCode")
    if code in (0, "0"):
        res = doc.get("result")
        if not isinstance(res, dict) or not isinstance(res.get("list"), list):
            raise InputError(f"{url}: Bybit response without result.list")
        return res
    msg = str(doc.get("retMsg", ""))[:200]
    if str(code) in ("10006", "10016", "10018") or "too many" in msg.lower():
        raise Retryable(f"Bybit retCode {code} ({msg})")
    raise InputError(f"{url}: Bybit retCode {code}: {msg}")


def _okx_classify(url, doc):
    if not isinstance(doc, dict) or "code" not in doc:
        raise Retryable("not an OKX v5 response (no code)")
    code = str(doc.get("code"))
    if code == "0":
        data = doc.get("data")
        if not isinstance(data, list):
            raise InputError(f"{url}: OKX response without a data list")
        return data
    msg = str(doc.get("msg", ""))[:200]
    if code in ("50011", "50061", "50001", "50004", "50013", "50026"):
        raise Retryable(f"OKX code {code} ({msg})")
    raise InputError(f"{url}: OKX code {code}: {msg}")


# -- paging --------------------------------------------------------------------------------------
def _ts(row, what: str, url: str) -> int:
    try:
        v = row[0] if isinstance(row, list) else row["timestamp"] if "timestamp" in row else row["ts"]
        return int(v)
    except (KeyError, IndexError, TypeError, ValueError):
        raise InputError(f"{url}: a {what} row without a millisecond time: {str(row)[:80]}") from None


def _walk_back(fetch, t0: int, t1: int, what: str, *, ts_of=None, lo_open=False, hi_closed=False,
               first: int | None = None):
    """Page newest-first listings back in time until the window is covered.

    ``fetch(cursor)`` returns ``(rows, url)`` for rows older than ``cursor`` (ms, exclusive).
    Rows kept: t0 <= ts < t1 (``lo_open``: t0 < ts; ``hi_closed``: ts <= t1). Returns the kept
    rows ascending (one per time) and the number of pages. Paging stops at an empty page or at
    a row at or before ``first`` (the earliest time the window can hold; default ``t0``).
    """
    first = t0 if first is None else first
    ts_of = ts_of or (lambda r, url: _ts(r, what, url))
    keep: dict[int, object] = {}
    cursor = t1 + 1 if hi_closed else t1
    pages = 0
    while True:
        rows, url = fetch(cursor)
        pages += 1
        if not rows:
            break
        times = [ts_of(r, url) for r in rows]
        for t, r in zip(times, rows):
            if (t > t0 if lo_open else t >= t0) and (t <= t1 if hi_closed else t < t1):
                keep.setdefault(t, r)
        oldest = min(times)
        if oldest <= first:
            break
        if oldest >= cursor:
            raise InputError(f"{url}: the {what} listing does not move back in time (oldest "
                             f"{oldest} >= cursor {cursor}); refusing to loop")
        cursor = oldest
        if pages >= MAX_PAGES:
            raise InputError(f"{url}: over {MAX_PAGES} pages for one day of {what}")
    return [keep[t] for t in sorted(keep)], pages


@dataclass
class Job:
    """One venue, symbol and options; ``fetch_day(dataset, t0, t1)`` returns
    ``(native document, rows, pages)``."""

    venue: str
    symbol: str
    interval: str
    client: RestClient
    category: str = "linear"
    contract_value: float | None = None

    def folder_interval(self, dataset: str) -> str:
        if dataset == "oi":
            return oi_interval(self.interval)
        return "events" if dataset == "liquidations" else self.interval

    # Bybit ------------------------------------------------------------------------------------
    def _bybit_klines(self, path, t0, t1):
        base = {"category": self.category, "symbol": self.symbol,
                "interval": BYBIT_KLINE[self.interval], "limit": 1000}

        def fetch(cursor):
            p = dict(base, start=t0, end=cursor - 1)
            return self.client.get(path, p)["list"], self.client.url(path, p)

        rows, pages = _walk_back(fetch, t0, t1, "kline")
        return {"retCode": 0, "retMsg": "OK",
                "result": {"category": self.category, "symbol": self.symbol, "list": rows}}, \
            len(rows), pages

    def _bybit_oi(self, t0, t1):
        path = "/v5/market/open-interest"
        p = {"category": self.category, "symbol": self.symbol,
             "intervalTime": BYBIT_OI[oi_interval(self.interval)],
             "startTime": t0 + 1, "endTime": t1, "limit": 200}
        keep, pages, seen = {}, 0, set()
        while True:
            url = self.client.url(path, p)
            res = self.client.get(path, p)
            pages += 1
            for r in res["list"]:
                if not isinstance(r, dict):
                    raise InputError(f"{url}: an open-interest row is not an object")
                t = _ts(r, "open-interest", url)
                if t0 < t <= t1:
                    keep.setdefault(t, r)
            cur = res.get("nextPageCursor") or ""
            if not res["list"] or not cur:
                break
            if cur in seen or pages >= MAX_PAGES:
                raise InputError(f"{url}: nextPageCursor {cur[:30]!r} repeats; refusing to loop")
            seen.add(cur)
            p = dict(p, cursor=cur)
        rows = [keep[t] for t in sorted(keep)]
        return {"retCode": 0, "retMsg": "OK",
                "result": {"category": self.category, "symbol": self.symbol, "list": rows}}, \
            len(rows), pages

    # OKX --------------------------------------------------------------------------------------
    def _okx_candles(self, path, t0, t1):
        base = {"instId": self.symbol, "bar": OKX_BAR[self.interval], "limit": 100}

        def fetch(cursor):
            p = dict(base, after=cursor, before=t0 - 1)
            return self.client.get(path, p), self.client.url(path, p)

        rows, pages = _walk_back(fetch, t0, t1, "candle")
        return {"code": "0", "msg": "", "data": rows}, len(rows), pages

    def _okx_oi(self, t0, t1):
        path = "/api/v5/rubik/stat/contracts/open-interest-history"
        base = {"instId": self.symbol, "period": OKX_OI[oi_interval(self.interval)], "limit": 100}

        def fetch(cursor):
            p = dict(base, begin=t0, end=cursor)
            return self.client.get(path, p), self.client.url(path, p)

        rows, pages = _walk_back(fetch, t0, t1, "open-interest", lo_open=True, hi_closed=True,
                                 first=t0 + INTERVALS[oi_interval(self.interval)] * 1000)
        return {"code": "0", "msg": "", "data": rows}, len(rows), pages

    def _okx_liquidations(self, t0, t1):
        path = "/api/v5/public/liquidation-orders"
        parts = self.symbol.split("-")
        base = {"instType": "SWAP" if parts[2] == "SWAP" else "FUTURES",
                "uly": f"{parts[0]}-{parts[1]}", "state": "filled", "limit": 100}

        def ts_of(d, url):
            try:
                return int(d["ts"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{url}: a liquidation detail without ts: {str(d)[:80]}") from None

        def fetch(cursor):
            p = dict(base, after=cursor, before=t0 - 1)
            url = self.client.url(path, p)
            details = []
            for item in self.client.get(path, p):
                if not isinstance(item, dict) or not isinstance(item.get("details"), list):
                    raise InputError(f"{url}: a data item without details; not an OKX "
                                     "liquidation-orders response")
                inst = item.get("instId")
                details.extend(dict(d, instId=d.get("instId", inst)) for d in item["details"]
                               if isinstance(d, dict))
            return details, url

        # several orders can share a millisecond: keep them all, page on the oldest time
        keep: list = []
        seen: set = set()
        cursor, pages = t1, 0
        while True:
            rows, url = fetch(cursor)
            pages += 1
            if not rows:
                break
            times = [ts_of(d, url) for d in rows]
            for t, d in zip(times, rows):
                key = json.dumps(d, sort_keys=True)
                if t0 <= t < t1 and key not in seen:
                    seen.add(key)
                    keep.append(d)
            oldest = min(times)
            if oldest <= t0:
                break
            if oldest >= cursor or pages >= MAX_PAGES:
                raise InputError(f"{url}: the liquidation listing does not move back in time; "
                                 "refusing to loop")
            cursor = oldest
        keep.sort(key=lambda d: int(d["ts"]))
        data = [{"instId": self.symbol, "details": keep}] if keep else []
        return {"code": "0", "msg": "", "data": data}, len(keep), pages

    def fetch_day(self, dataset: str, t0: int, t1: int):
        if self.venue == "bybit":
            if dataset == "klines":
                return self._bybit_klines("/v5/market/kline", t0, t1)
            if dataset == "mark":
                return self._bybit_klines("/v5/market/mark-price-kline", t0, t1)
            if dataset == "oi":
                return self._bybit_oi(t0, t1)
        else:
            if dataset == "klines":
                return self._okx_candles("/api/v5/market/history-candles", t0, t1)
            if dataset == "mark":
                return self._okx_candles("/api/v5/market/history-mark-price-candles", t0, t1)
            if dataset == "oi":
                return self._okx_oi(t0, t1)
            if dataset == "liquidations":
                return self._okx_liquidations(t0, t1)
        raise InputError(f"--data: {dataset!r} is not published by {self.venue}")


# -- cache ---------------------------------------------------------------------------------------
def _digest(doc) -> str:
    payload = {k: v for k, v in doc.items() if k != "liqgpu"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def read_day(path: Path) -> dict | None:
    """The cached day at ``path`` if it is complete and its checksum matches, else None."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    head = doc.get("liqgpu") if isinstance(doc, dict) else None
    if not isinstance(head, dict) or not head.get("complete"):
        return None
    if head.get("sha256") != _digest(doc):
        log.warning("%s: checksum mismatch; fetching the day again", path)
        return None
    return doc


def write_day(path: Path, doc: dict, head: dict) -> None:
    doc = dict(doc, liqgpu=dict(head, sha256=_digest(doc)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# -- conversion ----------------------------------------------------------------------------------
def _num(rows, i, url):
    try:
        return np.array([float(r[i]) for r in rows], dtype=np.float64)
    except (IndexError, TypeError, ValueError):
        raise InputError(f"{url}: a kline row with a missing or non-numeric field {i}") from None


def _rows_of(venue: str, doc, source: str) -> list:
    try:
        rows = doc["result"]["list"] if venue == "bybit" else doc["data"]
    except (KeyError, TypeError):
        rows = None
    if not isinstance(rows, list):
        what = "result.list" if venue == "bybit" else "data list"
        raise InputError(f"{source}: no {what}; not a {venue} kline response")
    return rows


def kline_part(venue: str, docs, *, symbol: str, interval: str | None, kind: str,
               contract_size: float, mark: bool):
    """Kline (or mark-price kline) responses ``[(source, doc)]`` or cached day files -> a series
    part (time = bar open), or None when they hold no rows."""
    from .tables import series_table

    pieces, dropped = [], 0
    for item in docs:
        src, doc = (str(item), json.loads(Path(item).read_text())) \
            if isinstance(item, (str, Path)) else item
        rows = _rows_of(venue, doc, src)
        if venue == "okx":
            confirm = 5 if mark else 8
            n0 = len(rows)
            rows = [r for r in rows if not isinstance(r, list) or len(r) <= confirm
                    or str(r[confirm]) != "0"]
            dropped += n0 - len(rows)
        if not rows:
            continue
        if not all(isinstance(r, list) for r in rows):
            raise InputError(f"{src}: a kline row is not a list")
        ns = np.array([_ts(r, "kline", src) for r in rows], dtype=np.int64) * 1_000_000
        o, h, lo, c = (_num(rows, i, src) for i in (1, 2, 3, 4))
        if mark:
            cols = {"mark_high": h, "mark_low": lo}
        elif venue == "bybit":
            vol, turnover = _num(rows, 5, src), _num(rows, 6, src)
            base, quote = (turnover, vol * contract_size) if kind == "inverse" else (vol, turnover)
            cols = {"open": o, "high": h, "low": lo, "close": c, "volume": base,
                    "quote_volume": quote}
        else:
            contracts, base = _num(rows, 5, src), _num(rows, 6, src)
            quote = contracts * contract_size if kind == "inverse" else _num(rows, 7, src)
            cols = {"open": o, "high": h, "low": lo, "close": c, "volume": base,
                    "quote_volume": quote}
        pieces.append((src, ns, cols, 0, len(rows)))
    if not pieces:
        return None
    notes = ["time = bar open (UTC)"]
    if not mark:
        notes.append("volume: base units; quote_volume: quote" +
                     (" (inverse: contracts x contract value)" if kind == "inverse" else ""))
    t = series_table(pieces, exchange=venue, symbol=symbol, kind=kind,
                     contract_size=contract_size, notes=notes,
                     step_ns=INTERVALS[interval] * 10**9 if interval else None)
    if dropped:
        t.dropped["bars still open (confirm=0)"] = dropped
    return t


def _read_klines(venue: str, inputs, *, symbol=None, contract_value=None, mark=False):
    """Kline JSON responses of ``venue`` (as fetched, or the ``fetch`` cache) -> a series part."""
    from . import bybit as bybit_mod
    from . import okx as okx_mod
    from .archive import expand_inputs, read_members
    from .tables import looks_like_json, read_json_records

    docs, syms, steps = [], set(), set()
    for p in expand_inputs(inputs):
        for source, data in read_members(p):
            if not looks_like_json(data):
                raise InputError(f"{source}: not JSON; expected {venue} kline responses")
            for rec in read_json_records(data, source):
                if not isinstance(rec, dict):
                    raise InputError(f"{source}: a record is not a JSON object")
                head = rec.get("liqgpu") if isinstance(rec.get("liqgpu"), dict) else {}
                sym = head.get("symbol") or (rec.get("result") or {}).get("symbol") \
                    if venue == "bybit" else head.get("symbol")
                if sym:
                    syms.add(str(sym).upper())
                if head.get("interval") in INTERVALS:
                    steps.add(head["interval"])
                docs.append((source, rec))
    if symbol:
        sym = check_symbol(venue, symbol)
        other = syms - {sym}
        if other:
            raise InputError(f"{docs[0][0]}: holds {', '.join(sorted(other))}, not --symbol {sym}")
    elif len(syms) == 1:
        sym = check_symbol(venue, syms.pop())
    else:
        raise InputError(f"{inputs[0]}: " + ("several symbols (" + ", ".join(sorted(syms)) + ")"
                                             if syms else "no symbol in the files") +
                         "; pass --symbol")
    if venue == "bybit":
        kind, cs = ("inverse" if bybit_mod.is_inverse(sym) else "linear"), 1.0
    else:
        kind = "inverse" if okx_mod.is_inverse(sym) else "linear"
        cs = okx_mod.contract_value(sym, contract_value) if kind == "inverse" else 1.0
    t = kline_part(venue, docs, symbol=sym, interval=steps.pop() if len(steps) == 1 else None,
                   kind=kind, contract_size=cs, mark=mark)
    if t is None:
        raise InputError(f"{inputs[0]}: no kline rows")
    return t


def read_bybit_klines(inputs, *, symbol=None, contract_value=None, **_):
    """Bybit ``/v5/market/kline`` JSON responses -> a price part (``liqgpu ingest bybit-klines``)."""
    return _read_klines("bybit", inputs, symbol=symbol)


def read_bybit_mark_klines(inputs, *, symbol=None, contract_value=None, **_):
    """Bybit ``/v5/market/mark-price-kline`` JSON responses -> a mark_high/mark_low part."""
    return _read_klines("bybit", inputs, symbol=symbol, mark=True)


def read_okx_klines(inputs, *, symbol=None, contract_value=None, **_):
    """OKX ``history-candles`` JSON responses -> a price part (``liqgpu ingest okx-klines``)."""
    return _read_klines("okx", inputs, symbol=symbol, contract_value=contract_value)


def read_okx_mark_klines(inputs, *, symbol=None, contract_value=None, **_):
    """OKX ``history-mark-price-candles`` JSON responses -> a mark_high/mark_low part."""
    return _read_klines("okx", inputs, symbol=symbol, contract_value=contract_value, mark=True)


def _nonempty(files: list[Path], venue: str) -> list[Path]:
    out = []
    for f in files:
        doc = json.loads(f.read_text())
        rows = doc.get("result", {}).get("list") if venue == "bybit" else doc.get("data")
        if rows:
            out.append(f)
    return out


# -- the run -------------------------------------------------------------------------------------
def fetch_venue(venue: str, symbol: str, *, start, end, out, interval: str = "1m",
                category: str | None = None, contract_value: float | None = None,
                datasets=None, base_url: str | None = None, timeout: float = 30.0,
                deadline: float | None = 3600.0, rate: float | None = None, retries: int = 5,
                backoff: float = 0.5, progress: bool = False, now_ms: int | None = None,
                step: str | None = None) -> dict:
    """Fetch ``venue`` history of ``symbol`` for days ``start..end`` (UTC, inclusive) into ``out``.

    Parameters
    ----------
    venue : {'bybit', 'okx'}
    symbol : str
        Bybit ``BTCUSDT`` / ``BTCUSD``; OKX ``BTC-USDT-SWAP`` / ``BTC-USD-SWAP``.
    start, end : str
        ``YYYY-MM-DD``.
    out : str or Path
        Folder: ``cache/`` plus ``{venue}-{SYMBOL}-{interval}.parquet`` (series) and
        ``{venue}-{SYMBOL}-liquidations.parquet`` (OKX events).
    interval : str
        Kline interval (``1m``, ``5m``, ``15m``, ``30m``, ``1h``, ``4h``); the series step unless
        ``step`` is given.
    category : {'linear', 'inverse'}, optional
        Bybit category [default: from the symbol].
    contract_value : float, optional
        OKX ctVal when not in the built-in table.
    datasets : sequence of str, optional
        Subset of ``klines, mark, oi`` (+ ``liquidations`` on OKX) [default: all].
    timeout, deadline : float
        Seconds per request, and for the whole run (None: no deadline).
    rate : float, optional
        Requests per second [default: Bybit 10, OKX 4].

    Returns
    -------
    dict
        Counts (days fetched / already complete / incomplete), requests, retries, the files
        written and the merge coverage.

    Examples
    --------
    >>> fetch_venue("okx", "BTC-USDT-SWAP", start="2026-03-01", end="2026-03-07",
    ...             out="raw/okx")  # doctest: +SKIP
    """
    from . import bybit as bybit_mod
    from . import okx as okx_mod

    if venue not in DATASETS:
        raise InputError(f"venue {venue!r} is not bybit or okx")
    sym = check_symbol(venue, symbol)
    interval = check_interval(interval)
    days = days_of(start, end)
    wanted = list(datasets) if datasets else list(DATASETS[venue])
    for d in wanted:
        if d not in DATASETS[venue]:
            extra = " (Bybit publishes no liquidation history over REST)" \
                if venue == "bybit" and d == "liquidations" else ""
            raise InputError(f"--data: {d!r} is not one of {', '.join(DATASETS[venue])}{extra}")
    if venue == "bybit":
        kind = "inverse" if bybit_mod.is_inverse(sym) else "linear"
        if category and category != kind:
            raise InputError(f"--category {category}: {sym} is a {kind} contract")
        category = kind
        cs = 1.0
        cv = None
    else:
        kind = "inverse" if okx_mod.is_inverse(sym) else "linear"
        cv = okx_mod.contract_value(sym, contract_value)
        cs = cv if kind == "inverse" else 1.0
    if step is not None:
        from .._time import parse_duration

        parse_duration(step, option="--step")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    d = DEFAULTS[venue]
    client = RestClient(base_url or d["base_url"], venue=venue,
                        rate=d["rate"] if rate is None else rate, timeout=timeout,
                        deadline=deadline, retries=retries, backoff=backoff,
                        classify=_bybit_classify if venue == "bybit" else _okx_classify)
    job = Job(venue, sym, interval, client, category or "linear", cv)
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    if day_ms(days[-1]) > now_ms:
        raise InputError(f"--end {end}: {days[-1]} has not started yet (UTC)")
    root = out / "cache" / venue / sym
    counts = {"fetched": 0, "present": 0, "incomplete": 0}
    files: dict[str, list[Path]] = {ds: [] for ds in wanted}
    bar = _progress(len(days) * len(wanted)) if progress else None
    try:
        for day in days:
            t0 = day_ms(day)
            t1 = t0 + DAY_MS
            for ds in wanted:
                path = root / ds / job.folder_interval(ds) / f"{day.isoformat()}.json"
                if read_day(path) is not None:
                    counts["present"] += 1
                else:
                    complete = t1 + (INTERVALS[oi_interval(interval)] * 1000 if ds == "oi"
                                     else 0) <= now_ms
                    doc, n, pages = job.fetch_day(ds, t0, t1)
                    write_day(path, doc, {"venue": venue, "symbol": sym, "dataset": ds,
                                          "interval": job.folder_interval(ds),
                                          "day": day.isoformat(), "rows": n, "pages": pages,
                                          "complete": complete,
                                          "fetched_at": datetime.now(timezone.utc).isoformat()})
                    counts["fetched" if complete else "incomplete"] += 1
                    log.info("%s %s %s %s: %d rows in %d page(s)%s", venue, sym, ds, day, n,
                             pages, "" if complete else " (day not over: fetched again next run)")
                files[ds].append(path)
                if bar is not None:
                    bar[0].advance(bar[1])
    finally:
        if bar is not None:
            bar[0].stop()
    summary = dict(counts, venue=venue, symbol=sym, interval=interval, days=len(days),
                   requests=client.requests, retries=client.retried, cache=str(root),
                   series=None, events=None, notes=[])
    if venue == "bybit":
        summary["notes"].append("Bybit publishes no liquidation history over REST (websocket "
                                "only): record it and use liqgpu ingest bybit-liquidations")
    tables = []
    if "klines" in wanted:
        t = kline_part(venue, files["klines"], symbol=sym, interval=interval, kind=kind,
                       contract_size=cs, mark=False)
        if t is None:
            raise InputError(f"{venue} {sym}: no klines between {start} and {end}")
        tables.append(t)
    if "mark" in wanted:
        t = kline_part(venue, files["mark"], symbol=sym, interval=interval, kind=kind,
                       contract_size=cs, mark=True)
        if t is not None:
            tables.append(t)
        else:
            summary["notes"].append("no mark-price klines in the range")
    if "oi" in wanted:
        oi_files = _nonempty(files["oi"], venue)
        if oi_files:
            reader = bybit_mod.read_open_interest if venue == "bybit" else okx_mod.read_open_interest
            tables.append(reader([str(p) for p in oi_files], symbol=sym,
                                 contract_value=cv))
        else:
            summary["notes"].append("no open interest in the range (OKX keeps the latest 1,440 "
                                    "entries only)" if venue == "okx" else
                                    "no open interest in the range")
    if tables and any("oi" in t.frame.columns for t in tables):
        from .align import merge
        from .archive import write_parquet

        series, gaps = merge(tables, step=step or interval, exchange=venue, symbol=sym)
        path = out / f"{venue}-{sym}-{interval}.parquet"
        write_parquet(series.frame, path, overwrite=True)
        summary.update(series=str(path), rows=int(len(series.frame)), coverage=gaps)
    if "liquidations" in wanted:
        liq_files = _nonempty(files["liquidations"], venue)
        if liq_files:
            from .archive import write_parquet

            ev = okx_mod.read_liquidations([str(p) for p in liq_files], symbol=sym,
                                           contract_value=cv)
            path = out / f"{venue}-{sym}-liquidations.parquet"
            write_parquet(ev.frame, path, overwrite=True)
            summary.update(events=str(path), event_rows=int(len(ev.frame)))
        else:
            summary["notes"].append("no liquidation orders in the range (OKX publishes recent "
                                    "days only)")
    return summary


def _progress(total: int):
    from rich.console import Console
    from rich.progress import Progress

    p = Progress(console=Console(stderr=True), transient=True)
    p.start()
    return p, p.add_task("days", total=total)
