"""``liqgpu live``: keep a store current from recorders running in the same process.

A minute is applied once every series of the store has its bar, through
:class:`~.updater.WarmUpdater` (``liqgpu.update``'s exact and atomic update, one writer at a time
under the store's lock, with what it read of the store kept warm between minutes); the realized
events of the buckets it rewrites and appends go through the same update. ``liqgpu live`` runs
the updates in a process of their own (:class:`~.worker.UpdateWorker`), so the recorders never
wait for them. A store that does not exist yet is estimated from the first recorded bars. On a
restart, bars recorded but not yet applied are read back from the files and applied first, and
the realized events of the buckets that a kill may have left unbinned (from the mark
``.STORE.live.json``) are binned again from the files. The recorder writes a closed bar and its
events to the files before the store applies it, so the store never holds what the files lack.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from .files import MINUTE_NS, recorded_bars, recorded_events

log = logging.getLogger(__name__)


def default_grid(closes) -> str:
    """A 10 bps log grid from half to twice the first prices (levels beyond it are tracked in
    ``outside``)."""
    lo, hi = float(np.nanmin(closes)) / 2, float(np.nanmax(closes)) * 2
    return f"log:{lo:.6g}:{hi:.6g}:10"


class LiveStore:
    """Apply closed bars of ``series`` (``[(exchange, symbol)]``) recorded in ``out`` to ``store``."""

    def __init__(self, store, out, series, *, every="1m", grid=None, allow_outside=True,
                 warmup: int = 2, params=None, max_wait: int = 5, worker: bool = False):
        self.store, self.out = Path(store), Path(out)
        self.keys = [f"{e}:{s}" for e, s in series]
        self.series = list(series)
        self.every, self.grid, self.allow_outside = every, grid, allow_outside
        self.warmup = max(2, int(warmup))
        #: minutes (venue time) the store waits for a lagging series before applying a minute
        #: without it (its bar is then NaN in the store; the files keep what comes later)
        self.max_wait = int(max_wait)
        self.params = params
        self.pending: dict[str, dict[int, dict]] = {k: {} for k in self.keys}
        self.recv: dict[int, float] = {}
        self.events: list[dict] = []
        self.latencies: list[float] = []
        self.applied = 0
        self.t_end: int | None = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self._load()
        from .worker import Applier, UpdateWorker

        #: applies the minutes: here, or in a process of its own that stays warm (``worker``)
        self.applier = UpdateWorker(self.store) if worker else Applier(self.store)

    # -- start -----------------------------------------------------------------------------------
    def _load(self) -> None:
        if self.store.exists():
            from ..store import open_store

            ds = open_store(self.store, chunks=None)
            names = [str(x) for x in ds["series"].values]
            if sorted(n.lower() for n in names) != sorted(k.lower() for k in self.keys):
                raise InputError(f"{self.store}: holds series {', '.join(names)}; live was given "
                                 f"{', '.join(self.keys)}")
            self.keys = names  # store order and spelling
            self.pending = {k: {} for k in self.keys}
            self.t_end = self._stored_end()
            last = int(ds["time"].values[-1].astype("datetime64[ns]").view(np.int64))
            # the first bucket whose realized events may be stale: a kill between an update and
            # its binning leaves the mark of the binning before
            self.bucket0 = min(last, self._mark() or last)
        since = self.t_end
        for e, s in self.series:
            df = recorded_bars(self.out, e, s, since_ns=since)
            if df is not None and len(df):
                self._take(f"{e}:{s}", _rows(df), time.monotonic())
            if self.t_end is not None:
                ev = recorded_events(self.out, e, s, since_ns=self.bucket0)
                self.events += _event_rows(ev)

    def _stored_end(self) -> int:
        from ..store import read_group

        saved, _ = read_group(self.store, "resume")
        return int(saved["bars_time"][-1])

    # -- feeding ---------------------------------------------------------------------------------
    def on_bars(self, exchange, symbol, rows, t_recv) -> None:
        self.queue.put_nowait((f"{exchange}:{symbol}", rows, t_recv))

    def on_events(self, exchange, symbol, rows) -> None:
        self.events.extend(rows)

    def _take(self, key, rows, t_recv) -> None:
        key = next((k for k in self.pending if k.lower() == key.lower()), key)
        for r in rows:
            t = int(r["time"])
            if self.t_end is not None and t <= self.t_end:
                continue
            self.pending[key][t] = r
            self.recv.setdefault(t, t_recv)

    # -- the mark: from which bucket on realized events may need binning again ------------------
    def _mark_path(self) -> Path:
        return self.store.parent / f".{self.store.name}.live.json"

    def _mark(self) -> int | None:
        import json

        try:
            return int(json.loads(self._mark_path().read_text())["realized_from_ns"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _set_mark(self) -> None:
        import json

        p = self._mark_path()
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"realized_from_ns": int(self.bucket0)}))
        os.replace(tmp, p)

    def startup(self) -> None:
        """Bin the recorded events again from the mark (a kill may have come between an update
        and its binning), then apply what was recorded but not applied."""
        if self.t_end is not None:
            self._realized(self.bucket0, force=True)
            self._set_mark()
        self.apply()

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.startup)
        while not stop.is_set():
            getter = asyncio.create_task(self.queue.get())
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                stopper.cancel()
                break
            stopper.cancel()
            self._take(*getter.result())
            while not self.queue.empty():
                self._take(*self.queue.get_nowait())
            await asyncio.to_thread(self.apply)
        while not self.queue.empty():  # bars closed before the stop
            self._take(*self.queue.get_nowait())
        await asyncio.to_thread(self.apply)

    def close(self) -> None:
        """Stop the update process (if any) once it has finished its minute."""
        self.applier.close()

    # -- applying --------------------------------------------------------------------------------
    def apply(self) -> int:
        """Apply every minute that all series have; returns how many minutes were applied."""
        if self.t_end is None:
            if min(len(p) for p in self.pending.values()) < self.warmup:
                return 0
            return self._create()
        tops = [max(p) for p in self.pending.values() if p]
        if not tops:
            return 0
        end = min(tops) if len(tops) == len(self.pending) else self.t_end
        end = max(end, max(tops) - self.max_wait * MINUTE_NS)
        if end <= self.t_end:
            return 0
        late = [k for k, p in self.pending.items() if not p or max(p) < end]
        if late:
            log.warning("%s: %s %d+ minutes behind; applied up to %s without it", self.store,
                        ", ".join(late), self.max_wait, np.datetime64(end, "ns"))
        first = self.t_end + MINUTE_NS
        series = [self._series(k, first, end) for k in self.keys]
        # the events of the buckets the update rewrites and appends go through it: the store
        # holds its new bars and their events together, swapped in at once
        ev = self._events_frame(self.bucket0)
        last = self.applier.update(series, allow_outside=self.allow_outside,
                                   realized=ev if len(ev) else None)
        n = (end - first) // MINUTE_NS + 1
        self.bucket0 = self._last_bucket() if last is None else last
        self._set_mark()
        self._done(end)
        return n

    def _create(self) -> int:
        end = min(max(p) for p in self.pending.values())
        start = min(min(p) for p in self.pending.values())
        series = [self._series(k, start, end) for k in self.keys]
        grid = self.grid or default_grid([np.nanmax(s["close"]) for s in series] +
                                         [np.nanmin(s["close"]) for s in series])
        self.grid = grid
        ev = self._events_frame(start)
        kw = {"params": self.params} if self.params is not None else {}
        self.bucket0 = self.applier.create(series, every=self.every, grid=grid, realized=ev,
                                           backend="numpy", allow_unmatched=True, **kw)
        self._set_mark()
        log.info("%s: created from %d bars of %d series (grid %s, every %s)", self.store,
                 (end - start) // MINUTE_NS + 1, len(series), grid, self.every)
        self._done(end)
        return (end - start) // MINUTE_NS + 1

    def _done(self, end: int) -> None:
        now = time.monotonic()
        for t in [t for t in self.recv if t <= end]:
            self.latencies.append(now - self.recv.pop(t))
        del self.latencies[:-10_000]
        for p in self.pending.values():
            for t in [t for t in p if t <= end]:
                del p[t]
        self.applied += 1
        self.t_end = end
        keep = self.bucket0
        self.events = [e for e in self.events if e["time"] >= keep]

    def _series(self, key: str, first: int, end: int):
        from ..series import Series

        exchange, symbol = key.split(":", 1)
        p = self.pending[key]
        n = (end - first) // MINUTE_NS + 1
        cols = {}
        present = sorted({c for t, r in p.items() if first <= t <= end for c in r
                          if c not in ("time", "exchange", "symbol", "kind", "contract_size")})
        for c in present:
            a = np.full(n, np.nan)
            for t, r in p.items():
                if first <= t <= end and c in r:
                    a[(t - first) // MINUTE_NS] = float(r[c])
            cols[c] = a
        if not ("mark_high" in cols and "mark_low" in cols):
            cols.pop("mark_high", None)
            cols.pop("mark_low", None)
        tm = (first + MINUTE_NS * np.arange(n, dtype=np.int64)).view("datetime64[ns]")
        if not cols:  # no bar of this series in the range: NaN bars with the store's columns
            cols = {c: np.full(n, np.nan) for c in self._columns(key)}
        any_row = next(iter(p.values()), {})
        return Series(tm, np.timedelta64(MINUTE_NS, "ns"), cols, exchange=exchange,
                      symbol=symbol, kind=str(any_row.get("kind", "linear")),
                      contract_size=float(any_row.get("contract_size", 1.0)),
                      source=f"live:{key}")

    def _columns(self, key: str) -> list:
        from ..store import read_group

        _, ra = read_group(self.store, "resume")
        names = [k.lower() for k in self.keys]
        return list(ra["columns"][names.index(key.lower())])

    def _events_frame(self, since: int):
        import pandas as pd

        from .files import empty_events

        rows = [e for e in self.events if e["time"] >= since]
        if not rows:
            return empty_events()
        df = pd.DataFrame(rows)
        df["time"] = pd.to_datetime(df["time"].astype(np.int64), unit="ns", utc=True)
        return df

    def _last_bucket(self) -> int:
        """Open time (ns) of the store's last bucket."""
        import zarr

        g = zarr.open_group(str(self.store), mode="r")
        return int(np.asarray(g["time"][-1:], dtype=np.int64)[0]) * 1_000_000

    def _realized(self, old_bucket: int, force: bool = False) -> None:
        """Bin the events of the buckets from ``old_bucket`` (the one ``update`` rewrote, keeping
        what was binned there before) on; ``update`` leaves the new buckets at zero."""
        import zarr

        from ..events import bin_realized, unknown_side_rule
        from ..store import _quiet_zarr
        from ..store.atomic import store_lock

        g = zarr.open_group(str(self.store), mode="r")
        units = str(g["time"].attrs.get("units", ""))
        if "realized" not in g or not units.startswith("milliseconds since 1970-01-01"):
            if "realized" in g:
                log.warning("%s: time units %r; realized events not binned", self.store, units)
            return
        t_ns = np.asarray(g["time"][:], dtype=np.int64) * 1_000_000
        b0 = int(np.searchsorted(t_ns, old_bucket, side="left"))
        self.bucket0 = int(t_ns[-1])
        ev = self._events_frame(int(t_ns[b0]))
        if not len(ev) and not force:
            return  # no events from b0 on: update's zeros (and the kept bucket) are right
        every = np.timedelta64(int(np.diff(t_ns).min()) if t_ns.size > 1 else
                               self._every_ns(g), "ns")
        cube = bin_realized(ev, series_names=[str(x) for x in g["series"][:]],
                            time=t_ns[b0:].view("datetime64[ns]"), every=every,
                            edges=np.asarray(g["price_edges"][:]),
                            unknown_side=unknown_side_rule(dict(g.attrs)),
                            log_left_out=False)  # by the store's rule for unknown sides
        from ..store.integrity import write_manifest

        with store_lock(self.store), _quiet_zarr():  # a repair after a kill (see startup)
            arr = zarr.open_group(str(self.store), mode="r+")["realized"]
            arr[:, b0:] = cube.astype(np.float32)
            write_manifest(self.store)  # the chunks it rewrote, with their new sizes

    @staticmethod
    def _every_ns(g) -> int:
        from .._time import parse_duration

        return int(round(parse_duration(g.attrs["every"]).total_seconds() * 1e9))

    # -- status ----------------------------------------------------------------------------------
    def latency(self) -> dict:
        if not self.latencies:
            return {"n": 0}
        a = np.array(self.latencies)
        return {"n": int(a.size), "p50_s": float(np.percentile(a, 50)),
                "p99_s": float(np.percentile(a, 99)), "max_s": float(a.max())}


def _rows(df) -> list[dict]:
    from ..io.tables import time_ns

    t = time_ns(df["time"])
    cols = [c for c in df.columns if c not in ("time", "exchange", "symbol")]
    data = {c: df[c].to_numpy() for c in cols}
    return [dict({"time": int(ti)}, **{c: data[c][i] for c in cols}) for i, ti in enumerate(t)]


def _event_rows(df) -> list[dict]:
    if df is None or not len(df):
        return []
    from ..io.tables import time_ns

    t = time_ns(df["time"])
    out = []
    for i, ti in enumerate(t):
        out.append({"time": int(ti), "exchange": str(df["exchange"].iloc[i]),
                    "symbol": str(df["symbol"].iloc[i]), "side": str(df["side"].iloc[i]),
                    "price": float(df["price"].iloc[i]), "price_kind": str(df["price_kind"].iloc[i]),
                    "qty": float(df["qty"].iloc[i]), "notional": float(df["notional"].iloc[i])})
    return out
