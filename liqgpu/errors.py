"""Errors that liqgpu reports to users as one clear sentence (exit code 2 on the command line)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a file, a row, a column or an option that liqgpu cannot use.

    The message is one sentence that names what is wrong and where; the CLI prints it and exits
    with code 2 without writing anything.
    """


class BackendUnavailable(InputError):
    """A backend was asked for that cannot run here (no CuPy, or no visible GPU)."""
