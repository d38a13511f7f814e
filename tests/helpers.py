"""Market builders shared by the tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from liqgpu.series import from_frame

T0 = pd.Timestamp("2026-03-01T00:00:00Z")


def make_series(close, oi, *, high=None, low=None, open_=None, step="1min", kind="linear",
                contract_size=1.0, exchange="test", symbol="X", extra=None, start=T0):
    """A Series from plain lists (NaN allowed) on a regular grid."""
    close = np.asarray(close, dtype=float)
    n = close.size
    high = close if high is None else np.asarray(high, dtype=float)
    low = close if low is None else np.asarray(low, dtype=float)
    open_ = close if open_ is None else np.asarray(open_, dtype=float)
    df = pd.DataFrame({
        "time": pd.date_range(start, periods=n, freq=step),
        "open": open_, "high": high, "low": low, "close": close,
        "oi": np.asarray(oi, dtype=float),
    })
    for k, v in (extra or {}).items():
        df[k] = np.asarray(v, dtype=float)
    return from_frame(df, exchange=exchange, symbol=symbol, kind=kind, contract_size=contract_size)


def random_market(seed: int, n: int, *, nan_rows=0.0, with_mark=False, with_volume=True,
                  oi_mode="mixed", price=100.0):
    """A random market with heavy-tailed moves and OI that rises, falls and reaches zero."""
    rng = np.random.default_rng(seed)
    r = rng.standard_t(2.5, n) * rng.uniform(0.002, 0.03)
    close = price * np.exp(np.cumsum(r))
    open_ = np.concatenate([[price], close[:-1]])
    wick = np.abs(rng.standard_t(3, (2, n))) * 0.01
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - np.minimum(wick[1], 0.5))
    steps = rng.normal(0.02, 0.3, n)
    if oi_mode == "rising":
        steps = np.abs(steps)
    oi = np.maximum(0.0, 10 + np.cumsum(steps * 5))
    if oi_mode == "mixed":
        zero_at = rng.integers(0, n, size=rng.integers(0, 3))
        oi[zero_at] = 0.0
        crash = rng.random(n) < 0.05
        oi[crash] *= rng.uniform(0.0, 0.9, crash.sum())
    extra = {}
    if with_volume:
        vol = rng.exponential(5, n) * (rng.random(n) > 0.1)
        extra["volume"] = vol
        extra["taker_buy_volume"] = vol * rng.uniform(0, 1, n)
        extra["quote_volume"] = vol * (high + low + close) / 3 * rng.uniform(0.99, 1.01, n)
    if with_mark:
        extra["mark_high"] = high * rng.uniform(0.995, 1.0, n)
        extra["mark_low"] = np.minimum(low * rng.uniform(1.0, 1.005, n), extra["mark_high"])
    data = dict(close=close, high=high, low=low, open_=open_, oi=oi)
    if nan_rows:
        mask = rng.random(n) < nan_rows
        mask[0] = False
        for k in ("close", "high", "low", "open_"):
            data[k] = np.where(mask, np.nan, data[k])
        oi_mask = mask | (rng.random(n) < nan_rows / 2)
        oi_mask[0] = False
        data["oi"] = np.where(oi_mask, np.nan, data["oi"])
        for k in list(extra):
            extra[k] = np.where(mask, np.nan, extra[k])
    return data, extra
