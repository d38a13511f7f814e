"""Where ``liqgpu live`` applies a store's minutes: in the recorder's process, or in a process of
its own (:class:`UpdateWorker`) that stays up between minutes.

The worker process imports the heavy modules once and keeps a :class:`~.updater.WarmUpdater`
(the store's state) between minutes; the recorder's process only parses messages and writes the
files, so neither waits for the other's interpreter lock. Requests and answers go through a pipe
(the bars of the minute and its events in, the store's last bucket out); the worker's log
records come back with each answer and are logged in the recorder's process. The worker dies
with its parent (``PR_SET_PDEATHSIG`` on Linux, and end of file on the pipe elsewhere); a kill at
any point leaves the store at its previous or its new state, like any killed update.
"""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class Applier:
    """Applies minutes to a store in this process (the interface :class:`UpdateWorker` offers)."""

    def __init__(self, store, *, backend: str = "auto"):
        from .updater import WarmUpdater

        self.store = Path(store)
        self.updater = WarmUpdater(store, backend=backend)

    def update(self, series, *, allow_outside: bool, realized=None):
        """Returns the open time (ns) of the store's last bucket (None: nothing new)."""
        return self.updater.update(series, allow_outside=allow_outside, realized=realized)

    def create(self, series, **kw) -> int:
        """Estimate the store from its first bars; returns its last bucket's open time (ns)."""
        import numpy as np

        import liqgpu

        ds = liqgpu.estimate(series, out=self.store, **kw)
        return int(ds["time"].values[-1].astype("datetime64[ns]").view(np.int64))

    def close(self) -> None:
        pass


class UpdateWorker:
    """An :class:`Applier` in a process of its own (started at once, warm for every call)."""

    def __init__(self, store, *, backend: str = "auto"):
        import multiprocessing as mp

        self.store = Path(store)
        ctx = mp.get_context("spawn")  # not fork: the parent runs an event loop and threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, str(store), backend),
                                 name=f"liqgpu-live-{self.store.name}", daemon=True)
        self._proc.start()
        child.close()
        self._lock = threading.Lock()

    def _call(self, method: str, *args, **kw):
        with self._lock:
            try:
                # the level here, now: what this process would log, the worker logs
                level = logging.getLogger("liqgpu").getEffectiveLevel()
                self._conn.send((method, args, kw, level))
                ok, value, records = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                code = self._proc.exitcode if not self._proc.is_alive() else None
                raise RuntimeError(f"{self.store}: the update process stopped (exit code "
                                   f"{code})") from None
        for rec in records:
            logging.getLogger(rec.name).handle(rec)
        if not ok:
            raise value
        return value

    def update(self, series, *, allow_outside: bool, realized=None):
        return self._call("update", series, allow_outside=allow_outside, realized=realized)

    def create(self, series, **kw) -> int:
        return self._call("create", series, **kw)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the process once it has finished what it was doing."""
        try:
            with self._lock:
                self._conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            log.warning("%s: the update process did not stop in %.0f s; terminated", self.store,
                        timeout)
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list = []

    def emit(self, record):
        try:
            record.msg = record.getMessage()  # the arguments may not pickle
            record.args = None
            record.exc_info = None
            self.records.append(record)
        except Exception:  # noqa: BLE001 - a log record must never stop an update
            pass


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn, store: str, backend: str) -> None:
    """The worker process: answer requests until None or the parent is gone. Ctrl-C (SIGINT
    to the whole process group) is the parent's to handle: it finishes the update under way
    and ends the worker, which would otherwise die mid-update with a traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    handler = _Collect()
    root = logging.getLogger("liqgpu")
    root.handlers[:] = [handler]
    root.propagate = False
    # the imports of the first update, now: they are part of no minute's latency
    import liqgpu.api  # noqa: F401
    import liqgpu.updating  # noqa: F401

    applier = Applier(store, backend=backend)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        method, args, kw, level = msg
        root.setLevel(level)
        handler.records = []
        try:
            value, ok = getattr(applier, method)(*args, **kw), True
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            if not isinstance(exc, Exception):
                raise
            logging.getLogger(__name__).debug("%s failed", method, exc_info=True)
            value, ok = exc, False
            try:
                pickle.dumps(exc)
            except Exception:  # noqa: BLE001
                value = RuntimeError(f"{type(exc).__name__}: {exc}")
        try:
            conn.send((ok, value, handler.records))
        except (EOFError, OSError, BrokenPipeError):
            return
