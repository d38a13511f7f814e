"""``update`` for ``liqgpu live``: the same exact, atomic update of a store, with the fixed costs
of a one-minute update taken out.

:func:`liqgpu.updating.update` is written for a store it has never seen: it opens the store with
xarray, reads its resume group and writes each output chunk with ``Dataset.to_zarr`` (a region
write of the rewritten bucket, then an append). A live store gets one bucket a minute from the
same process, so :class:`WarmUpdater`

* keeps what it read or wrote last (the store's attributes, grid, model parameters, series and
  the resume state: every input bar and the live positions) and reads the store again only when
  another writer changed it (the inodes and mtimes of the store folder and of its two metadata
  files, checked under the lock);
* writes each array of the rewritten and new buckets once, with zarr directly (one resize and
  one region write per array, all arrays at once), instead of two ``to_zarr`` calls per chunk.

Everything else is :func:`liqgpu.updating.update`'s own code: the same checks, the same engine run
from the saved state, the same dataset (:func:`liqgpu.store.make_dataset`), the same resume group,
the same hard-linked clone swapped in under the store's lock. The store it leaves is the one
``update`` leaves (tests/test_live.py compares them array by array).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..store.direct import put_file as _put

log = logging.getLogger(__name__)

_MS_UNITS = "milliseconds since 1970-01-01"


def _key(path: Path) -> tuple:
    """What changes whenever any writer replaces the store, its metadata or its resume group
    (:func:`liqgpu.store.stamp`)."""
    from ..store.reader import stamp

    return stamp(path, "zarr.json", "resume/zarr.json")


class _Cache:
    """What an update needs of the store before it (read once, then carried forward)."""

    __slots__ = ("key", "attrs", "params", "grid", "names", "kinds", "sizes", "meta", "saved",
                 "ra", "time", "held", "dims", "units", "has_realized")


class WarmUpdater:
    """Apply new bars to ``store`` as :func:`liqgpu.updating.update` does, keeping warm between
    calls what an update reads.

    Parameters
    ----------
    store : path
        A local store written by :func:`liqgpu.estimate` (with its resume group).
    backend : {'auto', 'numpy', 'cupy'}
        Array backend of the engine.
    """

    def __init__(self, store, *, backend: str = "auto"):
        self.store = Path(store)
        self.backend = backend
        self._c: _Cache | None = None
        self._xp = None
        self.reloads = 0  # how often the store was read from scratch (tests, status)

    # -- public ----------------------------------------------------------------------------------
    def update(self, series, *, allow_outside: bool = False, realized=None, max_gap=None,
               defer_cleanup: bool = True) -> int | None:
        """Append ``series`` (new bars of every series of the store); returns the open time (ns)
        of the store's last bucket after the update, or None when there was nothing new."""
        from ..store.atomic import store_lock
        from ..updating import _check_store

        path = _check_store(self.store)
        _join_cleanups()  # the copy the last update replaced, deleted on a thread: gone now
        with store_lock(path):  # read (or check the cache), compute and swap as the only writer
            c = self._c if self._c is not None and self._c.key == _key(path) else None
            if c is None:
                c = self._load(path)
            try:
                last = self._update(path, c, series, allow_outside=allow_outside,
                                    realized=realized, max_gap=max_gap,
                                    defer_cleanup=defer_cleanup)
            except BaseException:
                self._c = None  # read again next time, whatever happened
                raise
            self._c = c
        return last

    # -- reading ---------------------------------------------------------------------------------
    def _load(self, path: Path) -> _Cache:
        import zarr

        from ..model.grid import Grid
        from ..model.registry import params_from_attrs
        from ..store import _quiet_zarr, open_store, read_group
        from ..updating import _check_resume

        ds = open_store(path, chunks=None)
        group = read_group(path, "resume")
        if group is None:
            raise InputError(f"{path}: has no resume state (written by an older liqgpu); "
                             f"estimate it again")
        saved, ra = group
        _check_resume(path, ds, saved, ra)
        c = _Cache()
        c.attrs = dict(ds.attrs)
        c.params = params_from_attrs(c.attrs)
        c.grid = Grid(ds["price_edges"].values, c.attrs["grid"])
        c.names = [str(x) for x in ds["series"].values]
        c.kinds = [str(x) for x in ds["kind"].values]
        c.sizes = [float(x) for x in ds["contract_size"].values]
        c.meta = {k: ds[k].values for k in ("exchange", "symbol", "kind", "contract_size")}
        c.saved, c.ra = saved, ra
        c.time = ds["time"].values.astype("datetime64[ns]")
        c.has_realized = "realized" in ds
        with _quiet_zarr():
            g = zarr.open_group(str(path), mode="r")
            c.held, c.dims, c.units = set(), {}, {}
            for name, arr in g.arrays():
                c.held.add(name)
                c.dims[name] = tuple(arr.metadata.dimension_names or ())
                c.units[name] = str(arr.attrs.get("units", ""))
        c.key = _key(path)
        self.reloads += 1
        return c

    # -- the update ------------------------------------------------------------------------------
    def _update(self, path: Path, c: _Cache, series, *, allow_outside, realized, max_gap,
                defer_cleanup) -> int | None:
        """:func:`liqgpu.updating._update` on the cached store (the same checks and numbers)."""
        from ..events import EventBinner, read_events, unknown_side_rule
        from ..store.atomic import commit, crash_point
        from ..store.resume import resume_group
        from ..updating import resumed_run

        saved, ra = c.saved, c.ra
        names, grid, params = c.names, c.grid, c.params
        if self._xp is None:
            from ..backend import resolve

            _, self._xp = resolve(self.backend)
        run = resumed_run(path, series, saved=saved, ra=ra, attrs=c.attrs, params=params,
                          grid=grid, names=names, kinds=c.kinds, sizes=c.sizes,
                          allow_outside=allow_outside, max_gap=max_gap, xp=self._xp)
        if run is None:
            return None
        (inputs, engine, cb, n_every, b_first, prices, btime, full, attrs, R, T, T_new) = (
            run.inputs, run.engine, run.cb, run.n_every, run.b_first, run.prices, run.btime,
            run.full, run.attrs, run.R, run.T, run.T_new)
        binner = None
        if realized is not None and c.has_realized:
            events = read_events(realized, names, unknown_side_rule(c.attrs))  # the store's rule
            if events is not None:
                binner = EventBinner(events, names, btime, inputs.step * n_every, grid.edges)
        old_realized = None
        if binner is None and c.has_realized:  # kept where it was binned (as update does)
            old_realized = _read_bucket(path, "realized", b_first)

        state = {}
        last = engine.n_buckets - 1

        def capture(eng):
            state["arrays"] = eng.state_arrays()

        clone, committed = None, False
        try:
            clone = _clone(path)  # (removes itself when interrupted part-way)
            crash_point("update-cloned")
            for lo, hi, chunk in _merged(engine.run(cb, on_bucket=(last, capture)), cb):
                values = _bucket_arrays(c, chunk, lo, hi, btime, prices, attrs, binner,
                                        old_realized)
                if values is None:  # a store this module does not know: as update builds it
                    values = _dataset_arrays(c, chunk, lo, hi, btime, prices, attrs, binner,
                                             old_realized)
                if not _write_chunks(clone, values, b_first + lo, hi - lo, c):
                    _write_region(clone, values, b_first + lo, hi - lo, c)  # through zarr
            st = state["arrays"]
            st["birth"] = st["birth"] + R  # back to the store's global steps
            arrays, rattrs = resume_group(full, inputs.step, st, last * n_every + R)
            _write_resume(clone, arrays, rattrs)
            _finish(clone, attrs)  # attributes, consolidated metadata, manifest
            new_attrs = json.loads((clone / "zarr.json").read_text()).get("attributes", {})
            commit(clone, path, defer_cleanup=defer_cleanup)
            committed = True
        finally:
            if not committed and clone is not None:
                shutil.rmtree(clone, ignore_errors=True)
        # carried forward: what the next update would read back from the store
        c.saved = arrays
        c.ra = dict(json.loads(json.dumps(rattrs, default=_json_default)))
        c.attrs = new_attrs
        c.time = np.concatenate([c.time[:b_first], btime.astype("datetime64[ns]")])
        c.key = _key(path)
        log.info("%s: %d new bars, buckets %d.. rewritten/appended", path, T_new - T, b_first)
        return int(c.time[-1].view(np.int64))


