"""Stores on object storage (``s3://``, ``gs://``, ``az://``, … any fsspec URL).

Object stores have no rename, so a store cannot be written to a temporary name and moved into
place there. liqgpu computes a store on local disk instead (as always: temporary path, then
move) and *publishes* it: every object is uploaded except the root ``zarr.json``, which holds
the consolidated metadata and goes last. Readers (:func:`liqgpu.open_store`) need that root
object to open a store, so they see either no store or the complete one, never a partial
upload; an upload that fails removes what it put. Replacing a store (``overwrite``) first deletes
the old root object, then the old prefix, then uploads: during that window readers see no store
(not a mix of the two).

The filesystem for a URL comes from fsspec (``s3fs`` for ``s3://``, ``gcsfs`` for ``gs://``,
``adlfs`` for ``az://``; install the one you need); credentials through ``storage_options`` or
the provider's usual environment variables.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

ROOT = "zarr.json"


def is_url(path) -> bool:
    """True for ``scheme://...`` strings (anything fsspec may open), False for local paths."""
    return isinstance(path, str) and "://" in path


def url_fs(url: str, storage_options: dict | None = None):
    """The fsspec filesystem and the path inside it (no trailing slash) for ``url``."""
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:  # e.g. s3:// without s3fs
        raise InputError(f"{url}: cannot open this URL ({exc})") from None
    except ValueError as exc:  # unknown protocol
        raise InputError(f"{url}: {exc}") from None
    return fs, root.rstrip("/")


def read_root(url: str, storage_options: dict | None = None) -> dict | None:
    """The root metadata of the store at ``url`` (None when there is none)."""
    fs, root = url_fs(url, storage_options)
    try:
        return json.loads(fs.cat_file(f"{root}/{ROOT}"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"{url}: cannot read {ROOT} ({exc})") from None


def check_remote_target(url: str, *, overwrite: bool, storage_options: dict | None = None) -> str:
    """Validate an object-storage target before any work starts."""
    from .layout import FORMAT_NAME

    meta = read_root(url, storage_options)
    if meta is not None and not overwrite:
        raise InputError(f"{url}: a store already exists there; pass --overwrite to replace it")
    if meta is not None and meta.get("attributes", {}).get("format") != FORMAT_NAME:
        raise InputError(f"{url}: exists and is not a liqgpu store; refusing to replace it")
    if meta is None:  # no store: anything else under the prefix is somebody else's
        fs, root = url_fs(url, storage_options)
        if fs.exists(root) and fs.find(root):
            raise InputError(f"{url}: objects exist under this prefix but no liqgpu store; "
                             f"refusing to write over them (choose another URL)")
    return url


def publish(src: str | Path, url: str, *, overwrite: bool = False,
            storage_options: dict | None = None, progress: bool = False) -> str:
    """Upload the local store ``src`` to ``url``, the root metadata last (the commit point).

    Parameters
    ----------
    src : path
        A liqgpu store on local disk (as written by :func:`liqgpu.estimate`).
    url : str
        Where to put it, e.g. ``s3://bucket/btc.zarr``.
    overwrite : bool
        Replace a liqgpu store already at ``url`` (readers see no store while it uploads).
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint).
    progress : bool
        Show a progress bar of uploaded objects.

    Returns
    -------
    str
        ``url``.

    Examples
    --------
    >>> publish("btc.zarr", "s3://my-bucket/liq/btc.zarr")  # doctest: +SKIP
    """
    if not is_url(url):
        raise InputError(f"URL {url}: not a URL (scheme://...); copy local stores with cp")
    from ..progress import progress as _progress
    from .writer import is_store

    src = Path(src)
    if not src.exists():
        raise InputError(f"{src}: no such store")
    if not is_store(src):
        raise InputError(f"{src}: not a liqgpu store (no liqgpu attributes in zarr.json)")
    check_remote_target(url, overwrite=overwrite, storage_options=storage_options)
    fs, root = url_fs(url, storage_options)
    if "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        a, b = src.resolve(), Path(root).resolve()
        if a == b or a in b.parents or b in a.parents:
            raise InputError(f"{url}: is the store {src} itself (or inside it); publish elsewhere")
    from .integrity import check_manifest
    from .atomic import store_lock

    with store_lock(src):  # no update may swap the source while it uploads
        check_manifest(src)  # never publish a damaged store
        if fs.exists(f"{root}/{ROOT}"):  # overwrite: the store disappears first, then its objects
            fs.rm_file(f"{root}/{ROOT}")
            log.info("%s: removing the old store's objects", url)
            fs.rm(root, recursive=True)
        files = sorted(p for p in src.rglob("*") if p.is_file() and p != src / ROOT)
        put, made = [], set()
        try:
            for f in _progress(iter(files), len(files), progress):
                key = f"{root}/{f.relative_to(src).as_posix()}"
                parent = key.rsplit("/", 1)[0]
                if parent not in made:  # folders for local and mounted filesystems; a no-op on S3
                    fs.makedirs(parent, exist_ok=True)
                    made.add(parent)
                put.append(key)  # before the put: one cut off mid-way (Ctrl-C) goes too
                fs.put_file(str(f), key)
            fs.put_file(str(src / ROOT), f"{root}/{ROOT}")
        except BaseException:
            log.error("%s: upload failed; removing the %d objects it put", url, len(put))
            for key in put:
                try:
                    fs.rm_file(key)
                except OSError:
                    pass
            for d in sorted(made | {root}, key=lambda k: -k.count("/")):  # local folders
                try:
                    if fs.exists(d) and not fs.ls(d):
                        fs.rmdir(d)
                except (OSError, NotImplementedError):
                    pass
            raise
    log.info("published %s to %s (%d objects)", src, url, len(files) + 1)
    return url


def open_remote(url: str, *, chunks="auto", storage_options: dict | None = None):
    """Open a published store lazily (see :func:`liqgpu.open_store`)."""
    import xarray as xr

    from .layout import FORMAT_NAME, _quiet_zarr

    meta = read_root(url, storage_options)
    if meta is None:
        raise InputError(f"{url}: no such store")
    if meta.get("attributes", {}).get("format") != FORMAT_NAME:
        raise InputError(f"{url}: not a liqgpu store (no liqgpu attributes in zarr.json)")
    with _quiet_zarr():
        try:
            return xr.open_zarr(url, consolidated=True, chunks=chunks,
                                storage_options=storage_options)
        except Exception as exc:  # noqa: BLE001 - a corrupt store is a user-facing error
            raise InputError(f"{url}: cannot open the store ({exc})") from None


class staged:
    """A local temporary store path for a run whose target is ``url``; published there when the
    block finishes without an exception (the local copy is removed either way).

    The staging folder is in ``$LIQGPU_STAGE_DIR`` when set, else the system's temporary folder;
    it needs room for the whole compressed store.
    """

    def __init__(self, url: str, *, overwrite: bool, storage_options: dict | None = None,
                 progress: bool = False):
        self.url, self.overwrite, self.opts, self.progress = url, overwrite, storage_options, progress

    def __enter__(self) -> Path:
        import os
        import tempfile

        check_remote_target(self.url, overwrite=self.overwrite, storage_options=self.opts)
        self.tmp = tempfile.TemporaryDirectory(prefix="liqgpu-stage-",
                                               dir=os.environ.get("LIQGPU_STAGE_DIR"))
        return Path(self.tmp.name) / "store.zarr"

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                publish(Path(self.tmp.name) / "store.zarr", self.url, overwrite=self.overwrite,
                        storage_options=self.opts, progress=self.progress)
        finally:
            self.tmp.cleanup()
