"""Per-step model inputs shared by the fast backends (MODEL.md "One step", vectorized).

Several series are padded onto one time axis (NaN bars do nothing in the model, so padding is
neutral) and turned into (series, step) arrays: trigger range, closure fraction, entry, new
notional and side shares. The reference implementation does not use this module: it recomputes
everything step by step from the :class:`~liqgpu.series.Series` so that it checks this code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..series import Series
from .grid import Grid
from .formulas import entry_price, notional, side_shares


@dataclass(eq=False)
class Inputs:
    """Model inputs of S series on one time axis of T steps (numpy, float64)."""

    time: np.ndarray  # (T,) datetime64[ns]
    step: np.timedelta64
    names: list[str]
    kinds: list[str]
    lo: np.ndarray  # (S, T) trigger low, +inf where no liquidation can happen
    hi: np.ndarray  # (S, T) trigger high, -inf where none
    close_frac: np.ndarray  # (S, T) c_t in [0, 1]
    entry: np.ndarray  # (S, T, N) entry points x_i, NaN where invalid (v1 and most v2: N = 1)
    add: np.ndarray  # (S, T) quote notional opened at step t (v1: positive ΔOI; v2: + churn)
    share: np.ndarray  # (S, T, 2) long/short share of new notional
    factors: np.ndarray  # (S, K, 2) level = entry * factor
    weights: np.ndarray  # (K,)
    max_age_steps: int | None
    omega: np.ndarray | None = None  # (S, T, N) weights of the entry points (None: all 1)
    churn: np.ndarray | None = None  # (S, T) φ_t, the fraction churned at step t (None: v1)
    band_of: np.ndarray | None = None  # (K,) output cell of each tier (None: the tier)
    n_out: int = 0  # cells of the output's leverage dimension (0: one per tier)
    retire: bool = False  # may retire positions below RETIRE of their opening amount (v2)

    def __post_init__(self) -> None:
        if self.entry.ndim == 2:
            self.entry = self.entry[:, :, None]
        if self.omega is None:
            self.omega = np.where(np.isfinite(self.entry), 1.0, 0.0)
        K = self.weights.size
        if self.band_of is None:
            self.band_of = np.arange(K, dtype=np.int64)
        if not self.n_out:
            self.n_out = int(self.band_of.max()) + 1 if K else 0

    @property
    def n_series(self) -> int:
        return int(self.lo.shape[0])

    def select(self, i: int) -> "Inputs":
        """The inputs of series ``i`` alone, on the same time axis."""
        import dataclasses

        one = slice(i, i + 1)
        return dataclasses.replace(
            self, names=self.names[one], kinds=self.kinds[one], lo=self.lo[one], hi=self.hi[one],
            close_frac=self.close_frac[one], entry=self.entry[one], add=self.add[one],
            share=self.share[one], factors=self.factors[one], omega=self.omega[one],
            churn=None if self.churn is None else self.churn[one])

    @property
    def n_steps(self) -> int:
        return int(self.lo.shape[1])

    @property
    def entry_points(self) -> int:
        """Entry points per bar (``range:N``: N; else 1)."""
        return int(self.entry.shape[2])

    def level_range(self) -> tuple[float, float]:
        """Lowest and highest level any position of these series can have."""
        lo, hi = np.inf, -np.inf
        for s in range(self.n_series):
            e = self.entry[s][np.isfinite(self.entry[s]) & (self.omega[s] > 0)]
            if e.size == 0:
                continue
            f = self.factors[s]
            lo = min(lo, float(e.min() * f.min()), float(e.max() * f.min()))
            hi = max(hi, float(e.max() * f.max()), float(e.min() * f.max()))
        return lo, hi


def align(series: list[Series], time: np.ndarray | None = None
          ) -> tuple[np.ndarray, list[np.ndarray]]:
    """A common time axis for several series with one step: their union, and each series'
    offset into it. Returns (time, [index arrays]).

    ``time``: the common axis already made (by this function, for a list these series belong
    to): the offsets are into it, so a group of a fleet's series is placed as in the fleet.
    """
    steps = {int(s.step / np.timedelta64(1, "ns")) for s in series}
    if len(steps) != 1:
        raise InputError(
            "series have different steps ("
            + ", ".join(f"{s.source}: {_step_text(s.step)}" for s in series[:6])
            + (", ..." if len(series) > 6 else "")
            + "); resample them to one model step with --step"
        )
    step = steps.pop()
    if time is not None:
        t0 = int(time[0].astype("datetime64[ns]").view(np.int64))
        return time, [(s.time.view(np.int64) - t0) // step for s in series]
    t0 = min(int(s.time[0].view(np.int64)) for s in series)
    t1 = max(int(s.time[-1].view(np.int64)) for s in series)
    for s in series:
        if (int(s.time[0].view(np.int64)) - t0) % step:
            raise InputError(f"{s.source}: its bars are not on the same {step}ns grid as the others")
    n = (t1 - t0) // step + 1
    time = (t0 + step * np.arange(n, dtype=np.int64)).view("datetime64[ns]")
    offsets = [(s.time.view(np.int64) - t0) // step for s in series]
    return time, offsets


def _step_text(step) -> str:
    from datetime import timedelta

    from .._time import format_duration

    return format_duration(timedelta(microseconds=int(step / np.timedelta64(1, "us"))))


def check_names(series: list[Series]) -> list[str]:
    """The series' names (``exchange:symbol``), each once (else an InputError)."""
    names = [s.name for s in series]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        files = [str(s.source) for s in series if s.name == dup[0]]
        raise InputError(f"series {', '.join(dup)} given twice ({', '.join(files[:3])}); each "
                         "exchange:symbol once (for one series in several files of successive "
                         "times: estimate the first, then `liqgpu update STORE` with the rest)")
    return names


