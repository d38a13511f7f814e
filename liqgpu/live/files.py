"""Rotating Parquet files of closed bars and liquidation events, in the normalized formats of
``liqgpu ingest`` (series: :func:`liqgpu.io.tables.series_table`; events:
:func:`liqgpu.events.make_events`).

Layout under the recorder's ``--out``::

    bars/EXCHANGE_SYMBOL/EXCHANGE_SYMBOL_20240101T0000Z.parquet     complete periods
    bars/EXCHANGE_SYMBOL/.EXCHANGE_SYMBOL_20240101T0100Z.parquet.partial   the current one
    events/EXCHANGE_SYMBOL/...                                      the same for events

Every write goes to a temporary name and is renamed into place, so a reader never sees a half
file. The current period is rewritten (atomically) as bars close, under a dot name that
``update --follow`` skips; when the period ends it is renamed to its final name, which never
changes again (``update --follow`` applies each final file once). A bars file always holds at
least two bars (a series needs two to set its step), so a period may end one bar late. Names and
times are UTC.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BAR_COLUMNS = ("open", "high", "low", "close", "oi", "mark_high", "mark_low", "volume",
               "taker_buy_volume", "quote_volume")
MINUTE_NS = 60 * 10**9


def series_dir(out, kind: str, exchange: str, symbol: str) -> Path:
    return Path(out) / kind / f"{exchange}_{symbol}"


def _stamp(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y%m%dT%H%MZ")


def _write(df, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class RotatingWriter:
    """Rows of one series (``kind='bars'``) or its events (``kind='events'``) in rotating files.

    A period ends when a row of a later period comes (a late event of an earlier period joins the
    current file: files are named by their first row, rows are sorted within a file).

    ``add`` takes rows (dicts with ``time`` in int64 ns and the columns); ``flush`` rewrites the
    current period's file. Memory: the rows of the current period only. ``add``, ``flush`` and
    ``finalize`` hold the writer's lock: the recorder flushes on a thread while its event loop
    goes on (and may add rows).
    """

    def __init__(self, out, kind: str, exchange: str, symbol: str, *, rotate_ns: int,
                 meta: dict | None = None):
        self.kind, self.exchange, self.symbol = kind, exchange, symbol
        self.rotate_ns = int(rotate_ns)
        self.meta = meta or {"kind": "linear", "contract_size": 1.0}
        self.folder = series_dir(out, kind, exchange, symbol)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = f"{exchange}_{symbol}"
        self.rows: list[dict] = []
        self.name: str | None = None
        self.dirty = False
        self.lock = threading.RLock()
        for p in self.folder.glob(f".{self.prefix}_*.tmp"):
            p.unlink(missing_ok=True)  # a write cut short by a kill
        partials = sorted(self.folder.glob(f".{self.prefix}_*.parquet.partial"))
        for p in partials[:-1]:  # cannot happen unless killed mid-rename; keep the data
            self._finalize_path(p)
        if partials:
            self._resume(partials[-1])

    # -- state -----------------------------------------------------------------------------------
    def _resume(self, p: Path) -> None:
        import pandas as pd

        from ..io.tables import time_ns

        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # noqa: BLE001 - a bad partial is logged and set aside
            log.error("%s: unreadable (%s); moved aside", p, type(exc).__name__)
            os.replace(p, p.with_name(p.name + ".bad"))
            return
        t = time_ns(df["time"])
        cols = [c for c in df.columns if c != "time"]
        self.rows = [dict({"time": int(ti)}, **{c: df[c].iloc[i] for c in cols})
                     for i, ti in enumerate(t)]
        self.name = p.name[1:-len(".partial")]
        log.info("%s: continuing %s (%d rows)", self.folder, self.name, len(self.rows))

    def last_time(self) -> int | None:
        """The last row's time (ns) over the current and the final files, or None."""
        if self.rows:
            return int(max(r["time"] for r in self.rows))
        finals = sorted(self.folder.glob(f"{self.prefix}_*.parquet"))
        if not finals:
            return None
        import pandas as pd

        from ..io.tables import time_ns

        return int(time_ns(pd.read_parquet(finals[-1], columns=["time"])["time"]).max())

    def _period(self, ns: int) -> int:
        return ns // self.rotate_ns

    def add(self, rows: list[dict]) -> None:
        with self.lock:
            for r in sorted(rows, key=lambda r: r["time"]):
                if self.rows and self._period(r["time"]) > self._period(
                        self.rows[0]["time"]) and (self.kind != "bars" or len(self.rows) >= 2):
                    self.finalize()
                if not self.rows:
                    self.name = f"{self.prefix}_{_stamp(r['time'])}.parquet"
                self.rows.append(r)
                self.dirty = True

    # -- files -----------------------------------------------------------------------------------
    def frame(self):
        if self.kind == "bars":
            from ..io.tables import series_table

            rows = sorted(self.rows, key=lambda r: r["time"])
            ns = np.array([r["time"] for r in rows], dtype=np.int64)
            cols = {c: np.array([r.get(c, np.nan) for r in rows], dtype=np.float64)
                    for c in BAR_COLUMNS if any(c in r for r in rows)}
            return series_table([(self.name, ns, cols, 0, len(rows))], exchange=self.exchange,
                                symbol=self.symbol, kind=self.meta["kind"],
                                contract_size=self.meta["contract_size"],
                                step_ns=MINUTE_NS).frame
        from ..events import make_events

        cols = {k: [r[k] for r in self.rows] for k in
                ("time", "exchange", "symbol", "side", "price", "price_kind", "qty", "notional")}
        return make_events([(self.name, cols, 0, len(self.rows))]).frame

    def _partial(self) -> Path:
        return self.folder / f".{self.name}.partial"

    def flush(self) -> None:
        """Rewrite the current period's file (atomic) if rows were added since the last flush."""
        with self.lock:
            if not self.dirty or not self.rows:
                return
            _write(self.frame(), self._partial())
            self.dirty = False

    def finalize(self) -> None:
        """Close the current period: its file gets its final name."""
        with self.lock:
            if not self.rows:
                return
            if self.dirty:
                _write(self.frame(), self._partial())
                self.dirty = False
            self._finalize_path(self._partial())
            self.rows, self.name = [], None

    def _finalize_path(self, p: Path) -> None:
        final = p.with_name(p.name[1:-len(".partial")])
        if final.exists():  # cannot be overwritten silently: keep both
            final = final.with_name(final.stem + f"-{os.getpid()}.parquet")
        os.replace(p, final)
        log.info("%s: wrote %s", self.folder, final.name)


