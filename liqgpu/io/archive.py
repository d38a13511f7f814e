"""Open native files whether plain, ``.gz`` or ``.zip``, and write outputs atomically.

Every reader in :mod:`liqgpu.io` gets its bytes through :func:`read_members`, so a truncated or
empty archive is one :class:`~liqgpu.errors.InputError` that names the file, wherever it came from.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

#: The most bytes one input file may unpack to (all its members together); a zip bomb stops
#: here instead of filling memory. Raise it with LIQGPU_MAX_UNPACKED (bytes) for huge archives.
MAX_UNPACKED = 4 << 30


def max_unpacked() -> int:
    raw = os.environ.get("LIQGPU_MAX_UNPACKED", "").strip()
    if not raw:
        return MAX_UNPACKED
    try:
        return int(float(raw))
    except ValueError:
        raise InputError(f"LIQGPU_MAX_UNPACKED={raw!r}: must be a number of bytes") from None


def _read_capped(fh, name: str, budget: int) -> bytes:
    """Read a decompressing stream piece by piece, at most ``budget`` bytes."""
    out = bytearray()
    while True:
        piece = fh.read(1 << 20)
        if not piece:
            return bytes(out)
        out += piece
        if len(out) > budget:
            raise InputError(f"{name}: unpacks to more than {max_unpacked() >> 20} MiB (a zip "
                             f"bomb, or set LIQGPU_MAX_UNPACKED to a larger number of bytes)")


#: Suffixes of files that :func:`expand_inputs` picks from a folder.
DATA_SUFFIXES = (".zip", ".gz", ".csv", ".json", ".jsonl", ".txt", ".parquet", ".pq")


def expand_inputs(inputs) -> list[Path]:
    """Files named by ``inputs``: files as given, folders as their data files in name order.

    Parameters
    ----------
    inputs : iterable of str or Path
        Files or folders.

    Returns
    -------
    list of Path

    Examples
    --------
    >>> expand_inputs(["raw/klines/"])  # doctest: +SKIP
    [PosixPath('raw/klines/BTCUSDT-1m-2024-01-01.zip'), ...]
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.name.lower().endswith(DATA_SUFFIXES)
                           and not f.name.startswith("."))
            if not found:
                raise InputError(f"{p}: the folder holds no data files ({', '.join(DATA_SUFFIXES)})")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file")
    return out


def read_members(path: str | Path) -> list[tuple[str, bytes]]:
    """The data inside a file: ``[(name, bytes)]``, one entry per member of a zip.

    Plain files give one entry; ``.gz`` files are decompressed; ``.zip`` archives give each file
    member (folders and ``.CHECKSUM`` members skipped). Raises InputError naming the file when the
    archive is truncated or corrupt, or holds no data.
    """
    import zipfile

    path = Path(path)
    name = str(path)
    if not path.exists():
        raise InputError(f"{name}: no such file")
    if path.is_dir():
        raise InputError(f"{name}: is a folder, not a data file")
    low = path.name.lower()
    try:
        if low.endswith(".zip"):
            try:
                zf = zipfile.ZipFile(path)
            except zipfile.BadZipFile:
                raise InputError(f"{name}: not a zip archive or truncated (cannot read its "
                                 "directory)") from None
            with zf:
                members = [i for i in zf.infolist() if not i.is_dir()
                           and not i.filename.endswith(".CHECKSUM")]
                if not members:
                    raise InputError(f"{name}: the archive is empty")
                out = []
                budget = max_unpacked()
                declared = sum(i.file_size for i in members)
                if declared > budget:
                    raise InputError(f"{name}: unpacks to more than {budget >> 20} MiB (a zip "
                                     f"bomb, or set LIQGPU_MAX_UNPACKED to a larger number of "
                                     f"bytes)")
                for info in members:
                    try:
                        with zf.open(info) as fh:  # streamed: sizes in headers can lie
                            data = _read_capped(fh, name, budget)
                        budget -= len(data)
                        out.append((f"{name}!{info.filename}", data))
                    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                        raise InputError(f"{name}: member {info.filename} is corrupt or truncated "
                                         f"({exc})") from None
        elif low.endswith(".gz"):
            try:
                with gzip.open(path, "rb") as fh:
                    out = [(name, _read_capped(fh, name, max_unpacked()))]
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(f"{name}: corrupt or truncated gzip file ({exc})") from None
        else:
            out = [(name, path.read_bytes())]
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    if all(not data.strip() for _, data in out):
        raise InputError(f"{name}: the file is empty")
    return out


def write_parquet(df, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a DataFrame as Parquet atomically (see :func:`liqgpu.outputs.write_atomic`)."""
    from ..outputs import write_atomic

    return write_atomic(out, lambda p: df.to_parquet(p, index=False), overwrite=overwrite)
