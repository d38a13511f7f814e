"""Download Binance Vision futures archives with checksums, retries and resume (stdlib only).

Layout of data.binance.vision (as published):
``{base}/data/futures/{um|cm}/{daily|monthly}/{datatype}/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{DATE}.zip``
for kline types and ``{base}/data/futures/{um|cm}/daily/{datatype}/{SYMBOL}/{SYMBOL}-{datatype}-{DATE}.zip``
for ``metrics`` and ``liquidationSnapshot``; each archive has a ``.CHECKSUM`` beside it holding
``sha256  filename``. Files land under ``OUT/{um|cm}/{daily|monthly}/...`` mirroring that layout.

An archive counts as complete only when its bytes match the published SHA-256 and it holds data:
it is downloaded to ``NAME.part``, verified, its checksum written beside it, then renamed. A run
after an interruption re-verifies complete archives locally and downloads only the rest.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

KLINE_TYPES = ("klines", "markPriceKlines", "indexPriceKlines", "premiumIndexKlines")
DAILY_ONLY = ("metrics", "liquidationSnapshot")
DATATYPES = KLINE_TYPES + DAILY_ONLY
CHUNK = 1 << 16
USER_AGENT = "liqgpu-fetch"
#: kline intervals that Binance publishes (an allow-list: they become folder names)
INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
             "3d", "1w", "1mo")
#: a symbol becomes a folder and a file name: letters, digits and '_' only
SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9_]{0,39}")
#: a whole archive (or checksum) download must end within this many per-read timeouts
DEADLINE_READS = 10


class _Missing(Exception):
    """The server has no such archive (404/403)."""


class _Retryable(Exception):
    """A failure worth another attempt (connection, truncated body, 5xx, checksum mismatch)."""


def _day(text: str, option: str) -> date:
    try:
        return datetime.strptime(str(text).strip(), "%Y-%m-%d").date()
    except ValueError:
        raise InputError(f"{option}: {text!r} is not a date YYYY-MM-DD") from None


def plan(symbol: str, *, start, end, market: str, datatype: str, interval: str = "1m",
         monthly: bool = True, today: date | None = None) -> list[tuple[str, list[str]]]:
    """Archives to fetch: ``[(relative path, [daily fallbacks])]``.

    Whole months inside [start, end] that ended before ``today`` use one monthly archive (kline
    types only), with that month's daily archives as the fallback when it is missing.

    Examples
    --------
    >>> plan("BTCUSDT", start="2024-01-30", end="2024-01-31", market="um",
    ...      datatype="metrics")[0][0]
    'data/futures/um/daily/metrics/BTCUSDT/BTCUSDT-metrics-2024-01-30.zip'
    """
    if datatype not in DATATYPES:
        raise InputError(f"--data: {datatype!r} is not one of {', '.join(DATATYPES)}")
    if market not in ("um", "cm"):
        raise InputError(f"--market: {market!r} is not um or cm")
    d0, d1 = _day(start, "--start"), _day(end, "--end")
    if d1 < d0:
        raise InputError(f"--end {end} is before --start {start}")
    today = today or datetime.now(timezone.utc).date()
    sym = check_symbol(symbol)
    if datatype in KLINE_TYPES and interval not in INTERVALS:
        raise InputError(f"--interval: {interval!r} is not one of {', '.join(INTERVALS)}")

    def rel(period: str, stamp: str) -> str:
        if datatype in KLINE_TYPES:
            return f"data/futures/{market}/{period}/{datatype}/{sym}/{interval}/{sym}-{interval}-{stamp}.zip"
        return f"data/futures/{market}/{period}/{datatype}/{sym}/{sym}-{datatype}-{stamp}.zip"

    out, d = [], d0
    while d <= d1:
        first = d.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        last = nxt - timedelta(days=1)
        if (monthly and datatype in KLINE_TYPES and d == first and last <= d1 and nxt <= today):
            days = [rel("daily", (first + timedelta(days=i)).isoformat())
                    for i in range((last - first).days + 1)]
            out.append((rel("monthly", first.strftime("%Y-%m")), days))
            d = nxt
        else:
            out.append((rel("daily", d.isoformat()), []))
            d += timedelta(days=1)
    return out


def check_symbol(symbol) -> str:
    """The upper-cased symbol, checked against an allow-list before it names any file."""
    sym = str(symbol).strip().upper()
    if not SYMBOL_RE.fullmatch(sym):
        raise InputError(f"symbol {str(symbol)[:60]!r}: must be letters, digits and '_' only "
                         f"(like BTCUSDT or BTCUSD_PERP)")
    return sym


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _read_until(resp, deadline: float, what: str, sink, limit: int | None = None) -> int:
    """Read ``resp`` into ``sink`` in pieces as they arrive, all of it before ``deadline``
    (a server trickling bytes cannot keep a download going for ever)."""
    n = 0
    while True:
        if time.monotonic() > deadline:
            raise _Retryable(f"{what} took too long (still unfinished after {n} bytes)")
        chunk = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
        if not chunk:
            return n
        sink(chunk)
        n += len(chunk)
        if limit is not None and n >= limit:
            return n


def _get(url: str, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https only)
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):
            raise _Missing(f"HTTP {exc.code}") from None
        if exc.code >= 500 or exc.code == 429:
            raise _Retryable(f"HTTP {exc.code}") from None
        if 300 <= exc.code < 400:
            raise InputError(f"{url}: the server redirects in a loop or too often "
                             f"(HTTP {exc.code})") from None
        raise InputError(f"{url}: HTTP {exc.code} {_one_line(exc.reason)}") from None
    except (urllib.error.URLError, ConnectionError, socket.timeout, http.client.HTTPException,
            OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Retryable(f"cannot connect ({_one_line(reason)})") from None


def _read_checksum(url: str, timeout: float) -> str:
    try:
        with _get(url + ".CHECKSUM", timeout) as resp:
            buf = bytearray()
            _read_until(resp, time.monotonic() + DEADLINE_READS * timeout, "the checksum download",
                        buf.extend, limit=4096)
            text = bytes(buf[:4096]).decode("ascii", "replace").strip()
    except (http.client.HTTPException, ConnectionError, socket.timeout, OSError) as exc:
        if isinstance(exc, (_Missing, _Retryable)):
            raise
        raise _Retryable(f"checksum download broke off ({type(exc).__name__})") from None
    parts = text.split()
    if not parts or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0].lower()):
        raise InputError(f"{url}.CHECKSUM: not a 'sha256  filename' line "
                         f"({_one_line(text[:60])!r})")
    return parts[0].lower()


def _download(url: str, part: Path, timeout: float, bar=None) -> str:
    """Stream ``url`` into ``part``; return its SHA-256. A short body is _Retryable."""
    h = hashlib.sha256()
    n = 0
    try:
        with _get(url, timeout) as resp, open(part, "wb") as fh:
            length = resp.headers.get("Content-Length")

            def sink(chunk):
                nonlocal n
                fh.write(chunk)
                h.update(chunk)
                n += len(chunk)
                if bar is not None:
                    bar(len(chunk))

            _read_until(resp, time.monotonic() + DEADLINE_READS * timeout, "the download", sink)
            if length is not None and n != int(length):
                raise _Retryable(f"connection dropped after {n} of {length} bytes")
    except (http.client.IncompleteRead, ConnectionError, socket.timeout) as exc:
        raise _Retryable(f"connection dropped after {n} bytes ({type(exc).__name__})") from None
    except OSError as exc:
        if isinstance(exc, (_Missing, _Retryable)):
            raise
        raise _Retryable(f"download broke off after {n} bytes ({exc})") from None
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def is_complete(dest: Path) -> bool:
    """True when ``dest`` and its ``.CHECKSUM`` exist and the bytes match (no network)."""
    ck = dest.with_name(dest.name + ".CHECKSUM")
    if not (dest.exists() and ck.exists()):
        return False
    want = ck.read_text().split()
    return bool(want) and want[0].lower() == _sha256(dest)


def fetch_one(url: str, dest: Path, *, retries: int = 3, backoff: float = 0.5,
              timeout: float = 60.0, bar=None) -> str:
    """Fetch one archive into ``dest`` (verified); returns ``'present'`` or ``'downloaded'``.

    Raises
    ------
    InputError
        The archive is missing (404), its checksum never matched, it stayed unreachable or broke
        off after ``retries`` attempts, or it holds no data. Nothing is left at ``dest``.
    """
    if is_complete(dest):
        return "present"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    ck = dest.with_name(dest.name + ".CHECKSUM")
    why = "failed"
    attempts = max(1, int(retries))
    try:
        for attempt in range(attempts):
            try:
                want = _read_checksum(url, timeout)
                got = _download(url, part, timeout, bar)
                if got != want:
                    raise _Retryable(f"checksum mismatch (sha256 {got[:12]}..., published "
                                     f"{want[:12]}...)")
                break
            except _Missing as exc:
                raise InputError(f"{url}: not found ({exc})") from None
            except _Retryable as exc:
                why = str(exc)
                log.warning("%s: %s (attempt %d of %d)", url, why, attempt + 1, attempts)
                if attempt + 1 < attempts and backoff:
                    time.sleep(backoff * 2 ** attempt)
        else:
            raise InputError(f"{url}: {why} after {attempts} attempt(s)")
        _check_archive(part, url)
        tmp = ck.with_name(ck.name + ".part")
        tmp.write_text(f"{want}  {dest.name}\n")
        os.replace(tmp, ck)
        os.replace(part, dest)
        return "downloaded"
    finally:
        for p in (part, ck.with_name(ck.name + ".part")):
            if p.exists():
                p.unlink()


def _check_archive(part: Path, url: str) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(part) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if not members or all(i.file_size == 0 for i in members):
                raise InputError(f"{url}: the archive is empty")
            bad = zf.testzip()
            if bad is not None:
                raise InputError(f"{url}: member {bad} is corrupt")
    except zipfile.BadZipFile:
        raise InputError(f"{url}: not a zip archive (truncated or corrupt)") from None


def fetch_binance(symbol: str, *, start, end, market: str = "um", datatypes=("klines",),
                  interval: str = "1m", out=".", base_url: str = "https://data.binance.vision",
                  monthly: bool = True, retries: int = 3, backoff: float = 0.5,
                  skip_missing: bool = False, progress: bool = False, timeout: float = 60.0,
                  today: date | None = None) -> dict:
    """Download Binance Vision archives of ``symbol`` for days ``start``..``end`` into ``out``.

    Parameters
    ----------
    symbol : str
        ``BTCUSDT`` (``um``) or ``BTCUSD_PERP`` (``cm``).
    start, end : str
        First and last day, ``YYYY-MM-DD`` (UTC), inclusive.
    market : {'um', 'cm'}
    datatypes : sequence of str
        ``klines``, ``markPriceKlines``, ``indexPriceKlines``, ``premiumIndexKlines``,
        ``metrics``, ``liquidationSnapshot``.
    interval : str
        Kline interval (``1m``, ``5m``, ...).
    out : str or Path
        Folder; archives go to ``out/{market}/{daily|monthly}/{datatype}/...``.
    base_url : str
        Root of the archive layout.
    monthly : bool
        Use monthly archives for whole past months (daily ones when a month is missing).
    retries : int
        Attempts per archive for connection errors, truncated bodies, 5xx and checksum
        mismatches.
    skip_missing : bool
        Log and skip archives that are not published (404) instead of failing.
    progress : bool
        Show a progress bar (rich).

    Returns
    -------
    dict
        Counts (``downloaded``, ``present``, ``missing``), ``bytes`` and the ``folders``
        written, ready for ``liqgpu ingest``.

    Examples
    --------
    >>> fetch_binance("BTCUSDT", start="2024-03-01", end="2024-03-03",
    ...               datatypes=["klines", "metrics"], out="raw")  # doctest: +SKIP
    """
    base = base_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise InputError(f"--base-url: {base_url!r} must start with http:// or https://")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    jobs = []
    for dt in datatypes:
        jobs.extend((dt, rel, days) for rel, days in plan(
            symbol, start=start, end=end, market=market, datatype=dt, interval=interval,
            monthly=monthly, today=today))
    counts = {"downloaded": 0, "present": 0, "missing": 0, "bytes": 0}
    folders: list[str] = []
    missing: list[str] = []
    bar_ctx = _progress(len(jobs)) if progress else None
    try:
        for dt, rel, days in jobs:
            todo = [(rel, days)]
            while todo:
                r, fallback = todo.pop(0)
                dest = out / r[len("data/futures/"):]
                if not _inside(dest, out):  # names are allow-listed; never write elsewhere
                    raise InputError(f"{r}: would be written outside --out {out}")
                try:
                    state = fetch_one(f"{base}/{r}", dest, retries=retries, backoff=backoff,
                                      timeout=timeout)
                except InputError as exc:
                    if "not found" in str(exc) and fallback:
                        log.info("%s: no monthly archive; using its daily archives", r)
                        todo = [(d, []) for d in fallback] + todo
                        continue
                    if "not found" in str(exc) and skip_missing:
                        log.warning("%s", exc)
                        counts["missing"] += 1
                        missing.append(f"{base}/{r}")
                        continue
                    raise
                counts[state] += 1
                if state == "downloaded":
                    counts["bytes"] += dest.stat().st_size
                folder = str(dest.parent)
                if folder not in folders:
                    folders.append(folder)
            if bar_ctx is not None:
                bar_ctx[0].advance(bar_ctx[1])
    finally:
        if bar_ctx is not None:
            bar_ctx[0].stop()
    return dict(counts, folders=folders, missing_urls=missing)


def _inside(path: Path, folder: Path) -> bool:
    a, b = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([a, b]) == b and ".." not in Path(path).parts


def _progress(total: int):
    from rich.console import Console
    from rich.progress import Progress

    p = Progress(console=Console(stderr=True), transient=True)
    p.start()
    return p, p.add_task("archives", total=total)