def check_columns(series: list[Series], params) -> None:
    """The columns the parameters read beyond a bar's prices and OI are in every series:
    ``entry`` vwap reads ``volume`` and ``quote_volume``, ``side_split`` taker ``volume`` and
    ``taker_buy_volume``. MODEL.md falls back (hlc3, an even split) where a bar's values are
    missing or zero, and :func:`prepare` where a column is absent, as the reference does; a
    run a user asks for (:func:`liqgpu.pipeline.plan`, the distributed run, a sweep) refuses
    a series without the columns at all, which would silently be another model than the one
    it names."""
    needs = []
    if params.entry_mode[0] == "vwap":
        needs.append(("entry vwap", ("volume", "quote_volume"), "another --entry"))
    if params.side_split == "taker":
        needs.append(("side split taker", ("volume", "taker_buy_volume"), "--side-split both"))
    for s in series:
        for what, cols, instead in needs:
            missing = [c for c in cols if s.get(c) is None]
            if missing:
                raise InputError(
                    f"{s.source}: {what} needs the column{'s' if len(missing) > 1 else ''} "
                    f"{' and '.join(repr(c) for c in missing)}, which the series does not have "
                    f"(pass {instead})")


def prepare(series: list[Series], params, oi_prev=None, *, time=None) -> Inputs:
    """Vectorized per-step inputs of model v1 or v2 for several series.

    v1 is v2 with no churn, one entry point and one output cell per tier, so both models share
    these inputs and the engine. ``oi_prev`` (one value per series, NaN for none) is the last
    valid OI before the first bar, for a run that continues an earlier one (``liqgpu update``).
    ``time``: the common time axis of a fleet these series are a group of (:func:`align` of
    the whole fleet): each series' rows are then the fleet's rows, bit for bit.
    """
    from .v2.params import entry_points

    names = check_names(series)
    time, offsets = align(series, time)
    mode, n_points = params.entry_mode
    phi = params.churn_per_step(series[0].step)
    S, T, K = len(series), time.size, params.n_tiers
    lo = np.full((S, T), np.inf)
    hi = np.full((S, T), -np.inf)
    cf = np.zeros((S, T))
    ent = np.full((S, T, n_points), np.nan)
    omega = np.zeros((S, T, n_points))
    churn = np.zeros((S, T)) if params.model == "v2" else None  # v2 reports `churned`
    add = np.zeros((S, T))
    share = np.ones((S, T, 2))
    factors = np.zeros((S, K, 2))
    for i, s in enumerate(series):
        idx = offsets[i]
        lo_s, hi_s = (s["mark_low"], s["mark_high"]) if s.has_mark else (s["low"], s["high"])
        ok = np.isfinite(lo_s) & np.isfinite(hi_s)
        lo[i, idx] = np.where(ok, lo_s, np.inf)
        hi[i, idx] = np.where(ok, hi_s, -np.inf)
        e = entry_price("hlc3" if mode == "range" else mode, s["open"], s["high"], s["low"],
                        s["close"], s.get("volume"), s.get("quote_volume"))
        x, w = entry_points(mode, n_points, s["open"], s["high"], s["low"], s["close"], e)
        ent[i, idx] = x
        omega[i, idx] = w
        d_oi, c = oi_changes(s["oi"], np.nan if oi_prev is None else float(oi_prev[i]))
        if params.closure == "proportional":
            cf[i, idx] = c
        grow = (d_oi > 0) & np.isfinite(e)
        new = np.where(grow, notional(np.where(grow, d_oi, 0.0), np.where(grow, e, 0.0),
                                      s.kind, s.contract_size), 0.0)
        if churn is not None:  # v2 step 4: where OI_t and the bar are valid
            turn = np.isfinite(s["oi"]) & ok & np.isfinite(s["close"])
            churn[i, idx] = np.where(turn, phi, 0.0)
            new = new + np.where(turn, notional(np.where(turn, phi * s["oi"], 0.0),
                                                np.where(turn, s["close"], 0.0),
                                                s.kind, s.contract_size), 0.0)
        # positions open only where an entry point is valid
        add[i, idx] = np.where((w > 0).any(axis=1), new, 0.0)
        share[i, idx] = side_shares(params.side_split, s.get("volume"), s.get("taker_buy_volume"),
                                    n=len(s))
        factors[i] = params.level_factors(s.kind)
    return Inputs(
        time=time,
        step=series[0].step,
        names=names,
        kinds=[s.kind for s in series],
        lo=lo,
        hi=hi,
        close_frac=cf,
        entry=ent,
        add=add,
        share=share,
        factors=factors,
        weights=np.asarray(params.weights, dtype=np.float64),
        max_age_steps=params.max_age_steps(series[0].step),
        omega=omega,
        churn=churn,
        band_of=np.asarray(params.band_of, dtype=np.int64),
        n_out=params.n_out,
        retire=phi > 0,
    )


