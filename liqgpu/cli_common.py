"""Shared pieces of the command line: the exit-code-2 error and its decorator."""

from __future__ import annotations

import errno
import functools
import os

import click

from .errors import InputError
from .store.integrity import read_error


VERBOSITY_FLAGS = ("-v", "-vv", "-vvv", "--verbose", "-q", "--quiet")


class Group(click.Group):
    """The ``liqgpu`` group: ``-v``/``-q`` are accepted after the subcommand too."""

    def parse_args(self, ctx, args):
        args = list(args)
        cut = args.index("--") if "--" in args else len(args)
        moved = [a for a in args[:cut] if a in VERBOSITY_FLAGS]
        if moved:
            rest = [a for a in args[:cut] if a not in VERBOSITY_FLAGS]
            args = moved + rest + args[cut:]
        return super().parse_args(ctx, args)


def quiet() -> bool:
    """Whether ``-q`` was given (errors only)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().obj or {}).get("quiet", False))


def status(message: str) -> None:
    """A line saying what a command did (``wrote X``): silent under ``-q``."""
    if not quiet():
        click.echo(message)


class UserError(click.ClickException):
    """A clear one-line error, exit code 2."""

    exit_code = 2


def user_errors(fn):
    """Turn InputError (and unreadable-file OSErrors) into exit code 2 with one sentence."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            raise UserError(str(exc)) from None
        except PermissionError as exc:
            raise UserError(f"{exc.filename}: permission denied") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UserError(
                    f"{exc.filename or 'the output folder'}: no space left on the device "
                    f"(nothing was replaced; free some space and run again)") from None
            damaged = read_error(exc)
            if damaged is not None:
                raise UserError(str(damaged)) from None
            if exc.errno in (errno.EIO, errno.EROFS, errno.EFBIG):  # the disk failed a write
                raise UserError(
                    f"{exc.filename or 'the output folder'}: cannot be written "
                    f"({exc.strerror or os.strerror(exc.errno)}; nothing was replaced)") from None
            if exc.filename is not None:  # a path the user gave that the system refuses
                raise UserError(f"{exc.filename}: {exc.strerror or os.strerror(exc.errno or 0)}"
                                ) from None
            raise
        except Exception as exc:  # a damaged store met while computing (blosc, crc32c, ...)
            damaged = read_error(exc)
            if damaged is None:
                raise
            raise UserError(str(damaged)) from None

    return wrapper


def contract_options(fn):
    """``--kind`` and ``--contract-size`` for commands that read series files; unset means the
    file's own ``kind``/``contract_size`` columns (as :func:`liqgpu.load_series` reads them)."""
    fn = click.option(
        "--contract-size", type=float, default=None,
        help="Inverse: quote value of one contract; linear: base units per OI unit "
             "[default: the file's contract_size column, else 1].")(fn)
    return click.option(
        "--kind", type=click.Choice(["linear", "inverse"]), default=None,
        help="Contract kind of the inputs [default: the file's kind column, else linear].")(fn)


def series_limit_options(fn):
    """``--max-bars`` and ``--max-gap`` for commands that read series files (a wrong timestamp
    must not become millions of NaN bars)."""
    fn = click.option(
        "--max-gap", default=None,
        help="Refuse a hole between two bars longer than this (e.g. 30d; none: any) "
             "[default: 90d].")(fn)
    return click.option(
        "--max-bars", type=click.IntRange(min=2), default=None,
        help="Refuse a series file that fills to more bars than this [default: 10000000].")(fn)


