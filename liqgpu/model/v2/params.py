"""Model v2 ("churn") parameters and the formulas it adds to v1 (MODEL.md, "Model v2").

v2 keeps v1's level formulas, entry prices, side shares and notional (imported from
:mod:`liqgpu.model.formulas`, written once there) and adds: many log-spaced tiers with power-law
weights, leverage bands for the output, turnover (churn) at a rate per hour, and entries spread
over the bar's range (``range:N``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from ..._time import format_duration, parse_duration
from ...errors import InputError
from ..formulas import SIDES, check_choices, check_tiers, level_factor, max_age_steps

MODEL_NAME = "v2"

DEFAULT_LEVERAGES = "log:2:150:40"
DEFAULT_WEIGHTS = "power:2"
DEFAULT_BANDS = (2.0, 10.0, 25.0, 50.0, 100.0, 150.0)
DEFAULT_CHURN = 0.3
DEFAULT_ENTRY = "close"
ENTRY_MODES = ("close", "hlc3", "ohlc4", "vwap")  # and range:N
MAX_CHURN_STEP = 0.95
RANGE_MAX_POINTS = 64


def parse_leverages(spec) -> tuple[float, ...]:
    """Tiers from ``'log:LMIN:LMAX:K'`` (L_k = LMIN (LMAX/LMIN)^(k/(K-1))) or a list.

    Examples
    --------
    >>> [round(x, 3) for x in parse_leverages("log:2:150:3")]
    [2.0, 17.321, 150.0]
    """
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s.startswith("log:"):
            parts = s.split(":")
            try:
                lmin, lmax, k = float(parts[1]), float(parts[2]), int(parts[3])
                if len(parts) != 4:
                    raise ValueError
            except (ValueError, IndexError):
                raise InputError(f"--leverages {spec!r}: use log:LMIN:LMAX:K, e.g. "
                                 f"{DEFAULT_LEVERAGES}, or a comma-separated list") from None
            if not (math.isfinite(lmin) and math.isfinite(lmax) and 1 < lmin < lmax) or k < 2:
                raise InputError(f"--leverages {spec!r}: need 1 < LMIN < LMAX and K >= 2")
            from ..formulas import MAX_TIERS

            if k > MAX_TIERS:
                raise InputError(f"--leverages {spec!r}: {k} tiers is more than the {MAX_TIERS} "
                                 "allowed (each opens positions at every step; the default has 40)")
            return tuple(float(lmin * (lmax / lmin) ** (i / (k - 1))) for i in range(k))
        try:
            return tuple(float(x) for x in s.split(",") if x.strip())
        except ValueError:
            raise InputError(f"--leverages {spec!r}: use log:LMIN:LMAX:K or numbers separated "
                             "by commas") from None
    return tuple(float(x) for x in spec)


def parse_weights(spec, leverages: tuple[float, ...]) -> tuple[float, ...]:
    """Weights from ``'power:ALPHA'`` (w_k proportional to L_k^-ALPHA, normalized) or a list.

    Examples
    --------
    >>> parse_weights("power:1", (2.0, 4.0))
    (0.6666666666666666, 0.3333333333333333)
    """
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s.startswith("power:"):
            try:
                alpha = float(s.split(":", 1)[1])
            except ValueError:
                alpha = math.nan
            if not math.isfinite(alpha):
                raise InputError(f"--weights {spec!r}: use power:ALPHA with a number, e.g. "
                                 f"{DEFAULT_WEIGHTS}, or a comma-separated list")
            w = np.asarray(leverages, dtype=np.float64) ** (-alpha)
            return tuple(float(x) for x in w / w.sum())
        try:
            return tuple(float(x) for x in s.split(",") if x.strip())
        except ValueError:
            raise InputError(f"--weights {spec!r}: use power:ALPHA or numbers separated by "
                             "commas") from None
    return tuple(float(x) for x in spec)


def parse_entry(spec: str) -> tuple[str, int]:
    """``(mode, N)``: ``('range', N)`` for ``range:N``, else ``(mode, 1)``."""
    s = str(spec).strip().lower()
    if s.startswith("range:"):
        try:
            n = int(s.split(":", 1)[1])
        except ValueError:
            n = 0
        if not 1 <= n <= RANGE_MAX_POINTS:
            raise InputError(f"--entry {spec!r}: range:N needs a whole N from 1 to "
                             f"{RANGE_MAX_POINTS}")
        return "range", n
    if s not in ENTRY_MODES:
        raise InputError(f"--entry {spec!r}: is not one of {', '.join(ENTRY_MODES)} or range:N")
    return s, 1


def band_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


@dataclass(frozen=True)
class ParamsV2:
    """The parameters of model v2 (MODEL.md, "Model v2": "Parameters").

    Parameters
    ----------
    leverages : str or tuple of float
        ``'log:LMIN:LMAX:K'`` or explicit tiers (each > 1); resolved to a tuple.
    weights : str or tuple of float
        ``'power:ALPHA'`` or explicit weights (>= 0, summing to 1); resolved to a tuple.
    bands : tuple of float
        Leverage band edges for the output (at least two, increasing); every tier must fall in
        a band (the last band includes its upper edge).
    mmr : float
        Maintenance-margin rate.
    entry : str
        ``close`` (default), ``hlc3``, ``ohlc4``, ``vwap`` or ``range:N``.
    churn : float
        Turnover rate per hour (>= 0); per step φ = min(0.95, churn * step / 1h).
    side_split, closure, max_age :
        As in v1.

    Examples
    --------
    >>> p = ParamsV2()
    >>> p.n_tiers, p.n_out, p.band_labels[0]
    (40, 5, '2-10')
    """

    leverages: tuple = DEFAULT_LEVERAGES
    weights: tuple = DEFAULT_WEIGHTS
    bands: tuple = DEFAULT_BANDS
    mmr: float = 0.004
    entry: str = DEFAULT_ENTRY
    churn: float = DEFAULT_CHURN
    side_split: str = "both"
    closure: str = "proportional"
    max_age: timedelta | None = field(default=None)
    leverages_spec: str = field(default="", compare=False)
    weights_spec: str = field(default="", compare=False)

    model = MODEL_NAME

    def __post_init__(self) -> None:
        lev_spec = self.leverages if isinstance(self.leverages, str) else ""
        w_spec = self.weights if isinstance(self.weights, str) else ""
        lev = parse_leverages(self.leverages)
        check_tiers(lev, tuple(1.0 / len(lev) for _ in lev), float(self.mmr))
        w = parse_weights(self.weights, lev)
        object.__setattr__(self, "leverages", lev)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "leverages_spec", self.leverages_spec or lev_spec)
        object.__setattr__(self, "weights_spec", self.weights_spec or w_spec)
        object.__setattr__(self, "mmr", float(self.mmr))
        object.__setattr__(self, "churn", float(self.churn))
        object.__setattr__(self, "max_age", parse_duration(self.max_age, option="max_age"))
        try:
            bands = tuple(float(x) for x in (self.bands.split(",") if isinstance(self.bands, str)
                                             else self.bands))
        except ValueError:
            raise InputError(f"--bands {self.bands!r}: give leverage band edges separated by "
                             "commas, e.g. 2,10,25,50,100,150") from None
        object.__setattr__(self, "bands", bands)
        check_tiers(lev, w, self.mmr)
        if len(bands) < 2 or any(not math.isfinite(b) for b in bands) or \
                any(b1 <= b0 for b0, b1 in zip(bands[:-1], bands[1:])):
            raise InputError(f"--bands: need at least two increasing edges, got {list(bands)}")
        outside = [x for x in lev if not bands[0] <= x <= bands[-1]]
        if outside:
            raise InputError(f"--bands {','.join(f'{b:g}' for b in bands)}: tiers "
                             f"{', '.join(f'{x:g}' for x in outside[:5])} fall in no band; "
                             "widen the bands or change --leverages")
        if not math.isfinite(self.churn) or self.churn < 0:
            raise InputError(f"--churn: must be a rate per hour >= 0, got {self.churn}")
        parse_entry(self.entry)
        object.__setattr__(self, "entry", str(self.entry).strip().lower())
        check_choices(side_split=self.side_split, closure=self.closure)

    # -- shape of the output ----------------------------------------------------------------
    @property
    def n_tiers(self) -> int:
        return len(self.leverages)

    @property
    def n_out(self) -> int:
        """Cells of the output's ``leverage`` dimension: the bands."""
        return len(self.bands) - 1

    @property
    def band_of(self) -> np.ndarray:
        """Band index of each tier (B_b <= L_k < B_b+1; the last band includes its upper edge)."""
        lev = np.asarray(self.leverages)
        b = np.searchsorted(np.asarray(self.bands), lev, side="right") - 1
        return np.minimum(b, self.n_out - 1).astype(np.int64)

    @property
    def band_labels(self) -> list[str]:
        return [band_label(a, b) for a, b in zip(self.bands[:-1], self.bands[1:])]

    def leverage_coords(self) -> dict:
        """Coordinates of the ``leverage`` dimension (labels and numeric bounds)."""
        return {"leverage": np.asarray(self.band_labels, dtype=str),
                "leverage_lo": ("leverage", np.asarray(self.bands[:-1], dtype=np.float64)),
                "leverage_hi": ("leverage", np.asarray(self.bands[1:], dtype=np.float64))}

    # -- per-step quantities ----------------------------------------------------------------
    def churn_per_step(self, step: np.timedelta64) -> float:
        """φ = min(0.95, churn * Δ / 1 h)."""
        hours = float(step / np.timedelta64(1, "s")) / 3600.0
        return min(MAX_CHURN_STEP, self.churn * hours)

    def max_age_steps(self, step: np.timedelta64) -> int | None:
        return max_age_steps(self.max_age, step)

    def level_factors(self, kind: str) -> np.ndarray:
        return np.array([[level_factor(kind, lev, self.mmr, side) for side in SIDES]
                         for lev in self.leverages], dtype=np.float64)

    @property
    def entry_mode(self) -> tuple[str, int]:
        return parse_entry(self.entry)

    # -- attributes ---------------------------------------------------------------------------
    def to_attrs(self) -> dict:
        return {
            "model": MODEL_NAME,
            "leverages": list(self.leverages),
            "weights": list(self.weights),
            "leverages_spec": self.leverages_spec,
            "weights_spec": self.weights_spec,
            "bands": list(self.bands),
            "churn": self.churn,
            "mmr": self.mmr,
            "entry": self.entry,
            "side_split": self.side_split,
            "closure": self.closure,
            "max_age": format_duration(self.max_age),
        }

    @classmethod
    def from_attrs(cls, attrs: dict) -> "ParamsV2":
        return cls(leverages=tuple(attrs["leverages"]), weights=tuple(attrs["weights"]),
                   bands=tuple(attrs["bands"]), mmr=attrs["mmr"], entry=attrs["entry"],
                   churn=attrs["churn"], side_split=attrs["side_split"],
                   closure=attrs["closure"], max_age=attrs.get("max_age"),
                   leverages_spec=attrs.get("leverages_spec", ""),
                   weights_spec=attrs.get("weights_spec", ""))


