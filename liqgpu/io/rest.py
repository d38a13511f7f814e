"""A small JSON-over-HTTPS client for exchange REST APIs (stdlib only).

One client per venue holds what every request needs:

- a **per-request timeout** and an **overall deadline** (a monotonic time after which no request
  starts and no wait is begun; the timeout of the last request is cut to what is left);
- a **rate limiter** (at most ``rate`` requests per second, spaced evenly);
- **retries** with exponential backoff and full jitter on HTTP 429 (``Retry-After`` honoured),
  5xx, connection errors, timeouts, truncated bodies and bodies that are not JSON, and on the
  venue's own "too many requests / busy" codes (the ``classify`` callback);
- a **size cap** on each response body (a larger body is an error, not a retry);
- **no redirects**: an API endpoint that redirects is refused (a loop cannot spin, and a request
  never leaves the host it was given).

Errors that retrying cannot fix (HTTP 4xx other than 429, a venue error code, the deadline)
raise :class:`~liqgpu.errors.InputError` with one sentence naming the URL.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from ..errors import InputError

log = logging.getLogger(__name__)

USER_AGENT = "liqgpu-fetch"
#: Default size cap of one response body (a page of 1000 klines is ~120 kB).
MAX_BYTES = 8 << 20


class Retryable(Exception):
    """A failure worth another attempt; ``wait`` is the server's Retry-After, if any."""

    def __init__(self, why: str, wait: float | None = None):
        super().__init__(why)
        self.wait = wait


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise InputError(f"{req.full_url}: HTTP {code} redirect to {newurl!r} refused "
                         "(an API endpoint does not redirect; check --base-url)")


_OPENER = urllib.request.build_opener(_NoRedirect)


class Deadline:
    """An overall time limit: ``seconds`` from now (None: none)."""

    def __init__(self, seconds: float | None, clock=time.monotonic):
        self.clock = clock
        self.seconds = seconds
        self.at = None if seconds is None else clock() + float(seconds)

    def left(self) -> float:
        return float("inf") if self.at is None else self.at - self.clock()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise InputError(f"{what}: the overall deadline of {self.seconds:g} s passed; "
                             "rerun the same command to resume where it stopped")


class RateLimiter:
    """At most ``rate`` requests per second, spaced evenly (``rate`` <= 0: no limit)."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep):
        self.gap = 1.0 / rate if rate and rate > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self.next = 0.0

    def wait(self, deadline: Deadline | None = None, what: str = "request") -> None:
        now = self.clock()
        pause = self.next - now
        if pause > 0:
            if deadline is not None and pause >= deadline.left():
                raise InputError(f"{what}: the rate limit would run past the overall deadline of "
                                 f"{deadline.seconds:g} s; rerun to resume")
            self.sleep(pause)
            now += pause
        self.next = max(now, self.next) + self.gap


class RestClient:
    """GET JSON documents from one venue.

    Parameters
    ----------
    base_url : str
        ``https://api.bybit.com``; must start with http:// or https://.
    venue : str
        For messages.
    rate : float
        Requests per second.
    timeout : float
        Seconds per request (connect + read).
    deadline : float, optional
        Seconds for everything this client does.
    retries : int
        Attempts per request.
    backoff : float
        Base of the exponential backoff in seconds (attempt k waits up to ``backoff * 2**k``,
        full jitter, at most ``max_backoff``).
    classify : callable, optional
        ``classify(url, doc)`` checks a decoded document: returns it (or the part to use), raises
        :class:`Retryable` for the venue's rate-limit/busy codes or InputError for the others.
    max_bytes : int
        Largest body accepted.
    """

    def __init__(self, base_url: str, *, venue: str, rate: float = 5.0, timeout: float = 30.0,
                 deadline: float | None = None, retries: int = 5, backoff: float = 0.5,
                 max_backoff: float = 30.0, classify=None, max_bytes: int = MAX_BYTES,
                 sleep=time.sleep, clock=time.monotonic):
        base = str(base_url).rstrip("/")
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise InputError(f"--base-url: {base_url!r} must be http(s)://HOST[:PORT][/PATH]")
        if timeout is None or not (float(timeout) > 0):
            raise InputError(f"--timeout: {timeout!r} must be a number of seconds > 0")
        if deadline is not None and not (float(deadline) > 0):
            raise InputError(f"--deadline: {deadline!r} must be a number of seconds > 0")
        self.base, self.venue = base, venue
        self.timeout, self.retries = float(timeout), max(1, int(retries))
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.classify, self.max_bytes = classify, int(max_bytes)
        self.sleep, self.clock = sleep, clock
        self.deadline = Deadline(deadline, clock)
        self.limiter = RateLimiter(rate, clock, sleep)
        self.requests = 0
        self.retried = 0

    def url(self, path: str, params: dict) -> str:
        q = urllib.parse.urlencode([(k, str(v)) for k, v in params.items() if v is not None])
        return f"{self.base}{path}" + (f"?{q}" if q else "")

    def get(self, path: str, params: dict):
        """The decoded JSON document at ``path?params`` (after ``classify``)."""
        url = self.url(path, params)
        why = "failed"
        for attempt in range(self.retries):
            self.deadline.check(url)
            self.limiter.wait(self.deadline, url)
            try:
                doc = self._once(url)
                return self.classify(url, doc) if self.classify else doc
            except Retryable as exc:
                why = str(exc)
                self.retried += 1
                if attempt + 1 >= self.retries:
                    break
                pause = exc.wait if exc.wait is not None else random.uniform(
                    0, min(self.max_backoff, self.backoff * 2 ** attempt))
                pause = min(max(pause, 0.0), self.max_backoff)
                log.warning("%s: %s (attempt %d of %d; next in %.2f s)", url, why, attempt + 1,
                            self.retries, pause)
                if pause >= self.deadline.left():
                    raise InputError(f"{url}: {why}; the overall deadline of "
                                     f"{self.deadline.seconds:g} s leaves no time to retry; "
                                     "rerun to resume") from None
                if pause > 0:
                    self.sleep(pause)
        raise InputError(f"{url}: {why} after {self.retries} attempt(s)")

    def _once(self, url: str):
        timeout = min(self.timeout, max(self.deadline.left(), 0.001))
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT,
                                                   "Accept": "application/json"})
        self.requests += 1
        try:
            with _OPENER.open(req, timeout=timeout) as resp:  # noqa: S310 (http/https checked)
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise InputError(f"{url}: response of {length} bytes is over the "
                                     f"{self.max_bytes} byte cap")
                body = resp.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise Retryable(f"HTTP {exc.code}", _retry_after(exc.headers)) from None
            detail = _snippet(exc)
            raise InputError(f"{url}: HTTP {exc.code} {exc.reason}{detail}") from None
        except InputError:
            raise
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError,
                http.client.HTTPException, urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise Retryable(f"connection failed or broke off ({reason})") from None
        if len(body) > self.max_bytes:
            raise InputError(f"{url}: response over the {self.max_bytes} byte cap")
        if length is not None and length.isdigit() and len(body) != int(length):
            raise Retryable(f"body cut short ({len(body)} of {length} bytes)")
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Retryable(f"body is not complete JSON ({type(exc).__name__} at byte "
                            f"{getattr(exc, 'pos', '?')} of {len(body)})") from None


def _retry_after(headers) -> float | None:
    v = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None


def _snippet(exc) -> str:
    try:
        text = exc.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
    except Exception:  # the body of an error is optional
        return ""
    return f" ({text[:200]})" if text else ""
