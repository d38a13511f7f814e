"""Venue adapters: stream subscriptions, message parsing and REST requests for Binance USDⓈ-M,
Bybit v5 linear and OKX v5 linear swaps.

Each adapter turns a decoded websocket message into *items*:

- ``("kline", symbol, open_ms, cols, closed)``: a 1-minute bar (``cols``: open, high, low, close,
  volume, quote_volume and, on Binance, taker_buy_volume); ``closed`` when the venue says so
  (Binance ``k.x``, Bybit ``confirm``, OKX ``confirm == "1"``).
- ``("mark", symbol, ts_ms, price)``: a mark price sample.
- ``("oi", symbol, ts_ms, value)``: open interest in the model's units (base units, linear).
- ``("liq", symbol, row)``: one liquidation as a normalized events row (:mod:`liqgpu.events`):
  the side of the liquidated *position* and the venue's price convention, as ``ingest`` keeps
  them (Binance: SELL order -> long, average fill price else order price; Bybit ``allLiquidation``:
  ``S=Buy`` -> long, bankruptcy price; OKX: ``posSide`` else sell order -> long, ``bkPx``).

Message shapes (from each venue's public API documentation; the test server replays them):

- Binance combined stream ``{"stream": "btcusdt@kline_1m", "data": {"e": "kline", "s", "k": {"t",
  "T", "o", "h", "l", "c", "v", "q", "V", "x", ...}}}``, ``markPriceUpdate`` ``{"e", "E", "s",
  "p"}``, ``!forceOrder@arr`` ``{"e": "forceOrder", "E", "o": {"s", "S", "q", "p", "ap", "z",
  "T", ...}}``. REST ``/fapi/v1/klines`` and ``/fapi/v1/markPriceKlines`` (12-field arrays),
  ``/fapi/v1/openInterest`` ``{"openInterest", "symbol", "time"}``: Binance has no open-interest
  stream, so the recorder asks for it when a bar closes (one request per symbol and minute).
- Bybit ``{"topic": "kline.1.BTCUSDT", "data": [{"start", "end", "open", "close", "high",
  "low", "volume", "turnover", "confirm", "timestamp"}]}``, ``tickers.BTCUSDT`` (snapshot then
  deltas: ``markPrice``, ``openInterest``; ``ts`` at the top), ``allLiquidation.BTCUSDT``
  ``{"data": [{"T", "s", "S", "v", "p"}]}``. REST ``/v5/market/kline`` and
  ``/v5/market/mark-price-kline`` (``result.list`` newest first).
- OKX ``{"arg": {"channel": "candle1m", "instId"}, "data": [[ts, o, h, l, c, vol, volCcy,
  volCcyQuote, confirm]]}`` (business endpoint), ``mark-price`` ``[{"instId", "markPx", "ts"}]``,
  ``open-interest`` ``[{"instId", "oi", "oiCcy", "ts"}]``, ``liquidation-orders``
  ``[{"instId", "details": [{"bkPx", "side", "posSide", "sz", "ts"}]}]`` (public endpoint). REST
  ``/api/v5/market/history-candles`` and ``history-mark-price-candles`` (newest first).
"""

from __future__ import annotations

import json
import math
import re

from ..errors import InputError

#: Symbols reach URLs and file names only after this check.
SYMBOL_RE = re.compile(r"[A-Z0-9]{2,20}(-[A-Z0-9]{2,10}){0,3}")
MINUTE_MS = 60_000
VENUES = ("binance", "bybit", "okx")


def check_symbol(exchange: str, symbol: str) -> str:
    """The symbol upper-cased, or an InputError (a symbol goes into URLs and file names)."""
    s = str(symbol).strip().upper()
    if not SYMBOL_RE.fullmatch(s):
        raise InputError(f"--symbol: {symbol!r} is not a symbol (letters and digits, "
                         "e.g. BTCUSDT or BTC-USDT-SWAP)")
    if exchange == "okx" and not re.fullmatch(r"[A-Z0-9]+-USDT-SWAP", s):
        raise InputError(f"--symbol {s}: OKX live recording takes linear swaps like BTC-USDT-SWAP")
    if exchange in ("binance", "bybit") and "-" in s:
        raise InputError(f"--symbol {s}: {exchange} symbols look like BTCUSDT")
    if exchange in ("binance", "bybit") and not s.endswith(("USDT", "USDC")):
        raise InputError(f"--symbol {s}: only linear (USDT/USDC-margined) contracts are recorded")
    return s


