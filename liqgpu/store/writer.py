"""Writing a store: the direct zarr writer of ``liqgpu estimate`` and its write-behind thread.

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
from .layout import (CUBE_VARS, FLAT_KEYS, FORMAT_NAME, Layout, _Lazy, _quiet_zarr,
                     zarr_specs)
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
    """Write a store with zarr directly into a temporary folder, then move it into place.

    :meth:`start` gives the :class:`Layout` (every array's full shape, metadata and static
    data); the arrays are created by the first :meth:`write` (on the write-behind thread, so
    importing zarr and writing metadata overlap the engine), and each :class:`Part` is written
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
        self._arrays = None
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
        import zarr

        self._specs = zarr_specs(self.layout, self.tc, self.pc)
        root = zarr.create_group(str(self.tmp), zarr_format=3, attributes=self.layout.attrs)
        arrays = {}
        for k, spec in self._specs.items():
            # all-fill chunks are not stored (zarr's default, said here for every array):
            # the price-grid arrays' fill is 0, so the bins a series never reaches cost nothing
            a = root.create_array(k, chunk_key_encoding=FLAT_KEYS,
                                  config={"write_empty_chunks": False}, **spec)
            data = self.layout[k].data
            if not isinstance(data, _Lazy):
                a[...] = _encode(data)
            arrays[k] = a
        self._arrays = arrays

    def prepare(self) -> None:
        """Import zarr and create the store's arrays (empty), if not done yet: run on the
        write-behind thread before the first chunk arrives, it overlaps the engine's first
        chunk instead of following it (zarr's import alone is about 0.25 s)."""
        with _quiet_zarr():
            if self._arrays is None:
                self._create()

    def write(self, part: "Part | Group") -> None:
        """Write buckets ``[part.b0, part.b1)`` of the variables in a :class:`Part`, or a
        :class:`Group` (the resume state)."""
        from .atomic import crash_point

        crash_point("estimate-writing")
        with _quiet_zarr():
            if self._arrays is None:
                self._create()
            if isinstance(part, Group):
                write_group(self.tmp, part.name, part.arrays, part.attrs)
                return
            for k, data in part.arrays.items():
                # the engine's cubes: a series fills them only within its own price span
                spans = part.spans if k in CUBE_VARS else None
                self._put(k, part.b0, part.b1, data, part.s0, spans)

    def _put(self, k: str, b0: int, b1: int, data, s0: int = 0, spans=None) -> None:
        a = self._arrays[k]
        c, n = self._specs[k]["chunks"][1], self._specs[k]["shape"][1]
        rows = slice(s0, s0 + data.shape[0])  # one series a chunk: groups never share one
        direct = self._direct(k)
        for r in range(b0 // c, -(-b1 // c)):
            r0, r1 = r * c, min((r + 1) * c, n)
            lo, hi = max(b0, r0), min(b1, r1)
            piece = data[:, lo - b0:hi - b0]
            if lo == r0 and hi == r1:  # whole chunks: straight to the store
                if direct is not None:
                    direct.write_row(s0, r, piece, spans)
                else:
                    a[rows, lo:hi] = piece
                continue
            buf = self._rows.get((k, r, s0))
            if buf is None:
                buf = self._rows[(k, r, s0)] = [np.empty((data.shape[0], r1 - r0)
                                                         + data.shape[2:], dtype=data.dtype), 0]
            buf[0][:, lo - r0:hi - r0] = piece
            buf[1] += hi - lo
            if buf[1] == r1 - r0:  # the chunk row is complete
                if direct is not None:
                    direct.write_row(s0, r, buf[0], spans)
                else:
                    a[rows, r0:r1] = buf[0]
                del self._rows[(k, r, s0)]

    def _direct(self, k: str) -> "ChunkEncoder | None":
        """The direct chunk encoder of array ``k`` (None where zarr writes it itself)."""
        cache = self.__dict__.setdefault("_encoders", {})
        if k not in cache:
            spec = self._specs[k]
            cache[k] = ChunkEncoder.for_spec(self.tmp / k, spec)
        return cache[k]

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


class ChunkEncoder:
    """Writes whole chunks of one zarr v3 array as zarr itself would, without zarr's
    asynchronous machinery: C-order little-endian bytes, Blosc (the array's settings, typesize
    the item size), a CRC32C checksum appended, chunks padded with the fill value at the array's
    edge, chunks that are all fill value not written (``write_empty_chunks`` off), keys
    ``c.i.j...``. zarr handed every chunk between the writer thread, its event loop and its
    worker threads; on a 2-core machine running the engine beside it, those hand-offs waited on
    the GIL longer than the compression took. tests/store check the files are byte for byte
    zarr's, and zarr reads them back.
    """

    def __init__(self, folder: Path, shape, chunks, dtype, fill, blosc, typesize: int):
        self.folder, self.shape, self.chunks = Path(folder), tuple(shape), tuple(chunks)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.fill, self.blosc, self.typesize = fill, blosc, typesize

    @classmethod
    def for_spec(cls, folder: Path, spec: dict) -> "ChunkEncoder | None":
        """An encoder for arrays whose codecs are Blosc then CRC32C (liqgpu's default), else
        None (zarr writes those)."""
        from numcodecs import Blosc
        from zarr.codecs import BloscCodec, Crc32cCodec

        comp = tuple(spec.get("compressors") or ())
        if (len(comp) != 2 or not isinstance(comp[0], BloscCodec)
                or not isinstance(comp[1], Crc32cCodec) or len(spec["chunks"]) < 2):
            return None
        b = comp[0]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind not in "fiub":
            return None
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[str(getattr(b.shuffle, "name",
                                                                              b.shuffle))]
        typesize = dtype.itemsize
        codec = Blosc(cname=str(getattr(b.cname, "name", b.cname)), clevel=int(b.clevel),
                      shuffle=shuffle, blocksize=int(b.blocksize), typesize=typesize)
        fill = spec.get("fill_value")
        return cls(folder, spec["shape"], spec["chunks"], dtype, 0 if fill is None else fill,
                   codec, typesize)

    def write_row(self, s0: int, r: int, data: np.ndarray, spans=None) -> None:
        """Write ``data`` (rows ``s0...`` of the first axis, the whole chunk row ``r`` of the
        second, every other axis whole) chunk by chunk. ``spans``: per row of ``data``, the
        range ``[j0, j1)`` of the third axis (price bins) outside which it is zero: chunks
        wholly outside are skipped unread (a fleet's series each fill a few of the shared
        grid's bins)."""
        import itertools

        cs, cshape = self.chunks, self.shape
        if s0 % cs[0]:
            raise ValueError(f"{self.folder.name}: series offset {s0} is not on a chunk edge")
        ranges = [range(s0 // cs[0], -(-(s0 + data.shape[0]) // cs[0])), [r]]
        ranges += [range(-(-n // c)) for n, c in zip(cshape[2:], cs[2:])]
        self.folder.mkdir(parents=True, exist_ok=True)
        nan_fill = isinstance(self.fill, float) and np.isnan(self.fill)
        jobs = []
        for idx in itertools.product(*ranges):
            l0, l1 = idx[0] * cs[0] - s0, min((idx[0] + 1) * cs[0], cshape[0]) - s0
            if spans is not None and len(cs) > 2 and self.fill == 0:
                j0 = min(spans[i][0] for i in range(max(l0, 0), min(l1, len(spans))))
                j1 = max(spans[i][1] for i in range(max(l0, 0), min(l1, len(spans))))
                if idx[2] * cs[2] >= j1 or min((idx[2] + 1) * cs[2], cshape[2]) <= j0:
                    continue  # all zero: the fill value, not written
            sl = [slice(l0, l1), slice(None)]
            sl += [slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx[2:], cs[2:],
                                                                           cshape[2:])]
            block = data[tuple(sl)]
            if nan_fill:
                empty = bool(np.isnan(block).all())
            else:
                empty = not bool((block != self.fill).any())
            path = self.folder / ("c." + ".".join(map(str, idx)))
            if empty:
                continue
            if block.shape != cs:  # an edge chunk: padded with the fill value
                full = np.full(cs, self.fill, dtype=self.dtype)
                full[tuple(slice(0, n) for n in block.shape)] = block
                block = full
            jobs.append((path, block))
        if len(jobs) > 1:
            list(_pool().map(self._encode_write, jobs))
        elif jobs:
            self._encode_write(jobs[0])

    def _encode_write(self, job) -> None:
        import google_crc32c

        path, block = job
        raw = np.ascontiguousarray(block, dtype=self.dtype).view(np.uint8).reshape(-1)
        enc = self.blosc.encode(raw)  # releases the GIL: the pool's threads compress in parallel
        crc = google_crc32c.value(enc).to_bytes(4, "little")
        with open(path, "wb") as fh:
            fh.write(enc)
            fh.write(crc)


_POOL: list = []


def _pool():
    """The chunk encoders' thread pool (one per process, as many threads as cores, at most 8)."""
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                                        thread_name_prefix="liqgpu-encode"))
    return _POOL[0]


def finish(root, attrs: dict | None = None) -> None:
    """Complete a store written under a temporary name: its attributes, the consolidated
    metadata and the manifest of its chunks (:mod:`liqgpu.store.integrity`)."""
    import zarr

    from .integrity import write_manifest

    with _quiet_zarr():
        if attrs:  # the last chunk's attrs are the complete ones
            zarr.open_group(str(root), mode="r+").update_attributes(attrs)  # one write
        zarr.consolidate_metadata(str(root), zarr_format=3)
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
