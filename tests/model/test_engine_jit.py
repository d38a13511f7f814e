"""The compiled loops (liqgpu.model.jit / cpu_loops, numba) against the numpy loops of the same
block (Engine._block_np1): bit for bit, on markets and parameters that reach every branch (v1
and v2, range entries, expiry, closures to zero, narrow and linear grids, retirement), so a run
may switch from one to the other at any block; and the decision rules of liqgpu.model.jit."""

import threading
import time

import numpy as np
import pytest

import liqgpu.model.engine as engine_mod
import liqgpu.model.jit as jit_mod
from liqgpu.model.engine import CHUNK_FIELDS, Engine
from liqgpu.model.grid import Grid
from liqgpu.model.inputs import prepare
from liqgpu.model.v1 import Params, reference_estimate
from liqgpu.model.v2 import ParamsV2

from helpers import make_series, random_market

pytest.importorskip("numba")


@pytest.fixture(autouse=True)
def _loaded(monkeypatch):
    monkeypatch.setenv("LIQGPU_JIT", "1")  # load at once, use from the first block
    jit_mod.preload()
    assert jit_mod.loaded() is not None


def _run(inputs, grid, every, chunk, jit, dtype=np.float64, switch_at=None, threads=1):
    e = Engine(inputs, grid, every, dtype=dtype, jit=jit, threads=threads)
    assert e._fast and e._jit == jit and e._threads == (threads if jit else 1)
    if switch_at is not None:  # the compiled loops "load" only at block ``switch_at``
        calls = iter(range(10**9))
        real = jit_mod.loaded
        e_mod = engine_mod._jit

        class Late:
            def __getattr__(self, name):
                return getattr(e_mod, name)

            @staticmethod
            def loaded():
                return real() if next(calls) >= switch_at else None

        engine_mod._jit = Late()
    try:
        parts = list(e.run(chunk))
    finally:
        engine_mod._jit = jit_mod
    if switch_at is not None:
        assert next(calls) > switch_at + 1  # blocks ran on both sides of the switch
    out = {f: np.concatenate([getattr(p, f) for p in parts], axis=1) for f in CHUNK_FIELDS
           if getattr(parts[0], f) is not None}
    return out, e.state_arrays()


def _market(seed, n, gk, p):
    data, extra = random_market(seed, n, nan_rows=0.05, oi_mode="mixed", with_mark=seed % 2 == 0)
    s = make_series(data["close"], data["oi"], high=data["high"], low=data["low"],
                    open_=data["open_"], extra=extra, kind="inverse" if seed % 3 == 0 else "linear",
                    contract_size=10.0 if seed % 3 == 0 else 1.0)
    grid = {"cover": lambda: Grid.covering(*prepare([s], p).level_range()),
            "narrow": lambda: Grid.log(85, 115, 10),
            "linear": lambda: Grid.linear(20, 400, 0.5)}[gk]()
    return s, grid


CASES = [
    # seed, n, model params, grid, every, chunk, block positions
    (1, 3000, dict(churn=0.3), "cover", 60, 7, 1 << 20),
    (2, 2500, dict(churn=3.0, entry="range:3", max_age="17h"), "cover", 13, 11, 1 << 14),
    (3, 2000, dict(churn=30.0, max_age="2h", closure="none"), "narrow", 7, 40, 1 << 12),
    (4, 2200, dict(churn=0.3), "linear", 30, 5, 1 << 13),
    (5, 1500, dict(churn=0.3, max_age="2h"), "narrow", 7, 40, 1 << 12),
    (6, 3000, None, "cover", 60, 7, 1 << 20),  # model v1
    (7, 2500, dict(entry="vwap", max_age="17h"), "narrow", 13, 11, 1 << 20),  # v1
    (8, 2000, dict(closure="none", max_age="2h"), "linear", 7, 40, 1 << 20),  # v1
]


