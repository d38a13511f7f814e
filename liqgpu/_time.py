"""Durations and times, written once: ``'24h'``-style durations, ISO dates, UTC.

Every module that reads an option such as ``--every 1h`` or ``--max-age 7d``, a ``START:END``
window, or a store's ``every`` attribute goes through these functions, so ``'1h'`` means the same
thing everywhere and every error names the option it came from. Times are UTC: naive
``datetime64`` values hold UTC, and text with a zone is converted to UTC.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np

from .errors import InputError

__all__ = ["parse_duration", "format_duration", "duration_ns", "td64_str", "iso", "parse_time"]

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | timedelta | None, *, option: str = "duration") -> timedelta | None:
    """Parse ``'24h'``, ``'90m'``, ``'7d'``, ``'30s'``, ``'1w'`` (or a timedelta) into a timedelta.

    ``None``, ``''``, ``'none'`` and ``'never'`` give ``None``.

    Examples
    --------
    >>> parse_duration("24h")
    datetime.timedelta(days=1)
    """
    if text is None or isinstance(text, timedelta):
        return text
    s = str(text).strip().lower()
    if s in ("", "none", "never"):
        return None
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num):] or None
    try:
        value = float(num)
    except ValueError:
        value = math.nan
    if unit not in _UNITS or not math.isfinite(value) or value <= 0:
        raise InputError(
            f"{option}: cannot read {text!r} as a duration; use a number and a unit "
            "such as 30s, 5m, 1h, 24h, 7d"
        )
    return timedelta(seconds=value * _UNITS[unit])


def format_duration(td: timedelta | None) -> str:
    """Inverse of :func:`parse_duration` for whole seconds (``timedelta(hours=24)`` -> ``'1d'``).

    Examples
    --------
    >>> format_duration(timedelta(minutes=90))
    '90m'
    """
    if td is None:
        return "none"
    secs = int(round(td.total_seconds()))
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def duration_ns(text, *, option: str = "duration") -> int:
    """A duration that must be given and positive, as integer nanoseconds.

    Examples
    --------
    >>> duration_ns("1m", option="--every")
    60000000000
    """
    td = parse_duration(text, option=option)
    if td is None:
        raise InputError(f"{option}: a duration is needed here, not {text!r}")
    return int(round(td.total_seconds() * 1e9))


def td64_str(td) -> str:
    """A ``numpy.timedelta64`` as :func:`format_duration` writes it (``3600 s`` -> ``'1h'``)."""
    secs = float(np.timedelta64(td, "ns") / np.timedelta64(1, "s"))
    return format_duration(timedelta(seconds=secs))


def iso(t) -> str:
    """A UTC time to ISO text: ``'2026-04-01'`` at midnight, else ``'2026-04-01T12:30:00Z'``."""
    s = str(np.datetime_as_string(np.datetime64(t, "s"), unit="s"))
    return s[:10] if s.endswith("T00:00:00") else s + "Z"


def exact_iso(t) -> str:
    """A time as ISO text without a zone, to the second (or the millisecond, or the
    nanosecond: as fine as it needs)."""
    t = np.datetime64(t, "ns")
    ns = int(t.view(np.int64))
    unit = "s" if ns % 10**9 == 0 else ("ms" if ns % 10**6 == 0 else "ns")
    return str(np.datetime_as_string(t, unit=unit))


def parse_time(text: str, option: str):
    """ISO date or time text -> ``datetime64[ns]`` in UTC (``None`` for empty text).

    Text with a zone is converted to UTC; text without one is read as UTC.

    Examples
    --------
    >>> parse_time("2026-04-01T02:00+02:00", "--test")
    np.datetime64('2026-04-01T00:00:00.000000000')
    """
    import pandas as pd

    text = text.strip()
    if not text:
        return None
    try:
        t = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise InputError(f"{option}: cannot read {text!r} as a UTC date or time") from None
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return np.datetime64(t.to_datetime64(), "ns")