def _f(x) -> float:
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"not finite: {x!r}")
    return v


def _liq_row(exchange, symbol, t_ms, side, price, price_kind, qty, notional) -> dict:
    if side not in ("long", "short") or not (price > 0 and notional > 0):
        raise ValueError("bad liquidation row")
    return {"time": int(t_ms) * 1_000_000, "exchange": exchange, "symbol": symbol, "side": side,
            "price": float(price), "price_kind": price_kind, "qty": float(qty),
            "notional": float(notional)}


class Venue:
    """Base adapter; subclasses fill in the venue's shapes."""

    name = ""
    ws_default = ""
    rest_default = ""
    #: True where the venue streams open interest (else REST at each bar close).
    oi_stream = False
    #: True where OI and mark prices come on another socket than the klines (OKX).
    oi_other_socket = False
    kline_limit = 1000

    def __init__(self, symbols, ws_url: str | None = None, rest_url: str | None = None):
        self.symbols = [check_symbol(self.name, s) for s in symbols]
        self.ws_url = (ws_url or self.ws_default).rstrip("/")
        self.rest_url = (rest_url or self.rest_default).rstrip("/")
        for u, what in ((self.ws_url, "--ws-url"), (self.rest_url, "--rest-url")):
            if not re.fullmatch(r"(wss?|https?)://[A-Za-z0-9.\-:\[\]]+(/[A-Za-z0-9._\-/]*)?", u):
                raise InputError(f"{what}: {u!r} is not a ws(s):// or http(s):// URL")

    # -- streams ---------------------------------------------------------------------------------
    def connections(self) -> list[tuple[str, list]]:
        """``[(url, [subscribe messages])]``: one websocket per entry."""
        raise NotImplementedError

    def app_ping(self):
        """An application-level ping to send every ``ping_every`` seconds, or None."""
        return None

    ping_every = 20.0

    def parse(self, msg) -> list:
        raise NotImplementedError

    # -- REST ------------------------------------------------------------------------------------
    def klines_request(self, symbol: str, start_ms: int, end_ms: int, mark: bool = False):
        raise NotImplementedError

    def parse_klines(self, doc, mark: bool = False) -> list[tuple[int, dict]]:
        raise NotImplementedError

    def oi_request(self, symbol: str):
        return None

    def parse_oi(self, doc):
        return None

    def meta(self, symbol: str) -> dict:
        return {"kind": "linear", "contract_size": 1.0}


class Binance(Venue):
    name = "binance"
    ws_default = "wss://fstream.binance.com"
    rest_default = "https://fapi.binance.com"
    kline_limit = 1500

    def connections(self):
        streams = []
        for s in self.symbols:
            low = s.lower()
            streams += [f"{low}@kline_1m", f"{low}@markPrice@1s"]
        streams.append("!forceOrder@arr")
        return [(f"{self.ws_url}/stream?streams={'/'.join(streams)}", [])]

    def parse(self, msg):
        d = msg.get("data", msg) if isinstance(msg, dict) else None
        if not isinstance(d, dict):
            raise ValueError("not an object")
        e = d.get("e")
        if e == "kline":
            k = d["k"]
            sym = str(k["s"]).upper()
            cols = {"open": _f(k["o"]), "high": _f(k["h"]), "low": _f(k["l"]),
                    "close": _f(k["c"]), "volume": _f(k["v"]), "taker_buy_volume": _f(k["V"]),
                    "quote_volume": _f(k["q"])}
            return [("kline", sym, int(k["t"]), cols, bool(k["x"]))]
        if e == "markPriceUpdate":
            return [("mark", str(d["s"]).upper(), int(d["E"]), _f(d["p"]))]
        if e == "forceOrder":
            o = d["o"]
            sym = str(o["s"]).upper()
            side = {"SELL": "long", "BUY": "short"}.get(str(o["S"]).upper(), "")
            ap = float(o.get("ap") or "nan")
            use_avg = math.isfinite(ap) and ap > 0
            px = ap if use_avg else _f(o["p"])
            z = float(o.get("z") or "nan")
            q = z if math.isfinite(z) and z > 0 else _f(o["q"])
            return [("liq", sym, _liq_row("binance", sym, int(o["T"]), side, px,
                                          "average" if use_avg else "order", q, q * px))]
        if "result" in d and "id" in d:  # a subscription reply
            return []
        raise ValueError(f"unknown event {e!r}")

    def klines_request(self, symbol, start_ms, end_ms, mark=False):
        path = "/fapi/v1/markPriceKlines" if mark else "/fapi/v1/klines"
        return (f"{self.rest_url}{path}", {"symbol": symbol, "interval": "1m",
                                          "startTime": start_ms, "endTime": end_ms,
                                          "limit": self.kline_limit})

    def parse_klines(self, doc, mark=False):
        out = []
        for r in doc:
            t = int(r[0])
            if mark:
                out.append((t, {"mark_high": _f(r[2]), "mark_low": _f(r[3])}))
            else:
                out.append((t, {"open": _f(r[1]), "high": _f(r[2]), "low": _f(r[3]),
                                "close": _f(r[4]), "volume": _f(r[5]),
                                "taker_buy_volume": _f(r[9]), "quote_volume": _f(r[7])}))
        return out

    def oi_request(self, symbol):
        return (f"{self.rest_url}/fapi/v1/openInterest", {"symbol": symbol})

    def parse_oi(self, doc):
        return int(doc["time"]), _f(doc["openInterest"])


