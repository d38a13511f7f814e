"""The scripts in examples/ run as a user would run them, and say what they should."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import liqgpu

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args) -> str:
    p = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_heatmap_across_venues(real_data, tmp_path):
    out = run("heatmap_across_venues.py", "--data", real_data, "--out", tmp_path, "--days", "7")
    assert "binance:BTCUSDT, hyperliquid:BTC" in out
    ds = liqgpu.open_store(tmp_path / "btc_venues.zarr")
    assert [str(x) for x in ds["series"].values] == ["binance:BTCUSDT", "hyperliquid:BTC"]
    assert ds.sizes["time"] == 7 * 24 and (tmp_path / "btc_venues.png").stat().st_size > 10_000
    top = liqgpu.levels(tmp_path / "btc_venues.zarr", asset="BTC", top=5, threshold=0.25)
    first = re.search(r"\n\s+1\s+(long|short)\s+([\d.]+)", out)
    assert first and first.group(1) == top["side"][0]
    assert float(first.group(2)) == pytest.approx(top["price_low"][0], rel=1e-6)


def test_backtest_levels():
    out = run("backtest_levels.py", "--days", "8", "--every", "12h")
    m = re.search(r"(\d+) decisions; .* long level hit within 12h: (\d+)%, short level: (\d+)%",
                  out)
    assert m and int(m.group(1)) == 13  # from day 1 to day 8 - 12h, every 12 h
    assert 0 < int(m.group(2)) + int(m.group(3)) <= 200


def test_custom_plot(tmp_path):
    png = tmp_path / "bands.png"
    out = run("custom_plot.py", "--out", png, "--days", "4")
    assert png.stat().st_size > 5_000
    rows = [ln.split() for ln in out.splitlines() if "longs" in ln]
    assert [r[0] for r in rows] == ["2-10x", "10-25x", "25-50x", "50-100x", "100-150x"]
    longs = [float(r[2].replace(",", "")) for r in rows]
    # weights ∝ L^-2: the 2-10x band holds far more than the 100-150x band
    assert longs[0] > 100 * longs[-1] > 0
