"""Telling a damaged store from a quiet market: chunk checksums, a manifest, and read errors as
one sentence.

* Every array liqgpu writes ends its codec chain with ``crc32c``: a chunk whose bytes changed
  (garbage, a torn write) fails its checksum before it reaches the decompressor.
* Every commit writes ``liqgpu_manifest.json`` in the store: each chunk file written and its
  size. zarr reads a missing chunk as the fill value (zeros, or 1970 for times), so without the
  manifest a deleted chunk or array is indistinguishable from data. :func:`check_manifest` (run
  by every local :func:`~liqgpu.store.open_store`) compares the files to it (existence and size,
  no decoding); :func:`verify` (``liqgpu info --verify``) also decodes every chunk.
* :func:`read_error` turns an exception raised while decoding a store (checksum, blosc, a
  truncated chunk) into one :class:`StoreDamaged` sentence naming the store and the array.

Stores written before the manifest (no ``liqgpu_manifest.json``) are read as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError

MANIFEST = "liqgpu_manifest.json"
MANIFEST_VERSION = 1
#: the root attribute of a store written with a manifest: without the file, it is damaged
MANIFEST_ATTR = "liqgpu_manifest"


class StoreDamaged(InputError):
    """A store whose files do not match what was written (exit code 2)."""


def _chunk_files(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            # chunk keys, nested (c/0/1) or flat (c.0.1); metadata changes later
            if "/c/" in f"/{rel}" or f == "c" or f.startswith("c."):
                out[rel] = p.stat().st_size
    return out


def _array_of(rel: str) -> str:
    """'resume/pack_float64/c/0' or 'intensity/c.0.1' -> the array's path."""
    parts = rel.split("/")
    for i, p in enumerate(parts):
        if p == "c" or p.startswith("c."):
            return "/".join(parts[:i])
    return rel


def write_manifest(root) -> None:
    """Record every chunk file of the (complete, not yet committed) store at ``root``."""
    root = Path(root)
    arrays: dict[str, dict] = {}
    for rel, size in sorted(_chunk_files(root).items()):
        arrays.setdefault(_array_of(rel), {})[rel] = size
    for dirpath, _dirs, files in os.walk(root):  # arrays with no chunk written (all fill)
        if "zarr.json" in files and Path(dirpath) != root:
            rel = Path(dirpath).relative_to(root).as_posix()
            meta = json.loads((Path(dirpath) / "zarr.json").read_text())
            if meta.get("node_type") == "array":
                arrays.setdefault(rel, {})
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"version": MANIFEST_VERSION, "arrays": arrays}))
    os.replace(tmp, root / MANIFEST)


def read_manifest(root) -> dict | None:
    p = Path(root) / MANIFEST
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())["arrays"]
    except (OSError, ValueError, KeyError, TypeError):
        raise StoreDamaged(f"{root}: its manifest {MANIFEST} is unreadable; the store is "
                           f"damaged (estimate it again)") from None


def check_manifest(root) -> None:
    """Raise StoreDamaged when an array or chunk listed in the manifest is missing or has
    another size than was written, when an array's metadata differs from the store's
    consolidated copy of it, or when a store written with a manifest has lost it (no decoding:
    cheap enough for every open)."""
    root = Path(root)
    arrays = read_manifest(root)
    try:
        doc = json.loads((root / "zarr.json").read_text())
        copies = (doc.get("consolidated_metadata") or {}).get("metadata") or {}
        marked = MANIFEST_ATTR in (doc.get("attributes") or {})
    except (OSError, ValueError, AttributeError):
        return  # the root's own damage is the reader's to say
    if arrays is None:
        if marked:
            raise StoreDamaged(f"{root}: its manifest {MANIFEST} is missing; the store is "
                               f"damaged (estimate it again)")
        return
    for name, chunks in arrays.items():
        if not (root / name / "zarr.json").exists():
            raise StoreDamaged(f"{root}: array {name} is damaged (its metadata is missing); "
                               f"estimate the store again")
        if marked and name in copies:
            try:
                own = json.loads((root / name / "zarr.json").read_text())
                same = isinstance(own, dict) and all(
                    own.get(k) == copies[name].get(k) for k in _META_KEYS)
            except (OSError, ValueError):
                same = False
            if not same:
                raise StoreDamaged(f"{root}: array {name} is damaged (its zarr.json differs "
                                   f"from the store's consolidated metadata); estimate the "
                                   f"store again")
        for rel, size in chunks.items():
            try:
                got = (root / rel).stat().st_size
            except FileNotFoundError:
                raise StoreDamaged(f"{root}: array {name} is damaged (chunk {rel} is missing); "
                                   f"estimate the store again") from None
            if got != size:
                raise StoreDamaged(f"{root}: array {name} is damaged (chunk {rel} has {got} "
                                   f"bytes, {size} were written); estimate the store again")


#: what an array's zarr.json must agree on with the store's consolidated copy of it
_META_KEYS = ("node_type", "shape", "data_type", "chunk_grid", "chunk_key_encoding", "codecs",
              "fill_value", "dimension_names")


def verify(root) -> dict:
    """Check the manifest and decode every chunk of every array; a report (raises on damage).

    Returns ``{"arrays": n, "chunks": n, "manifest": bool}``.
    """
    import zarr

    from .layout import _quiet_zarr

    root = Path(root)
    check_manifest(root)
    arrays = read_manifest(root)
    n_arrays = n_chunks = 0
    with _quiet_zarr():
        g = zarr.open_group(str(root), mode="r", zarr_format=3)
        names = list(arrays) if arrays is not None else \
            [k for k, _ in g.members(max_depth=None) if isinstance(g[k], zarr.Array)]
        for name in names:
            a = g[name]
            n_arrays += 1
            n_chunks += a.nchunks
            try:
                for sl in _chunk_slices(a):
                    a[sl]
            except Exception as exc:  # noqa: BLE001 - any decoding failure is damage
                raise StoreDamaged(f"{root}: array {name} is damaged ({_short(exc)}); estimate "
                                   f"the store again") from None
    return {"arrays": n_arrays, "chunks": n_chunks, "manifest": arrays is not None}


def _chunk_slices(a):
    import itertools

    ranges = [range(0, max(s, 1), c) for s, c in zip(a.shape, a.chunks)]
    for start in itertools.product(*ranges):
        yield tuple(slice(s, s + c) for s, c in zip(start, a.chunks))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text[:120]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_error(exc: BaseException) -> StoreDamaged | None:
    """A StoreDamaged sentence for an exception raised while zarr decoded a store, or None
    when the exception did not come from reading a store."""
    tb = exc.__traceback__
    from_zarr = False
    where = None
    while tb is not None:
        frame = tb.tb_frame
        mod = frame.f_globals.get("__name__", "")
        if mod.startswith(("zarr", "numcodecs")):
            from_zarr = True
        for v in (frame.f_locals.get("self"), frame.f_locals.get("array"),
                  frame.f_locals.get("_array")):
            sp = getattr(v, "store_path", None)
            if sp is not None and where is None:
                where = sp
        tb = tb.tb_next
    if not from_zarr:
        return None
    if where is not None:
        root = getattr(where.store, "root", None) or str(where.store)
        name = where.path or "?"
        return StoreDamaged(f"{root}: array {name} is damaged ({_short(exc)}); run liqgpu info "
                            f"--verify {root}, then estimate the store again")
    return StoreDamaged(f"a store is damaged ({_short(exc)}); run liqgpu info --verify on it")
