"""The fast engine against the reference implementation (MODEL.md tolerances)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liqgpu.model.engine import Engine
from liqgpu.model.grid import Grid
from liqgpu.model.inputs import prepare
from liqgpu.model.v1 import Params, reference_estimate

from helpers import make_series, random_market

VARS = ("intensity", "liquidated", "added", "closed", "expired", "outside", "outside_liquidated")


def run_engine(series_list, params, grid, every, chunk, dtype=np.float64, xp=np):
    inp = prepare(series_list, params)
    eng = Engine(inp, grid, every, xp=xp, dtype=dtype)
    parts = list(eng.run(chunk))
    return {v: np.concatenate([getattr(p, v) for p in parts], axis=1) for v in VARS}


def assert_matches(got, ref, tol):
    """MODEL.md: error below tol of the largest cell of each variable."""
    for v in VARS:
        r = ref[v]
        scale = max(np.abs(r).max(), 1e-300)
        err = np.abs(got[v].astype(np.float64) - r).max() / scale
        assert err < tol, f"{v}: relative error {err:.3g} >= {tol}"


@st.composite
def scenarios(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(2, 70))
    k = draw(st.integers(1, 4))
    levs = draw(st.lists(st.sampled_from([2, 3, 5, 10, 20, 25, 50, 100, 125]), min_size=k,
                         max_size=k, unique=True))
    w = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k)))
    w = (w + 1e-3) / (w + 1e-3).sum()
    w[-1] = 1.0 - w[:-1].sum()
    params = Params(
        leverages=tuple(levs), weights=tuple(w),
        mmr=draw(st.sampled_from([0.0, 0.004, 0.005])),
        entry=draw(st.sampled_from(["hlc3", "close", "ohlc4", "vwap"])),
        side_split=draw(st.sampled_from(["both", "taker"])),
        closure=draw(st.sampled_from(["proportional", "none"])),
        max_age=draw(st.sampled_from([None, "1min", "3min", "10min"])),
    )
    data, extra = random_market(
        seed, n,
        nan_rows=draw(st.sampled_from([0.0, 0.0, 0.15])),
        with_mark=draw(st.booleans()),
        with_volume=draw(st.booleans()),
        oi_mode=draw(st.sampled_from(["mixed", "rising", "walk"])),
    )
    kind = draw(st.sampled_from(["linear", "inverse"]))
    s = make_series(data["close"], data["oi"], high=data["high"], low=data["low"],
                    open_=data["open_"], kind=kind, contract_size=10.0 if kind == "inverse" else 1.0,
                    extra=extra)
    grid_kind = draw(st.sampled_from(["cover", "narrow", "linear"]))
    if grid_kind == "cover":
        grid = Grid.covering(*prepare([s], params).level_range())
    elif grid_kind == "narrow":  # many levels fall outside
        grid = Grid.log(85, 115, draw(st.sampled_from([10, 50, 200])))
    else:
        grid = Grid.linear(40, 250, 2.5)
    every = draw(st.integers(1, 7))
    chunk = draw(st.integers(1, 6))
    return s, params, grid, every, chunk


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_equals_reference(case):
    s, params, grid, every, chunk = case
    ref = reference_estimate(s, params, grid, every)
    assert_matches(run_engine([s], params, grid, every, chunk), ref, 1e-9)
    assert_matches(run_engine([s], params, grid, every, chunk, dtype=np.float32), ref, 1e-5)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_conservation_per_tier_and_side(case):
    s, params, grid, every, chunk = case
    out = run_engine([s], params, grid, every, chunk)
    added = out["added"].sum(axis=1)[0]
    live_end = out["intensity"][0, -1].sum(axis=0) + out["outside"][0, -1]
    gone = sum(out[v].sum(axis=1)[0] for v in ("closed", "expired", "outside_liquidated"))
    gone = gone + out["liquidated"][0].sum(axis=(0, 1))
    scale = max(added.max(), 1.0)
    np.testing.assert_allclose(live_end + gone, added, atol=1e-9 * scale)


def test_long_market_and_chunking_do_not_change_results():
    data, extra = random_market(5, 3000, nan_rows=0.02, with_mark=True)
    s = make_series(data["close"], data["oi"], high=data["high"], low=data["low"],
                    open_=data["open_"], extra=extra)
    p = Params(max_age="400min", entry="vwap", side_split="taker")
    g = Grid.covering(*prepare([s], p).level_range())
    ref = reference_estimate(s, p, g, 60)
    for chunk in (1, 7, 100):
        assert_matches(run_engine([s], p, g, 60, chunk), ref, 1e-9)


def test_several_series_equal_separate_runs():
    # different lengths, starts, kinds; padded onto one axis they must not interact
    d1, e1 = random_market(1, 200)
    d2, e2 = random_market(2, 120, price=3000)
    a = make_series(d1["close"], d1["oi"], high=d1["high"], low=d1["low"], symbol="A")
    import pandas as pd
    b = make_series(d2["close"], d2["oi"], high=d2["high"], low=d2["low"], symbol="B",
                    kind="inverse", contract_size=10, start=pd.Timestamp("2026-03-01T00:50Z"))
    p = Params()
    g = Grid.covering(*prepare([a, b], p).level_range())
    both = run_engine([a, b], p, g, 10, 3)
    ra = reference_estimate(a, p, g, 10)
    for v in VARS:
        np.testing.assert_allclose(both[v][0], ra[v], atol=1e-9 * max(np.abs(ra[v]).max(), 1))
    # b starts 50 steps later: padded with 50 NaN bars, i.e. 5 empty buckets in front
    rb = reference_estimate(b, p, g, 10)
    for v in VARS:
        np.testing.assert_allclose(both[v][1][5:5 + rb[v].shape[0]], rb[v],
                                   atol=1e-9 * max(np.abs(rb[v]).max(), 1))
        assert np.abs(both[v][1][:5]).max() == 0


def test_extreme_closures_stay_finite():
    # OI collapses by ~1e-30 repeatedly (inputs are capped at 1e15): the cumulative log closure
    # passes -LOG_FLOOR many times, the engine re-bases and stays exact and finite
    n = 40
    oi = np.where(np.arange(n) % 2 == 0, 1e15, 1e-15)
    s = make_series(np.full(n, 100.0), oi, high=np.full(n, 100.5), low=np.full(n, 99.5))
    p = Params()
    g = Grid.covering(*prepare([s], p).level_range())
    out = run_engine([s], p, g, 1, 4)
    ref = reference_estimate(s, p, g, 1)
    for v in VARS:
        assert np.isfinite(out[v]).all()
    assert_matches(out, ref, 1e-9)


def test_engine_on_xp(xp):
    """The same array code on the device under test (numpy, or CuPy where a GPU is visible)."""
    data, extra = random_market(9, 500, nan_rows=0.05)
    s = make_series(data["close"], data["oi"], high=data["high"], low=data["low"], extra=extra)
    p = Params(max_age="60min")
    g = Grid.covering(*prepare([s], p).level_range())
    ref = reference_estimate(s, p, g, 15)
    assert_matches(run_engine([s], p, g, 15, 4, xp=xp), ref, 1e-9)


def test_series_engines_equal_the_batched_engine_and_single_runs():
    import pandas as pd

    from liqgpu.model.engine import SeriesEngines, make_engine

    d1, _ = random_market(3, 300)
    d2, _ = random_market(4, 200, price=3000)
    d3, _ = random_market(5, 250, price=50)
    a = make_series(d1["close"], d1["oi"], high=d1["high"], low=d1["low"], symbol="A")
    b = make_series(d2["close"], d2["oi"], high=d2["high"], low=d2["low"], symbol="B",
                    kind="inverse", contract_size=10, start=pd.Timestamp("2026-03-01T01:00Z"))
    c = make_series(d3["close"], d3["oi"], high=d3["high"], low=d3["low"], symbol="C")
    p = Params(max_age="3h")
    inp = prepare([a, b, c], p)
    g = Grid.covering(*inp.level_range())
    eng = make_engine(inp, g, 10, dtype=np.float64)
    assert isinstance(eng, SeriesEngines) and len(eng.engines) == 3
    states = {}
    parts = list(eng.run(4, on_bucket=(20, lambda e: states.update(e.state_arrays()))))
    got = {v: np.concatenate([getattr(q, v) for q in parts], axis=1) for v in VARS}
    batched = Engine(inp, g, 10, dtype=np.float64)
    bstate = {}
    bparts = list(batched.run(4, on_bucket=(20, lambda e: bstate.update(e.state_arrays()))))
    ref = {v: np.concatenate([getattr(q, v) for q in bparts], axis=1) for v in VARS}
    assert_matches(got, ref, 1e-12)
    assert float(np.abs(ref["liquidated"]).max()) > 0
    # the saved state numbers positions as the batched engine does (same multiset of rows)
    assert states["level"].size == bstate["level"].size > 0
    key = lambda s: np.lexsort((s["birth"], s["kd"], s["cell"], s["series"]))  # noqa: E731
    i, j = key(states), key(bstate)
    for k in ("series", "cell", "kd", "birth", "side"):
        np.testing.assert_array_equal(states[k][i], bstate[k][j], err_msg=k)
    np.testing.assert_allclose(states["amount"][i], bstate["amount"][j], rtol=1e-12)
    # each series is exactly what a run on its own (on the same time axis) gives
    for s in range(3):
        alone = Engine(inp.select(s), g, 10, dtype=np.float64)
        one = list(alone.run(4, on_bucket=(20, lambda e: None)))
        for v in VARS:
            np.testing.assert_array_equal(got[v][s], np.concatenate(
                [getattr(q, v) for q in one], axis=1)[0], err_msg=v)
    # load_state splits the positions back: continuing from the cut gives the same tail
    again = SeriesEngines(inp, g, 10, dtype=np.float64)
    again.load_state(states)
    tail = _chunks_from(again, 20)
    for v in VARS:
        np.testing.assert_array_equal(
            np.concatenate([getattr(q, v) for q in tail], axis=1), got[v][:, 20:], err_msg=v)


def _chunks_from(eng, b0):
    """Chunks [b0, end) of an engine whose state was loaded as it stood before bucket b0."""
    out = []
    for b in range(b0, eng.n_buckets, 4):
        out.append(eng.chunk(b, min(b + 4, eng.n_buckets)))
    return out


@pytest.mark.parametrize("model", ["v1", "v2"])
def test_each_series_runs_on_its_own_bins_and_resumes_past_them(model):
    """Series far apart in price share one grid but each engine holds only the bins its levels
    reach; the cubes are zero outside them, equal to a run on the whole grid, and a resumed
    engine whose new bars reach other prices than its saved positions holds both."""
    import dataclasses

    from liqgpu.model.engine import SeriesEngines, own_bins

    n = 400
    up = np.linspace(0.0, np.log(3.0), n)  # a market that triples: its levels leave its start
    d1, _ = random_market(7, n, oi_mode="rising")
    d1 = {k: (v * np.exp(up) if k in ("close", "high", "low", "open_") else v)
          for k, v in d1.items()}
    d2, _ = random_market(8, n, oi_mode="rising", price=5000.0)
    ss = [make_series(d["close"], d["oi"], high=d["high"], low=d["low"], open_=d["open_"],
                      symbol=f"S{i}") for i, d in enumerate((d1, d2))]
    from liqgpu.model.v2 import ParamsV2

    p = Params() if model == "v1" else ParamsV2(leverages="log:2:100:8", entry="range:2")
    names = VARS + (("churned",) if model == "v2" else ())
    inp = prepare(ss, p)
    g = Grid.covering(*inp.level_range())
    eng = SeriesEngines(inp, g, 10, dtype=np.float64)
    (a0, a1), (b0, b1) = eng.spans
    assert a1 <= b0 and (a1 - a0) + (b1 - b0) < g.n_bins  # disjoint, and less than the grid
    assert [e.P for e in eng.engines] == [a1 - a0, b1 - b0]
    cut = 20
    saved = {}
    parts = list(eng.run(8, on_bucket=(cut, lambda e: saved.update(e.state_arrays()))))
    got = {v: np.concatenate([getattr(q, v) for q in parts], axis=1) for v in names}
    assert not got["intensity"][0, :, a1:].any() and not got["intensity"][1, :, :b0].any()
    for i in range(2):
        whole = Engine(inp.select(i), g, 10, dtype=np.float64)
        alone = list(whole.run(8, on_bucket=(cut, lambda e: None)))  # the same chunks
        for v in names:
            np.testing.assert_array_equal(
                got[v][i], np.concatenate([getattr(q, v) for q in alone], axis=1)[0], err_msg=v)
    # resume at the cut with only the later bars: their levels are higher than the saved ones
    t0 = cut * 10
    time_fields = ("lo", "hi", "close_frac", "entry", "add", "share", "omega", "churn")
    tail = dataclasses.replace(inp, time=inp.time[t0:], **{
        f: getattr(inp, f)[:, t0:] for f in time_fields if getattr(inp, f) is not None})
    later = own_bins(tail.select(0), g)
    assert later[0] > a0  # the new bars alone would not hold the early positions
    again = SeriesEngines(tail, g, 10, dtype=np.float64)
    again.load_state(saved, step_offset=t0)
    assert again.spans[0][0] <= a0 + 1 and again.spans[0][1] >= later[1]
    rest = [again.chunk(b, min(b + 8, again.n_buckets)) for b in range(0, again.n_buckets, 8)]
    for v in names:
        np.testing.assert_allclose(np.concatenate([getattr(q, v) for q in rest], axis=1),
                                   got[v][:, cut:], rtol=0, atol=1e-9 * np.abs(got[v]).max(),
                                   err_msg=v)
    assert float(np.abs(got["liquidated"]).max()) > 0


def test_chunk_buckets_cut_a_run_into_several_whole_chunks():
    """Given the run's length, a chunk holds at most about an eighth of it (so the store writer
    overlaps the engine), in whole multiples of the store's time chunk; the memory budget
    still bounds it; without the length only the budget counts."""
    from liqgpu.model.engine import MIN_CHUNKS, chunk_buckets_for

    big = 1 << 40
    assert chunk_buckets_for(1, 1000, 60, budget_bytes=big, multiple=24, n_buckets=720) == 96
    assert chunk_buckets_for(1, 1000, 60, budget_bytes=big, multiple=24, n_buckets=768) == 96
    assert chunk_buckets_for(1, 1000, 60, budget_bytes=big, multiple=24, n_buckets=769) == 120
    assert chunk_buckets_for(1, 1000, 60, budget_bytes=big, multiple=24, n_buckets=30) == 24
    per_bucket = 8 * 4 * 1000
    assert chunk_buckets_for(1, 1000, 60, budget_bytes=48 * per_bucket, multiple=24,
                             n_buckets=8760) == 48
    no_length = chunk_buckets_for(1, 1000, 60, budget_bytes=big, multiple=24)
    assert no_length == (1 << 17) // 60 // 24 * 24
    for nb in (100, 720, 8760):
        cb = chunk_buckets_for(1, 1000, 60, budget_bytes=big, multiple=24, n_buckets=nb)
        assert cb % 24 == 0 and -(-nb // cb) >= min(MIN_CHUNKS, -(-nb // 24)) - 1
