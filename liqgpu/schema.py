"""Names shared by every module: sides, contract kinds, the events file's columns.

A side of a position is ``long`` or ``short`` (index 0 and 1 of every ``side`` axis); realized
events whose source does not say which position was liquidated carry ``unknown``.
"""

from __future__ import annotations

#: the ``side`` axis of every cube, in order
SIDES = ("long", "short")
#: sides an event may carry
EVENT_SIDES = ("long", "short", "unknown")
#: contract kinds (MODEL.md)
KINDS = ("linear", "inverse")
#: which price an exchange published with a liquidation
PRICE_KINDS = ("bankruptcy", "order", "average")
#: the normalized events file (``liqgpu ingest``, ``liqgpu record``)
EVENT_COLUMNS = ("time", "exchange", "symbol", "side", "price", "price_kind", "qty", "notional",
                 "side_known")
#: columns an events table must have
EVENT_REQUIRED = ("time", "exchange", "symbol", "side", "price", "notional")
#: names under which the time column of a realized-liquidations file is found
TIME_COLUMNS = ("time", "open_time_ms", "ts_ms", "timestamp", "time_utc", "open_time_utc", "t")