class FleetInputs:
    """The inputs of a fleet, prepared one series group at a time (:meth:`group`): what a run
    needs of the whole fleet up front is its time axis, names and each series' level range
    (small), not its (series, step) arrays, so memory does not grow with the fleet.

    Offers what the planning uses of :class:`Inputs` (``time``, ``step``, ``names``,
    ``n_series``, ``n_steps``, ``level_range``, ``weights``, ``n_out``) and
    :meth:`series_range`, the level range of one series (as ``prepare(...).select(i)``'s).

    Examples
    --------
    >>> import liqgpu
    >>> from liqgpu import pipeline
    >>> ss = [liqgpu.synthetic_series(days=1, seed=i, symbol=f"S{i}") for i in range(3)]
    >>> params = pipeline.resolve_params(None, None)
    >>> fleet = FleetInputs(ss, params)
    >>> g = fleet.group(1, 3)
    >>> g.n_series, g.n_steps == fleet.n_steps
    (2, True)
    >>> bool(np.array_equal(g.lo, prepare(ss, params).lo[1:3]))
    True
    """

    #: series prepared together while the level ranges are read (bounds the memory it takes)
    BATCH = 8

    def __init__(self, series: list[Series], params):
        self.series, self.params = list(series), params
        self.names = check_names(self.series)
        self.kinds = [s.kind for s in self.series]
        self.time, _ = align(self.series)
        self.step = self.series[0].step
        self.weights = np.asarray(params.weights, dtype=np.float64)
        self.band_of = np.asarray(params.band_of, dtype=np.int64)
        self.n_out = int(params.n_out)
        self.max_age_steps = params.max_age_steps(self.step)
        self._ranges: list = [None] * len(self.series)

    @property
    def n_series(self) -> int:
        return len(self.series)

    @property
    def n_steps(self) -> int:
        return int(self.time.size)

    @property
    def entry_points(self) -> int:
        """Entry points per bar, as :attr:`Inputs.entry_points`."""
        return int(self.params.entry_mode[1])

    def group(self, s0: int, s1: int) -> Inputs:
        """The :class:`Inputs` of series ``[s0, s1)``, on the fleet's time axis."""
        return prepare(self.series[s0:s1], self.params, time=self.time)

    def series_range(self, i: int) -> tuple[float, float]:
        """The lowest and highest level series ``i`` can have (its ``level_range``)."""
        if self._ranges[i] is None:
            s0 = i - i % self.BATCH
            s1 = min(s0 + self.BATCH, self.n_series)
            inp = self.group(s0, s1)
            for j in range(s1 - s0):
                self._ranges[s0 + j] = inp.select(j).level_range()
        return self._ranges[i]

    def level_range(self) -> tuple[float, float]:
        """Lowest and highest level any position of these series can have."""
        lo, hi = np.inf, -np.inf
        for i in range(self.n_series):
            a, b = self.series_range(i)
            lo, hi = min(lo, a), max(hi, b)
        return lo, hi


