"""Reading a store: :func:`open_store` (local or object storage), with the checks that turn a
damaged or foreign store into one sentence."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .layout import _quiet_zarr, check_layout
from .writer import is_store

def open_store(path: str | Path, *, chunks="auto", storage_options: dict | None = None):
    """Open a liqgpu store lazily with xarray.

    Parameters
    ----------
    path : str or Path
        A store written by :func:`liqgpu.estimate`: a local path, or the URL of one published to
        object storage (``s3://bucket/btc.zarr``; see :mod:`liqgpu.store.remote`).
    chunks : passed to :func:`xarray.open_zarr` (``None`` loads numpy arrays lazily without dask).
    storage_options : dict, optional
        For URLs: passed to fsspec (credentials, endpoint).

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> ds = open_store("demo.zarr")  # doctest: +SKIP
    >>> ds.intensity.sum(["leverage", "side"])  # doctest: +SKIP
    """
    import xarray as xr

    from .remote import is_url, open_remote

    from .integrity import MANIFEST_ATTR, check_manifest

    if is_url(path):
        ds = open_remote(path, chunks=chunks, storage_options=storage_options)
        ds.attrs.pop(MANIFEST_ATTR, None)  # as below
        return ds
    from .atomic import try_recover

    path = Path(path)
    try_recover(path)  # what a killed writer left beside it (a store moved aside comes back)
    if not path.exists():
        raise InputError(f"{path}: no such store")
    if not is_store(path):
        damaged = _damaged_metadata(path)
        if damaged is not None:
            raise InputError(damaged)
        raise InputError(f"{path}: not a liqgpu store (no liqgpu attributes in zarr.json)")
    check_manifest(path)
    with _quiet_zarr():
        try:
            ds = xr.open_zarr(path, consolidated=True, chunks=chunks)
        except Exception as exc:  # noqa: BLE001 - a corrupt store is a user-facing error
            from .integrity import read_error

            damaged = read_error(exc)
            if damaged is not None:
                raise damaged from None
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: cannot open the store ({msg})") from None
    check_layout(ds, path)
    ds.attrs.pop(MANIFEST_ATTR, None)  # the store's own bookkeeping: not carried into copies
    return ds


def _damaged_metadata(path: Path) -> "str | None":
    """One sentence when the store's ``zarr.json`` is not valid JSON (a truncated or
    overwritten file: a damaged store, not a foreign one); else None."""
    import json

    meta = path / "zarr.json"
    try:
        text = meta.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return f"{path}: damaged store (its zarr.json is not valid JSON: not UTF-8 text)"
    except OSError as exc:
        return f"{path}: cannot read the store's zarr.json ({exc.strerror})"
    try:
        json.loads(text)
    except ValueError as exc:
        why = getattr(exc, "msg", None) or type(exc).__name__
        return (f"{path}: damaged store (its zarr.json is not valid JSON: {why.lower()}); "
                "estimate the store again")
    return None


def stamp(path, *names: str) -> tuple:
    """What changes whenever a store is replaced or rewritten: (inode, mtime, size) of the store
    folder and of each of its files ``names`` (``None`` for one that is missing). Writers never
    change these files in place (zarr, the resume group and the atomic commits write new ones),
    so an equal stamp means an unchanged store."""
    path = Path(path)
    out = []
    for p in (path, *(path / n for n in names)):
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)