def _params(case):
    seed, _, kw, *_ = case
    if seed >= 6:
        return Params(**(kw or {}))
    return ParamsV2(leverages="log:2:150:12", **kw)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_loops_equal_numpy_loops_bit_for_bit(case, dtype, threads, monkeypatch):
    """On one thread, and on two (a block's sides at once: every block shares its work here,
    however small)."""
    seed, n, _, gk, every, chunk, bp = case
    monkeypatch.setattr(engine_mod, "BLOCK_POSITIONS", bp)
    monkeypatch.setattr(engine_mod, "SPLIT_POSITIONS", 0)
    monkeypatch.setattr(engine_mod, "SPLIT_CELLS", 0)
    p = _params(case)
    s, grid = _market(seed, n, gk, p)
    slow, st_s = _run(prepare([s], p), grid, every, chunk, False, dtype)
    ran = set()  # (loop, thread) of each compiled loop the run calls
    loops = jit_mod.kernels()
    for name in ("new_positions", "carried", "subtract_dead",
                 "snapshot_cols", "snap_cols", "liquidated"):
        def spy(*a, _f=getattr(loops, name), _n=name):
            ran.add((_n, threading.current_thread().name.startswith("liqgpu-side")))
            return _f(*a)
        monkeypatch.setattr(loops, name, spy)
    if threads == 2:  # the pieces of a side go to whichever thread is free: here the helper
        real = engine_mod._beside  # starts first, so it takes carried and new positions too

        def beside(pool, there, here):
            if getattr(here, "__name__", "") != "worker":
                return real(pool, there, here)
            started = threading.Event()

            def helper_first():
                started.set()
                return there()

            def after():
                started.wait(5)
                time.sleep(0.002)
                return here()
            return real(pool, helper_first, after)

        monkeypatch.setattr(engine_mod, "_beside", beside)
    fast, st_f = _run(prepare([s], p), grid, every, chunk, True, dtype, threads=threads)
    on_helper = {n for n, helper in ran if helper}
    if threads == 2:  # every loop ran on the helper thread too (a share of the work)
        assert on_helper == {n for n, _ in ran}, ran
    else:
        assert not on_helper
    assert set(fast) == set(slow)
    for f in slow:
        assert fast[f].dtype == slow[f].dtype
        np.testing.assert_array_equal(fast[f], slow[f], err_msg=f)
    assert set(st_f) == set(st_s)
    for k in st_s:  # the same live positions, in the same order
        np.testing.assert_array_equal(st_f[k], st_s[k], err_msg=k)
    # and a run that switches to them in its middle (a background load finishing)
    mixed, st_m = _run(prepare([s], p), grid, every, chunk, True, dtype, switch_at=3,
                       threads=threads)
    for f in slow:
        np.testing.assert_array_equal(mixed[f], slow[f], err_msg=f)


def test_compiled_loops_match_the_reference():
    """MODEL.md's oracle, directly: v1 with expiry on a grid many levels fall outside of."""
    data, extra = random_market(11, 400, nan_rows=0.05, with_mark=True)
    s = make_series(data["close"], data["oi"], high=data["high"], low=data["low"],
                    open_=data["open_"], extra=extra)
    p = Params(max_age="90min", entry="vwap", side_split="taker")
    grid = Grid.log(85, 115, 50)
    ref = reference_estimate(s, p, grid, 7)
    got, _ = _run(prepare([s], p), grid, 7, 5, True)
    for v in ("intensity", "liquidated", "added", "closed", "expired", "outside",
              "outside_liquidated"):
        scale = max(np.abs(ref[v]).max(), 1e-300)
        assert np.abs(got[v] - ref[v]).max() / scale < 1e-9, v


