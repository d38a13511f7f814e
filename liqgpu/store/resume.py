"""The resume state of an updatable store: the ``resume`` group (live positions before the last
bucket, the last valid OI, every input bar) that ``liqgpu update`` continues from exactly.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from .layout import _quiet_zarr

#: the largest chunk of a packed array: a larger pack (a fleet's resume state and bars) is
#: written in chunks of this many bytes, a few at a time (:data:`PACK_CHUNKS_AT_ONCE`), so
#: writing it holds a few chunks; smaller packs stay one chunk (as they always were)
PACK_CHUNK_BYTES = 64 * 2**20
#: pack chunks assembled and written together (their compression spread over the cores)
PACK_CHUNKS_AT_ONCE = min(4, os.cpu_count() or 1)


class Pieces:
    """An array given by its shape, dtype and its flat (C-order) contents in consecutive
    pieces, made when written (``pieces()`` gives an iterator of 1-D arrays): what
    :func:`write_group` packs without holding the whole array."""

    __slots__ = ("shape", "dtype", "pieces")

    def __init__(self, shape, dtype, pieces):
        self.shape, self.dtype, self.pieces = tuple(int(n) for n in shape), np.dtype(dtype), pieces

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def materialize(self) -> np.ndarray:
        parts = [np.asarray(p, dtype=self.dtype).ravel() for p in self.pieces()]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)
        return flat.reshape(self.shape)


def _flat_pieces(v):
    """The flat contents of an array or :class:`Pieces`, in pieces."""
    if isinstance(v, Pieces):
        for p in v.pieces():
            yield np.asarray(p, dtype=v.dtype).ravel()
    else:
        yield np.asarray(v).ravel()


def pack_arrays(arrays: dict) -> tuple[list, dict]:
    """Named arrays packed one flat array per dtype: ``layout`` (name, dtype, shape, offset of
    each) and ``{dtype: flat array}`` (what :func:`write_group` stores as ``pack_<dtype>``)."""
    layout, parts = [], {}
    for k, v in arrays.items():
        v = np.asarray(v)
        same = parts.setdefault(v.dtype.str, [])
        layout.append([k, v.dtype.str, list(v.shape), int(sum(p.size for p in same))])
        same.append(v.ravel())
    return layout, {dt: (np.concatenate(p) if p else np.zeros(0, dtype=dt))
                    for dt, p in parts.items()}


def write_group(root, name: str, arrays: dict, attrs: dict) -> None:
    """Write (or replace) a sub-group holding named arrays and attributes.

    The arrays are packed, one flat zarr array per dtype (``pack_<dtype>``), with their names,
    shapes and offsets in the group's ``layout`` attribute: a store's resume state has a dozen
    small arrays, and one zarr array each cost more than the data. :func:`read_group` unpacks.
    Values may be :class:`Pieces` (made as they are written); a pack over
    ``PACK_CHUNK_BYTES`` is written a chunk at a time. Written without zarr
    (:mod:`liqgpu.store.direct`); a group there already is removed first (so none of its files,
    hard links in an update's clone, is written in place). The root's consolidated metadata is
    not updated: :func:`liqgpu.store.finish` does that.
    """
    import shutil
    from pathlib import Path

    from .direct import create_array, group_doc, put_doc

    layout, packs = [], {}
    for k, v in arrays.items():
        if not isinstance(v, Pieces):
            v = np.asarray(v)
        same = packs.setdefault(v.dtype.str, [])
        layout.append([k, v.dtype.str, list(v.shape), int(sum(_size(p) for p in same))])
        same.append(v)
    sub = Path(root) / name
    shutil.rmtree(sub, ignore_errors=True)
    for dt, vals in packs.items():
        dtype = np.dtype(dt)
        size = int(sum(_size(v) for v in vals))
        chunk = max(size, 1)
        if size * dtype.itemsize > PACK_CHUNK_BYTES:
            chunk = max(1, PACK_CHUNK_BYTES // dtype.itemsize)
        enc = create_array(sub / f"pack_{dtype.name}", {"shape": (size,), "dtype": dtype,
                                                         "chunks": (chunk,), "codecs": "blosc"})
        if size:
            _write_chunked(enc, vals, min(chunk, size), dtype)
    put_doc(sub, group_doc({**attrs, "layout": layout}))


def _size(v) -> int:
    return v.size if isinstance(v, Pieces) else int(np.asarray(v).size)


def _write_chunked(enc, vals: list, chunk: int, dtype) -> None:
    """Write the arrays ``vals`` one after another into the 1-D array of chunk encoder ``enc``
    (:class:`~liqgpu.store.direct.ChunkEncoder`), a chunk of ``chunk`` elements at a time,
    up to :data:`PACK_CHUNKS_AT_ONCE` chunks per write (compressed in parallel on the
    encoder's thread pool)."""
    per = max(1, PACK_CHUNKS_AT_ONCE if enc.pooled else 1)
    buf = np.empty(chunk * per, dtype=dtype)
    n = start = 0
    for v in vals:
        for piece in _flat_pieces(v):
            i = 0
            while i < piece.size:
                k = min(buf.size - n, piece.size - i)
                buf[n:n + k] = piece[i:i + k]
                n, i = n + k, i + k
                if n == buf.size:
                    enc.write_block(start, buf)
                    start, n = start + buf.size, 0
    if n:
        enc.write_block(start, buf[:n])


def read_group(root, name: str):
    """(arrays, attrs) of a sub-group written by :func:`write_group`, or None."""
    import zarr

    from .integrity import read_error

    with _quiet_zarr():
        g = zarr.open_group(str(root), mode="r")
        if name not in g:
            return None
        sub = g[name]
        attrs = dict(sub.attrs)
        layout = attrs.pop("layout", None)
        if layout is None:
            raise InputError(f"{root}: its {name!r} group was written by an older liqgpu; "
                             f"estimate the store again")
        packs = {}
        for dt in {d for _, d, _, _ in layout}:
            key = f"pack_{np.dtype(dt).name}"
            if key not in sub:
                raise InputError(f"{root}: array {name}/{key} is damaged (missing); estimate "
                                 f"the store again")
            try:
                packs[np.dtype(dt).str] = sub[key][...]
            except Exception as exc:  # noqa: BLE001 - a damaged chunk is one sentence
                err = read_error(exc)
                if err is None:
                    raise
                raise err from None
    out = {}
    for k, dt, shape, offset in layout:
        n = int(np.prod(shape, dtype=np.int64))
        out[k] = packs[np.dtype(dt).str][offset:offset + n].reshape(shape)
    return out, attrs


def resume_group(series: list, step: np.timedelta64, state: dict, resume_step: int, *,
                 stream: bool = False):
    """What `liqgpu update` needs to continue a run exactly: the live positions before step
    ``resume_step`` (the start of the last bucket), the last valid OI before it per series, and
    every input bar on the common time axis (to check overlaps and recompute the last bucket).

    ``stream``: the bars (and ``state`` values that are :class:`Pieces`) are left as
    :class:`Pieces`, made a series at a time while :func:`write_group` writes them, so a
    fleet's are never held at once; else every value is an array."""
    from ..model.inputs import align, last_valid_before
    from ..series import OPTIONAL, REQUIRED

    time, _ = align(series)
    T = time.size
    t0 = int(time[0].astype("datetime64[ns]").view(np.int64))
    step_ns = int(series[0].step / np.timedelta64(1, "ns"))
    cols = [c for c in REQUIRED + OPTIONAL if any(c in s.columns for s in series)]

    def row(i: int, c: str) -> np.ndarray:  # series i's column c on the common time axis
        a = np.full(T, np.nan)
        s = series[i]
        if c in s.columns:
            a[(s.time.view(np.int64) - t0) // step_ns] = s[c]
        return a

    arrays = {f"state_{k}": v for k, v in state.items()}
    arrays["bars_time"] = time.astype("datetime64[ns]").view(np.int64)
    for c in cols:
        arrays[f"bars_{c}"] = Pieces((len(series), T), np.float64,
                                     lambda c=c: (row(i, c) for i in range(len(series))))
    if not stream:
        arrays = {k: v.materialize() if isinstance(v, Pieces) else v for k, v in arrays.items()}
    oi_prev = []
    for i in range(len(series)):
        oi_prev.append(last_valid_before(row(i, "oi"), resume_step))
    attrs = {
        "resume_step": int(resume_step),
        "n_steps": int(T),
        "step_ns": int(step / np.timedelta64(1, "ns")),
        "oi_prev": [None if not np.isfinite(x) else x for x in oi_prev],
        "columns": [[c for c in cols if c in s.columns] for s in series],
    }
    return arrays, attrs
