"""The command line: exit codes, messages, files written and not written."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from liqgpu.cli import main

from helpers import random_market


@pytest.fixture()
def bars(tmp_path):
    d, e = random_market(4, 300, nan_rows=0.02)
    df = pd.DataFrame({"time": (1_767_225_600_000 + 60_000 * np.arange(300)),
                       "open": d["open_"], "high": d["high"], "low": d["low"],
                       "close": d["close"], "oi": d["oi"], **e})
    df = df[np.isfinite(df["close"])]  # real files skip missing bars rather than hold NaN
    p = tmp_path / "bars.csv"
    df.to_csv(p, index=False)
    return p


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_estimate_with_every_option(tmp_path, bars):
    out = tmp_path / "s.zarr"
    r = run("estimate", bars, "--out", out, "--model", "v1", "--leverages", "10,20",
            "--weights", "0.4,0.6",
            "--mmr", "0.005", "--entry", "close", "--side-split", "taker", "--closure", "none",
            "--max-age", "90m", "--grid", "log:20:500:25", "--step", "2m", "--every", "30m",
            "--kind", "inverse", "--contract-size", "10", "--exchange", "deribit",
            "--symbol", "BTC-PERP", "--backend", "numpy")
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output
    ds = xr.open_zarr(out)
    assert ds.attrs["leverages"] == [10, 20] and ds.attrs["max_age"] == "90m"
    assert ds.attrs["step"] == "2m" and ds.attrs["every"] == "30m"
    assert ds.attrs["grid"] == "log:20:500:25" and ds.attrs["closure"] == "none"
    assert ds["series"].values.tolist() == ["deribit:BTC-PERP"]
    assert ds["kind"].values.tolist() == ["inverse"]
    assert ds.sizes["time"] == 10 and ds.sizes["leverage"] == 2
    assert float(ds["closed"].sum()) == 0.0  # --closure none
    assert ds.attrs["model"] == "v1" and "churned" not in ds


def test_estimate_with_every_v2_option(tmp_path, bars):
    out = tmp_path / "s.zarr"
    r = run("estimate", bars, "--out", out, "--leverages", "log:3:60:7", "--weights", "power:1",
            "--bands", "3,20,60", "--churn", "0.5", "--entry", "range:3", "--mmr", "0.005",
            "--side-split", "taker", "--max-age", "90m", "--grid", "log:20:500:25",
            "--step", "2m", "--every", "30m", "--backend", "numpy")
    assert r.exit_code == 0, r.output
    assert "x 2 bands x 2 sides" in r.output
    ds = xr.open_zarr(out)
    a = ds.attrs
    assert a["model"] == "v2" and a["leverages_spec"] == "log:3:60:7" and len(a["leverages"]) == 7
    assert a["weights_spec"] == "power:1" and a["bands"] == [3, 20, 60] and a["churn"] == 0.5
    assert a["entry"] == "range:3" and a["max_age"] == "90m"
    assert ds["leverage"].values.tolist() == ["3-20", "20-60"]
    assert ds["leverage_lo"].values.tolist() == [3, 20]
    assert ds["leverage_hi"].values.tolist() == [20, 60]
    # weights power:1 over 3..60: the 3-20 band holds the tiers 3, 4.94, 8.16, 13.4
    w = np.asarray(a["weights"])
    assert float(ds["added"].sum(["series", "time", "side"])[0]
                 / ds["added"].sum()) == pytest.approx(w[:4].sum(), rel=1e-9)
    # conservation with churn, per band and side
    t = lambda v: ds[v].sum(["series", "time"]).values  # noqa: E731
    live = (ds["intensity"].isel(time=-1).sum(["series", "price"]).values
            + ds["outside"].isel(time=-1).sum("series").values)
    gone = (ds["liquidated"].sum(["series", "time", "price"]).values
            + sum(t(v) for v in ("outside_liquidated", "closed", "churned", "expired")))
    np.testing.assert_allclose(live + gone, t("added"), rtol=1e-6)
    assert float(ds["churned"].sum()) > 0


def test_info_text_and_json(tmp_path, bars):
    out = tmp_path / "s.zarr"
    assert run("estimate", bars, "-o", out, "--backend", "numpy").exit_code == 0
    r = run("info", out, "--json")
    assert r.exit_code == 0
    d = json.loads(r.output)
    assert d["dims"]["series"] == 1 and d["params"]["entry"] == "close"
    assert d["params"]["model"] == "v2" and d["params"]["churn"] == 0.3
    assert d["dims"]["leverage"] == 5 and len(d["params"]["leverages"]) == 40
    assert d["time_start"] == "2026-01-01T00:00:00Z"
    t = d["totals"]
    for side in ("long", "short"):
        gone = sum(t[k][side] for k in ("liquidated", "outside_liquidated", "closed", "churned",
                                        "expired"))
        assert gone + t["live_at_end"][side] == pytest.approx(t["added"][side], rel=1e-6)
    # the cubes' totals are read a few time chunks at a time, summed in float64: the same
    # sums with a budget of one time chunk as all at once
    from liqgpu.api import side_totals
    from liqgpu.store import open_store

    ds = open_store(out, chunks=None)
    for v in ("liquidated", "added", "intensity"):
        whole = np.moveaxis(ds[v].values.astype(np.float64), ds[v].dims.index("side"), -1)
        whole = whole.reshape(-1, 2).sum(axis=0)
        np.testing.assert_allclose(side_totals(ds[v], budget=1), whole, rtol=1e-12)
        assert side_totals(ds[v]).tolist() == pytest.approx(whole.tolist(), rel=1e-12)
    assert t["liquidated"]["long"] == pytest.approx(
        float(ds["liquidated"].values[..., 0].astype(np.float64).sum()), rel=1e-12)
    r = run("info", out)
    assert "series    unknown:bars\n" in r.output
    assert "model     v2: 40 tiers log:2:150:40 weights power:2 bands 2,10,25,50,100,150 " \
        "churn 0.3/h" in r.output
    assert run("estimate", bars, "-o", tmp_path / "v1.zarr", "--model", "v1").exit_code == 0
    assert "leverages [5.0, 10.0, 25.0, 50.0, 100.0]" in run("info", tmp_path / "v1.zarr").output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--leverages", "5,x"], "--leverages"),
        (["--leverages", "log:2:150:100000"], "100000 tiers is more than the 512 allowed"),
        (["--model", "v1", "--leverages", ",".join(str(2 + i / 10) for i in range(600))],
         "--leverages: 600 tiers is more than the 512 allowed"),
        (["--weights", "0.5,0.5"], "weights: 2 weights for 40 leverage tiers"),
        (["--model", "v1", "--weights", "0.5,0.5"], "weights: 2 weights for 5 leverage tiers"),
        (["--model", "v1", "--churn", "0.3"], "--churn: model v1 has no churn"),
        (["--model", "v1", "--bands", "2,10"], "--bands: model v1 has no bands"),
        (["--bands", "2,10"], "fall in no band"),
        (["--entry", "range:0"], "range:N"),
        (["--model", "v3"], "--model"),
        (["--mmr", "0.5"], "mmr"),
        (["--mmr", "0.01"], "mmr: 0.01 is at or above 1/leverage for the tiers from 107.6x up "
                            "(with 150x the highest, mmr must be below 0.006667)"),
        (["--max-age", "forever"], "max_age"),
        (["--grid", "log:1:2"], "--grid"),
        (["--grid", "linear:1:2:0.1"], "holds none of the levels"),
        (["--every", "90s"], "--every 90s"),
        (["--step", "7s"], "--step 7s"),
        (["--kind", "quanto"], "--kind"),
        (["--backend", "tpu"], "--backend"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(tmp_path, bars, args, message):
    out = tmp_path / "s.zarr"
    r = CliRunner().invoke(main, ["estimate", str(bars), "--out", str(out)] + args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert isinstance(r.exception, SystemExit)  # a handled error, not an escaped exception
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.csv"]


def test_bad_inputs_exit_2(tmp_path, bars):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,open,high,low,close,oi\n1767225600000,1,2,1,1,1\n1767225660000,1,2,1,1,-3\n")
    r = CliRunner().invoke(main, ["estimate", str(bad), "-o", str(tmp_path / "o.zarr")])
    assert r.exit_code == 2 and "bad.csv: row 2 (line 3), column 'oi'" in r.output
    assert not (tmp_path / "o.zarr").exists()
    out = tmp_path / "s.zarr"
    assert run("estimate", bars, "-o", out, "--backend", "numpy").exit_code == 0
    r = CliRunner().invoke(main, ["estimate", str(bars), "-o", str(out)])
    assert r.exit_code == 2 and "already exists; pass --overwrite" in r.output
    r = CliRunner().invoke(main, ["estimate", str(bars), "-o", str(tmp_path / "no" / "s.zarr")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(main, ["info", str(tmp_path)])
    assert r.exit_code == 2 and "not a liqgpu store" in r.output


def test_unwritable_folder(tmp_path, bars, monkeypatch):
    import os

    from liqgpu.store import writer as store  # where check_target lives

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    # root can write anywhere, so make the folder read-only as the check sees it
    monkeypatch.setattr(store.os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    r = CliRunner().invoke(main, ["estimate", str(bars), "-o", str(ro / "s.zarr")])
    assert r.exit_code == 2 and "is not writable" in r.output
    assert list(ro.iterdir()) == []


def test_demo_writes_store_and_png(tmp_path):
    r = run("demo", "--out", tmp_path / "d", "--days", "2", "--width", "800", "--height", "450",
            "--backend", "numpy")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / "demo.zarr" / "zarr.json").exists()
    png = (tmp_path / "d" / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(png)).size == (800, 450)
    assert "wrote" in r.output and "demo.png" in r.output
    # runs again over its own output
    assert run("demo", "--out", tmp_path / "d", "--days", "1", "--width", "800",
               "--height", "450").exit_code == 0


def test_import_is_light():
    code = ("import sys, liqgpu, liqgpu.cli; "
            "heavy = [m for m in ('cupy', 'datashader', 'matplotlib', 'xarray', 'zarr', 'dask') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args, message", [
    (["--width", "100"], "100"),
    (["--days", "0"], "--days 0: too short"),
    (["--days", "-1"], "--days -1: too short"),
    (["--max-age", "10s"], "max_age: 10s is shorter than the model step"),
    (["--model", "v1", "--max-age", "soon"], "max_age"),
])
def test_demo_bad_options_write_nothing(tmp_path, args, message):
    from liqgpu.cli import main

    out = tmp_path / "d"
    r = CliRunner().invoke(main, ["demo", "--out", str(out), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and not isinstance(r.exception, (ValueError, TypeError))
    assert not out.exists()


@pytest.mark.parametrize("value", ["zero", "0"])
def test_a_bad_liqgpu_threads_exits_2_and_writes_nothing(tmp_path, bars, monkeypatch, value):
    pytest.importorskip("numba")
    monkeypatch.setenv("LIQGPU_JIT", "1")  # the compiled loops, whose threads it sets
    monkeypatch.setenv("LIQGPU_THREADS", value)
    out = tmp_path / "s.zarr"
    r = CliRunner().invoke(main, ["estimate", str(bars), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert f"LIQGPU_THREADS='{value}': must be a whole number of threads" in r.output
    assert isinstance(r.exception, SystemExit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.csv"]


@pytest.mark.parametrize("kw, words", [
    ({"dtype": np.int8}, "dtype: int8: the cubes are float32 (default) or float64"),
    ({"dtype": np.float16}, "dtype: float16: the cubes are float32"),
    ({"dtype": "nonsense"}, "dtype: 'nonsense': the cubes are float32"),
    ({"chunk_buckets": -1}, "chunk_buckets: -1 must be a positive whole number"),
    ({"memory_budget": 0}, "memory_budget: 0 must be a positive whole number"),
])
def test_api_run_options_are_checked(tmp_path, kw, words):
    """liqgpu.estimate's dtype and chunking options: a clear InputError (an int8 cube raised a
    bare OverflowError, float16 a ValueError, negative sizes were taken), nothing written."""
    import liqgpu

    s = liqgpu.synthetic_series(days=1, seed=3)
    with pytest.raises(liqgpu.InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        liqgpu.estimate(s, backend="numpy", out=tmp_path / "s.zarr", **kw)
    assert list(tmp_path.iterdir()) == []