def _finish(root: Path, attrs: dict) -> None:
    """:func:`liqgpu.store.finish`: the store's attributes, its consolidated metadata and its
    manifest. The root ``zarr.json`` is written once, with the attributes updated and each
    node's consolidated entry taken from the node's own ``zarr.json`` again (what
    ``zarr.consolidate_metadata`` writes, without reading the hierarchy through zarr; store.finish
    also rewrites the root once per attribute, 28 times). A hierarchy whose nodes changed goes
    through zarr."""
    from ..store.integrity import MANIFEST_ATTR, MANIFEST_VERSION, write_manifest

    attrs = {**attrs, MANIFEST_ATTR: MANIFEST_VERSION}
    if not _consolidate(root, attrs):
        import zarr

        from ..store import _quiet_zarr

        with _quiet_zarr():
            zarr.open_group(str(root), mode="r+").update_attributes(attrs)
            zarr.consolidate_metadata(str(root), zarr_format=3)
    write_manifest(root)


def _consolidate(root: Path, attrs: dict) -> bool:
    doc = json.loads((root / "zarr.json").read_text())
    cm = doc.get("consolidated_metadata")
    entries = cm.get("metadata") if isinstance(cm, dict) else None
    if not isinstance(entries, dict) or not entries:
        return False
    nodes = {p.parent.relative_to(root).as_posix() for p in root.glob("*/zarr.json")}
    nodes |= {p.parent.relative_to(root).as_posix() for p in root.glob("*/*/zarr.json")}
    if nodes != set(entries) or any(k.count("/") > 1 for k in entries):
        return False
    for k, old in entries.items():
        new = json.loads((root / k / "zarr.json").read_text())
        merged = {f: new.get(f, old[f]) for f in old}
        merged.update({f: v for f, v in new.items() if f not in old})
        entries[k] = merged
    doc["attributes"].update(json.loads(json.dumps(attrs, default=_json_default)))
    _put(root / "zarr.json", json.dumps(doc, indent=2, allow_nan=True).encode())
    return True


