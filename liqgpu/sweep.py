"""Parameter sweeps of models v2 and v1 against realized liquidations (train -> test windows).

Objective (maximised on the train windows only): the mean over longs and shorts of the Spearman
correlation between estimated and realized liquidated notional per bucket, averaged over the
train windows weighted by their bucket counts; ties broken by the same mean of the Pearson
correlation of log1p amounts.

Work is shared between settings: model v1 is linear in the tier weights when the leverage set
is fixed (a weight only scales the notional a tier receives; closure and expiry are
proportional), so for each combination of ``mmr, entry, side_split, max_age`` the engine runs
once with every candidate tier at equal weight, keeps liquidated notional per bucket, tier and
side, and every weight set (including sets that leave tiers out, weight 0) is a matrix product
of that. The timing objective does not depend on the price grid (liquidated notional outside
the grid is counted), so the sweep runs on a coarse grid; the best set is then estimated again
on the default grid for its full figures (levels included).

Model v2 (the default) is linear in the tier weights too: churn, closure and expiry scale every
live position by the same factor, liquidation depends on prices alone, and the new notional of a
step (ΔOI plus churned OI) is split over the tiers by weight. So for each combination of
``tier count, churn, entry, mmr, side_split, max_age`` the engine runs once with equal weights and
one output band per tier (band edges at the geometric midpoints between tiers), and every
``power:α`` weight set is a matrix product of that (:class:`SweepSpaceV2`).
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .evaluate import (Realized, Window, bucket_inputs, evaluate, pearson_log1p, spearman,
                       table_from_arrays)
from .model.v1 import DEFAULT_LEVERAGES, DEFAULT_WEIGHTS, Params

log = logging.getLogger(__name__)

DEFAULT_TIERS = (3.0, 5.0, 10.0, 20.0, 25.0, 50.0, 75.0, 100.0)
SWEEP_GRID_BPS = 50.0
SWEEP_GRID_BPS_V2 = 200.0  # 40 output cells per bucket: a coarser grid; timing is unaffected


def default_weight_sets(tiers) -> list[tuple[str, dict]]:
    """Named weight sets over ``tiers``: MODEL.md's default (where its tiers are all present),
    equal weights, weights ∝ 1/L and ∝ 1/√L, each single tier and each run of three tiers."""
    tiers = tuple(float(x) for x in tiers)
    sets = []
    if set(DEFAULT_LEVERAGES) <= set(tiers):
        sets.append(("default", dict(zip(DEFAULT_LEVERAGES, DEFAULT_WEIGHTS))))
    sets.append(("equal", {L: 1.0 / len(tiers) for L in tiers}))
    for name, f in (("inv_L", lambda L: 1.0 / L), ("inv_sqrt_L", lambda L: L ** -0.5)):
        w = np.array([f(L) for L in tiers])
        sets.append((name, dict(zip(tiers, w / w.sum()))))
    for L in tiers:
        sets.append((f"only_{L:g}x", {L: 1.0}))
    for i in range(len(tiers) - 2):
        run = tiers[i:i + 3]
        sets.append(("equal_" + "_".join(f"{x:g}" for x in run), {x: 1 / 3 for x in run}))
    return sets


@dataclass
class SweepSpace:
    """The settings a sweep tries (every combination of the lists, times every weight set)."""

    tiers: tuple = DEFAULT_TIERS
    weight_sets: list | None = None
    mmr: tuple = (0.002, 0.004, 0.008)
    entry: tuple = ("hlc3", "close")
    side_split: tuple = ("both",)
    max_age: tuple = (None, "24h", "7d", "30d")
    closure: tuple = ("proportional",)

    def __post_init__(self) -> None:
        self.tiers = tuple(sorted(float(x) for x in self.tiers))
        if self.weight_sets is None:
            self.weight_sets = default_weight_sets(self.tiers)
        for name, ws in self.weight_sets:
            extra = set(ws) - set(self.tiers)
            if extra:
                raise InputError(f"weight set {name}: tiers {sorted(extra)} are not in --tiers")
        for m in self.mmr:  # validates mmr against every tier once, with a clear message
            Params(leverages=self.tiers, weights=(1 / len(self.tiers),) * len(self.tiers), mmr=m)

    def engine_settings(self):
        return list(itertools.product(self.mmr, self.entry, self.side_split, self.max_age,
                                      self.closure))

    @property
    def size(self) -> int:
        return len(self.engine_settings()) * len(self.weight_sets)


@dataclass
class SweepSpaceV2:
    """The settings a model v2 sweep tries: every combination of the lists.

    Tiers are ``log:LMIN:LMAX:K`` for each K in ``tier_count``; weights ``power:α`` for each α in
    ``power`` (the matrix-product dimension).
    """

    churn: tuple = (0.1, 0.3, 1.0)
    power: tuple = (1.0, 2.0, 3.0)
    tier_count: tuple = (20, 40)
    entry: tuple = ("close", "hlc3", "range:3")
    mmr: tuple = (0.004,)
    side_split: tuple = ("both",)
    max_age: tuple = (None,)
    lev_min: float = 2.0
    lev_max: float = 150.0
    closure: tuple = ("proportional",)

    model = "v2"

    def __post_init__(self) -> None:
        from .model.v2.params import ParamsV2

        self.churn = tuple(float(x) for x in self.churn)
        self.power = tuple(float(x) for x in self.power)
        self.tier_count = tuple(int(x) for x in self.tier_count)
        for name, vals in (("--churn", self.churn), ("--power", self.power),
                           ("--tier-count", self.tier_count), ("--entry", self.entry),
                           ("--mmr", self.mmr)):
            if not vals:
                raise InputError(f"{name}: give at least one value")
        for x in self.tier_count:
            if x < 2:
                raise InputError(f"--tier-count {x}: need at least 2 tiers")
        for k, c, e, m, sp, age, cl in self.engine_settings():  # validates every value once
            per_tier_params(k, c, e, m, sp, age, cl, lev_min=self.lev_min, lev_max=self.lev_max)
        for a in self.power:
            ParamsV2(leverages=self.tiers_spec(self.tier_count[0]), weights=f"power:{a:g}")

    def tiers_spec(self, k: int) -> str:
        return f"log:{self.lev_min:g}:{self.lev_max:g}:{int(k)}"

    def engine_settings(self):
        return list(itertools.product(self.tier_count, self.churn, self.entry, self.mmr,
                                      self.side_split, self.max_age, self.closure))

    @property
    def size(self) -> int:
        return len(self.engine_settings()) * len(self.power)


def tier_bands(tiers) -> tuple:
    """Band edges giving one band per tier: the first and last tier and the geometric
    midpoints between neighbours (tier k lies in [edge k, edge k+1)).

    Examples
    --------
    >>> tier_bands((2.0, 8.0, 32.0))
    (2.0, 4.0, 16.0, 32.0)
    """
    t = np.asarray(sorted(float(x) for x in tiers))
    mid = np.sqrt(t[:-1] * t[1:])
    return tuple(float(x) for x in np.r_[t[0], mid, t[-1]])


def per_tier_params(k, churn, entry, mmr, side_split="both", max_age=None,
                    closure="proportional", *, lev_min=2.0, lev_max=150.0):
    """v2 parameters with K log tiers at equal weight and one output band per tier."""
    from .model.v2.params import ParamsV2, parse_leverages

    spec = f"log:{lev_min:g}:{lev_max:g}:{int(k)}"
    tiers = parse_leverages(spec)
    return ParamsV2(leverages=spec, weights=tuple([1.0 / len(tiers)] * len(tiers)),
                    bands=tier_bands(tiers), mmr=mmr, entry=entry, churn=churn,
                    side_split=side_split, closure=closure, max_age=max_age)


def params_for(weights: dict, mmr, entry, side_split, max_age, closure="proportional") -> Params:
    """Params from a {tier: weight} set (tiers with weight 0 left out, weights renormalised)."""
    tiers = sorted(L for L, w in weights.items() if w > 0)
    w = np.array([weights[L] for L in tiers], dtype=np.float64)
    w = w / w.sum()
    w[-1] = 1.0 - w[:-1].sum()
    return Params(leverages=tuple(tiers), weights=tuple(float(x) for x in w), mmr=mmr,
                  entry=entry, side_split=side_split, closure=closure, max_age=max_age)


def tier_liquidated(series, params, every, *, bps: float = SWEEP_GRID_BPS,
                    backend: str = "numpy"):
    """Liquidated notional per output bucket, tier and side, summed over series and price.

    ``params``: v1 :class:`Params`, or v2 parameters with one band per tier
    (:func:`per_tier_params`).

    Runs the engine (``backend``) chunk by chunk on a coarse grid and keeps only the sums (liquidated
    outside the grid included), so memory stays small.

    Returns
    -------
    (time, every, liq, inputs) : bucket times, output step (timedelta64), (T, K, 2) array and
        the per-bucket price/OI dict of :func:`liqgpu.evaluate.bucket_inputs` (without
        ``estimate``; with ``covered``).
    """
    from .pipeline import as_series_list as _as_series_list, resolve_every
    from .model.engine import Engine, chunk_buckets_for
    from .model.grid import Grid
    from .model.inputs import bucket_prices, check_columns, prepare
    from .evaluate.table import covered

    series = _as_series_list(series)
    check_columns(series, params)
    inputs = prepare(series, params)
    lo, hi = inputs.level_range()
    g = Grid.covering(lo, hi, bps=bps)
    n = resolve_every(every, inputs.step)
    from .backend import resolve

    eng = Engine(inputs, g, n, xp=resolve(backend)[1], dtype=np.float64)
    cb = chunk_buckets_for(inputs.n_series, eng.ncell, n, budget_bytes=64 * 2**20, multiple=8)
    if eng.B != params.n_tiers:
        raise InputError("tier_liquidated: the output has bands, not tiers; give one band per "
                         "tier (see per_tier_params)")
    out = np.zeros((eng.n_buckets, params.n_tiers, 2))
    for ch in eng.run(cb):
        out[ch.b0:ch.b1] = ch.liquidated.sum(axis=(0, 2)) + ch.outside_liquidated.sum(axis=0)
    prices = bucket_prices(series, inputs.time, n)
    # the last bucket may run past the last bar (the first starts on the first bar here)
    prices["covered"] = covered(inputs.time[::n], inputs.step * n,
                                (inputs.time[0], inputs.time[-1] + inputs.step))
    return inputs.time[::n], inputs.step * n, out, prices


def objective(est, real, mask) -> tuple[float, float]:
    """(mean Spearman, mean Pearson log1p) over longs and shorts on the buckets in ``mask``."""
    sp = [spearman(est[mask, j], real[mask, j]) for j in range(2)]
    pl = [pearson_log1p(est[mask, j], real[mask, j]) for j in range(2)]
    return float(np.mean(sp)), float(np.mean(pl))


def _score(est, table, train) -> tuple[float, float]:
    tot_n, s_sp, s_pl = 0, 0.0, 0.0
    for w in train:
        m = w.contains(table.time)
        n = int(m.sum())
        if n < 3:
            continue
        sp, pl = objective(est, table.realized, m)
        if not (math.isfinite(sp) and math.isfinite(pl)):
            continue
        s_sp, s_pl, tot_n = s_sp + n * sp, s_pl + n * pl, tot_n + n
    return (s_sp / tot_n, s_pl / tot_n) if tot_n else (-math.inf, -math.inf)


@dataclass
class SweepResult:
    """Ranking of every setting and the best :class:`Params`."""

    ranking: list = field(default_factory=list)  # dicts: score, pearson, weights name, params
    best: Params | None = None
    n_settings: int = 0
    n_engine_runs: int = 0
    seconds: float = 0.0


def run_sweep(series, realized: Realized, train: list[Window], *, space: SweepSpace | None = None,
              every=None, check: list[Window] | None = None,
              backend: str = "numpy") -> SweepResult:
    """Evaluate every setting of ``space`` on the ``train`` windows; rank by the objective.

    Parameters
    ----------
    series : Series or list of Series
    realized : Realized
    train : list of Window
        At least one; the test windows are never looked at here.
    space : SweepSpace, optional
    every : str, optional
        Output step (default 1h).
    check : list of Window, optional
        Further windows (the test windows) that must hold a bucket; checked before the work.

    Returns
    -------
    SweepResult
    """
    if not train:
        raise InputError("--train: give at least one training window; the sweep tunes on it")
    space = space or SweepSpaceV2()
    if isinstance(space, SweepSpaceV2):
        return _run_sweep_v2(series, realized, train, space, every, check, backend)
    started = _time.perf_counter()
    tiers = space.tiers
    K = len(tiers)
    wmat = np.zeros((len(space.weight_sets), K))
    for i, (_, ws) in enumerate(space.weight_sets):
        for L, w in ws.items():
            wmat[i, tiers.index(float(L))] = w
    wmat /= wmat.sum(axis=1, keepdims=True)
    rows = []
    table = None
    settings = space.engine_settings()
    for r, (mmr, entry, split, age, closure) in enumerate(settings):
        p = Params(leverages=tiers, weights=(1.0 / K,) * K, mmr=mmr, entry=entry,
                   side_split=split, closure=closure, max_age=age)
        t, ev, liq, prices = tier_liquidated(series, p, every, backend=backend)
        # scale: liq was made with weight 1/K per tier
        inp = {"estimate": liq * K, **prices}
        table = _checked_table(t, ev, inp, realized, r, train, check)
        est_all = np.einsum("nkc,wk->wnc", table.estimate, wmat)
        for i, (wname, ws) in enumerate(space.weight_sets):
            sp, pl = _score(est_all[i], table, train)
            rows.append({"objective": sp, "pearson_log1p": pl, "weights_name": wname,
                         "params": params_for(ws, mmr, entry, split, age, closure)})
        log.info("sweep %d/%d (mmr %g, entry %s, split %s, max_age %s): best so far %.4f",
                 r + 1, len(settings), mmr, entry, split, age or "none",
                 max(x["objective"] for x in rows))
    rows.sort(key=lambda x: (x["objective"], x["pearson_log1p"]), reverse=True)
    return SweepResult(ranking=rows, best=rows[0]["params"], n_settings=len(rows),
                       n_engine_runs=len(settings), seconds=_time.perf_counter() - started)


def _checked_table(t, ev, inp, realized, r, train, check):
    table = table_from_arrays(t, ev, inp, realized)
    if table.time.size == 0:
        raise InputError(f"{realized.source}: the series and the realized liquidations share "
                         "no complete bucket")
    if r == 0:
        for w in list(train) + list(check or []):
            if not w.contains(table.time).any():
                raise InputError(f"--{w.role} {w.name.split(' ', 1)[1]}: no bucket with both "
                                 "an estimate and realized liquidations")
    return table


def _run_sweep_v2(series, realized, train, space: SweepSpaceV2, every, check,
                  backend: str = "numpy") -> SweepResult:
    """:func:`run_sweep` for model v2: one engine run per (K, churn, entry, mmr, split, age)
    with one band per tier; ``power:α`` weight sets are matrix products."""
    from .model.v2.params import ParamsV2, parse_leverages

    started = _time.perf_counter()
    rows = []
    settings = space.engine_settings()
    for r, (k, churn, entry, mmr, split, age, closure) in enumerate(settings):
        p = per_tier_params(k, churn, entry, mmr, split, age, closure, lev_min=space.lev_min,
                            lev_max=space.lev_max)
        t, ev, liq, prices = tier_liquidated(series, p, every, bps=SWEEP_GRID_BPS_V2,
                                             backend=backend)
        table = _checked_table(t, ev, {"estimate": liq * p.n_tiers, **prices}, realized, r,
                               train, check)
        tiers = np.asarray(parse_leverages(space.tiers_spec(k)))
        wmat = np.stack([tiers ** -a / (tiers ** -a).sum() for a in space.power])
        est_all = np.einsum("nkc,wk->wnc", table.estimate, wmat)
        for i, a in enumerate(space.power):
            sp, pl = _score(est_all[i], table, train)
            rows.append({"objective": sp, "pearson_log1p": pl, "weights_name": f"power:{a:g}",
                         "params": ParamsV2(leverages=space.tiers_spec(k), weights=f"power:{a:g}",
                                            mmr=mmr, entry=entry, churn=churn, side_split=split,
                                            closure=closure, max_age=age)})
        log.info("sweep v2 %d/%d (K %d, churn %g, entry %s, mmr %g): best so far %.4f", r + 1,
                 len(settings), k, churn, entry, mmr, max(x["objective"] for x in rows))
    rows.sort(key=lambda x: (x["objective"], x["pearson_log1p"]), reverse=True)
    return SweepResult(ranking=rows, best=rows[0]["params"], n_settings=len(rows),
                       n_engine_runs=len(settings), seconds=_time.perf_counter() - started)


def evaluate_params(series, params, realized: Realized, windows: list[Window], *,
                    every=None, keep: str | Path | None = None, backend: str = "numpy", **kw):
    """Estimate with ``params`` on the default grid (to a temporary store) and evaluate
    (``kw``: :func:`liqgpu.evaluate.evaluate`'s ``draws`` and ``seed``).

    Returns
    -------
    (dict, xarray.Dataset or None)
        The :func:`liqgpu.evaluate.evaluate` result; the opened store when ``keep`` names a
        path to write it to (else None: the temporary store is removed).
    """
    from .api import estimate
    from .store import open_store

    if keep is not None:
        estimate(series, params=params, every=every, backend=backend, out=keep, overwrite=True)
        ds = open_store(keep)
        return evaluate(ds, realized, windows, **kw), ds
    with tempfile.TemporaryDirectory(prefix="liqgpu-sweep-") as tmp:
        out = Path(tmp) / "est.zarr"
        estimate(series, params=params, every=every, backend=backend, out=out)
        ds = open_store(out)
        res = evaluate(ds, realized, windows, **kw)
        ds.close()
    return res, None


def series_from_store(path) -> list:
    """Rebuild the input series of a store whose output step equals its model step."""
    from ._time import parse_duration
    from .series import Series
    from .store import open_store

    ds = open_store(path, chunks=None)
    a = ds.attrs
    if a.get("step") != a.get("every"):
        raise InputError(f"{path}: the store holds {a.get('every')} buckets of a "
                         f"{a.get('step')} model; pass the series file itself to sweep it")
    step = np.timedelta64(int(parse_duration(a["step"]).total_seconds() * 1e9), "ns")
    out = []
    for i, name in enumerate(ds["series"].values):
        cols = {k: np.asarray(ds[k].values[i], dtype=np.float64)
                for k in ("open", "high", "low", "close", "oi")}
        exch, _, sym = str(name).partition(":")
        kind = str(ds["kind"].values[i]) if "kind" in ds.coords else "linear"
        cs = float(ds["contract_size"].values[i]) if "contract_size" in ds.coords else 1.0
        out.append(Series(ds["time"].values.astype("datetime64[ns]"), step, cols, exch or "x",
                          sym or "y", kind, cs, source=str(path)))
    return out


def ranking_rows(result: SweepResult, top: int = 10) -> list[dict]:
    """JSON-ready top rows of a ranking."""
    rows = []
    for i, r in enumerate(result.ranking[:top]):
        p = r["params"].to_attrs()
        row = {"rank": i + 1, "objective": r["objective"],
               "pearson_log1p": r["pearson_log1p"], "weights_name": r["weights_name"],
               "model": p.get("model", "v1")}
        if row["model"] == "v2":
            row.update(leverages=p["leverages_spec"] or p["leverages"],
                       weights=p["weights_spec"] or p["weights"], churn=p["churn"])
        else:
            row.update(leverages=p["leverages"], weights=[round(x, 4) for x in p["weights"]])
        row.update(mmr=p["mmr"], entry=p["entry"], side_split=p["side_split"],
                   max_age=p["max_age"])
        rows.append(row)
    return rows


def row_text(r: dict) -> str:
    """One line of a ranking row (v1 or v2)."""
    head = f"  #{r['rank']:<3} {r['objective']:+.4f} (log1p r {r['pearson_log1p']:+.3f})  "
    if r.get("model") == "v2":
        return (head + f"{r['leverages']:<14} {r['weights']:<10} churn {r['churn']:g} entry "
                f"{r['entry']} mmr {r['mmr']:g} split {r['side_split']} max_age {r['max_age']}")
    return (head + f"{r['weights_name']:<16} mmr {r['mmr']:g} entry {r['entry']} split "
            f"{r['side_split']} max_age {r['max_age']}")
