"""Zarr v3 stores written without zarr: array and group metadata, chunks and consolidated
metadata, as zarr 3 itself writes them.

``liqgpu estimate`` writes every byte of its store through this module. zarr's own write path
cost a whole estimate process about a third of its wall time on a 2-core machine: importing
zarr (~0.25 s) and creating three dozen arrays through its event loop (~0.2 s) ran on the
write-behind thread, beside the engine, and every bit of that pure Python held the GIL the
engine's numpy calls waited for; the resume group and the consolidated metadata (zarr reads
every node back) came after the engine, on the critical path. What is written here is small and
fixed by the zarr v3 specification: a ``zarr.json`` per node (the fields in zarr's order,
``json.dumps`` with an indent of 2, as zarr does), chunk files (C-order little-endian bytes, a
compressor, a CRC32C checksum) and the root's consolidated metadata (every node's document,
ordered as zarr orders them). tests/store compare these files with zarr's (metadata and chunk
bytes, for every array of a store, against the store xarray's ``to_zarr`` writes) and read them
back with zarr. Stores are read, updated and published through zarr as before.

An array is described by a *spec* (:func:`liqgpu.store.layout.zarr_specs`): ``shape``,
``dtype`` (float, signed or unsigned integer, bool or fixed-length unicode), ``chunks``,
``codecs`` (a name of :data:`~liqgpu.store.layout.CODECS`), ``fill_value`` (None: zarr's default,
zero or the empty string), ``attributes`` and ``dimension_names`` (None: none).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import unicodedata
from pathlib import Path

import numpy as np

from .layout import CODECS, FLAT_KEYS

ZARR_JSON = "zarr.json"


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serializable")


def plain(value):
    """``value`` as JSON gives it back (tuples as lists, numpy scalars as Python numbers):
    what a reader of the metadata sees, and what the consolidated metadata repeats."""
    return json.loads(json.dumps(value, allow_nan=True, default=_json_default))


def data_type(dtype) -> "str | dict":
    """The zarr v3 ``data_type`` of a numpy dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind == "U":
        return {"name": "fixed_length_utf32", "configuration": {"length_bytes": dtype.itemsize}}
    if dtype.kind == "b":
        return "bool"
    if dtype.kind in "fiu":
        return dtype.newbyteorder("=").name
    raise TypeError(f"no zarr v3 data type written here for {dtype}")


def _fill(fill, dtype):
    """The fill value as stored in chunks (None: zarr's default, zero or the empty string)."""
    dtype = np.dtype(dtype)
    if fill is None:
        return "" if dtype.kind == "U" else dtype.type(0).item()
    return dtype.type(fill).item()


def _fill_json(fill, dtype):
    """The fill value as zarr v3 metadata spells it (NaN and infinities as strings)."""
    if isinstance(fill, float) and not np.isfinite(fill):
        return "NaN" if np.isnan(fill) else ("Infinity" if fill > 0 else "-Infinity")
    return fill


def codec_chain(spec: dict) -> list:
    """The array's codecs in its metadata: bytes (little-endian), then ``spec['codecs']``
    (Blosc's typesize set to the item size, as zarr sets it)."""
    dtype = np.dtype(spec["dtype"])
    chain = [{"name": "bytes", "configuration": {"endian": "little"}}
             if dtype.itemsize > 1 and dtype.kind != "b" else {"name": "bytes"}]
    for c in CODECS[spec["codecs"]]:
        c = plain(c)
        if c["name"] == "blosc":
            c["configuration"] = {"typesize": dtype.itemsize, **c["configuration"]}
        chain.append(c)
    return chain


