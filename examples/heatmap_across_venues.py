"""A BTC liquidation heatmap across two venues from the shared real data.

Binance (hourly prices and Binance open interest from the CoinGlass export) and Hyperliquid
(its hourly open interest) become two normalized series in one store (model v2, the
default); the BTC asset is rendered summed across both venues and its strongest levels listed.

    python examples/heatmap_across_venues.py --data ../shared/data/real --out out/ --days 30
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

import liqgpu
from liqgpu.series import from_frame

AGG = "coinglass_btc_agg/agg3_btc_liq_binance_oi_spotprice_1h_2025-12-04_2026-06-02.csv"
MV = "multivenue_hl_okx_hourly"


def binance(data: Path, start, end):
    raw = pd.read_csv(data / AGG)
    t = pd.to_datetime(raw["open_time_ms"], unit="ms", utc=True)
    df = pd.DataFrame({"time": t, "open": raw["spot_open"], "high": raw["spot_high"],
                       "low": raw["spot_low"], "close": raw["spot_close"],
                       "oi": raw["binance_oi_usd_close"] / raw["spot_close"]})  # BTC
    df = df[(df["time"] >= start) & (df["time"] < end)]
    return from_frame(df, exchange="binance", symbol="BTCUSDT", source="coinglass")


def hyperliquid(data: Path, start, end):
    # Hyperliquid's own candles end on 2025-04-17 in this data while its hourly open interest
    # goes on to 2026-03-07; its BTC perpetual tracks the same index, so the Binance BTC candles
    # stand in for its prices (a few basis points apart: levels 10 bps wide barely notice)
    c = pd.read_csv(data / MV / "candles_1h_multivenue.csv")
    c = c[(c["venue"] == "binance") & (c["coin"] == "BTC")]
    oi = pd.read_csv(data / MV / "open_interest_hourly_hl_lighter.csv")
    oi = oi[(oi["venue"] == "hyperliquid") & (oi["coin"] == "BTC")]
    df = c.merge(oi[["time_utc", "oi_usd"]], on="time_utc", how="inner")
    df = pd.DataFrame({"time": pd.to_datetime(df["time_utc"], utc=True), "open": df["o"],
                       "high": df["h"], "low": df["l"], "close": df["c"],
                       "oi": df["oi_usd"] / df["c"]})
    df = df[(df["time"] >= start) & (df["time"] < end)].drop_duplicates("time")
    return from_frame(df.sort_values("time"), exchange="hyperliquid", symbol="BTC",
                      source="hyperliquid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
                    / "data" / "real")
    ap.add_argument("--out", type=Path, default=Path("examples-out"))
    ap.add_argument("--end", default="2026-03-05", help="UTC end of the window")
    ap.add_argument("--days", type=int, default=30)
    a = ap.parse_args()
    if not (a.data / AGG).is_file():
        ap.error(f"--data {a.data}: no {AGG} there; give the folder of the shared real data "
                 "(shared/data/real beside the project)")
    end = pd.Timestamp(a.end, tz="UTC")
    start = end - pd.Timedelta(days=a.days)
    a.out.mkdir(parents=True, exist_ok=True)
    series = [binance(a.data, start, end), hyperliquid(a.data, start, end)]
    store = a.out / "btc_venues.zarr"
    ds = liqgpu.estimate(series, every="1h", out=store, overwrite=True)
    png = a.out / "btc_venues.png"
    liqgpu.render(store, out=png, asset="BTC", width=1600, height=900, how="log")
    top = liqgpu.levels(store, asset="BTC", top=5, threshold=0.25)
    print(f"wrote {store} ({', '.join(ds['series'].values)}) and {png}")
    print(top[["rank", "side", "price_low", "price_high", "notional", "dominant"]]
          .to_string(index=False))


if __name__ == "__main__":
    main()