class Bybit(Venue):
    name = "bybit"
    ws_default = "wss://stream.bybit.com/v5/public/linear"
    rest_default = "https://api.bybit.com"
    oi_stream = True
    kline_limit = 1000

    def connections(self):
        args = []
        for s in self.symbols:
            args += [f"kline.1.{s}", f"tickers.{s}", f"allLiquidation.{s}"]
        return [(self.ws_url, [{"op": "subscribe", "args": args[i:i + 10]}  # 10 per request
                               for i in range(0, len(args), 10)])]

    def app_ping(self):
        return {"op": "ping"}

    def parse(self, msg):
        if not isinstance(msg, dict):
            raise ValueError("not an object")
        topic = msg.get("topic")
        if topic is None:
            if "op" in msg or "success" in msg:  # subscription replies and pongs
                return []
            raise ValueError("no topic")
        kind, _, sym = str(topic).rpartition(".")
        sym = sym.upper()
        data = msg["data"]
        if kind == "kline.1":
            out = []
            for k in data:
                cols = {"open": _f(k["open"]), "high": _f(k["high"]), "low": _f(k["low"]),
                        "close": _f(k["close"]), "volume": _f(k["volume"]),
                        "quote_volume": _f(k["turnover"])}
                out.append(("kline", sym, int(k["start"]), cols, bool(k["confirm"])))
            return out
        if kind == "tickers":
            ts = int(msg["ts"])
            out = []
            if data.get("markPrice") not in (None, ""):
                out.append(("mark", sym, ts, _f(data["markPrice"])))
            if data.get("openInterest") not in (None, ""):
                out.append(("oi", sym, ts, _f(data["openInterest"])))
            return out
        if kind == "allLiquidation":
            out = []
            for x in data:
                s = str(x["s"]).upper()
                side = {"Buy": "long", "Sell": "short"}.get(str(x["S"]), "")
                px, v = _f(x["p"]), _f(x["v"])
                out.append(("liq", s, _liq_row("bybit", s, int(x["T"]), side, px, "bankruptcy",
                                               v, v * px)))
            return out
        raise ValueError(f"unknown topic {topic!r}")

    def klines_request(self, symbol, start_ms, end_ms, mark=False):
        path = "/v5/market/mark-price-kline" if mark else "/v5/market/kline"
        return (f"{self.rest_url}{path}", {"category": "linear", "symbol": symbol,
                                          "interval": "1", "start": start_ms, "end": end_ms,
                                          "limit": self.kline_limit})

    def parse_klines(self, doc, mark=False):
        out = []
        for r in doc["result"]["list"]:
            t = int(r[0])
            if mark:
                out.append((t, {"mark_high": _f(r[2]), "mark_low": _f(r[3])}))
            else:
                out.append((t, {"open": _f(r[1]), "high": _f(r[2]), "low": _f(r[3]),
                                "close": _f(r[4]), "volume": _f(r[5]),
                                "quote_volume": _f(r[6])}))
        return sorted(out, key=lambda x: x[0])