def array_doc(spec: dict) -> dict:
    """The ``zarr.json`` of an array, as zarr 3 writes it."""
    dtype = np.dtype(spec["dtype"])
    doc = {
        "shape": [int(n) for n in spec["shape"]],
        "data_type": data_type(dtype),
        "chunk_grid": {"name": "regular",
                       "configuration": {"chunk_shape": [int(n) for n in spec["chunks"]]}},
        "chunk_key_encoding": {"name": FLAT_KEYS["name"],  # flat keys: c.0.1.2
                               "configuration": {"separator": FLAT_KEYS["separator"]}},
        "fill_value": _fill_json(_fill(spec.get("fill_value"), dtype), dtype),
        "codecs": codec_chain(spec),
        "attributes": plain(spec.get("attributes") or {}),
    }
    if spec.get("dimension_names") is not None:
        doc["dimension_names"] = list(spec["dimension_names"])
    doc.update({"zarr_format": 3, "node_type": "array", "storage_transformers": []})
    return doc


def group_doc(attrs: dict | None = None) -> dict:
    """The ``zarr.json`` of a group (no consolidated metadata), as zarr 3 writes it."""
    return {"attributes": plain(attrs or {}), "zarr_format": 3, "node_type": "group"}


def put_file(path: Path, data: bytes) -> None:
    """A new file at ``path``, never written in place: written beside it, then renamed over it
    (an update's clone of a store holds hard links to the store's own files)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def put_doc(folder, doc: dict) -> None:
    """Write a node's ``zarr.json`` (the folder made if missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    put_file(folder / ZARR_JSON, json.dumps(doc, allow_nan=True, indent=2).encode())


def create_array(folder, spec: dict, data=None) -> "ChunkEncoder":
    """Create an array (its ``zarr.json``) and, if ``data`` is given, write it whole; returns
    its chunk encoder."""
    put_doc(folder, array_doc(spec))
    enc = ChunkEncoder.for_spec(folder, spec)
    if data is not None:
        enc.write_all(np.asarray(data))
    return enc


def consolidate(root, attrs: dict | None = None) -> None:
    """Write the root ``zarr.json`` of the store at ``root``: its attributes updated with
    ``attrs`` (as zarr's ``update_attributes``) and the consolidated metadata of every node
    below it, what ``zarr.consolidate_metadata`` writes (each node's document, nested groups
    flattened to ``a/b`` keys, ordered by depth then name)."""
    root = Path(root)
    attrs = {**json.loads((root / ZARR_JSON).read_text()).get("attributes", {}), **(attrs or {})}
    nodes = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        if ZARR_JSON in files and dirpath != str(root):
            key = Path(dirpath).relative_to(root).as_posix()
            doc = json.loads((Path(dirpath) / ZARR_JSON).read_text())
            if doc.get("node_type") == "group":  # with an empty consolidated metadata of its own
                doc = {"attributes": doc.get("attributes", {}), "zarr_format": 3,
                       "consolidated_metadata": _empty_consolidated(), "node_type": "group"}
            nodes[key] = doc
    order = sorted(nodes, key=lambda k: (k.count("/"), unicodedata.normalize("NFKC", k)
                                         .casefold()))
    cm = _empty_consolidated()
    cm["metadata"] = {k: nodes[k] for k in order}
    put_doc(root, {"attributes": plain(attrs), "zarr_format": 3, "consolidated_metadata": cm,
                   "node_type": "group"})


def _empty_consolidated() -> dict:
    return {"kind": "inline", "must_understand": False, "metadata": {}}


_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def preload() -> None:
    """Import the codecs (numcodecs, about 40 ms of pure Python) on a background thread now,
    while the caller reads its input (pyarrow's C++ leaves the GIL free), rather than on the
    write-behind thread beside the engine's first chunk."""
    import threading

    def load():
        import google_crc32c  # noqa: F401
        import numcodecs  # noqa: F401

    threading.Thread(target=load, name="liqgpu-preload", daemon=True).start()