def entry_points(mode: str, n: int, o, h, l, c, e):
    """Entry points (x, ω) of each bar, shapes (T, N) (MODEL.md, "Entry points range:N").

    ``e`` is v1's entry price for the other modes (one point, ω = 1). For ``range:N`` with
    l < h: u_i = (i + ½)/N, x_i = l (h/l)^u_i, u_c = ln(c/l)/ln(h/l), ω_i = u_i/u_c where
    u_i <= u_c else (1 - u_i)/(1 - u_c), floored at 1e-6 and normalized; where h = l, one point
    x = c with ω = 1 (the other points get ω = 0).
    """
    T = np.shape(c)[0]
    if mode != "range":
        x = np.asarray(e, dtype=np.float64).reshape(T, 1)
        return x, np.isfinite(x).astype(np.float64)
    u = (np.arange(n) + 0.5) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        span = np.log(h / l)
        flat = ~(h > l)
        safe = np.where(flat, 1.0, span)
        x = l[:, None] * np.exp(u[None, :] * safe[:, None])
        uc = np.clip(np.log(c / l) / safe, 0.0, 1.0)
        up = u[None, :] / uc[:, None]
        down = (1.0 - u[None, :]) / (1.0 - uc[:, None])
        w = np.where(u[None, :] <= uc[:, None], up, down)
    w = np.where(np.isfinite(w), w, 0.0)
    w = np.maximum(w, 1e-6)
    w = w / w.sum(axis=1, keepdims=True)
    # h = l: one point at the close
    x = np.where(flat[:, None], np.nan, x)
    w = np.where(flat[:, None], 0.0, w)
    x[flat, 0] = c[flat]
    w[flat, 0] = 1.0
    bad = ~(np.isfinite(l) & np.isfinite(h) & np.isfinite(c))
    x[bad] = np.nan
    w[bad] = 0.0
    return x, w
