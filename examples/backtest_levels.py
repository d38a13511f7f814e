"""A backtest-safe lookup of liquidation levels: at each decision time, only what was known then.

For every 6 hours of a synthetic month, take the latest snapshot at or before the decision time
(``liqgpu.snapshot_at``: never the bucket that is still open), find the nearest strong
high-leverage long level below the price and short level above it, and check how often the next
6 hours' range reached them.

    python examples/backtest_levels.py --days 30
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

import liqgpu


HIGH_LEVERAGE = ["25-50", "50-100", "100-150"]  # the bands whose levels sit near the price


def nearest_levels(snap, close: float, share: float = 0.02):
    """Prices of the nearest bins below/above ``close`` holding at least ``share`` of a side's
    high-leverage notional (bands 25x and up)."""
    inten = snap["intensity"].sel(leverage=HIGH_LEVERAGE).sum(["series", "leverage"]).values
    price = snap["price"].values
    out = []
    for side, below in ((0, True), (1, False)):
        v = inten[:, side]
        strong = v >= share * v.sum() if v.sum() > 0 else np.zeros_like(v, bool)
        idx = np.flatnonzero(strong & ((price < close) if below else (price > close)))
        out.append(float(price[idx[-1] if below else idx[0]]) if idx.size else np.nan)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--every", default="6h", help="time between decisions")
    a = ap.parse_args()
    s = liqgpu.synthetic_series(days=a.days, seed=21)
    ds = liqgpu.estimate(s, every="1h", backend="numpy")
    bars = pd.DataFrame({"time": pd.to_datetime(s.time, utc=True), "high": s["high"],
                         "low": s["low"], "close": s["close"]}).set_index("time")
    step = pd.Timedelta(a.every)
    rows = []
    t = bars.index[0] + pd.Timedelta(days=1)
    while t + step <= bars.index[-1]:
        snap = liqgpu.snapshot_at(ds, t.isoformat())
        known = bars[bars.index < t]  # bars that closed before the decision
        close = float(known["close"].iloc[-1])
        lo, hi = nearest_levels(snap, close)
        nxt = bars[(bars.index >= t) & (bars.index < t + step)]
        rows.append({"time": t, "close": close, "long_level": lo, "short_level": hi,
                     "long_hit": bool(nxt["low"].min() <= lo),
                     "short_hit": bool(nxt["high"].max() >= hi)})
        t += step
    r = pd.DataFrame(rows)
    print(f"{len(r)} decisions; nearest strong long level hit within {a.every}: "
          f"{r['long_hit'].mean():.0%}, short level: {r['short_hit'].mean():.0%}")
    print(r.tail(3).to_string(index=False))


if __name__ == "__main__":
    main()
