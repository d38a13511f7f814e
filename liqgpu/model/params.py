"""Model v1 parameters and the formulas of MODEL.md, written once.

Every backend (reference, numpy, CuPy) imports the liquidation-level factors, the entry price
and the side shares from here, so the rules cannot drift apart between implementations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from .._time import format_duration, parse_duration  # noqa: F401 - the model's options use them
from ..errors import InputError
from ..schema import KINDS, SIDES  # noqa: F401 - re-exported for the model modules

MODEL_NAME = "v1"

ENTRY_METHODS = ("hlc3", "close", "ohlc4", "vwap")
SIDE_SPLITS = ("both", "taker")
CLOSURES = ("proportional", "none")

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


def check_tiers(lev: tuple, w: tuple, mmr: float) -> None:
    """Validate leverage tiers, their weights and the maintenance-margin rate (v1 and v2)."""
    if not lev:
        raise InputError("leverages: give at least one leverage tier")
    if any(not math.isfinite(x) or x <= 1 for x in lev):
        raise InputError(f"leverages: every tier must be a number > 1, got {list(lev)}")
    if len(set(lev)) != len(lev):
        raise InputError(f"leverages: tiers must be distinct, got {list(lev)}")
    if len(w) != len(lev):
        raise InputError(
            f"weights: {len(w)} weights for {len(lev)} leverage tiers; give one per tier"
        )
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise InputError(f"weights: every weight must be >= 0, got {list(w)}")
    if abs(sum(w) - 1.0) > 1e-6:
        raise InputError(f"weights: must sum to 1, got {list(w)} (sum {sum(w):.6g})")
    if not (0.0 <= mmr < 1.0) or not math.isfinite(mmr):
        raise InputError(f"mmr: must be in [0, 1), got {mmr}")
    # A short at leverage L must still have its level above the entry: 1/L > m.
    if any(1.0 / x <= mmr for x in lev):
        raise InputError(
            f"mmr: {mmr} is at or above 1/leverage for some tier in {list(lev)}; "
            "positions would be liquidated at entry"
        )


def check_choices(**values) -> None:
    """``side_split`` and ``closure`` among their allowed values."""
    allowed = {"side_split": SIDE_SPLITS, "closure": CLOSURES}
    for name, value in values.items():
        if value not in allowed[name]:
            raise InputError(f"{name}: {value!r} is not one of {', '.join(allowed[name])}")


def max_age_steps(max_age: timedelta | None, step: np.timedelta64) -> int | None:
    """A = max_age / step in whole steps (MODEL.md, "One step"), or None."""
    if max_age is None:
        return None
    step_s = step / np.timedelta64(1, "s")
    a = int(math.floor(max_age.total_seconds() / step_s + 1e-9))
    if a < 1:
        raise InputError(
            f"max_age: {format_duration(max_age)} is shorter than the model step "
            f"({int(step_s)}s); positions would expire before they exist"
        )
    return a

def level_factor(kind: str, leverage: float, mmr: float, side: str) -> float:
    """Liquidation level over entry price, isolated margin, no fees (MODEL.md table).

    ========  ========================  ========================
    contract  long                      short
    ========  ========================  ========================
    linear    (1 - 1/L) / (1 - m)       (1 + 1/L) / (1 + m)
    inverse   (1 + m) / (1 + 1/L)       (1 - m) / (1 - 1/L)
    ========  ========================  ========================

    Examples
    --------
    >>> round(67_000 * level_factor("linear", 10, 0.004, "long"), 2)
    60542.17
    """
    inv_l = 1.0 / leverage
    if kind == "linear":
        return (1 - inv_l) / (1 - mmr) if side == "long" else (1 + inv_l) / (1 + mmr)
    if kind == "inverse":
        return (1 + mmr) / (1 + inv_l) if side == "long" else (1 - mmr) / (1 - inv_l)
    raise InputError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")


def liquidation_level(entry, factor):
    """Level q of a position: entry times its factor (same rounding in every backend)."""
    return entry * factor


def entry_price(method: str, o, h, l, c, volume=None, quote_volume=None, xp=np):
    """Entry price e_t of positions opened in bar t (MODEL.md, ``entry``)."""
    if method == "hlc3":
        return (h + l + c) / 3.0
    if method == "close":
        return c * 1.0
    if method == "ohlc4":
        return (o + h + l + c) / 4.0
    if method == "vwap":
        hlc3 = (h + l + c) / 3.0
        if volume is None or quote_volume is None:
            return hlc3
        ok = (volume > 0) & xp.isfinite(volume) & xp.isfinite(quote_volume)
        safe = xp.where(ok, volume, 1.0)
        return xp.where(ok, quote_volume / safe, hlc3)
    raise InputError(f"entry: {method!r} is not one of {', '.join(ENTRY_METHODS)}")


def side_shares(split: str, volume=None, taker_buy_volume=None, n: int = 0, xp=np):
    """Shares (long, short) of new notional per bar, shape (n, 2) (MODEL.md, ``side_split``)."""
    if split == "both" or volume is None or taker_buy_volume is None:
        return xp.ones((n, 2), dtype=xp.float64)
    ok = (volume > 0) & xp.isfinite(volume) & xp.isfinite(taker_buy_volume)
    rho = xp.where(ok, taker_buy_volume / xp.where(ok, volume, 1.0), 0.5)
    rho = xp.clip(rho, 0.0, 1.0)
    return xp.stack([2.0 * rho, 2.0 * (1.0 - rho)], axis=1)


def notional(delta_oi, entry, kind: str, contract_size: float):
    """Quote notional of new open interest (MODEL.md, "Amounts")."""
    if kind == "linear":
        return delta_oi * contract_size * entry
    return delta_oi * contract_size