class Okx(Venue):
    name = "okx"
    ws_default = "wss://ws.okx.com:8443/ws/v5"
    rest_default = "https://www.okx.com"
    oi_stream = True
    oi_other_socket = True
    kline_limit = 100
    ping_every = 25.0

    def connections(self):
        pub = [{"channel": "mark-price", "instId": s} for s in self.symbols]
        pub += [{"channel": "open-interest", "instId": s} for s in self.symbols]
        pub.append({"channel": "liquidation-orders", "instType": "SWAP"})
        bus = [{"channel": "candle1m", "instId": s} for s in self.symbols]
        return [(f"{self.ws_url}/public", [{"op": "subscribe", "args": pub}]),
                (f"{self.ws_url}/business", [{"op": "subscribe", "args": bus}])]

    def app_ping(self):
        return "ping"

    def ct_val(self, inst):
        from ..io.okx import contract_value

        return contract_value(inst)

    def parse(self, msg):
        if msg == "pong":
            return []
        if not isinstance(msg, dict):
            raise ValueError("not an object")
        if "event" in msg:
            return []
        ch = msg["arg"]["channel"]
        data = msg["data"]
        if ch == "candle1m":
            sym = str(msg["arg"]["instId"]).upper()
            return [("kline", sym, int(r[0]), self._candle(r), str(r[8]) == "1") for r in data]
        if ch == "mark-price":
            return [("mark", str(x["instId"]).upper(), int(x["ts"]), _f(x["markPx"])) for x in data]
        if ch == "open-interest":
            return [("oi", str(x["instId"]).upper(), int(x["ts"]), _f(x["oiCcy"])) for x in data]
        if ch == "liquidation-orders":
            out = []
            for it in data:
                inst = str(it["instId"]).upper()
                if inst not in self.symbols:
                    continue
                cv = self.ct_val(inst)
                for d in it["details"]:
                    ps = str(d.get("posSide", "")).lower()
                    side = ps if ps in ("long", "short") else \
                        {"sell": "long", "buy": "short"}.get(str(d["side"]).lower(), "")
                    px, qty = _f(d["bkPx"]), _f(d["sz"]) * cv
                    out.append(("liq", inst, _liq_row("okx", inst, int(d["ts"]), side, px,
                                                      "bankruptcy", qty, qty * px)))
            return out
        raise ValueError(f"unknown channel {ch!r}")

    @staticmethod
    def _candle(r):
        return {"open": _f(r[1]), "high": _f(r[2]), "low": _f(r[3]), "close": _f(r[4]),
                "volume": _f(r[6]), "quote_volume": _f(r[7])}

    def klines_request(self, symbol, start_ms, end_ms, mark=False):
        path = ("/api/v5/market/history-mark-price-candles" if mark
                else "/api/v5/market/history-candles")
        return (f"{self.rest_url}{path}", {"instId": symbol, "bar": "1m", "after": end_ms + 1,
                                          "before": start_ms - 1, "limit": self.kline_limit})

    def parse_klines(self, doc, mark=False):
        out = []
        for r in doc["data"]:
            t = int(r[0])
            if mark:
                out.append((t, {"mark_high": _f(r[2]), "mark_low": _f(r[3])}))
            else:
                out.append((t, self._candle(r)))
        return sorted(out, key=lambda x: x[0])


def make_venue(exchange: str, symbols, ws_url=None, rest_url=None) -> Venue:
    cls = {"binance": Binance, "bybit": Bybit, "okx": Okx}.get(str(exchange).lower())
    if cls is None:
        raise InputError(f"--exchange: {exchange!r} is not one of {', '.join(VENUES)}")
    if not symbols:
        raise InputError(f"--exchange {exchange}: give at least one --symbol")
    return cls(symbols, ws_url, rest_url)


def decode(raw) -> object:
    """A websocket frame as JSON (``pong`` stays text); ValueError when it is not."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if raw == "pong":
        return raw
    return json.loads(raw)