def _clone(path: Path) -> Path:
    """:func:`liqgpu.updating._clone` (a copy of the store whose files are hard links to the
    original's, at a fresh ``.NAME.upd-*``) through ``os.scandir``: about half the CPU of
    walking with pathlib, on the ~1000 files a day-old 1-minute store holds."""
    from ..store.atomic import temp_path

    dst = temp_path(path, "upd")

    def walk(src: str, to: str) -> None:
        os.mkdir(to)
        with os.scandir(src) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, os.path.join(to, e.name))
                else:
                    os.link(e.path, os.path.join(to, e.name))

    try:
        walk(str(path), str(dst))
    except BaseException:  # a signal or an error mid-way: no half clone left beside the store
        shutil.rmtree(dst, ignore_errors=True)
        raise
    return dst


def _join_cleanups() -> None:
    """Wait for the threads that delete replaced copies (``commit(defer_cleanup=True)``): the
    next writer's lock would otherwise find the copy half deleted and delete it too."""
    import threading

    for t in threading.enumerate():
        if t.name == "liqgpu-cleanup" and t is not threading.current_thread():
            t.join()


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)


def _merged(chunks, limit: int):
    """The engine's chunks, consecutive ones joined while they hold at most ``limit`` buckets
    together (the cut at the last bucket, for the resume state, splits a one-minute update in
    two; one write per array instead of two): ``(b0, b1, ChunkResult)``."""
    from ..model.engine import CHUNK_FIELDS, ChunkResult

    held = []

    def join():
        if len(held) == 1:
            ch = held[0]
        else:
            ch = ChunkResult(b0=held[0].b0, b1=held[-1].b1, **{
                f: np.concatenate([getattr(h, f) for h in held], axis=1)
                for f in CHUNK_FIELDS if getattr(held[0], f) is not None})
        held.clear()
        return ch.b0, ch.b1, ch

    for ch in chunks:
        if held and ch.b1 - held[0].b0 > limit:
            yield join()
        held.append(ch)
    if held:
        yield join()


