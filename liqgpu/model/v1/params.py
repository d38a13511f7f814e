"""Model v1's parameters: five leverage tiers with fixed weights, OI changes only (MODEL.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from ..._time import format_duration, parse_duration
from ...errors import InputError
from ..formulas import ENTRY_METHODS, SIDES, check_choices, check_tiers, level_factor, max_age_steps

MODEL_NAME = "v1"

DEFAULT_LEVERAGES = (5.0, 10.0, 25.0, 50.0, 100.0)
DEFAULT_WEIGHTS = (0.15, 0.30, 0.25, 0.20, 0.10)


@dataclass(frozen=True)
class Params:
    """The parameters of model v1 (MODEL.md, "Parameters").

    Parameters
    ----------
    leverages : tuple of float
        Leverage tiers, each > 1.
    weights : tuple of float
        Share of new open interest per tier, each >= 0, summing to 1.
    mmr : float
        Maintenance-margin rate, 0 <= mmr < 1.
    entry : {'hlc3', 'close', 'ohlc4', 'vwap'}
        Entry price of positions opened in a bar.
    side_split : {'both', 'taker'}
        How new open interest splits between longs and shorts.
    closure : {'proportional', 'none'}
        What a fall in open interest does to live positions.
    max_age : timedelta or None
        Positions older than this expire; ``None`` keeps them forever.

    Examples
    --------
    >>> p = Params(leverages=(10, 20), weights=(0.5, 0.5), max_age="24h")
    >>> p.max_age
    datetime.timedelta(days=1)
    """

    leverages: tuple[float, ...] = DEFAULT_LEVERAGES
    weights: tuple[float, ...] = DEFAULT_WEIGHTS
    mmr: float = 0.004
    entry: str = "hlc3"
    side_split: str = "both"
    closure: str = "proportional"
    max_age: timedelta | None = field(default=None)

    model = MODEL_NAME

    def __post_init__(self) -> None:
        lev = tuple(float(x) for x in self.leverages)
        w = tuple(float(x) for x in self.weights)
        object.__setattr__(self, "leverages", lev)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "mmr", float(self.mmr))
        object.__setattr__(self, "max_age", parse_duration(self.max_age, option="max_age"))
        check_tiers(lev, w, self.mmr)
        if self.entry not in ENTRY_METHODS:
            raise InputError(f"entry: {self.entry!r} is not one of {', '.join(ENTRY_METHODS)}")
        check_choices(side_split=self.side_split, closure=self.closure)

    @property
    def n_tiers(self) -> int:
        return len(self.leverages)

    def max_age_steps(self, step: np.timedelta64) -> int | None:
        """A = max_age / step in whole steps (MODEL.md, "One step"), or None."""
        return max_age_steps(self.max_age, step)

    @property
    def n_out(self) -> int:
        """Cells of the output's ``leverage`` dimension: one per tier in v1."""
        return len(self.leverages)

    @property
    def band_of(self) -> np.ndarray:
        """Output cell of each tier (v1: the tier itself)."""
        return np.arange(len(self.leverages), dtype=np.int64)

    def leverage_coords(self) -> dict:
        """Coordinates of the ``leverage`` dimension: the tiers."""
        return {"leverage": np.asarray(self.leverages, dtype=np.float64)}

    def churn_per_step(self, step: np.timedelta64) -> float:
        """v1 has no turnover."""
        return 0.0

    @property
    def entry_mode(self) -> tuple[str, int]:
        return self.entry, 1

    def level_factors(self, kind: str) -> np.ndarray:
        """Factors F[k, side] with level q = entry * F (see :func:`level_factor`)."""
        return np.array(
            [[level_factor(kind, lev, self.mmr, side) for side in SIDES] for lev in self.leverages],
            dtype=np.float64,
        )

    def to_attrs(self) -> dict:
        """JSON-ready attributes for a dataset."""
        return {
            "model": MODEL_NAME,
            "leverages": list(self.leverages),
            "weights": list(self.weights),
            "mmr": self.mmr,
            "entry": self.entry,
            "side_split": self.side_split,
            "closure": self.closure,
            "max_age": format_duration(self.max_age),
        }

    @classmethod
    def from_attrs(cls, attrs: dict) -> "Params":
        return cls(
            leverages=tuple(attrs["leverages"]),
            weights=tuple(attrs["weights"]),
            mmr=attrs["mmr"],
            entry=attrs["entry"],
            side_split=attrs["side_split"],
            closure=attrs["closure"],
            max_age=attrs.get("max_age"),
        )
