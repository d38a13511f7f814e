"""Output files: checked before any work, written whole or not at all.

Every command that writes a file (``--json``, ``--csv``, ``--report``, ``--out``) checks the path
with :func:`check_out_file` or :func:`check_out_dir` before it computes anything, and writes
through :func:`write_atomic`, so a bad path is one sentence with nothing written, and a crash
leaves the previous file or none, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["check_out_dir", "check_out_file", "write_atomic", "write_json"]


def check_out_file(path, option: str) -> None:
    """An output file's folder exists and is writable, and the path is not a folder: checked
    before any work, so a bad path is one sentence (exit 2) with nothing written."""
    if path is None:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: the folder {parent} is not writable")


def check_out_dir(path, option: str) -> None:
    """An output folder: absent (it will be made) or a folder, in a folder that exists."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{option} {path}: exists and is not a folder")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: the folder {parent} does not exist")


def write_atomic(out: str | Path, write, *, overwrite: bool = False) -> Path:
    """Write ``out`` through a temporary file in the same folder, renamed at the end.

    Parameters
    ----------
    out : str or Path
        Final path.
    write : callable
        ``write(tmp_path)`` writes the whole file.
    overwrite : bool
        Replace an existing ``out``; otherwise an existing file is an InputError.

    Returns
    -------
    Path
        ``out``; nothing is left behind when ``write`` raises.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists; pass --overwrite to replace it")
    if out.exists() and out.is_dir():
        raise InputError(f"{out}: is a folder")
    if not out.parent.exists():
        raise InputError(f"{out.parent}: no such folder for --out")
    _remove_dead_temporaries(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise as_write_error(exc, out) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def as_write_error(exc: OSError, out) -> OSError:
    """``exc`` (raised while writing ``out`` through a temporary name; libraries such as Arrow
    give no errno or file name) as the same kind of error naming ``out``, which is what the
    user gave."""
    import errno

    code = exc.errno if exc.errno is not None else (
        errno.EACCES if isinstance(exc, PermissionError) else errno.EIO)
    return type(exc)(code, exc.strerror or str(exc) or os.strerror(code), str(out))


def _remove_dead_temporaries(out: Path) -> None:
    """``.NAME.PID.tmp`` files whose writer (PID) is gone: what a killed run left."""
    for p in out.parent.glob(f".{out.name}.*.tmp"):
        pid = p.name[len(out.name) + 2:-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.info("%s: removing %s, left by an interrupted run", out, p.name)
            p.unlink(missing_ok=True)
        except PermissionError:  # alive, somebody else's
            pass


def write_json(path, data, *, overwrite: bool = True) -> Path:
    """``data`` as indented JSON at ``path``, atomically."""
    text = json.dumps(data, indent=2)
    return write_atomic(path, lambda p: Path(p).write_text(text), overwrite=overwrite)