class ChunkEncoder:
    """Writes whole chunks of one zarr v3 array as zarr itself would, without zarr's
    asynchronous machinery: C-order little-endian bytes, the compressor (Blosc with typesize the
    item size, or Zstd), a CRC32C checksum appended, chunks padded with the fill value at the
    array's edge, chunks that are all fill value not written (``write_empty_chunks`` off), keys
    ``c.i.j...``. zarr handed every chunk between the writer thread, its event loop and its
    worker threads; on a 2-core machine running the engine beside it, those hand-offs waited on
    the GIL longer than the compression took. tests/store check the files are byte for byte
    zarr's, and zarr reads them back.
    """

    def __init__(self, folder: Path, shape, chunks, dtype, fill, codec):
        self.folder, self.shape, self.chunks = Path(folder), tuple(shape), tuple(chunks)
        self.dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 \
            else np.dtype(dtype)
        self.fill, self.codec = fill, codec
        #: encode a row's chunks on the process's thread pool; off where the caller's own
        #: threads are the parallelism (a Dask worker's tasks: one core each)
        self.pooled = True
        self._made = False  # the array's folder made
        self._fill_bound = None  # see _fill_size
        self._chunk_bytes = int(np.prod(self.chunks)) * self.dtype.itemsize

    @classmethod
    def for_spec(cls, folder: Path, spec: dict) -> "ChunkEncoder":
        """The encoder of the array described by ``spec``."""
        comp = CODECS[spec["codecs"]][0]
        dtype = np.dtype(spec["dtype"])
        data_type(dtype)  # a dtype written here, or TypeError
        conf = comp.get("configuration", {})
        if comp["name"] == "blosc":
            from numcodecs import Blosc

            codec = Blosc(cname=conf["cname"], clevel=int(conf["clevel"]),
                          shuffle=_SHUFFLE[conf["shuffle"]], blocksize=int(conf["blocksize"]),
                          typesize=dtype.itemsize)
        elif comp["name"] == "zstd":
            from numcodecs import Zstd

            codec = Zstd(level=int(conf["level"]), checksum=bool(conf["checksum"]))
        else:
            raise ValueError(f"{folder}: no direct encoder for the {comp['name']} codec")
        return cls(folder, spec["shape"], spec["chunks"], dtype,
                   _fill(spec.get("fill_value"), dtype), codec)

    @classmethod
    def for_array(cls, folder) -> "ChunkEncoder | None":
        """The encoder of the array already at ``folder`` (read from its ``zarr.json``), or
        None where its layout is not one written here (other codecs or data type, other chunk
        keys): zarr writes those itself."""
        folder = Path(folder)
        doc = json.loads((folder / ZARR_JSON).read_text())
        dt = doc.get("data_type")
        try:
            dtype = (np.dtype(f"<U{dt['configuration']['length_bytes'] // 4}")
                     if isinstance(dt, dict) and dt.get("name") == "fixed_length_utf32"
                     else np.dtype(dt))
        except (TypeError, KeyError):
            return None
        fill = doc.get("fill_value")
        spec = {"shape": doc["shape"], "dtype": dtype,
                "chunks": doc["chunk_grid"]["configuration"]["chunk_shape"],
                "fill_value": float(fill) if isinstance(fill, str) and dtype.kind == "f"
                else fill, "attributes": doc.get("attributes"),
                "dimension_names": doc.get("dimension_names")}
        for name in CODECS:
            if array_doc({**spec, "codecs": name}) == doc:
                return cls.for_spec(folder, {**spec, "codecs": name})
        return None

    def write_all(self, data: np.ndarray) -> None:
        """Write the whole array ``data`` (its full shape), chunk by chunk."""
        if tuple(data.shape) != self.shape:
            raise ValueError(f"{self.folder.name}: data of shape {data.shape}, "
                             f"array of shape {self.shape}")
        grid = [range(-(-n // c)) for n, c in zip(self.shape, self.chunks)]
        self._write(data, itertools.product(*grid), [0] * len(self.shape))

    def write_block(self, start: int, data: np.ndarray) -> None:
        """Write ``data``: the array's elements from ``start`` (a chunk edge) on along the
        first axis, whole along the others, in whole chunks or up to the array's end."""
        c0, n0, end = self.chunks[0], self.shape[0], start + data.shape[0]
        if start % c0 or (end % c0 and end != n0) or end > n0 \
                or tuple(data.shape[1:]) != self.shape[1:]:
            raise ValueError(f"{self.folder.name}: a block of shape {data.shape} at {start} is "
                             f"not whole chunks of an array of shape {self.shape}")
        grid = [range(start // c0, -(-end // c0))]
        grid += [range(-(-n // c)) for n, c in zip(self.shape[1:], self.chunks[1:])]
        self._write(data, itertools.product(*grid), [start] + [0] * (len(self.shape) - 1))

    def write_row(self, s0: int, r: int, data: np.ndarray, spans=None) -> None:
        """Write ``data`` (rows ``s0...`` of the first axis, the whole chunk row ``r`` of the
        second, every other axis whole) chunk by chunk. ``spans``: per row of ``data``, the
        range ``[j0, j1)`` of the third axis (price bins) outside which it is zero: chunks
        wholly outside are skipped unread (a fleet's series each fill a few of the shared
        grid's bins)."""
        cs, cshape = self.chunks, self.shape
        if s0 % cs[0]:
            raise ValueError(f"{self.folder.name}: series offset {s0} is not on a chunk edge")
        ranges = [range(s0 // cs[0], -(-(s0 + data.shape[0]) // cs[0])), [r]]
        ranges += [range(-(-n // c)) for n, c in zip(cshape[2:], cs[2:])]
        idxs = itertools.product(*ranges)
        if spans is not None and len(cs) > 2 and self.fill == 0:
            idxs = (idx for idx in idxs if self._in_spans(idx, s0, spans))
        self._write(data, idxs, [s0, r * cs[1]] + [0] * (len(cs) - 2))

    def _in_spans(self, idx, s0: int, spans) -> bool:
        """Whether chunk ``idx`` meets the price span of any of its series (else it is all
        zero: the fill value, not written)."""
        cs, cshape = self.chunks, self.shape
        rows = range(max(idx[0] * cs[0] - s0, 0), min(min((idx[0] + 1) * cs[0], cshape[0]) - s0,
                                                      len(spans)))
        j0 = min(spans[i][0] for i in rows)
        j1 = max(spans[i][1] for i in rows)
        return idx[2] * cs[2] < j1 and min((idx[2] + 1) * cs[2], cshape[2]) > j0

    def _write(self, data: np.ndarray, idxs, origin: list) -> None:
        """Encode and write chunks ``idxs`` of the array, ``data`` holding its elements from
        ``origin`` on (on the thread pool when there are several)."""
        cs, cshape = self.chunks, self.shape
        if not self._made:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made = True
        jobs = [(self.folder / ".".join(["c", *map(str, idx)]),
                 data[tuple(slice(i * c - o, min((i + 1) * c, n) - o)
                            for i, c, n, o in zip(idx, cs, cshape, origin))])
                for idx in idxs]
        if len(jobs) > 1 and self.pooled:
            list(_pool().map(self._encode_write, jobs))
        else:
            for job in jobs:
                self._encode_write(job)

    def _encode_write(self, job) -> None:
        """Encode one chunk and write its file, unless it is all fill value. A chunk that is
        not one contiguous piece of ``data`` is copied into this thread's buffer first (padded
        with the fill value at the array's edge). For chunks up to :data:`PROBE_BYTES`, the
        check for all-fill runs only on chunks that encode as small as an all-fill chunk:
        Blosc-lz4 packs a run of one value into a few bytes per block, so a chunk with any
        other value encodes larger, and the pass over its elements is saved."""
        path, block = job
        if block.shape == self.chunks and block.dtype == self.dtype \
                and block.flags.c_contiguous:
            buf = block
        else:
            buf = self._buffer()
            if block.shape != self.chunks:
                buf.fill(self.fill)
                buf[tuple(slice(0, n) for n in block.shape)] = block
            else:
                np.copyto(buf, block, casting="unsafe")
        if self._chunk_bytes <= PROBE_BYTES:
            body = encode_body(self.codec, buf)
            if len(body) <= self._fill_size() and self._all_fill(buf):
                return
        elif self._all_fill(buf):
            return
        else:
            body = encode_body(self.codec, buf)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, body, crc32c_bytes(body))
        finally:
            os.close(fd)

    def _buffer(self) -> np.ndarray:
        """A buffer for one chunk: this thread's for the array's chunk shape and dtype when
        the chunk is at most :data:`PROBE_BYTES` (reused, so its pages are touched once, not
        once per chunk; a few kept per thread), else a new one."""
        if self._chunk_bytes > PROBE_BYTES:
            return np.empty(self.chunks, dtype=self.dtype)
        bufs = _LOCAL.__dict__.setdefault("bufs", {})
        key = (self.chunks, self.dtype.str)
        buf = bufs.get(key)
        if buf is None:
            if len(bufs) >= 8:
                bufs.pop(next(iter(bufs)))
            buf = bufs[key] = np.empty(self.chunks, dtype=self.dtype)
        return buf

    def _fill_size(self) -> int:
        """An upper bound of the encoded size of an all-fill chunk: any chunk that encodes
        larger holds another value (with a margin: twice the fill chunk's size, for NaN of
        other payloads, which count as the fill)."""
        if self._fill_bound is None:
            self._fill_bound = 2 * len(encode_body(
                self.codec, np.full(self.chunks, self.fill, dtype=self.dtype))) + 64
        return self._fill_bound

    def _all_fill(self, buf: np.ndarray) -> bool:
        """Whether the chunk holds only the fill value, compared as zarr compares it: a zero
        fill bit for bit (a chunk of -0.0 is written), a NaN fill as any NaN, others by value."""
        if isinstance(self.fill, float) and np.isnan(self.fill):
            return bool(np.isnan(buf).all())
        if isinstance(self.fill, float) and self.fill == 0 and buf.dtype.kind == "f":
            return not bool(buf.view(f"u{buf.dtype.itemsize}").any())
        return not bool((buf != self.fill).any())


_LOCAL = threading.local()

#: chunks up to this many bytes are copied into a reused per-thread buffer and encoded before
#: the check for all-fill (which then runs only on those that encode small); larger ones (the
#: resume packs, dense) are checked first and, when contiguous in the data, not copied
PROBE_BYTES = 4 * 2**20


def _write_all(fd: int, *pieces: bytes) -> None:
    """Write ``pieces`` one after another to the file descriptor ``fd``, in one system call
    (``os.writev``, where the OS has it; what a short write leaves is written after)."""
    n = os.writev(fd, pieces) if hasattr(os, "writev") else 0
    total = sum(len(p) for p in pieces)
    if n < total:
        view = memoryview(b"".join(pieces))[n:]
        while view:
            view = view[os.write(fd, view):]


def encode_body(codec, block) -> bytes:
    """``block`` as C-order little-endian bytes (its dtype already so), compressed by the
    numcodecs ``codec`` (which releases the GIL: pool threads compress in parallel)."""
    raw = np.ascontiguousarray(block).view(np.uint8).reshape(-1)
    return bytes(codec.encode(raw))


def crc32c_bytes(body) -> bytes:
    """The CRC32C of ``body``, little-endian: the crc32c codec's four bytes at a chunk's end."""
    import google_crc32c

    return google_crc32c.value(body).to_bytes(4, "little")


def encode_chunk(codec, dtype, block) -> bytes:
    """A chunk file's bytes: ``block`` as C-order ``dtype`` (little-endian), compressed by
    the numcodecs ``codec``, then its CRC32C (little-endian), as zarr's bytes, compressor and
    crc32c codecs write it."""
    body = encode_body(codec, np.ascontiguousarray(block, dtype=dtype))
    return body + crc32c_bytes(body)


_POOL: list = []


def _pool():
    """The chunk encoders' thread pool (one per process, as many threads as cores, at most 8)."""
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                                        thread_name_prefix="liqgpu-encode"))
    return _POOL[0]
