"""Train and test windows: ``START:END`` text, UTC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._time import iso, parse_time
from ..errors import InputError


# ---------------------------------------------------------------------------------------------
# windows
@dataclass(frozen=True)
class Window:
    """A time range [start, end) with a role ('train', 'test' or 'all')."""

    role: str
    start: np.datetime64 | None
    end: np.datetime64 | None

    @property
    def name(self) -> str:
        def f(t):
            return "" if t is None else iso(t)
        if self.start is None and self.end is None:
            return f"{self.role} (the whole store)"
        return f"{self.role} {f(self.start)}..{f(self.end)}"

    def overlaps(self, other: "Window") -> bool:
        """Whether the two half-open ranges share any time (None: unbounded)."""
        lo = max((x for x in (self.start, other.start) if x is not None), default=None)
        hi = min((x for x in (self.end, other.end) if x is not None), default=None)
        return lo is None or hi is None or lo < hi

    def contains(self, t: np.ndarray) -> np.ndarray:
        ok = np.ones(t.shape, bool)
        if self.start is not None:
            ok &= t >= self.start
        if self.end is not None:
            ok &= t < self.end
        return ok


def parse_window(text: str, role: str = "test") -> Window:
    """``'START:END'`` (or ``'START..END'`` when the times hold ':') -> :class:`Window`.

    Either end may be empty (open). Times are UTC dates or ISO times.

    Examples
    --------
    >>> parse_window(":2026-04-01", "train").name
    'train ..2026-04-01'
    """
    option = f"--{role}"
    s = str(text).strip()
    if ".." in s:
        a, b = s.split("..", 1)
    elif s.count(":") == 1:
        a, b = s.split(":")
    else:
        raise InputError(f"{option} {text}: write START:END with dates, or START..END when the "
                         "times contain ':'")
    w = Window(role, parse_time(a, option), parse_time(b, option))
    if w.start is not None and w.end is not None and w.end <= w.start:
        raise InputError(f"{option} {text}: the end is not after the start")
    return w
