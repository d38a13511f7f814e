"""The price grid of MODEL.md: edges x_0 < ... < x_P, bin(q) = j where x_j <= q < x_{j+1}."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

MAX_BINS = 200_000
DEFAULT_BPS = 10.0


@dataclass(frozen=True, eq=False)
class Grid:
    """Price bin edges shared by every series of a run.

    Parameters
    ----------
    edges : ndarray of float64
        Strictly increasing bin edges, length P + 1.
    spec : str
        How the grid was made (``'log:START:STOP:BPS'`` or ``'linear:START:STOP:STEP'``).

    Examples
    --------
    >>> g = Grid.parse("linear:100:110:2")
    >>> g.edges.tolist()
    [100.0, 102.0, 104.0, 106.0, 108.0, 110.0]
    >>> int(g.bin_index(np.array([99.0, 100.0, 103.9, 110.0]))[1])
    0
    """

    edges: np.ndarray
    spec: str

    def __post_init__(self) -> None:
        e = np.asarray(self.edges, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise InputError(f"grid {self.spec!r}: edges must be finite and strictly increasing")
        if e[0] <= 0:
            raise InputError(f"grid {self.spec!r}: prices must be > 0")
        object.__setattr__(self, "edges", e)

    @property
    def n_bins(self) -> int:
        return int(self.edges.size - 1)

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    def bin_index(self, q, xp=np, edges=None):
        """Bin of each level; levels outside the grid (or NaN) get index P (``outside``)."""
        e = self.edges if edges is None else edges
        j = xp.searchsorted(e, q, side="right") - 1
        p = self.n_bins
        bad = (j < 0) | (j >= p) | ~xp.isfinite(q)
        return xp.where(bad, p, j).astype(xp.int64)

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def log(cls, start: float, stop: float, bps: float) -> "Grid":
        """x_j = start * (1 + bps/1e4)^j up to the first edge >= stop."""
        _check_range("log", start, stop, bps)
        r = 1.0 + bps / 1e4
        n = max(1, int(math.ceil(math.log(stop / start) / math.log(r))))
        _check_size(n, f"log:{start:g}:{stop:g}:{bps:g}")
        edges = start * r ** np.arange(n + 2, dtype=np.float64)
        # x_P is the first edge >= stop (guard the rounding of the closed form).
        p = int(np.searchsorted(edges, stop, side="left"))
        edges = edges[: max(p, 1) + 1]
        return cls(edges, f"log:{_g(start)}:{_g(stop)}:{_g(bps)}")

    @classmethod
    def linear(cls, start: float, stop: float, step: float) -> "Grid":
        """x_j = start + j * step up to the first edge >= stop."""
        _check_range("linear", start, stop, step)
        n = max(1, int(math.ceil((stop - start) / step)))
        _check_size(n, f"linear:{start:g}:{stop:g}:{step:g}")
        edges = start + step * np.arange(n + 2, dtype=np.float64)
        p = int(np.searchsorted(edges, stop, side="left"))
        edges = edges[: max(p, 1) + 1]
        return cls(edges, f"linear:{_g(start)}:{_g(stop)}:{_g(step)}")

    @classmethod
    def parse(cls, spec: str) -> "Grid":
        """Parse ``log:START:STOP:BPS`` or ``linear:START:STOP:STEP``."""
        parts = str(spec).strip().split(":")
        if len(parts) != 4 or parts[0] not in ("log", "linear"):
            raise InputError(
                f"--grid: cannot read {spec!r}; use log:START:STOP:BPS or linear:START:STOP:STEP"
            )
        try:
            a, b, c = (float(x) for x in parts[1:])
        except ValueError:
            raise InputError(f"--grid: {spec!r} has a value that is not a number") from None
        return cls.log(a, b, c) if parts[0] == "log" else cls.linear(a, b, c)

    @classmethod
    def covering(cls, lo: float, hi: float, bps: float = DEFAULT_BPS) -> "Grid":
        """The default grid: log, ``bps`` wide, starting at a round number below ``lo`` and
        reaching past ``hi`` so that every level in [lo, hi] falls inside."""
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise InputError("grid: the series has no valid prices to build a grid from")
        mag = 10.0 ** (math.floor(math.log10(lo)) - 3)
        start = math.floor(lo / mag) * mag
        if start >= lo:
            start -= mag
        stop = hi * (1 + 1e-12) if hi > start else start * (1 + bps / 1e4)
        g = cls.log(start, stop, bps)
        if g.edges[-1] <= hi:  # guard rounding: the last level must sit strictly below x_P
            g = cls.log(start, hi * (1 + bps / 1e4), bps)
        return g

    def to_attrs(self) -> dict:
        return {"grid": self.spec, "grid_bins": self.n_bins}


def _g(x: float) -> str:
    return f"{x:.10g}"


def _check_range(kind: str, start: float, stop: float, step: float) -> None:
    spec = f"{kind}:{start}:{stop}:{step}"
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise InputError(f"--grid {spec}: values must be finite numbers")
    if start <= 0:
        raise InputError(f"--grid {spec}: START must be a price > 0")
    if stop <= start:
        raise InputError(f"--grid {spec}: STOP must be above START")
    if step <= 0:
        raise InputError(f"--grid {spec}: the step must be > 0")


def _check_size(n: int, spec: str) -> None:
    if n > MAX_BINS:
        raise InputError(
            f"--grid {spec}: {n} bins is more than the {MAX_BINS} allowed; use a wider step"
        )
