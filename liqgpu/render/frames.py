"""The numbers of a store as pandas and xarray objects, for notebooks and other tools.

``levels`` (the strongest bands at a time), ``profile`` (the liquidation map: notional per price
bin and side at a time, no look-ahead) and ``heatmap`` (time x price for a selection) read the
same selections as the pictures, so a number and its picture always agree.
"""

from __future__ import annotations

import numpy as np

from .levels import find_levels, profile_at
from .select import fmt_leverage, open_dataset, select


def levels(store, at=None, top: int = 10, **selection):
    """The strongest clusters of liquidation levels at ``at`` as a DataFrame.

    One row per band: rank, side, price range, notional, share of its side, distance from the
    close (%), bins, dominant leverage, the snapshot's time and close, and where the store has
    no open interest at that time, since when (``no_oi_since``: no position opened or closed
    since, else None). Keywords as in
    :func:`liqgpu.render.find_levels` (``series``, ``asset``, ``side``, ``leverage``,
    ``threshold``, ``lookback``, ``price_min``, ``price_max``).

    Examples
    --------
    >>> liqgpu.levels("btc.zarr", at="2026-03-04T12:00Z", top=5, asset="BTC")  # doctest: +SKIP
    """
    import pandas as pd

    rows = find_levels(store, at=at, top=top, **selection)
    out = []
    for b in rows:
        r = {k: v for k, v in b.items() if k not in ("tiers", "dominant")}
        r["dominant"] = "/".join(fmt_leverage(v) for v in b["dominant"])
        out.append(r)
    cols = ["rank", "side", "price_low", "price_high", "price", "peak_price", "notional", "share",
            "distance_pct", "bins", "dominant", "time", "close", "no_oi_since"]
    return pd.DataFrame(out, columns=cols)


def profile(store, at=None, **selection):
    """The liquidation map at ``at`` (the latest snapshot at or before it) as a DataFrame.

    Columns: ``price_low``, ``price_high``, ``price`` (bin centre), ``long``, ``short`` (notional
    summed over the selected series and leverage), then one column per side and leverage cell
    (``long 10-25x`` ...). Only bins holding some notional are listed.
    """
    import pandas as pd

    ds = open_dataset(store)
    sel, _, cube, close = profile_at(ds, at, **selection)
    data = {"price_low": sel.edges[:-1], "price_high": sel.edges[1:], "price": sel.centres}
    for s, side in enumerate(sel.sides):
        data[side] = cube[:, :, s].sum(axis=1)
    for s, side in enumerate(sel.sides):
        for k, lev in enumerate(sel.leverages):
            data[f"{side} {fmt_leverage(lev)}"] = cube[:, k, s]
    df = pd.DataFrame(data)
    keep = df[list(sel.sides)].sum(axis=1) > 0
    return df[keep].reset_index(drop=True)


def heatmap(store, variable: str = "intensity", **selection):
    """The time x price DataArray of ``variable`` for a selection (summed over the selected
    series, leverage and sides), loaded into memory.

    Keywords as :func:`liqgpu.render.select.select` (``series``, ``asset``, ``side``,
    ``leverage``, ``start``, ``end``, ``price_min``, ``price_max``, ``lookback``).
    """
    ds = open_dataset(store)
    sel = select(ds, variable=variable, **selection)
    da = sel.cube()
    dims = [d for d in ("series", "leverage", "side") if d in da.dims]
    out = da.sum(dims, dtype=np.float64).transpose("time", "price").compute()
    out.name = variable
    out.attrs.update(units=ds[variable].attrs.get("units", "quote notional"),
                     series=list(sel.series), sides=list(sel.sides))
    return out


def write_csv(df, path) -> None:
    """Write a DataFrame to CSV through a temporary file moved into place (never half a file)."""
    import os
    import uuid
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def snapshot_at(ds, t):
    """The dataset at the latest snapshot taken at or before ``t``: never a look-ahead.

    ``time`` labels a bucket by its open time while ``intensity`` is the snapshot at its end, so
    ``ds.sel(time=t, method="ffill")`` would return levels from up to one bucket after ``t``;
    this picks the bucket whose end is at or before ``t`` (``None`` where there is none yet).

    Examples
    --------
    >>> snap = liqgpu.snapshot_at(ds, "2026-03-04T12:10Z")  # doctest: +SKIP
    >>> snap["intensity"].sum(["series", "leverage"])        # levels as of 12:00 (1h buckets)
    """
    from ..store.layout import snapshot_times
    from .select import every_of, parse_time

    ds = open_dataset(ds)
    ends = snapshot_times(ds["time"].values, every_of(ds), ds.attrs)
    i = int(np.searchsorted(ends, parse_time(t, option="t"), side="right")) - 1
    if i < 0:
        return None
    return ds.isel(time=i)