def _read_bucket(path: Path, name: str, b: int):
    import zarr

    from ..store import _quiet_zarr

    with _quiet_zarr():
        arr = zarr.open_array(str(path / name), mode="r")
        return np.asarray(arr[:, b])


def _encode(name: str, values: np.ndarray, dtype, units: str) -> np.ndarray:
    """A variable's values as the store holds them (times: int64 milliseconds, as xarray encodes
    them with the store's ``units``)."""
    if np.issubdtype(values.dtype, np.datetime64):
        if units != _MS_UNITS:
            raise InputError(f"{name}: time units {units!r}; expected {_MS_UNITS!r}")
        ns = values.astype("datetime64[ns]").view(np.int64)
        if (ns % 1_000_000).any():
            raise InputError(f"{name}: times not whole milliseconds")
        return (ns // 1_000_000).astype(dtype, copy=False)
    return np.asarray(values).astype(dtype, copy=False)


def _realized_cube(c: _Cache, b0, b1, btime, binner, old_realized):
    """The realized events of buckets [b0, b1), float32 (what update's ``EventBinner`` adds
    to a chunk; without events, the first rewritten bucket keeps what was binned there)."""
    if binner is not None:
        from ..events import bin_realized

        lo = btime[b0].astype("datetime64[ns]").view(np.int64)
        hi = (btime[b1 - 1] + binner.every).astype("datetime64[ns]").view(np.int64)
        i0 = 0 if b0 == 0 else int(np.searchsorted(binner.t, lo, side="left"))
        i1 = binner.t.size if b1 == btime.size else int(np.searchsorted(binner.t, hi,
                                                                          side="left"))
        cube = bin_realized(binner.ev.iloc[i0:i1], series_names=c.names, time=btime[b0:b1],
                            every=binner.every, edges=c.grid.edges, log_left_out=False)
        return cube.astype(np.float32)
    if old_realized is not None:
        r = np.zeros((len(c.names), b1 - b0, c.grid.n_bins, 2), np.float32)
        if b0 == 0:
            r[:, 0] = old_realized
        return r
    return None


#: the dims of what an update writes, as make_dataset lays them out
_DIMS = {"cube": ("series", "time", "price", "leverage", "side"),
         "tier": ("series", "time", "leverage", "side"), "bar": ("series", "time"),
         "time": ("time",), "realized": ("series", "time", "price", "side")}


def _bucket_arrays(c: _Cache, chunk, b0, b1, btime, prices, attrs, binner, old_realized):
    """Buckets [b0, b1) of every array with a time dim that the store holds, straight from the
    engine's chunk (the values :func:`liqgpu.store.make_dataset` puts in a dataset, without
    building one); None when the store holds an array this does not know."""
    from .._time import parse_duration
    from ..store import CUBE_VARS, PRICE_VARS, TIER_VARS, V2_TIER_VARS

    out, dims = {}, {}
    for v in CUBE_VARS:
        out[v], dims[v] = getattr(chunk, v), _DIMS["cube"]
    for v in TIER_VARS + V2_TIER_VARS:
        if getattr(chunk, v, None) is not None:
            out[v], dims[v] = getattr(chunk, v), _DIMS["tier"]
    for v in PRICE_VARS:
        out[v] = out[f"bar_{v}"] = prices[v][:, b0:b1]
        dims[v] = dims[f"bar_{v}"] = _DIMS["bar"]
    t = btime[b0:b1]
    out["time"], dims["time"] = t, _DIMS["time"]
    if "every" in attrs:
        from ..store.layout import snapshot_times

        every = parse_duration(attrs["every"])
        out["snapshot_time"] = snapshot_times(t, int(every.total_seconds() * 1e9), attrs)
        dims["snapshot_time"] = _DIMS["time"]
    r = _realized_cube(c, b0, b1, btime, binner, old_realized)
    if r is not None:
        out["realized"], dims["realized"] = r, _DIMS["realized"]
    timed = {n for n in c.held if "time" in c.dims[n]}
    if not timed <= set(out) or any(c.dims[n] != dims[n] for n in timed):
        return None
    return {n: out[n] for n in timed}


def _dataset_arrays(c: _Cache, chunk, b0, b1, btime, prices, attrs, binner, old_realized):
    """The same through :func:`liqgpu.store.make_dataset`, as update builds its chunks."""
    from ..store import make_dataset

    part = make_dataset(chunk, names=c.names, time=btime, grid=c.grid, params=c.params,
                        prices=prices, b0=b0, attrs=attrs, series_meta=c.meta)
    r = _realized_cube(c, b0, b1, btime, binner, old_realized)
    if r is not None:
        part["realized"] = (("series", "time", "price", "side"), r)
    out = {}
    for name, var in part.variables.items():
        if name not in c.held or "time" not in var.dims:
            continue
        if tuple(var.dims) != c.dims[name]:
            raise InputError(f"{name}: the store has dims {c.dims[name]}, the update {var.dims}")
        out[name] = var.values
    return out


def _write_region(root: Path, values: dict, b0: int, nb: int, c: _Cache) -> None:
    """Write ``values`` (array name: buckets ``b0..b0+nb``) into the store at ``root``, growing
    its arrays first: what ``to_zarr`` with a region and then ``append_dim`` writes, one resize
    and one write per array, all arrays at once."""
    from zarr.api.asynchronous import open_array
    from zarr.core.sync import sync

    from ..store import _quiet_zarr

    async def one(name, data):
        arr = await open_array(store=str(root / name), mode="r+", zarr_format=3)
        data = _encode(name, data, arr.dtype, c.units[name])
        ax = c.dims[name].index("time")
        if data.shape[ax] != nb:
            raise InputError(f"{name}: {data.shape[ax]} buckets, {nb} expected")
        shape = list(arr.shape)
        if shape[ax] < b0 + nb:
            shape[ax] = b0 + nb
            await arr.resize(tuple(shape))
        sel = tuple(slice(b0, b0 + nb) if i == ax else slice(None) for i in range(arr.ndim))
        await arr.setitem(sel, data)

    async def all_():
        await asyncio.gather(*[one(n, v) for n, v in values.items()])

    with _quiet_zarr():
        sync(all_())


class _Layout:
    """One array's zarr v3 metadata, for the layouts liqgpu writes (regular chunks, flat
    ``c.i.j`` keys, little-endian bytes, then blosc or zstd, then crc32c), or None."""

    def __init__(self, path: Path):
        self.path = path
        self.meta = json.loads((path / "zarr.json").read_text())
        m = self.meta
        codecs = m.get("codecs", [])
        names = [x.get("name") for x in codecs]
        if (m.get("node_type") != "array" or m.get("storage_transformers")
                or m.get("chunk_grid", {}).get("name") != "regular"
                or m.get("chunk_key_encoding") != {"name": "default",
                                                   "configuration": {"separator": "."}}
                or len(names) != 3 or names[0] != "bytes" or names[2] != "crc32c"
                or codecs[0].get("configuration", {}).get("endian") != "little"
                or names[1] not in ("blosc", "zstd")
                or m.get("data_type") not in ("float32", "float64", "int64")):
            raise LookupError(str(path))
        from numcodecs import Blosc, Zstd

        cfg = dict(codecs[1].get("configuration", {}))
        if names[1] == "blosc":
            cfg["shuffle"] = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[cfg["shuffle"]]
            self.codec = Blosc.from_config(cfg)
        else:
            self.codec = Zstd.from_config(cfg)
        self.dtype = np.dtype(m["data_type"]).newbyteorder("<")
        self.chunks = tuple(m["chunk_grid"]["configuration"]["chunk_shape"])
        fill = m.get("fill_value")
        self.fill = np.nan if fill == "NaN" else fill
        if isinstance(self.fill, str):  # Infinity, -Infinity, hex: not written by liqgpu
            raise LookupError(str(path))

    def decode(self, data: bytes, where: Path) -> np.ndarray:
        import google_crc32c

        body, crc = data[:-4], data[-4:]
        if np.array([google_crc32c.value(body)], dtype=np.uint32).tobytes() != crc:
            raise InputError(f"{where}: checksum mismatch; the store is damaged (estimate it "
                             f"again)")
        raw = self.codec.decode(body)
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.chunks).copy()

    def encode(self, chunk: np.ndarray) -> bytes:
        from ..store.direct import encode_chunk

        return encode_chunk(self.codec, self.dtype, chunk)

    def empty(self, chunk: np.ndarray) -> bool:
        """All fill value (zarr, with write_empty_chunks off, then stores no chunk)."""
        return bool(np.array_equal(chunk, np.full_like(chunk, self.fill),
                                   equal_nan=chunk.dtype.kind == "f"))



