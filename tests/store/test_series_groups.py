"""Fleets in series groups (issue 13): a store run in several series groups is the one-group
store bit for bit, and each group's chunk cubes stay under the memory budget."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import liqgpu
from liqgpu import pipeline
from liqgpu.model.engine import series_engine_bytes
from liqgpu.store.integrity import MANIFEST
from liqgpu.updating import update


def fleet(n=5, days=3):
    return [liqgpu.synthetic_series(days=days, step="5min", seed=i, exchange=f"ex{i % 3}",
                                    symbol=f"BTC{i}") for i in range(n)]


def events(series):
    rng = np.random.default_rng(7)
    rows = []
    for s in series:
        t = s.time[:: 37].astype("datetime64[ns]")
        close = np.asarray(s["close"])[:: 37]
        for ti, px in zip(t, close):
            rows.append({"time": pd.Timestamp(ti, tz="UTC"), "exchange": s.exchange,
                         "symbol": s.symbol, "side": "long" if rng.random() < .5 else "short",
                         "price": float(px) * (1 + rng.normal(0, .01)),
                         "notional": float(rng.uniform(1e3, 1e5))})
    return pd.DataFrame(rows)


def store_files(root: Path) -> dict:
    """Every file of a store as bytes, but for the creation time in the metadata."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        data = p.read_bytes()
        if p.name in ("zarr.json", MANIFEST) or rel.endswith(".json"):
            data = json.loads(data)
            _drop_created(data)
        out[rel] = data
    return out


def _drop_created(x):
    if isinstance(x, dict):
        x.pop("created", None)
        for v in x.values():
            _drop_created(v)
    elif isinstance(x, list):
        for v in x:
            _drop_created(v)


def test_series_groups_are_chosen_from_the_budget():
    from liqgpu.model.engine import SeriesEngines

    eng = SeriesEngines.__new__(SeriesEngines)
    per = pipeline.chunk_cube_bytes(1, 48, 2000, 5, np.float32)
    assert per == 2 * 48 * 2000 * 5 * 2 * 4
    assert pipeline.series_groups(eng, 200, 48, 2000, 5, np.float32, 256 * 2**20) == \
        [(s, min(s + 34, 200)) for s in range(0, 200, 34)]  # 7.7 MB a series
    assert pipeline.series_groups(eng, 7, 48, 2000, 5, np.float32, 1) == \
        [(i, i + 1) for i in range(7)]  # at least one series a group
    assert pipeline.series_groups(eng, 7, 48, 2000, 5, np.float32, 10 * per) == [(0, 7)]
    assert pipeline.series_groups(object(), 7, 48, 2000, 5, np.float32, 1) == [(0, 7)]


@pytest.mark.parametrize("realized", [False, True])
def test_fleet_in_groups_equals_one_group_bit_for_bit(tmp_path, realized):
    ss = fleet()
    ev = events(ss) if realized else None
    params = pipeline.resolve_params(None, None)
    one = pipeline.plan(ss, params, every="1h", backend="numpy", chunk_buckets=24)
    eng = series_engine_bytes(params, one.inputs.step, one.inputs.n_steps, one.grid.n_bins,
                              one.chunk_buckets, one.n_every)
    per = pipeline.chunk_cube_bytes(1, one.chunk_buckets, one.grid.n_bins, params.n_out,
                                    np.float32) + eng
    budget = 2 * per
    many = pipeline.plan(ss, params, every="1h", backend="numpy", chunk_buckets=24,
                         memory_budget=budget)
    assert one.groups == [(0, 5)]
    assert many.groups == [(0, 2), (2, 4), (4, 5)]
    assert many.chunk_buckets == one.chunk_buckets  # the same time cuts
    # the memory the chunk cubes and engines take: one group's, under the budget
    assert max(pipeline.chunk_cube_bytes(s1 - s0, many.chunk_buckets, many.grid.n_bins,
                                         params.n_out, np.float32) + (s1 - s0) * eng
               for s0, s1 in many.groups) <= budget
    a, b = tmp_path / "one.zarr", tmp_path / "many.zarr"
    liqgpu.estimate(ss, every="1h", backend="numpy", out=a, chunk_buckets=24, realized=ev)
    liqgpu.estimate(ss, every="1h", backend="numpy", out=b, chunk_buckets=24,
                    memory_budget=budget, realized=ev)
    fa, fb = store_files(a), store_files(b)
    assert fa.keys() == fb.keys()
    assert any(k.startswith("resume/") for k in fa)
    for k in fa:
        assert fa[k] == fb[k], k
    ds = liqgpu.open_store(b)
    if realized:
        assert float(ds["realized"].sum()) > 0
    assert liqgpu.store.integrity.verify(b)["manifest"]


