"""The numbers behind the bright bands: clusters of liquidation levels at one time.

At the chosen bucket, each side's profile (notional per bin, summed over the selected series and
tiers) is cut into bands: runs of contiguous bins whose notional exceeds ``threshold`` times the
side's largest bin (``threshold=0``: every non-empty bin). Bands are ranked by notional.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError
from .select import bucket_at, fmt_leverage, open_dataset, select

log = logging.getLogger(__name__)

DOMINANT_SHARE = 0.25  # a tier is dominant in a band when it holds at least this share


def profile_at(ds, at=None, *, series=None, side: str = "both", leverage=None, lookback=None,
               variable: str = "intensity", price_min=None, price_max=None, asset=None):
    """The cube at one bucket: ``(sel, index, cube, close)``.

    ``cube`` has shape (n_price, n_leverage, n_side), float64, summed over the selected series;
    ``close`` is the mean close of those series at that bucket (NaN when unknown).
    """
    sel = select(ds, variable=variable, series=series, side=side, leverage=leverage,
                 lookback=lookback, price_min=price_min, price_max=price_max, asset=asset)
    i = bucket_at(sel, at)
    da = ds[variable].isel(time=i, price=slice(sel.p0, sel.p1)).sel(
        series=sel.series, side=sel.sides, leverage=sel.leverages)
    cube = np.asarray(da.sum("series", dtype=np.float64).transpose("price", "leverage", "side")
                      .values, dtype=np.float64)
    cube = np.nan_to_num(cube, nan=0.0)
    close = np.asarray(ds["close"].isel(time=i).sel(series=sel.series).values, dtype=np.float64)
    close = float(np.nanmean(close)) if np.isfinite(close).any() else float("nan")
    return sel, i, cube, close


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges ``[a, b)`` of the runs of True in ``mask``.

    Examples
    --------
    >>> runs(np.array([0, 1, 1, 0, 1], bool))
    [(1, 3), (4, 5)]
    """
    m = np.r_[False, np.asarray(mask, bool), False].astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _no_oi_by_series(ds, sel, i: int) -> dict:
    """Per selected series without open interest in bucket ``i``: the open of its gap's first
    bucket (ISO text). A series whose bars have ended, summed with others (``--asset``),
    still holds its last positions: they are neither opened, closed nor liquidated."""
    if "oi" not in ds.variables:
        return {}
    names = [str(x) for x in np.atleast_1d(sel.series)]
    oi = np.asarray(ds["oi"].sel(series=sel.series).isel(time=slice(0, i + 1)).values,
                    dtype=np.float64).reshape(len(names), -1)
    out = {}
    for k, name in enumerate(names):
        if not np.isnan(oi[k, i]):
            continue
        ok = np.flatnonzero(~np.isnan(oi[k]))
        j = int(ok[-1]) + 1 if ok.size else 0
        out[name] = str(np.datetime_as_string(ds["time"].values[j].astype("datetime64[s]"))) + "Z"
    return out


def _no_oi_since(ds, sel, i: int) -> "str | None":
    """Where bucket ``i`` has no open interest in any selected series (a gap in the OI data:
    the model opens and closes no position, only price crossings liquidate): the open of the
    gap's first bucket, as ISO text; else None."""
    if "oi" not in ds.variables:
        return None
    oi = np.asarray(ds["oi"].sel(series=sel.series).isel(time=slice(0, i + 1)).values,
                    dtype=np.float64)
    gap = np.isnan(oi).all(axis=0)
    if not gap[i]:
        return None
    ok = np.flatnonzero(~gap)
    j = int(ok[-1]) + 1 if ok.size else 0
    return str(np.datetime_as_string(ds["time"].values[j].astype("datetime64[s]"))) + "Z"


#: a band's bins hold at least this share of their side's largest bin, unless told otherwise
#: (the same for ``liqgpu levels``, :func:`liqgpu.levels` and the viewer's table)
DEFAULT_THRESHOLD = 0.25