def _files(folder: Path, prefix: str) -> list[Path]:
    return sorted(folder.glob(f"{prefix}_*.parquet")) + sorted(
        folder.glob(f".{prefix}_*.parquet.partial"))


def recorded_bars(out, exchange: str, symbol: str, *, since_ns: int | None = None):
    """All recorded bars of a series (final and current files) as one normalized frame, or None."""
    import pandas as pd

    from ..io.tables import time_ns

    folder = series_dir(out, "bars", exchange, symbol)
    frames = [pd.read_parquet(p) for p in _files(folder, f"{exchange}_{symbol}")]
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values("time", kind="stable").drop_duplicates("time", keep="first")
    if since_ns is not None:
        df = df[time_ns(df["time"]) > since_ns]
    df = df.reset_index(drop=True)
    df.attrs["step_ns"] = MINUTE_NS
    return df


def recorded_events(out, exchange: str, symbol: str, *, since_ns: int | None = None):
    """All recorded events of a series as one normalized events frame (possibly empty)."""
    import pandas as pd

    from ..io.tables import time_ns

    folder = series_dir(out, "events", exchange, symbol)
    frames = [pd.read_parquet(p) for p in _files(folder, f"{exchange}_{symbol}")]
    if not frames:
        return empty_events()
    df = pd.concat(frames, ignore_index=True).sort_values("time", kind="stable")
    if since_ns is not None:
        df = df[time_ns(df["time"]) >= since_ns]
    return df.reset_index(drop=True)


def empty_events():
    import pandas as pd

    from ..io.tables import to_utc

    return pd.DataFrame({"time": to_utc(np.zeros(0, np.int64)), "exchange": pd.Series([], dtype=str),
                         "symbol": pd.Series([], dtype=str), "side": pd.Series([], dtype=str),
                         "price": np.zeros(0), "price_kind": pd.Series([], dtype=str),
                         "qty": np.zeros(0), "notional": np.zeros(0),
                         "side_known": np.zeros(0, bool)})