def test_bins_equal_the_grid_s_bins():
    """The compiled bin search (log estimate + correction, or a search in the edges) gives
    Grid.bin_index's bin for levels on, between and outside the edges, and NaN."""
    loops = jit_mod.kernels()
    rng = np.random.default_rng(5)
    for grid in (Grid.log(85, 115, 10), Grid.linear(20, 400, 0.5)):
        e = grid.edges
        q = np.concatenate([e, (e[:-1] + e[1:]) / 2, np.nextafter(e, -np.inf),
                            rng.uniform(e[0] * 0.5, e[-1] * 1.5, 2000), [np.nan, -1.0, np.inf]])
        geo = engine_mod._geometric(e)
        x0, inv = geo if geo is not None else (0.0, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            u = (np.log(q) - x0) * inv
        got = [loops.bin_of(float(x), float(uu) if np.isfinite(uu) else 0.0, e, geo is not None)
               for x, uu in zip(q, u)]
        np.testing.assert_array_equal(got, grid.bin_index(q))


def test_which_runs_use_them(monkeypatch):
    monkeypatch.setenv("LIQGPU_JIT", "auto")
    # a month of 1-minute bars, v2 (3.5 M positions, 9 M cells): the load would cost more
    assert not jit_mod.wanted(3_500_000, 9_400_000)
    # a year, v2 (42 M positions): worth it; v1 (5.3 M positions, 167 M cells): not quite
    assert jit_mod.wanted(42_000_000, 230_000_000)
    assert not jit_mod.wanted(5_300_000, 167_000_000)
    # before reading the files, the positions alone decide (a fleet of 200 x 90 days, 5 min)
    assert jit_mod.wanted(200 * 25_920 * 80)
    monkeypatch.setenv("LIQGPU_JIT", "0")
    assert not jit_mod.wanted(10**12)
    monkeypatch.setenv("LIQGPU_JIT", "1")
    assert jit_mod.wanted(1)


def test_row_hint_of_series_files(tmp_path, monkeypatch):
    """What `liqgpu estimate` sizes a run by before reading its files: a Parquet footer's row
    count, a CSV's bytes over 60, nothing for an unreadable file; a large run starts loading
    the compiled loops then."""
    from liqgpu.api import rows_hint
    from liqgpu.synth import synthetic_frame

    df = synthetic_frame(days=2, seed=3)
    df.to_parquet(tmp_path / "a.parquet")
    df.to_csv(tmp_path / "b.csv", index=False)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    csv_rows = (tmp_path / "b.csv").stat().st_size // 60
    assert rows_hint([tmp_path / "a.parquet"]) == len(df) == 2880
    assert rows_hint([tmp_path / "a.parquet", tmp_path / "b.csv", tmp_path / "bad.parquet",
                      tmp_path / "missing.csv"]) == len(df) + csv_rows
    monkeypatch.setenv("LIQGPU_JIT", "auto")
    assert not jit_mod.preload_if(2880 * 80)  # two days of v2: numpy loops
    assert not jit_mod.preload_if(0)


def test_preload_loops_sizes_a_run_by_its_files_and_model(tmp_path, monkeypatch):
    """`liqgpu estimate` (and bench/stages.py) start the compiled loops for a year of v2 (42 M
    positions), not for a year of v1 (5 tiers: 5 M) nor two days of v2, and never with
    LIQGPU_JIT=0."""
    import liqgpu.api as api
    from liqgpu.model.registry import default_params

    monkeypatch.setattr(jit_mod, "preload", lambda: None)  # decide, load nothing here
    monkeypatch.setenv("LIQGPU_JIT", "auto")
    rows = {"year": 525600, "days": 2880}
    monkeypatch.setattr(api, "rows_hint", lambda paths: sum(rows[p] for p in paths))
    v1, v2 = default_params("v1"), default_params("v2")
    if jit_mod.wanted(10**9):  # numba importable
        assert api.preload_loops(["year"], v2)
    assert not api.preload_loops(["year"], v1)
    assert not api.preload_loops(["days"], v2)
    monkeypatch.setenv("LIQGPU_JIT", "0")
    assert not api.preload_loops(["year"], v2)


def test_threads_come_from_liqgpu_threads_or_the_processors(monkeypatch):
    import os

    from liqgpu.errors import InputError

    monkeypatch.setenv("LIQGPU_THREADS", "1")
    assert jit_mod.threads() == 1
    monkeypatch.setenv("LIQGPU_THREADS", " 8 ")
    assert jit_mod.threads() == jit_mod.MAX_THREADS == 2  # a block has two sides to share
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv("LIQGPU_THREADS", bad)
        with pytest.raises(InputError, match=f"LIQGPU_THREADS='{bad}'"):
            jit_mod.threads()
    monkeypatch.delenv("LIQGPU_THREADS")
    for cpus, want in (({0}, 1), ({0, 1}, 2), (set(range(16)), 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, c=cpus: c)
        assert jit_mod.threads() == want
    # an engine takes the setting, or its own count
    s, grid = _market(1, 600, "cover", _params(CASES[0]))
    p = _params(CASES[0])
    assert Engine(prepare([s], p), grid, 60, jit=True)._threads == 2
    assert Engine(prepare([s], p), grid, 60, jit=True, threads=1)._threads == 1
    assert Engine(prepare([s], p), grid, 60, jit=False)._threads == 1  # numpy: one


def test_a_forked_child_gets_its_own_helper_thread():
    """The parent's helper thread is not in a forked child: the child makes its own rather than
    queueing work no thread will run."""
    import multiprocessing as mp

    assert jit_mod.helper().submit(lambda: 7).result(timeout=10) == 7
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_helper_answers).get(timeout=30) == 7


def _helper_answers():
    return jit_mod.helper().submit(lambda: 7).result(timeout=10)


def test_beside_waits_for_the_other_thread_and_reports_errors():
    """A block's two halves: the caller's result first; an error on either thread reaches the
    caller, and only after the other thread has finished (no write into a block's arrays after
    it has ended)."""
    import time

    pool = jit_mod.helper()
    assert engine_mod._beside(pool, lambda: 2, lambda: 1) == (1, 2)
    done = []

    def slow():
        time.sleep(0.2)
        done.append(True)
        return 0

    def fails():
        raise ValueError("here")

    with pytest.raises(ValueError, match="here"):
        engine_mod._beside(pool, slow, fails)
    assert done == [True]  # waited for

    def fails_there():
        raise KeyError("there")

    with pytest.raises(KeyError, match="there"):
        engine_mod._beside(pool, fails_there, lambda: 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_store_run_compiles_nothing_after_the_load(threads, monkeypatch):
    """A run with float32 cubes (a store's) passes its loops only the types and memory
    layouts :func:`liqgpu.model.jit.warm` loaded (chunk cubes as strided column ranges and as
    whole rows): numba compiles nothing in the run's blocks."""
    monkeypatch.setattr(engine_mod, "SPLIT_POSITIONS", 0)
    monkeypatch.setattr(engine_mod, "SPLIT_CELLS", 0)
    loops = jit_mod.kernels()
    jit_mod.warm(loops)
    names = [n for n in dir(loops) if hasattr(getattr(loops, n), "signatures")]
    before = {n: len(getattr(loops, n).signatures) for n in names}
    layouts = set()
    real = loops.snapshot_cols

    def spy(D, ns, wd, c0, c1, k, fac, G, Go):
        layouts.add(G.flags.c_contiguous)
        return real(D, ns, wd, c0, c1, k, fac, G, Go)

    monkeypatch.setattr(loops, "snapshot_cols", spy)
    for case in CASES:
        p = _params(case)
        s, grid = _market(case[0], case[1], case[3], p)
        _run(prepare([s], p), grid, case[4], case[5], True, np.float32, threads=threads)
    assert layouts == {True, False}  # both layouts reached
    monkeypatch.undo()
    after = {n: len(getattr(loops, n).signatures) for n in names}
    assert after == before


@pytest.mark.parametrize("threads", [1, 2])
def test_state_saved_mid_run_from_its_ranges_resumes_the_same(threads, monkeypatch):
    """On two threads the live positions lie in ranges of the state buffers with gaps
    between them; the state saved at a cut gathers them (longs first, in order), and an engine
    loading it continues bit for bit as the uninterrupted run, on the compiled loops as on
    numpy's (which start from the saved state in one piece a side)."""
    monkeypatch.setattr(engine_mod, "SPLIT_POSITIONS", 0)  # every block in pieces
    monkeypatch.setattr(engine_mod, "SPLIT_CELLS", 0)
    case = CASES[1]  # v2, range entries, expiry, small blocks
    monkeypatch.setattr(engine_mod, "BLOCK_POSITIONS", case[6])
    p = _params(case)
    s, grid = _market(case[0], case[1], case[3], p)
    every, chunk, cut = case[4], case[5], 3 * case[5]
    e = Engine(prepare([s], p), grid, every, dtype=np.float64, jit=True, threads=threads)
    saved, gaps = {}, []

    def save(eng):
        live = eng.__dict__.get("_live")
        gaps.append(live is not None and any(
            a[2] != b[1] for a, b in zip(live[1], live[1][1:])))
        saved.update(eng.state_arrays())

    whole = [c for c in e.run(chunk, on_bucket=(cut, save))]
    assert saved and len(saved["level"]) > 100
    assert np.all(np.diff(saved["side"]) >= 0)  # longs first
    if threads == 2:
        assert gaps == [True]  # the saved state came from ranges with gaps
    for jit in (True, False):
        again = Engine(prepare([s], p), grid, every, dtype=np.float64, jit=jit,
                       threads=threads)
        again.load_state(saved)
        rest = [again.chunk(b, min(b + chunk, again.n_buckets))
                for b in range(cut, again.n_buckets, chunk)]
        tail = [c for c in whole if c.b0 >= cut]
        assert [c.b0 for c in rest] == [c.b0 for c in tail]
        for f in CHUNK_FIELDS:
            if getattr(tail[0], f) is None:
                continue
            for x, y in zip(rest, tail):
                np.testing.assert_array_equal(getattr(x, f), getattr(y, f), err_msg=f)