def oi_changes(oi: np.ndarray, before: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
    """ΔOI_t against the last valid OI before t, and the closure fraction c_t.

    ΔOI_t = OI_t - OI_prev where OI_t is valid (and some earlier OI was), else 0;
    c_t = min(1, -ΔOI_t / OI_prev) when ΔOI_t < 0 and OI_prev > 0, else 0. ``before`` is the
    last valid OI before the first bar (NaN: none).
    """
    oi = np.concatenate([[before], oi])
    valid = np.isfinite(oi)
    idx = np.where(valid, np.arange(oi.size), -1)
    last = np.maximum.accumulate(idx)  # last valid index at or before t
    prev_idx = np.concatenate([[-1], last[:-1]])  # last valid index before t
    has_prev = prev_idx >= 0
    prev = np.where(has_prev, oi[np.maximum(prev_idx, 0)], np.nan)
    d = np.where(valid & has_prev, oi - prev, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where((d < 0) & (prev > 0), np.minimum(1.0, -d / prev), 0.0)
    return d[1:], c[1:]


def last_valid_before(values: np.ndarray, stop: int) -> float:
    """The last finite value of ``values[:stop]`` (NaN when there is none)."""
    v = values[:stop]
    idx = np.flatnonzero(np.isfinite(v))
    return float(v[idx[-1]]) if idx.size else np.nan


def bucket_prices(series: list[Series], time: np.ndarray, n_every: int) -> dict[str, np.ndarray]:
    """open/high/low/close/oi per output bucket, (S, n_buckets), NaN where a bucket has none."""
    from ..series import resample

    T = time.size
    nb = -(-T // n_every)
    out = {k: np.full((len(series), nb), np.nan) for k in ("open", "high", "low", "close", "oi")}
    _, offsets = align(series)
    for i, s in enumerate(series):
        cols = {}
        for k in out:
            a = np.full(T, np.nan)
            a[offsets[i]] = s[k]
            cols[k] = a
        # resample() groups by time // step: feed bucket numbers as times with step 1.
        pos = (np.arange(T, dtype=np.int64) // n_every).view("datetime64[ns]")
        _, agg = resample(pos, cols, 1)
        for k in out:
            out[k][i] = agg[k]
    return out