def find_levels(ds, at=None, top: int = 10, *, series=None, side: str = "both", leverage=None,
                threshold: float = DEFAULT_THRESHOLD, lookback=None, price_min=None,
                price_max=None, asset=None, within=None) -> list[dict]:
    """The strongest clusters of liquidation levels at one time.

    Parameters
    ----------
    ds : xarray.Dataset or path
        A liqgpu dataset or store.
    at : str or datetime64, optional
        A UTC time inside the store: the latest snapshot at or before it is used (the end of
        the last bucket that ended by then: no look-ahead). Default: the last bucket's.
    top : int
        How many bands to return (the largest by notional, both sides together).
    series, side, leverage, lookback, price_min, price_max
        As in :func:`liqgpu.render.select.select`.
    threshold : float
        A bin belongs to a band when its notional exceeds ``threshold`` times the largest bin of
        its side (0 <= threshold < 1; 0 merges every run of non-empty bins) [default:
        :data:`DEFAULT_THRESHOLD`, 0.25].
    within : float, optional
        Only bins within this many percent of the close (v2's strongest clusters over the whole
        grid are the low-leverage bands far from the price; ``within=10`` gives those near it,
        the threshold taken against the largest bin in that window). ``share`` stays the share
        of the side's total on the grid.

    Returns
    -------
    list of dict
        Sorted by notional, largest first. Keys: ``rank``, ``side``, ``price_low``,
        ``price_high`` (the band's outer bin edges), ``price`` (notional-weighted mean of bin
        centres), ``peak_price`` (centre of the largest bin), ``notional``, ``share`` (of the
        side's total on the grid), ``distance_pct`` (``price`` relative to the close, percent),
        ``bins``, ``tiers`` (leverage -> share of the band, largest first), ``dominant``
        (tiers holding at least a quarter of the band, at least one), ``time`` (the bucket's
        end, ISO UTC) and ``close``.

    Examples
    --------
    >>> find_levels("demo.zarr", top=3)[0]["side"]  # doctest: +SKIP
    'short'
    """
    if int(top) < 1:
        raise InputError(f"--top: {top} must be at least 1")
    if not (0.0 <= float(threshold) < 1.0):
        raise InputError(f"--threshold: {threshold} must be at least 0 and below 1")
    if within is not None and not (np.isfinite(within) and 0 < float(within) < 100):
        raise InputError(f"--within: {within} must be a percentage above 0 and below 100")
    ds = open_dataset(ds)
    sel, i, cube, close = profile_at(ds, at, series=series, side=side, leverage=leverage,
                                     lookback=lookback, price_min=price_min, price_max=price_max,
                                     asset=asset)
    edges, centres = sel.edges, sel.centres
    levs = list(sel.leverages)
    from ..store.layout import snapshot_times

    t_end = snapshot_times(ds["time"].values[i:i + 1], sel.every, ds.attrs)[0]
    when = str(np.datetime_as_string(t_end, unit="s")) + "Z"
    frozen = _no_oi_since(ds, sel, i)
    stale = _no_oi_by_series(ds, sel, i) if frozen is None else {}
    near = np.ones(centres.size, bool)
    if within is not None:
        if not close > 0:
            raise InputError("--within: the snapshot has no close price to measure from")
        w = float(within) / 100.0
        near = (centres >= close * (1 - w)) & (centres <= close * (1 + w))
    bands = []
    for s, name in enumerate(sel.sides):
        by_tier = cube[:, :, s]
        v = by_tier.sum(axis=1)
        total = float(v.sum())
        if not total > 0:
            continue
        v = np.where(near, v, 0.0)
        by_tier = np.where(near[:, None], by_tier, 0.0)
        if not v.max() > 0:
            continue
        keep = v > float(threshold) * float(v.max())
        for a, b in runs(keep):
            seg = v[a:b]
            notional = float(seg.sum())
            if not notional > 0:
                continue
            price = float((seg * centres[a:b]).sum() / notional)
            tier = by_tier[a:b].sum(axis=0) / notional
            order = np.argsort(-tier, kind="stable")
            tiers = {fmt_leverage(levs[k])[:-1]: float(tier[k]) for k in order if tier[k] > 0}
            dominant = [levs[k] for k in order if tier[k] >= DOMINANT_SHARE] or \
                [levs[order[0]]]
            bands.append({
                "side": name,
                "price_low": float(edges[a]),
                "price_high": float(edges[b]),
                "price": price,
                "peak_price": float(centres[a + int(np.argmax(seg))]),
                "notional": notional,
                "share": notional / total,
                "distance_pct": (price / close - 1.0) * 100.0 if close > 0 else float("nan"),
                "bins": int(b - a),
                "tiers": tiers,
                "dominant": dominant,
                "time": when,
                "close": close,
                "no_oi_since": frozen,
                "no_oi_series": stale,
            })
    bands.sort(key=lambda d: -d["notional"])
    bands = bands[: int(top)]
    for r, d in enumerate(bands, 1):
        d["rank"] = r
    return [{"rank": d.pop("rank"), **d} for d in bands]