def assert_same(got, ref, tol=1e-9):
    for v in ("intensity", "liquidated", "added", "closed", "expired", "outside"):
        a, b = got[v].values.astype(float), ref[v].values.astype(float)
        assert a.shape == b.shape, v
        scale = max(np.nanmax(np.abs(b)) if np.isfinite(b).any() else 0.0, 1e-300)
        assert np.array_equal(np.isnan(a), np.isnan(b)), v
        assert np.nanmax(np.abs(a - b), initial=0.0) / scale <= tol, v


def test_update_after_a_grouped_run_equals_a_full_estimate(tmp_path):
    ss = fleet(n=3, days=3)
    grid = pipeline.plan(ss, pipeline.resolve_params(None, None), every="1h",
                         backend="numpy").grid.spec
    head = [s.slice(0, len(s) - 300) for s in ss]
    out = tmp_path / "s.zarr"
    liqgpu.estimate(head, every="1h", backend="numpy", out=out, grid=grid, chunk_buckets=24,
                    memory_budget=1)  # one series a group
    update(out, ss)
    ref = liqgpu.estimate(ss, every="1h", backend="numpy", grid=grid, chunk_buckets=24)
    assert_same(liqgpu.open_store(out), ref)


def far_apart(days=3):
    from liqgpu.series import from_frame
    from liqgpu.synth import synthetic_frame

    a = liqgpu.synthetic_series(days=days, step="5min", seed=1, exchange="ex", symbol="BTC")
    df = synthetic_frame(days=days, step="5min", seed=2, price=600.0)
    df["exchange"], df["symbol"] = "ex", "SOL"
    return [a, from_frame(df)]


