"""The embedded synthetic market: a seeded perpetual-futures series that behaves like a real one.

* returns: Student-t innovations (heavy tails) scaled by a GARCH(1,1) variance (volatility
  clusters), with slowly switching drift regimes (trends);
* open interest: builds while price trends quietly (leverage piles in), bleeds slowly otherwise,
  and drops in cascades when price runs fast (forced closes), which also push price further;
* volumes and taker-buy share follow the size and sign of the move.

The heatmap of such a market shows bands that appear while OI builds, persist, and get wiped when
price runs through them, like the real thing. No network, no data files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InputError

from .series import Series, from_frame


def synthetic_frame(
    *,
    days: float = 30,
    step: str = "1min",
    seed: int = 7,
    start: str = "2026-01-01T00:00:00Z",
    price: float = 60_000.0,
    oi: float = 80_000.0,
    annual_vol: float = 0.55,
) -> pd.DataFrame:
    """A synthetic market as a normalized DataFrame (columns of MODEL.md).

    Examples
    --------
    >>> df = synthetic_frame(days=1, seed=3)
    >>> list(df.columns)[:6]
    ['time', 'open', 'high', 'low', 'close', 'oi']
    """
    rng = np.random.default_rng(seed)
    dt = pd.Timedelta(step)
    n = int(round(pd.Timedelta(days=days) / dt))
    if n < 2:
        raise InputError(f"--days {days:g}: too short for the {step} step (at least 2 bars)")
    per_year = pd.Timedelta(days=365) / dt
    sigma0 = annual_vol / np.sqrt(per_year)  # per-step volatility
    dof = 3.5
    z = rng.standard_t(dof, size=n) / np.sqrt(dof / (dof - 2))
    u = rng.standard_normal((n, 3))
    regime_len = max(1, int(pd.Timedelta(hours=36) / dt))
    n_reg = n // regime_len + 2
    drifts = rng.normal(0.0, 1.0, n_reg + 1) * sigma0 * 0.035
    switch = np.sort(rng.choice(n, size=min(n - 1, n_reg), replace=False))

    omega, alpha, beta = sigma0**2 * 0.02, 0.06, 0.92
    var = sigma0**2
    r = np.empty(n)
    oi_arr = np.empty(n)
    cur_oi = oi
    window = max(2, int(pd.Timedelta(minutes=30) / dt))
    recent = np.zeros(window)
    reg = 0
    nxt = switch[0] if switch.size else n
    momentum = 0.0
    for t in range(n):
        if t == nxt:
            reg += 1
            nxt = switch[reg] if reg < switch.size else n
        sd = np.sqrt(var)
        ret = drifts[reg] + sd * z[t] + momentum
        recent[t % window] = ret
        move = recent.sum() / (sigma0 * np.sqrt(window))
        momentum *= 0.6
        per_min = dt / pd.Timedelta(minutes=1)
        if abs(move) > 3.5 and u[t, 0] > 0.5:
            # cascade: forced closes cut OI and push price further the same way
            frac = min(0.05, 0.002 * (abs(move) - 3.0) ** 1.5 * (1 + abs(u[t, 1])))
            cur_oi *= 1 - frac
            momentum += np.sign(move) * frac * sd * 3
        else:
            # leverage piles in while price trends quietly; OI reverts slowly to its base level
            trend = abs(drifts[reg]) / (sigma0 * 0.035)
            calm = 1.0 / (1.0 + abs(z[t]))
            build = 4e-5 * trend * calm
            revert = -2e-5 * np.log(cur_oi / oi)
            cur_oi *= np.exp((build + revert - 1e-5) * per_min + 3e-4 * np.sqrt(per_min) * u[t, 2])
        r[t] = ret
        oi_arr[t] = cur_oi
        var = omega + alpha * ret**2 + beta * var
        var = min(var, (sigma0 * 12) ** 2)

    close = price * np.exp(np.cumsum(r))
    open_ = np.concatenate([[price], close[:-1]])
    sd_path = np.abs(r) + sigma0 * 0.5
    wick_hi = np.abs(rng.standard_normal(n)) * sd_path * 0.6
    wick_lo = np.abs(rng.standard_normal(n)) * sd_path * 0.6
    high = np.maximum(open_, close) * np.exp(wick_hi)
    low = np.minimum(open_, close) * np.exp(-wick_lo)
    volume = (oi * 0.002) * (1 + np.abs(r) / sigma0) * np.exp(0.4 * rng.standard_normal(n))
    taker = volume * np.clip(0.5 + 0.35 * np.tanh(r / sigma0), 0.02, 0.98)
    hlc3 = (high + low + close) / 3
    times = pd.date_range(pd.Timestamp(start), periods=n, freq=dt)
    return pd.DataFrame({
        "time": times,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "oi": oi_arr,
        "volume": volume,
        "taker_buy_volume": taker,
        "quote_volume": volume * hlc3 * np.exp(0.0005 * rng.standard_normal(n)),
    })


def synthetic_series(*, days: float = 30, step: str = "1min", seed: int = 7,
                     exchange: str = "synthetic", symbol: str = "BTCUSDT", **kw) -> Series:
    """A synthetic market as a validated :class:`Series` (see :func:`synthetic_frame`).

    Examples
    --------
    >>> s = synthetic_series(days=1, seed=3)
    >>> len(s), s.name
    (1440, 'synthetic:BTCUSDT')
    """
    df = synthetic_frame(days=days, step=step, seed=seed, **kw)
    return from_frame(df, exchange=exchange, symbol=symbol, kind="linear",
                      source=f"synthetic(seed={seed}, days={days:g})")
