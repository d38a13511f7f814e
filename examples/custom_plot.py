"""A custom plot straight from the dataset: live notional per leverage band above and below
the price at the last snapshot, with xarray and matplotlib only.

    python examples/custom_plot.py --out bands.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import liqgpu  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bands.png")
    ap.add_argument("--days", type=int, default=10)
    a = ap.parse_args()
    ds = liqgpu.estimate(liqgpu.synthetic_series(days=a.days, seed=3), every="1h",
                         backend="numpy")
    last = ds.isel(time=-1, series=0)
    close = float(last["close"])
    inten = last["intensity"]  # (price, leverage, side), quote notional
    below = inten.sel(side="long").where(ds["price"] < close).sum("price")
    above = inten.sel(side="short").where(ds["price"] > close).sum("price")
    labels = [str(x) for x in ds["leverage"].values]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.bar(x - 0.2, below.values / 1e6, 0.4, label="longs (levels below the price)")
    ax.bar(x + 0.2, above.values / 1e6, 0.4, label="shorts (levels above the price)")
    ax.set_xticks(x, [f"{lab}x" for lab in labels])
    ax.set_ylabel("live notional (millions, quote)")
    ax.set_title(f"{ds['series'].values[0]}: liquidation levels by leverage band, close {close:,.0f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out)
    for lab, lo, hi in zip(labels, below.values, above.values):
        print(f"{lab:>8}x  longs {lo:14,.0f}  shorts {hi:14,.0f}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
