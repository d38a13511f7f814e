"""v1 and v2 stores side by side through the commands that read or continue them."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import liqgpu
from liqgpu.cli import main
from liqgpu.render.levels import find_levels
from liqgpu.render.select import choose_leverages
from liqgpu.updating import update

GRID = "log:20000:200000:10"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("v2stores")
    s = liqgpu.synthetic_series(days=3, seed=5)
    out = {}
    for m in ("v1", "v2"):
        out[m] = d / f"{m}.zarr"
        liqgpu.estimate(s, every="1h", backend="numpy", out=out[m], model=m, grid=GRID)
    out["series"] = s
    return out


def test_update_continues_each_store_with_its_own_model(stores, tmp_path):
    s = stores["series"]
    n = len(s)
    head, tail = s.slice(0, n - 700), s.slice(n - 800, n)
    for m in ("v1", "v2"):
        path = tmp_path / f"{m}.zarr"
        liqgpu.estimate(head, every="1h", backend="numpy", out=path, model=m, grid=GRID)
        ds = update(path, tail, allow_outside=True)
        assert ds.attrs["model"] == m
        whole = liqgpu.open_store(stores[m])
        assert ds.sizes == whole.sizes
        for v in ("intensity", "liquidated", "added") + (("churned",) if m == "v2" else ()):
            a, b = ds[v].values.astype(np.float64), whole[v].values.astype(np.float64)
            # float rounding: retirement points follow block boundaries (MODEL.md allows 1e-9)
            assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max(), v
        assert ("churned" in ds) == (m == "v2")


def test_render_selects_bands_by_label_or_leverage(stores, tmp_path):
    ds = liqgpu.open_store(stores["v2"])
    assert choose_leverages(ds, "10-25") == ["10-25"]
    assert choose_leverages(ds, "20,120x") == ["10-25", "100-150"]
    assert choose_leverages(ds, "150") == ["100-150"]  # the last band holds its upper edge
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out, lev in ((a, "10-25"), (b, "20")):
        r = CliRunner().invoke(main, ["render", str(stores["v2"]), "-o", str(out), "--leverage",
                                      lev, "--width", "800", "--height", "450"])
        assert r.exit_code == 0, r.output
    assert a.read_bytes() == b.read_bytes()
    r = CliRunner().invoke(main, ["render", str(stores["v1"]), "-o", str(tmp_path / "c.png"),
                                  "--leverage", "10-25"])
    assert r.exit_code == 2 and "--leverage" in r.output


def test_levels_name_dominant_bands(stores):
    bands = find_levels(stores["v2"], top=20, threshold=0.2)
    assert bands
    labels = {"2-10", "10-25", "25-50", "50-100", "100-150"}
    for b in bands:
        assert set(b["tiers"]) <= labels and sum(b["tiers"].values()) == pytest.approx(1.0)
        assert all(d in labels for d in b["dominant"])
    r = CliRunner().invoke(main, ["levels", str(stores["v2"]), "--top", "3", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert all(isinstance(d, str) for b in got["levels"] for d in b["dominant"]) if isinstance(
        got, dict) else all(isinstance(d, str) for b in got for d in b["dominant"])
    v1 = find_levels(stores["v1"], top=5)
    assert all(isinstance(d, float) for b in v1 for d in b["dominant"])


def test_map_and_info_on_v2(stores, tmp_path):
    r = CliRunner().invoke(main, ["map", str(stores["v2"]), "-o", str(tmp_path / "m.png"),
                                  "--width", "800", "--height", "450"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["info", str(stores["v2"])])
    assert "bands 2,10,25,50,100,150" in r.output and "churned" in r.output
    d = json.loads(CliRunner().invoke(main, ["info", str(stores["v2"]), "--json"]).output)
    t = d["totals"]
    for side in ("long", "short"):
        gone = sum(t[k][side] for k in ("liquidated", "outside_liquidated", "closed", "churned",
                                        "expired"))
        assert gone + t["live_at_end"][side] == pytest.approx(t["added"][side], rel=1e-6)
