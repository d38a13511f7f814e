"""Base asset and quote currency of a contract symbol, as venues spell them.

``BTCUSDT`` (Binance, Bybit), ``BTC-USDT-SWAP`` (OKX), ``BTCUSD_PERP`` (Binance COIN-M),
``BTC-PERP``, ``BTC/USDT:USDT`` (ccxt), ``BTC`` (Hyperliquid: quoted in USD) all name a base
asset and a quote currency; series of one base asset can be summed across venues in quote
notional (USD, USDT and USDC are counted as one dollar each: say so where it matters).
"""

from __future__ import annotations

import re

QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "USDE", "TUSD", "DAI", "USD", "EUR", "BTC", "ETH")
_SUFFIXES = re.compile(r"([-_]?(PERP|SWAP|PERPETUAL)|-\d{6}|_\d{6})$")


def split_symbol(symbol: str) -> tuple[str, str]:
    """``(base, quote)`` of a contract symbol; the quote is ``USD`` when the symbol names none.

    Examples
    --------
    >>> [split_symbol(s) for s in ("BTCUSDT", "BTC-USDT-SWAP", "BTCUSD_PERP", "ETH-PERP")]
    [('BTC', 'USDT'), ('BTC', 'USDT'), ('BTC', 'USD'), ('ETH', 'USD')]
    >>> split_symbol("BTC/USDT:USDT"), split_symbol("BTC"), split_symbol("1000PEPEUSDT")
    (('BTC', 'USDT'), ('BTC', 'USD'), ('1000PEPE', 'USDT'))
    """
    s = str(symbol).strip().upper()
    s = s.split(":", 1)[0]
    for _ in range(2):
        s = _SUFFIXES.sub("", s)
    parts = [p for p in re.split(r"[-_/]", s) if p]
    if len(parts) >= 2:
        return parts[0], parts[1] if parts[1] in QUOTES else "USD"
    s = parts[0] if parts else s
    for q in QUOTES:
        if s.endswith(q) and len(s) > len(q):
            return s[: -len(q)], q
    return s, "USD"


def base_asset(symbol: str) -> str:
    """The base asset of a symbol (``BTC-USDT-SWAP`` -> ``BTC``)."""
    return split_symbol(symbol)[0]
