"""The formulas of MODEL.md, written once, shared by both models and every backend.

Liquidation-level factors, entry prices, side shares and notional, and the checks of the
parameters that v1 and v2 have in common. The reference implementations, the numpy engine and
the CuPy engine all import them from here, so the rules cannot drift apart.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np

from .._time import format_duration
from ..errors import InputError
from ..schema import KINDS, SIDES

__all__ = ["CLOSURES", "ENTRY_METHODS", "KINDS", "SIDES", "SIDE_SPLITS", "check_choices",
           "check_tiers", "entry_price", "level_factor", "liquidation_level", "max_age_steps",
           "notional", "side_shares"]

ENTRY_METHODS = ("hlc3", "close", "ohlc4", "vwap")
SIDE_SPLITS = ("both", "taker")
CLOSURES = ("proportional", "none")


#: the most leverage tiers a run takes: each opens a position a side per entry point and step,
#: so memory and time grow with them (the default v2 has 40; 100,000 took 10 GB for 300 bars)
MAX_TIERS = 512


def check_tiers(lev: tuple, w: tuple, mmr: float) -> None:
    """Validate leverage tiers, their weights and the maintenance-margin rate (v1 and v2)."""
    if not lev:
        raise InputError("leverages: give at least one leverage tier")
    if len(lev) > MAX_TIERS:
        raise InputError(f"--leverages: {len(lev)} tiers is more than the {MAX_TIERS} allowed "
                         "(each opens positions at every step; the default has 40)")
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
        low = min(x for x in lev if 1.0 / x <= mmr)
        raise InputError(
            f"mmr: {mmr} is at or above 1/leverage for the tiers from {low:.4g}x up (with "
            f"{max(lev):.4g}x the highest, mmr must be below {1.0 / max(lev):.4g}); positions "
            "would be liquidated at entry")


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
