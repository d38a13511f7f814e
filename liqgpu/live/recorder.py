"""``liqgpu record``: keep closed 1-minute bars and liquidation events of a venue in rotating
Parquet files (:mod:`liqgpu.live.files`).

Why ``websockets`` and not ccxt.pro: ccxt's ``watchOHLCV`` hands back ``[timestamp, open, high,
low, close, volume]`` candles (CCXT manual), without the venue's kline-closed flag (Binance
``k.x``, Bybit ``confirm``, OKX ``confirm``) and without the taker-buy and quote volumes that
``ingest`` keeps in a bar; a recorder that must write each bar once, when the venue closes it,
needs that flag. The venue streams are plain JSON over websockets, so each adapter
(:mod:`liqgpu.live.venues`) speaks them directly through the ``websockets`` library and the
REST endpoints through the standard library, every operation with a deadline.

Faults: reconnect with exponential backoff and jitter; protocol pings (and the venue's
application ping where it wants one); a connection silent for ``idle_timeout`` is dropped and
reopened; a closed bar after a missing minute triggers a REST backfill of the missing ones;
repeated or late bars and events are de-duplicated (by bar open time; by event time, side, price
and size); malformed messages are logged and skipped; bars are placed by the venue's own times,
never by the local clock (which only measures lag).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import random
import time
import urllib.parse
import urllib.request

from ..errors import InputError
from .files import RotatingWriter
from .venues import MINUTE_MS, Venue, decode

log = logging.getLogger(__name__)
NAN = float("nan")


class RestError(Exception):
    pass


def _http_get(url: str, params: dict, timeout: float):
    full = f"{url}?{urllib.parse.urlencode(params)}" if params else url
    req = urllib.request.Request(full, headers={"User-Agent": "liqgpu-record"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - URL checked by Venue
        return json.loads(r.read().decode("utf-8"))


class _SeriesState:
    def __init__(self, venue: Venue, symbol: str, out, rotate_ns: int):
        meta = venue.meta(symbol)
        self.symbol = symbol
        self.bars = RotatingWriter(out, "bars", venue.name, symbol, rotate_ns=rotate_ns, meta=meta)
        self.events = RotatingWriter(out, "events", venue.name, symbol, rotate_ns=rotate_ns)
        last = self.bars.last_time()
        self.last_ms = None if last is None else last // 1_000_000
        self.marks: dict[int, list] = {}
        self.oi: collections.deque = collections.deque(maxlen=256)  # (ts_ms, value)
        self.watermark = 0  # the venue's latest time on the mark / open-interest channels
        self.pending: list[dict] = []
        self.seen: dict[tuple, int] = {}
        self.bars_written = 0
        self.backfilled = 0
        self.duplicates = 0
        self.last_recv = None


class Recorder:
    """Record one venue's symbols into ``out``.

    Parameters
    ----------
    venue : Venue
        The adapter (symbols and endpoints).
    out : path
        Folder of the files.
    rotate_ns : int
        Length of a file's period (default 1 hour).
    on_bars : callable, optional
        ``on_bars(exchange, symbol, rows, t_recv)`` after closed bars are kept (``rows``: dicts
        with ``time`` in ns and the bar columns; ``t_recv``: ``time.monotonic()`` at arrival).
    on_events : callable, optional
        ``on_events(exchange, symbol, rows)`` for new (de-duplicated) liquidation events.
    sync_files : bool
        Write a closed bar's files before ``on_bars`` is called (else they follow within
        ``flush_every``).
    give_up : float, optional
        Seconds a stream may go without a connection before :meth:`run` raises an
        :class:`~liqgpu.errors.InputError` (None: retry until stopped).
    """

    def __init__(self, venue: Venue, out, *, rotate_ns: int = 3600 * 10**9, on_bars=None,
                 on_events=None, timeout: float = 10.0, idle_timeout: float = 60.0,
                 backoff: float = 0.5, max_backoff: float = 30.0, max_backfill: int = 7 * 1440,
                 status_every: float = 60.0, flush_every: float = 0.2, oi_wait: float = 2.0,
                 sync_files: bool = True, give_up: float | None = None):
        self.venue, self.out = venue, out
        self.on_bars, self.on_events = on_bars, on_events
        self.timeout, self.idle_timeout = float(timeout), float(idle_timeout)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.give_up = None if give_up is None else float(give_up)
        self.max_backfill = int(max_backfill)
        self.oi_wait = float(oi_wait)
        self.sync_files = bool(sync_files)
        self.status_every, self.flush_every = float(status_every), float(flush_every)
        self.state = {s: _SeriesState(venue, s, out, rotate_ns) for s in venue.symbols}
        self.reconnects = 0
        self.malformed = 0
        self.connected = 0
        self._ev_times: collections.deque = collections.deque(maxlen=100_000)
        self._dirty = asyncio.Event()

    # -- running ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Record until ``stop`` is set; then write everything complete and return."""
        tasks = [asyncio.create_task(self._connection(url, subs))
                 for url, subs in self.venue.connections()]
        tasks.append(asyncio.create_task(self._flusher()))
        if self.status_every > 0:
            tasks.append(asyncio.create_task(self._status_loop()))
        try:
            waiter = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(tasks + [waiter], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not waiter and t.exception():
                    log.error("%s: %s failed: %r", self.venue.name, t.get_coro().__qualname__,
                              t.exception())
                    raise t.exception()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.close()

    def close(self) -> None:
        """Write every pending event and the current files (the periods stay open for a restart)."""
        for st in self.state.values():
            if st.pending:
                st.events.add(st.pending)
                st.pending = []
            st.bars.flush()
            st.events.flush()
        log.info("%s: stopped; %s", self.venue.name, self.status_line())

    async def _connection(self, url: str, subs: list) -> None:
        from websockets.asyncio.client import connect

        failures = 0
        down_since = time.monotonic()  # since when the stream has delivered nothing
        while True:
            got = False
            try:
                async with connect(url, open_timeout=self.timeout, close_timeout=2,
                                   ping_interval=20, ping_timeout=20,
                                   max_size=2**22, max_queue=4096) as ws:
                    self.connected += 1
                    log.info("%s: connected to %s", self.venue.name, url.split("?")[0])
                    for m in subs:
                        await asyncio.wait_for(ws.send(json.dumps(m)), self.timeout)
                    pinger = asyncio.create_task(self._app_pings(ws))
                    try:
                        while True:
                            raw = await _recv(ws, self.idle_timeout)
                            got = True
                            failures = 0
                            await self.handle_raw(raw)
                    finally:
                        pinger.cancel()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, EOFError) as exc:
                why = _why(exc, url)
            except Exception as exc:  # noqa: BLE001 - websockets' ConnectionClosed and friends
                if isinstance(exc, (InputError,)):
                    raise
                why = f"{type(exc).__name__}: {exc}"
            self.reconnects += 1
            now = time.monotonic()
            if got:
                down_since = now
            if self.give_up is not None and now - down_since >= self.give_up:
                raise InputError(f"{self.venue.name}: nothing received from {url.split('?')[0]} "
                                 f"for {now - down_since:.0f}s ({why}); giving up "
                                 f"(--give-up-after)")
            failures = 0 if got else failures + 1
            delay = min(self.max_backoff, self.backoff * 2 ** min(failures, 16))
            delay *= random.uniform(0.5, 1.5)
            log.warning("%s: %s (%s); reconnecting in %.2fs", self.venue.name,
                        "connection lost" if got or self.connected else "cannot connect", why,
                        delay)
            await asyncio.sleep(delay)

    async def _app_pings(self, ws) -> None:
        msg = self.venue.app_ping()
        if msg is None:
            return
        text = msg if isinstance(msg, str) else json.dumps(msg)
        while True:
            await asyncio.sleep(self.venue.ping_every)
            await asyncio.wait_for(ws.send(text), self.timeout)

    async def _flusher(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await asyncio.to_thread(self._flush_all)
            await asyncio.sleep(self.flush_every)

    def _flush_all(self) -> None:
        for st in self.state.values():
            _flush(st)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.status_every)
            log.info("%s", self.status_line())

    # -- messages --------------------------------------------------------------------------------
    async def handle_raw(self, raw) -> None:
        t_recv = time.monotonic()
        try:
            items = self.venue.parse(decode(raw))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            self.malformed += 1
            text = raw if isinstance(raw, str) else repr(raw)
            log.warning("%s: malformed message skipped (%s: %s): %.120s", self.venue.name,
                        type(exc).__name__, exc, text)
            return
        for it in items:
            st = self.state.get(it[1])
            if st is None:
                continue  # another symbol (all-market streams)
            st.last_recv = t_recv
            kind = it[0]
            if kind == "kline":
                if it[4]:
                    await self._closed(st, it[2], it[3], t_recv)
            elif kind == "mark":
                st.watermark = max(st.watermark, it[2])
                m = it[2] - it[2] % MINUTE_MS
                hl = st.marks.get(m)
                if hl is None:
                    st.marks[m] = [it[3], it[3]]
                else:
                    hl[0], hl[1] = max(hl[0], it[3]), min(hl[1], it[3])
            elif kind == "oi":
                st.watermark = max(st.watermark, it[2])
                if not st.oi or it[2] > st.oi[-1][0]:
                    st.oi.append((it[2], it[3]))
            elif kind == "liq":
                self._event(st, it[2])

    def _event(self, st: _SeriesState, row: dict) -> None:
        key = (row["time"], row["side"], row["price"], row["qty"])
        if key in st.seen:
            st.duplicates += 1
            return
        st.seen[key] = row["time"]
        st.pending.append(row)
        if len(st.pending) > 50_000:  # no closed bar for long: keep the events anyway
            st.events.add(st.pending)
            st.pending = []
            self._dirty.set()
        self._ev_times.append(time.monotonic())
        if st.last_ms is not None and row["time"] < (st.last_ms + MINUTE_MS) * 1_000_000:
            st.events.add(st.pending)  # a late event of a closed minute: keep it now
            st.pending = []
            self._dirty.set()
        if self.on_events:
            self.on_events(self.venue.name, st.symbol, [row])

    async def _closed(self, st: _SeriesState, t: int, cols: dict, t_recv: float) -> None:
        if st.last_ms is not None and t <= st.last_ms:
            st.duplicates += 1
            log.debug("%s %s: bar %d again (late or repeated); kept the first", self.venue.name,
                      st.symbol, t)
            return
        rows = []
        if st.last_ms is not None and t > st.last_ms + MINUTE_MS:
            rows = await self._backfill(st, st.last_ms + MINUTE_MS, t - MINUTE_MS)
        oi = await self._oi_at_close(st, t)
        hl = st.marks.get(t)
        row = dict(cols, time=t * 1_000_000, oi=oi,
                   mark_high=hl[0] if hl else NAN, mark_low=hl[1] if hl else NAN)
        if not hl:
            got = await self._rest_klines(st.symbol, t, t, mark=True)
            if got:
                row.update(got[0][1])
        rows.append(row)
        st.bars.add(rows)
        st.last_ms = t
        st.bars_written += len(rows)
        end_ns = (t + MINUTE_MS) * 1_000_000
        done = [e for e in st.pending if e["time"] < end_ns]
        if done:
            st.events.add(done)
            st.pending = [e for e in st.pending if e["time"] >= end_ns]
        self._prune(st)
        self._dirty.set()
        if self.on_bars:
            if self.sync_files:  # the files first: a store never holds what they lack
                # on a thread: the other connections' messages go on meanwhile (this one's
                # wait, in order)
                await asyncio.to_thread(_flush, st)
            self.on_bars(self.venue.name, st.symbol, rows, t_recv)

    def _prune(self, st: _SeriesState) -> None:
        keep_ms = st.last_ms - 5 * MINUTE_MS
        for m in [m for m in st.marks if m < keep_ms]:
            del st.marks[m]
        while st.oi and st.oi[0][0] < keep_ms and len(st.oi) > 1:
            st.oi.popleft()
        keep_ns = (st.last_ms - 30 * MINUTE_MS) * 1_000_000
        if len(st.seen) > 64:
            st.seen = {k: v for k, v in st.seen.items() if v >= keep_ns}

    # -- REST ------------------------------------------------------------------------------------
    async def _get(self, url: str, params: dict, tries: int = 3):
        for i in range(tries):
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(_http_get, url, params, self.timeout), self.timeout + 1)
            except (OSError, ValueError, asyncio.TimeoutError) as exc:
                if i == tries - 1:
                    raise RestError(f"{url}: {type(exc).__name__}: {exc}") from None
                await asyncio.sleep(self.backoff * 2 ** i * random.uniform(0.5, 1.5))

    async def _rest_klines(self, symbol: str, start: int, end: int, mark: bool = False):
        out, t = [], start
        while t <= end:
            stop = min(end, t + (self.venue.kline_limit - 1) * MINUTE_MS)
            url, params = self.venue.klines_request(symbol, t, stop, mark=mark)
            try:
                doc = await self._get(url, params)
                got = [(k, c) for k, c in self.venue.parse_klines(doc, mark=mark)
                       if t <= k <= stop]
            except RestError as exc:
                log.error("%s %s: REST %s failed (%s)", self.venue.name, symbol,
                          "mark klines" if mark else "klines", exc)
                return out
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                log.error("%s %s: REST reply malformed (%s)", self.venue.name, symbol, exc)
                return out
            out += got
            t = stop + MINUTE_MS
        return out

    async def _backfill(self, st: _SeriesState, start: int, end: int) -> list[dict]:
        n = (end - start) // MINUTE_MS + 1
        if n > self.max_backfill:
            log.warning("%s %s: %d minutes missing; backfilling the last %d", self.venue.name,
                        st.symbol, n, self.max_backfill)
            start = end - (self.max_backfill - 1) * MINUTE_MS
        bars = dict(await self._rest_klines(st.symbol, start, end))
        marks = dict(await self._rest_klines(st.symbol, start, end, mark=True))
        rows = []
        for t in sorted(bars):
            hl = marks.get(t, {"mark_high": NAN, "mark_low": NAN})
            rows.append(dict(bars[t], **hl, time=t * 1_000_000, oi=NAN))
        st.backfilled += len(rows)
        log.info("%s %s: %d missing minute(s) from %s, %d backfilled over REST (OI left NaN)",
                 self.venue.name, st.symbol, n, _fmt_ms(start), len(rows))
        return rows

    async def _oi_at_close(self, st: _SeriesState, t: int) -> float:
        """The OI at the close of bar ``t``: the stream's latest value (Bybit, OKX) or a REST
        request now (Binance); NaN when no fresh value is at hand."""
        close = t + MINUTE_MS
        if self.venue.oi_stream:
            if self.venue.oi_other_socket:
                # the OI and mark socket (OKX public) may run behind the candles' (business):
                # wait a little for it to reach the close, by the venue's own times
                end = time.monotonic() + self.oi_wait
                while st.watermark < close - 1_000 and time.monotonic() < end:
                    await asyncio.sleep(0.002)
            best = NAN
            for ts, v in st.oi:  # the last sample at the close (the deque is in time order)
                if ts > close + 5_000:
                    break
                if ts >= close - 5 * MINUTE_MS:
                    best = v
            return best
        req = self.venue.oi_request(st.symbol)
        try:
            ts, v = self.venue.parse_oi(await self._get(*req, tries=2))
        except (RestError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s %s: open interest unavailable (%s)", self.venue.name, st.symbol, exc)
            return NAN
        if t <= ts <= close + MINUTE_MS // 2:
            return v
        log.warning("%s %s: open interest at %s is not at the close of bar %s; left NaN",
                    self.venue.name, st.symbol, _fmt_ms(ts), _fmt_ms(t))
        return NAN

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> dict:
        now = time.time() * 1000
        cut = time.monotonic() - 60
        per_min = sum(1 for x in self._ev_times if x >= cut)
        return {
            "exchange": self.venue.name,
            "series": {s: {"last_bar": _fmt_ms(st.last_ms) if st.last_ms else None,
                           "lag_s": None if st.last_ms is None else
                           round((now - st.last_ms - MINUTE_MS) / 1000, 1),
                           "bars": st.bars_written, "backfilled": st.backfilled,
                           "duplicates": st.duplicates}
                       for s, st in self.state.items()},
            "reconnects": self.reconnects, "malformed": self.malformed,
            "events_per_min": per_min,
        }

    def status_line(self) -> str:
        s = self.status()
        parts = [f"{k} last {v['last_bar']} lag {v['lag_s']}s" if v["last_bar"] is not None
                 else f"{k} no bar yet" for k, v in s["series"].items()]
        return (f"{s['exchange']}: " + "; ".join(parts) + f"; reconnects {s['reconnects']}, "
                f"malformed {s['malformed']}, events/min {s['events_per_min']}")


def _flush(st: _SeriesState) -> None:
    """Write a series' bars and events files (each writer holds its own lock meanwhile)."""
    st.bars.flush()
    st.events.flush()


async def _recv(ws, timeout: float):
    """The next frame, or TimeoutError after ``timeout`` seconds of silence (cancellable: the
    receive runs in the caller's task, not in a task of its own as under wait_for)."""
    if hasattr(asyncio, "timeout"):  # Python 3.11+
        async with asyncio.timeout(timeout):
            return await ws.recv()
    return await asyncio.wait_for(ws.recv(), timeout)


def _fmt_ms(ms) -> str:
    from datetime import datetime, timezone

    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _why(exc: BaseException, url: str) -> str:
    """A connection failure in words, naming the host where the error does not (a name that
    does not resolve is usually no network, or a mistyped --ws-url)."""
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or url
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: no network, or a wrong --ws-url?"
    if isinstance(exc, ConnectionRefusedError):
        return f"{host} refused the connection"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer from {host} in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} ({host})"