def test_chunks_a_series_never_reaches_are_not_stored(tmp_path):
    import zarr

    ss = far_apart()
    out = tmp_path / "far.zarr"
    liqgpu.estimate(ss, every="1h", backend="numpy", out=out)
    ref = liqgpu.estimate(ss, every="1h", backend="numpy")
    ds = liqgpu.open_store(out)
    for v in ("intensity", "liquidated"):  # read back: zeros where nothing was stored
        np.testing.assert_array_equal(ds[v].values, ref[v].values)
    a = zarr.open_array(str(out / "intensity"), mode="r")
    assert a.fill_value == 0
    n_t, n_p = (-(-a.shape[k] // a.chunks[k]) for k in (1, 2))
    assert n_p >= 4  # the grid spans both prices
    stored = {tuple(int(x) for x in p.name.split(".")[1:3]) for p in (out / "intensity").glob("c.*")}
    for i in range(2):
        cube = ref["intensity"].values[i]
        reached = {(t, j) for t in range(n_t) for j in range(n_p)
                   if np.any(cube[t * a.chunks[1]:(t + 1) * a.chunks[1],
                                  j * a.chunks[2]:(j + 1) * a.chunks[2]])}
        mine = {(t, j) for s, t, j in ((int(p.name.split(".")[1]), *map(int, p.name.split(".")[2:4]))
                                       for p in (out / "intensity").glob("c.*")) if s == i}
        assert mine == reached
        assert len(mine) < n_t * n_p / 2  # most of the grid is far from this series
    assert stored
    manifest = json.loads((out / MANIFEST).read_text())["arrays"]["intensity"]
    assert len(manifest) == len(list((out / "intensity").glob("c.*")))
    report = liqgpu.store.integrity.verify(out)
    assert report["manifest"]
    # xarray without liqgpu reads the same
    import xarray as xr

    raw = xr.open_zarr(out)
    np.testing.assert_array_equal(raw["intensity"].values, ref["intensity"].values)


def test_update_of_a_sparse_store_leaves_no_stale_chunk(tmp_path):
    ss = far_apart(days=3)
    grid = pipeline.plan(ss, pipeline.resolve_params(None, None), every="1h",
                         backend="numpy").grid.spec
    out = tmp_path / "far.zarr"
    liqgpu.estimate([s.slice(0, len(s) - 250) for s in ss], every="1h", backend="numpy",
                    out=out, grid=grid)
    update(out, ss)
    ref = liqgpu.estimate(ss, every="1h", backend="numpy", grid=grid)
    got = liqgpu.open_store(out)
    assert_same(got, ref)
    for v in ("intensity", "liquidated"):
        np.testing.assert_array_equal(got[v].values, ref[v].values)
    liqgpu.store.integrity.verify(out)
    # a fresh store of the whole history stores the same chunk keys
    fresh = tmp_path / "fresh.zarr"
    liqgpu.estimate(ss, every="1h", backend="numpy", out=fresh, grid=grid)
    for v in ("intensity", "liquidated"):
        assert {p.name for p in (out / v).glob("c.*")} == {p.name for p in (fresh / v).glob("c.*")}


def test_a_grouped_run_holds_one_group_of_engines_and_inputs_at_a_time(tmp_path, monkeypatch):
    """Memory does not grow with the fleet: the engines and prepared inputs alive while a
    grouped store run computes are one group's (counted, not timed), the whole fleet is never
    prepared at once, and the group states spilled to disk are gone after the run."""
    import gc
    import weakref

    from liqgpu.model import engine as E
    from liqgpu.model import inputs as I

    ss = fleet(n=6, days=2)
    params = pipeline.resolve_params(None, None)
    one = pipeline.plan(ss, params, every="1h", backend="numpy", chunk_buckets=24)
    per = pipeline.chunk_cube_bytes(1, one.chunk_buckets, one.grid.n_bins, params.n_out,
                                    np.float32) + series_engine_bytes(
        params, one.inputs.step, one.inputs.n_steps, one.grid.n_bins, one.chunk_buckets,
        one.n_every)
    engines, inputs, seen = weakref.WeakSet(), weakref.WeakSet(), {"engines": 0, "series": 0}
    prepared = []
    init, prep, chunk = E.Engine.__init__, I.prepare, E.Engine.chunk

    def counting_init(self, *a, **k):
        init(self, *a, **k)
        engines.add(self)

    def counting_prepare(series, *a, **k):
        out = prep(series, *a, **k)
        prepared.append(len(series))
        inputs.add(out)
        return out

    def counting_chunk(self, b0, b1, **kw):
        gc.collect()
        seen["engines"] = max(seen["engines"], len(engines))
        seen["series"] = max(seen["series"], sum(x.n_series for x in inputs))
        return chunk(self, b0, b1, **kw)

    monkeypatch.setattr(E.Engine, "__init__", counting_init)
    monkeypatch.setattr(I, "prepare", counting_prepare)
    monkeypatch.setattr(E.Engine, "chunk", counting_chunk)
    monkeypatch.setattr(I.FleetInputs, "BATCH", 2)  # level ranges read two series at a time
    out = tmp_path / "g.zarr"
    liqgpu.estimate(ss, every="1h", backend="numpy", out=out, chunk_buckets=24,
                    memory_budget=2 * per)
    assert seen["engines"] == 2  # groups of two series
    assert seen["series"] <= 2
    assert max(prepared) == 2  # never the whole fleet's inputs at once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.zarr"]  # no spill left


def test_large_resume_packs_are_written_in_chunks(tmp_path, monkeypatch):
    """A resume pack over PACK_CHUNK_BYTES is written a chunk at a time (never assembled
    whole) and reads back as the one-chunk pack; the store still updates."""
    import zarr

    from liqgpu.store import read_group
    from liqgpu.store import resume as R

    ss = fleet(n=3, days=2)
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    liqgpu.estimate(ss, every="1h", backend="numpy", out=a, chunk_buckets=24, memory_budget=1)
    monkeypatch.setattr(R, "PACK_CHUNK_BYTES", 4096)
    liqgpu.estimate(ss, every="1h", backend="numpy", out=b, chunk_buckets=24, memory_budget=1)
    ga, aa = read_group(a, "resume")
    gb, ab = read_group(b, "resume")
    assert aa == ab and ga.keys() == gb.keys()
    for k in ga:
        assert ga[k].dtype == gb[k].dtype and ga[k].shape == gb[k].shape, k
        np.testing.assert_array_equal(ga[k], gb[k], err_msg=k)
    pack = zarr.open_array(str(b / "resume" / "pack_float64"), mode="r")
    assert pack.chunks == (512,) and pack.shape[0] > 4 * 512
    assert zarr.open_array(str(a / "resume" / "pack_float64"), mode="r").chunks == pack.shape
    liqgpu.store.integrity.verify(b)
