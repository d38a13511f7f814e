"""Writing a store: the direct zarr writer of ``liqgpu estimate`` (every file written by
:mod:`liqgpu.store.direct`, without zarr) and its write-behind thread.

A store is written into a temporary folder beside the target and moved into place only when
complete (:mod:`liqgpu.store.atomic`), so an interrupted or failed run never leaves a partial
store where the user asked for one (and an existing store is left untouched unless
``overwrite``). :class:`StoreWriter` creates every array once at its full shape, then writes
each engine chunk into its time region; compression runs on the write-behind thread
(:func:`write_behind`) while the engine computes the next chunk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputError
from .direct import consolidate, create_array, group_doc, put_doc
from .layout import CUBE_VARS, FORMAT_NAME, Layout, _Lazy, zarr_specs
from .resume import write_group

log = logging.getLogger(__name__)

def check_target(path: str | Path, *, overwrite: bool) -> Path:
    """Validate an output store path (or object-storage URL) before any work starts."""
    from .remote import check_remote_target, is_url

    if is_url(path):
        return check_remote_target(path, overwrite=overwrite)
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; pass --overwrite to replace it")
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a store folder; refusing to replace it")
    if path.exists() and overwrite and not is_store(path):
        raise InputError(f"{path}: exists and is not a liqgpu store; refusing to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"{path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: the folder {parent} is not writable")
    return path


def is_store(path: Path) -> bool:
    meta = Path(path) / "zarr.json"
    if not meta.exists():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get("format") == FORMAT_NAME


def _encode(data):
    """Data as zarr stores it (times: int64 milliseconds since the epoch)."""
    data = np.asarray(data)
    if data.dtype.kind == "M":
        ns = data.astype("datetime64[ns]").view(np.int64)
        return ns // 1_000_000
    return data


class Part:
    """Buckets ``[b0, b1)`` of the time-chunked variables (name -> array, time on axis 1) of
    the series from ``s0`` on (as many as the arrays' first axis holds)."""

    __slots__ = ("b0", "b1", "arrays", "s0", "spans")

    def __init__(self, b0: int, b1: int, arrays: dict, s0: int = 0, spans=None):
        self.b0, self.b1, self.arrays, self.s0 = int(b0), int(b1), arrays, int(s0)
        #: per series (of the arrays' first axis), the price bins [j0, j1) outside which the
        #: price-grid cubes are zero: their chunks there are known empty and not even read
        self.spans = spans


class Group:
    """A sub-group of plain arrays to write (see :func:`write_group`)."""

    __slots__ = ("name", "arrays", "attrs")

    def __init__(self, name: str, arrays: dict, attrs: dict):
        self.name, self.arrays, self.attrs = name, arrays, attrs


class StoreSummary:
    """What a run wrote, without reopening the store: sizes, attributes, variable names."""

    def __init__(self, path, layout: Layout):
        self.path = path
        self.sizes = {k: v for k, v in layout.sizes.items()}
        self.attrs = layout.attrs
        self.variables = list(layout.variables)

    def __contains__(self, name) -> bool:
        return name in self.variables


class StoreWriter:
    """Write a zarr store directly (:mod:`liqgpu.store.direct`, no zarr import) into a
    temporary folder, then move it into place.

    :meth:`start` gives the :class:`Layout` (every array's full shape, metadata and static
    data); the arrays are created by :meth:`prepare` or the first :meth:`write` (on the
    write-behind thread, so writing metadata overlaps the engine), and each :class:`Part` is written
    into its time region. Chunks split between parts (the small per-tier variables) are
    assembled in memory and written once. Use as a context manager; on an exception the
    temporary store is removed and the target is untouched.

    Examples
    --------
    >>> with StoreWriter("out.zarr", overwrite=False, tc=24, pc=512) as w:  # doctest: +SKIP
    ...     w.start(layout)
    ...     for part in parts:
    ...         w.write(part)
    ...     w.commit()
    """

    def __init__(self, path, *, overwrite: bool = False, tc: int = 24, pc: int = 512):
        from .remote import is_url
        from .atomic import store_lock, temp_path

        self._lock = contextlib.ExitStack()
        if not is_url(path):  # one writer per store, from the check to the commit
            self._lock.enter_context(store_lock(Path(path)))
        try:
            self.path = check_target(path, overwrite=overwrite)
        except BaseException:
            self._lock.close()
            raise
        self.overwrite = overwrite
        self.tmp = temp_path(self.path, "tmp")
        self.tc, self.pc = tc, pc
        self.layout: Layout | None = None
        self._encoders: dict | None = None  # array name -> ChunkEncoder, once created
        self._rows: dict = {}
        self.bytes_written = 0

    def __enter__(self) -> "StoreWriter":
        return self

    @property
    def attrs(self) -> dict:
        return self.layout.attrs

    def start(self, layout: Layout) -> None:
        self.layout = layout

    def _create(self) -> None:
        """Every array's ``zarr.json`` and the static arrays' data (coordinates, bars);
        the time-chunked ones are written chunk by chunk by :meth:`write`."""
        self._specs = zarr_specs(self.layout, self.tc, self.pc)
        put_doc(self.tmp, group_doc(self.layout.attrs))  # a zarr group from the start
        encoders = {}
        for k, spec in self._specs.items():
            # all-fill chunks are not stored (zarr's default): the price-grid arrays' fill is
            # 0, so the bins a series never reaches cost nothing
            data = self.layout[k].data
            encoders[k] = create_array(self.tmp / k, spec, None if isinstance(data, _Lazy)
                                       else _encode(data))
        self._encoders = encoders

    def prepare(self) -> None:
        """Create the store's folder and arrays, if not done yet: run on the write-behind
        thread before the first chunk arrives, so it overlaps the engine's first chunk."""
        if self._encoders is None:
            self._create()

    def write(self, part: "Part | Group") -> None:
        """Write buckets ``[part.b0, part.b1)`` of the variables in a :class:`Part`, or a
        :class:`Group` (the resume state)."""
        from .atomic import crash_point

        crash_point("estimate-writing")
        self.prepare()
        if isinstance(part, Group):
            write_group(self.tmp, part.name, part.arrays, part.attrs)
            return
        for k, data in part.arrays.items():
            # the engine's cubes: a series fills them only within its own price span
            self._put(k, part.b0, part.b1, data, part.s0, spans_of(part.spans, k))

    def _put(self, k: str, b0: int, b1: int, data, s0: int = 0, spans=None) -> None:
        c, n = self._specs[k]["chunks"][1], self._specs[k]["shape"][1]
        enc = self._encoders[k]
        for r in range(b0 // c, -(-b1 // c)):
            r0, r1 = r * c, min((r + 1) * c, n)
            lo, hi = max(b0, r0), min(b1, r1)
            piece = data[:, lo - b0:hi - b0]
            if lo == r0 and hi == r1:  # whole chunks: straight to the store
                enc.write_row(s0, r, piece, spans)
                continue
            buf = self._rows.get((k, r, s0))
            if buf is None:
                buf = self._rows[(k, r, s0)] = [np.empty((data.shape[0], r1 - r0)
                                                         + data.shape[2:], dtype=data.dtype), 0,
                                                spans]
            else:  # the row's pieces: the union of what each one wrote
                buf[2] = union_spans(buf[2], spans)
            buf[0][:, lo - r0:hi - r0] = piece
            buf[1] += hi - lo
            if buf[1] == r1 - r0:  # the chunk row is complete
                enc.write_row(s0, r, buf[0], buf[2])
                del self._rows[(k, r, s0)]

    def write_group(self, name: str, arrays: dict, attrs: dict) -> None:
        """Plain zarr arrays in a sub-group (the resume state of an updatable store)."""
        write_group(self.tmp, name, arrays, attrs)

    def commit(self) -> Path:
        """Finish the store (attributes, consolidated metadata, manifest) and move it into
        place atomically (:func:`liqgpu.store.atomic.commit`)."""
        from .atomic import commit

        try:
            if self._rows:
                raise RuntimeError(f"{self.path}: buckets missing from the store "
                                   f"({sorted({key[0] for key in self._rows})})")
            finish(self.tmp, self.layout.attrs if self.layout is not None else None)
            if self.path.exists() and not self.overwrite:
                raise InputError(f"{self.path}: already exists; pass --overwrite to replace it")
            commit(self.tmp, self.path)
        finally:
            self._lock.close()
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._lock.close()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        self._lock.close()


def spans_of(spans, k: str):
    """The price spans that hold for array ``k`` of a :class:`Part` (or an engine chunk):
    its own when ``spans`` is given per cube, the series' when it is one list for the cubes,
    else None (every chunk is looked at)."""
    if isinstance(spans, dict):
        return spans.get(k)
    return spans if k in CUBE_VARS else None


def union_spans(a, b):
    """Per series, the bins either of two span lists covers (None: every bin)."""
    if a is None or b is None:
        return None
    return [(min(x0, y0), max(x1, y1)) if x1 > x0 and y1 > y0 else
            ((x0, x1) if x1 > x0 else (y0, y1)) for (x0, x1), (y0, y1) in zip(a, b)]


def finish(root, attrs: dict | None = None) -> None:
    """Complete a store written under a temporary name: its attributes (updated with
    ``attrs``), the consolidated metadata and the manifest of its chunks
    (:mod:`liqgpu.store.integrity`). The root ``zarr.json`` is written once, without zarr
    (:func:`liqgpu.store.direct.consolidate`)."""
    from .integrity import MANIFEST_ATTR, MANIFEST_VERSION, write_manifest

    consolidate(root, {**(attrs or {}), MANIFEST_ATTR: MANIFEST_VERSION})
    write_manifest(root)


def write_behind(chunks: Iterable, write, depth: int = 1, prepare=None) -> None:
    """Write each chunk on a second thread while the next one is computed; ``prepare()``, if
    given, runs first on that thread (while the first chunk is computed).

    At most ``depth`` finished chunks wait in the queue, so memory stays bounded; compression
    (numcodecs releases the GIL) overlaps the engine. An error on either side stops both and is
    raised here; after an error (or Ctrl-C, SIGTERM) on the producer's side, chunks still queued
    are not written.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    failed: list[BaseException] = []
    done = object()
    stop = threading.Event()  # the producer failed (or was interrupted): write no more

    def writer():
        try:
            if prepare is not None:
                prepare()
            while True:
                item = q.get()
                if item is done:
                    return
                if not stop.is_set():
                    write(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failed.append(exc)
            while q.get() is not done:  # drain so the producer never blocks
                pass

    t = threading.Thread(target=writer, name="liqgpu-writer", daemon=True)
    t.start()
    try:
        for ds in chunks:
            if failed:
                break
            q.put(ds)
    except BaseException:
        stop.set()  # what is queued would be thrown away with the temporary store
        raise
    finally:
        q.put(done)
        t.join()
    if failed:
        raise failed[0]