def _write_chunks(root: Path, values: dict, b0: int, nb: int, c: _Cache) -> bool:
    """What :func:`_write_region` writes, without zarr's machinery: each array's zarr.json
    (grown), then each chunk the buckets fall in, read, changed and written again, with the
    codecs and checksum the array names (the files zarr would write, byte for byte). False,
    before anything is written, when an array's layout is not one liqgpu writes."""
    try:
        layouts = {n: _Layout(root / n) for n in values}
    except (LookupError, KeyError, ValueError, OSError, TypeError):
        return False
    for name, data in values.items():
        lay = layouts[name]
        meta = lay.meta
        ax = c.dims[name].index("time")
        data = _encode(name, data, lay.dtype, c.units[name])
        shape = list(meta["shape"])
        if data.shape[ax] != nb or len(shape) != data.ndim or any(
                data.shape[i] != shape[i] for i in range(len(shape)) if i != ax):
            raise InputError(f"{name}: {data.shape} does not fit the store's {tuple(shape)}")
        if shape[ax] < b0 + nb:
            shape[ax] = b0 + nb
            meta["shape"] = shape
            _put(lay.path / "zarr.json", json.dumps(meta, indent=2, allow_nan=True).encode())
        lo = [0] * len(shape)
        hi = list(shape)
        lo[ax], hi[ax] = b0, b0 + nb
        ranges = [range(lo[i] // lay.chunks[i], (hi[i] - 1) // lay.chunks[i] + 1)
                  for i in range(len(shape))]
        for idx in np.ndindex(*[len(r) for r in ranges]):
            key = tuple(r[j] for r, j in zip(ranges, idx))
            origin = [k * n for k, n in zip(key, lay.chunks)]
            inner = tuple(slice(max(lo[i], origin[i]) - origin[i],
                                min(hi[i], origin[i] + lay.chunks[i]) - origin[i])
                          for i in range(len(shape)))
            outer = tuple(slice(max(lo[i], origin[i]) - lo[i],
                                min(hi[i], origin[i] + lay.chunks[i]) - lo[i])
                          for i in range(len(shape)))
            f = lay.path / ("c." + ".".join(str(k) for k in key))
            try:
                chunk = lay.decode(f.read_bytes(), f)
            except FileNotFoundError:
                chunk = np.full(lay.chunks, lay.fill, dtype=lay.dtype)
            chunk[inner] = data[outer]
            if lay.empty(chunk):
                f.unlink(missing_ok=True)
            else:
                _put(f, lay.encode(chunk))
    return True


def _write_resume(root: Path, arrays: dict, attrs: dict) -> None:
    """:func:`liqgpu.store.write_group` (``resume``) in a store's clone: the group's files are
    links to the original's, so it is removed and written again at its path, attributes in one
    go and the packed arrays at once (write_group opens the whole store, deletes through zarr
    and writes the attributes key by key)."""
    from zarr.api.asynchronous import create_array, open_group
    from zarr.core.sync import sync

    from ..store import FLAT_KEYS, _quiet_zarr, compressors
    from ..store.resume import pack_arrays

    layout, packs = pack_arrays(arrays)
    sub = root / "resume"
    shutil.rmtree(sub, ignore_errors=True)

    async def write():
        await open_group(store=str(sub), mode="w-", zarr_format=3,
                         attributes={**attrs, "layout": layout})

        async def one(dt, flat):
            a = await create_array(store=str(sub), name=f"pack_{np.dtype(dt).name}",
                                   shape=flat.shape, dtype=flat.dtype,
                                   chunks=(max(flat.size, 1),), compressors=compressors(),
                                   chunk_key_encoding=FLAT_KEYS, zarr_format=3)
            if flat.size:
                await a.setitem(Ellipsis, flat)

        await asyncio.gather(*[one(dt, flat) for dt, flat in packs.items()])

    with _quiet_zarr():
        sync(write())
