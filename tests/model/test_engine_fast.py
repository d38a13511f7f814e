"""The numpy one-series block (Engine._block_np1) against the generic block (Engine._block),
models v2 and v1, on markets long enough to reach its every branch: liquidations past the binary
lifting's window, many blocks (retirement, carried positions), expiry, closures to zero, range
entries, chunking."""

import numpy as np
import pytest

import liqgpu.model.engine as engine_mod
from liqgpu.model.engine import CHUNK_FIELDS, Engine, _cross_new
from liqgpu.model.grid import Grid
from liqgpu.model.inputs import prepare
from liqgpu.model.v1 import Params
from liqgpu.model.v2 import ParamsV2

from helpers import make_series, random_market


def _run(inputs, grid, every, chunk, fast):
    e = Engine(inputs, grid, every, dtype=np.float64)
    assert e._fast  # numpy, one series
    e._fast = fast
    parts = list(e.run(chunk))
    out = {f: np.concatenate([getattr(p, f) for p in parts], axis=1) for f in CHUNK_FIELDS
           if getattr(parts[0], f) is not None}  # v1: no churned
    return out, e.state_arrays()


def _compiled_or_skip(monkeypatch):
    """Load the compiled loops now (``LIQGPU_JIT=1``), or skip where numba is missing."""
    import liqgpu.model.jit as jit_mod

    monkeypatch.setenv("LIQGPU_JIT", "1")
    jit_mod.preload()
    if jit_mod.loaded() is None:
        pytest.skip("numba is not installed")


CASES = [
    # n, churn, entry, max_age, closure, grid, every, chunk, block positions, tile positions
    (3000, 0.3, "close", None, "proportional", "cover", 60, 7, 1 << 20, 1 << 17),
    (2500, 3.0, "range:3", "17h", "proportional", "cover", 13, 11, 1 << 14, 1 << 17),
    (2000, 30.0, "close", "2h", "none", "narrow", 7, 40, 1 << 12, 1 << 17),
    (2200, 0.3, "close", None, "proportional", "linear", 30, 5, 1 << 13, 1 << 17),
    # tiles of a few steps (the last one partial), and of one step
    (2500, 3.0, "range:3", "17h", "proportional", "cover", 13, 11, 1 << 14, 5 * 36 + 1),
    (1500, 0.3, "close", "2h", "proportional", "narrow", 7, 40, 1 << 12, 1),
    # model v1 (churn None): no churn, no retirement, blocks cut only by closures to zero
    (3000, None, "hlc3", None, "proportional", "cover", 60, 7, 1 << 20, 1 << 17),
    (2500, None, "vwap", "17h", "proportional", "narrow", 13, 11, 1 << 20, 1 << 17),
    (2000, None, "close", "2h", "none", "linear", 7, 40, 1 << 20, 5 * 2 + 1),
]


def _case(case):
    """The series, parameters and grid of a row of :data:`CASES`."""
    n, churn, entry, max_age, closure, gk = case[:6]
    data, extra = random_market(n, n, nan_rows=0.05, oi_mode="mixed")
    s = make_series(data["close"], data["oi"], high=data["high"], low=data["low"],
                    open_=data["open_"], extra=extra)
    p = (Params(entry=entry, max_age=max_age, closure=closure) if churn is None else
         ParamsV2(leverages="log:2:150:12", churn=churn, entry=entry, max_age=max_age,
                  closure=closure))
    grid = {"cover": lambda: Grid.covering(*prepare([s], p).level_range()),
            "narrow": lambda: Grid.log(85, 115, 10),
            "linear": lambda: Grid.linear(20, 400, 0.5)}[gk]()
    return s, p, grid


@pytest.mark.parametrize("case", CASES)
def test_fast_block_equals_generic_block(case, monkeypatch):
    every, chunk, bp, tile = case[-4:]
    monkeypatch.setattr(engine_mod, "BLOCK_POSITIONS", bp)
    monkeypatch.setattr(engine_mod, "TILE_POSITIONS", tile)
    s, p, grid = _case(case)
    fast, st_f = _run(prepare([s], p), grid, every, chunk, True)
    slow, st_s = _run(prepare([s], p), grid, every, chunk, False)
    scale = max(np.abs(slow["added"]).max(), 1e-300)
    assert set(fast) == set(slow)
    for f in slow:
        err = np.abs(fast[f] - slow[f]).max() / max(np.abs(slow[f]).max(), scale)
        assert err < 1e-12, f"{f}: {err:.3g}"
    # the same live positions (in another order)
    kf = np.lexsort((st_f["level"], st_f["cell"], st_f["birth"]))
    ks = np.lexsort((st_s["level"], st_s["cell"], st_s["birth"]))
    assert set(st_f) == set(st_s)
    for k in st_s:
        assert st_f[k].dtype == st_s[k].dtype
        np.testing.assert_allclose(st_f[k][kf], st_s[k][ks], rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", [2, 16, 256])
def test_cross_new_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = 700
    vals = 100 + np.cumsum(rng.normal(0, 1, m))
    vals[rng.random(m) < 0.05] = np.inf  # bars without a range
    steps = np.sort(rng.choice(m, 300, replace=False))
    steps[-1] = m - 1  # the block's last step: nothing after it
    thr = vals.min() + rng.uniform(-5, 40, (300, 6))
    thr[rng.random(thr.shape) < 0.02] = np.nan  # no level: never crosses
    got = _cross_new(vals, steps, thr)
    for r, i in enumerate(steps):
        for j in range(thr.shape[1]):
            hit = np.flatnonzero(vals[i + 1:] <= thr[r, j])
            assert got[r, j] == (i + 1 + hit[0] if hit.size else m)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 9, 17])
def test_cross_new_short_blocks(m):
    """Blocks of a few steps (block and chunk boundaries): every table size of the lifting."""
    rng = np.random.default_rng(m)
    for _ in range(20):
        vals = rng.uniform(0, 10, m)
        steps = np.arange(m)
        thr = rng.uniform(-1, 11, (m, 5))
        got = _cross_new(vals, steps, thr)
        for r, i in enumerate(steps):
            for j in range(5):
                hit = np.flatnonzero(vals[i + 1:] <= thr[r, j])
                assert got[r, j] == (i + 1 + hit[0] if hit.size else m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask_cells", [1, 70, 1 << 16])  # rows snapped a batch at a time
def test_snap_residues_keeps_cells_above_the_threshold_bit_for_bit(dtype, mask_cells,
                                                                    monkeypatch):
    """Residue snapping: cells at or below 1e-12 of the largest
    (or of the floor), negative ones and -0.0 become +0.0; every other cell is untouched."""
    from liqgpu.model.engine import RESIDUE, snap_residues

    monkeypatch.setattr(engine_mod, "SNAP_MASK_CELLS", mask_cells)

    rng = np.random.default_rng(3)
    x = rng.lognormal(5, 2, (40, 30)).astype(dtype)
    x[::3, ::2] = rng.normal(0, 1e-10, x[::3, ::2].shape)  # residues of both signs
    x[1, 1], x[2, 2], x[3, 3] = -0.0, -5.0, 0.0
    top = float(x.max())
    x[4, 4] = dtype(top * RESIDUE * 2)  # small but above the threshold: kept
    ref = np.where(x > dtype(top * RESIDUE), x, 0).astype(dtype)
    view = np.zeros((50, 40), dtype=dtype)  # the chunk's rows: a strided view
    view[5:45, 3:33] = x
    outer = 1 + rng.lognormal(0, 1, 8)  # another part (the outside bin's), float64, smaller
    outer[2] = -1e-9
    snap_residues([view[5:45, 3:33], outer], floor=0.0)
    got = view[5:45, 3:33]
    assert got.tobytes() == ref.tobytes()  # bit for bit: no -0.0 left, the rest untouched
    assert got[4, 4] > 0 and not np.signbit(view).any()
    assert outer[2] == 0 and not np.signbit(outer).any() and (outer[[0, 1, 3]] > 1).all()
    # the floor raises the threshold: a block whose cells all emptied keeps only residues
    y = np.array([1e-3, 2e-3, -1e-3], dtype=dtype)
    snap_residues([y], floor=1e10)
    assert not y.any() and not np.signbit(y).any()


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[6]])
def test_chunks_report_the_bins_their_cubes_were_written_in(case, jit, monkeypatch):
    """Each chunk's ``touched`` bins hold every non-zero cell of its cubes (the store writer
    skips the chunks outside them unread), and they are tight: the liquidated cube's are
    narrower than the grid, and every chunk's range has a non-zero cell at each end's bin."""
    if jit:
        _compiled_or_skip(monkeypatch)
    every, chunk = case[6:8]
    s, p, grid = _case(case)
    e = Engine(prepare([s], p), grid, every, dtype=np.float64, jit=jit)
    assert e._fast
    narrower = 0
    for part in e.run(chunk):
        for f in ("intensity", "liquidated"):
            cube = getattr(part, f)[0]  # (nb, P, K, 2)
            j0, j1 = part.touched[f]
            hit = np.flatnonzero(np.abs(cube).sum(axis=(0, 2, 3)))
            if hit.size:
                assert j0 <= hit[0] and hit[-1] < j1, (f, j0, j1, hit[0], hit[-1])
            assert 0 <= j0 <= j1 <= grid.n_bins
            narrower += f == "liquidated" and j1 - j0 < grid.n_bins
    assert narrower > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [0, 5, 23, 37])
@pytest.mark.parametrize("batch_rows", [1, 3, 1000])
@pytest.mark.parametrize("zero", [False, True])
def test_snapshot_rows_bit_for_bit_with_the_row_loop(dtype, k, batch_rows, zero, monkeypatch):
    """The batched snapshot rows (running sum, scale, cast into the output and its outside
    bins) equal the plain row loop's bit for bit, whatever the batch, and the maximum they
    return is the outputs' largest value; the difference rows are left summed in place, or
    all zero when asked."""
    from liqgpu.model.engine import snapshot_rows

    rng = np.random.default_rng(k + batch_rows)
    ns, wd = 29, 37
    D = rng.normal(0, 1, (ns, wd)) * np.exp(rng.normal(0, 8, (ns, wd)))
    fac = np.exp(rng.normal(0, 3, ns))
    want_G, want_Go, ref = np.zeros((ns, k), dtype), np.zeros((ns, wd - k), dtype), D.copy()
    for i in range(ns):
        if i:
            ref[i] += ref[i - 1]
        np.multiply(ref[i, :k], fac[i], out=want_G[i])
        np.multiply(ref[i, k:], fac[i], out=want_Go[i])
    monkeypatch.setattr(engine_mod, "SNAP_BATCH_BYTES", batch_rows * 8 * wd)
    G, Go = np.full((ns, k), np.nan, dtype), np.full((ns, wd - k), np.nan, dtype)
    top = snapshot_rows(D, fac, G, Go if k < wd else None, zero=zero)
    np.testing.assert_array_equal(D, np.zeros_like(ref) if zero else ref)
    assert G.tobytes() == want_G.tobytes()
    if k < wd:
        assert Go.tobytes() == want_Go.tobytes()
    assert top == max(float(x.max()) for x in (want_G, want_Go) if x.size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("j_lo, j_hi", [(0, 15), (5, 24), (21, 24)])  # in, across, past k
def test_liquidated_into_cell_by_cell_equals_the_region_add(dtype, j_lo, j_hi, monkeypatch):
    """A block's liquidated sums added cell by cell (only the cells with a sum) give the
    chunk's cubes the region's in-place add gives, bit for bit (rows already holding values
    from an earlier block included), the outside bins get the columns past ``k``, and the
    sums are left zeroed."""
    from liqgpu.model.engine import liquidated_into

    rng = np.random.default_rng(j_lo + j_hi)
    rows, wd, cmin, k, r0, o0 = 6, 24, 16, 20, 2, 3  # block column j: chunk column 16 + j
    c_lo, c_hi = cmin + j_lo, cmin + j_hi
    L = np.zeros((rows, wd))
    hit_r = rng.integers(0, rows, 40)
    hit_c = rng.integers(j_lo, j_hi, 40)
    np.add.at(L, (hit_r, hit_c), rng.lognormal(0, 3, 40))
    # cells already holding values (as a row an earlier block added to): sums rounded once
    base = rng.lognormal(0, 1, (10, 40)).astype(dtype)
    base_o = rng.lognormal(0, 1, (10, 8))
    got = []
    for ratio in (10**9, 0):  # every region sparse, then every one dense
        monkeypatch.setattr(engine_mod, "SPARSE_LIQUIDATED", ratio)
        out, out_o, L2 = base.copy(), base_o.copy(), L.copy()
        liquidated_into(out, out_o, L2, r0, cmin, k, o0, c_lo, c_hi)
        assert not L2.any()
        got.append((out, out_o))
    (sp, sp_o), (de, de_o) = got
    assert sp.tobytes() == de.tobytes() and sp_o.tobytes() == de_o.tobytes()
    want = base.copy()
    want[r0:r0 + rows, cmin:cmin + k] += L[:, :k]  # the in-grid columns, rounded once
    assert sp.tobytes() == want.tobytes()
    want_o = base_o.copy()
    want_o[r0:r0 + rows, o0:o0 + wd - k] += L[:, k:]
    np.testing.assert_array_equal(sp_o, want_o)
    assert (sp != base).any() == (j_lo < k)


def test_cube_pool_reuses_free_arrays_zeroed_and_makes_room():
    """The pool hands a free array of the shape asked for back zeroed, never one held
    (directly or through a view), and when full drops a free one of another shape."""
    from liqgpu.model.engine import _CubePool

    pool = _CubePool(keep=2)
    a = pool.zeros((3, 4), np.float32)
    a[:] = 7
    view = a[1:]
    b = pool.zeros((3, 4), np.float32)
    assert b is not a and pool.made == 2  # a is held by its view
    del a, view
    c = pool.zeros((3, 4), np.float32)
    assert pool.made == 2 and not c.any() and c.dtype == np.float32  # a's memory, zeroed
    assert pool.zeros((3, 4), np.float64).dtype == np.float64 and pool.made == 3  # full, held
    del c
    d = pool.zeros((5,), np.float32)  # c's slot is free: dropped for d's shape
    assert pool.made == 4 and [x.shape for x in pool.bufs] == [(3, 4), (5,)]
    assert pool.bufs[0] is b and pool.bufs[1] is d


def test_cube_pool_reuses_nothing_without_reference_counts(monkeypatch):
    """Where the interpreter has no reference counts to go by, every cube is new."""
    from liqgpu.model.engine import _CubePool

    monkeypatch.setattr(engine_mod, "_REFCOUNTS", False)
    pool = _CubePool(keep=2)
    a = pool.zeros((3,), np.float32)
    del a
    b = pool.zeros((3,), np.float32)
    assert pool.made == 2 and not b.any()


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("case", [CASES[2], CASES[8]])  # v2 and v1, chunks of 40 buckets
def test_chunk_cubes_are_reused_only_when_nothing_holds_them(case, jit, monkeypatch):
    """A chunk's cubes come from the engine's pool when an earlier chunk's are free: dropped
    chunks give their memory to later ones (zeroed: the same cubes bit for bit as fresh
    ones), held chunks keep theirs untouched (views, reshapes and the arrays themselves)."""
    if jit:
        _compiled_or_skip(monkeypatch)
    every, chunk = case[6:8]
    s, p, grid = _case(case)

    def engine():
        e = Engine(prepare([s], p), grid, every, dtype=np.float32, jit=jit)
        assert e._fast
        return e

    def addr(x):
        return x.__array_interface__["data"][0]

    e = engine()
    held = list(e.run(chunk))  # every chunk held: no memory shared between them
    assert len(held) >= 4 and e._cubes.made == 2 * len(held)
    snap = [(c.intensity.copy(), c.liquidated.copy()) for c in held]
    assert len({addr(c.intensity) for c in held} | {addr(c.liquidated) for c in held}) \
        == 2 * len(held)
    dropped, e = [], engine()
    for c in e.run(chunk):  # each chunk copied and let go
        dropped.append((c.intensity.copy(), c.liquidated.copy()))
    assert e._cubes.made <= 6 < 2 * len(held)  # later chunks took earlier chunks' memory
    for (i0, l0), (i1, l1), c in zip(snap, dropped, held):
        assert i0.tobytes() == i1.tobytes() == c.intensity.tobytes()
        assert l0.tobytes() == l1.tobytes() == c.liquidated.tobytes()
    assert any(i.any() for i, _ in snap) and any(x.any() for _, x in snap)
    views = []  # a view of a slice held: its chunk's memory is not reused
    for c in engine().run(chunk):
        views.append(c.intensity[:, 1:])
    assert len({addr(v) for v in views}) == len(views)
    for v, (i0, _) in zip(views, snap):
        assert v.tobytes() == i0[:, 1:].tobytes()


@pytest.mark.parametrize("case", [CASES[0], CASES[6]])
def test_engine_snapshots_do_not_depend_on_the_batch(case, monkeypatch):
    """A whole run, batches of one row against the default: the same cubes bit for bit."""
    every, chunk = case[-4:-2]
    s, p, grid = _case(case)
    monkeypatch.setattr(engine_mod, "SNAP_BATCH_BYTES", 1)
    one, _ = _run(prepare([s], p), grid, every, chunk, True)
    monkeypatch.undo()
    dflt, _ = _run(prepare([s], p), grid, every, chunk, True)
    for f in dflt:
        assert one[f].tobytes() == dflt[f].tobytes(), f


def test_dying_buffers_keep_order_and_refuse_to_overflow():
    """The compiled loops' dying positions: each writes at the start of its room, what they
    took comes back in order, without copies; a room past the buffers' end is refused (the
    loops do not check bounds), and the numpy loops' appended arrays are concatenated."""
    from liqgpu.model.engine import _Dying

    bufs = {k: (np.zeros(6, np.int64), np.zeros(6, np.int64), np.zeros(6, np.int8),
                np.zeros(6)) for k in ("liq", "exp")}
    d = _Dying(bufs)
    assert d.arrays("liq") is None
    for vals in ([1, 2], [], [3, 4, 5]):
        room = d.room("liq", 3)
        room[0][:len(vals)] = vals
        d.took("liq", len(vals))
    got = d.arrays("liq")
    assert got[0].tolist() == [1, 2, 3, 4, 5] and np.shares_memory(got[0], bufs["liq"][0])
    assert d.arrays("exp") is None
    with pytest.raises(RuntimeError, match="too small"):
        d.room("liq", 2)
    n = _Dying()
    n.append("exp", (np.array([7]), np.array([1]), np.array([0], np.int8), np.array([0.5])))
    n.append("exp", (np.array([8]), np.array([2]), np.array([1], np.int8), np.array([0.25])))
    assert n.arrays("exp")[0].tolist() == [7, 8] and n.arrays("liq") is None


def test_chunk_edges_cut_and_a_short_first_chunk():
    from liqgpu.model.engine import chunk_edges

    assert chunk_edges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_edges(10, 4, cut=9, first=2) == [(0, 2), (2, 4), (4, 8), (8, 9), (9, 10)]
    assert chunk_edges(10, 4, first=4) == chunk_edges(10, 4) == chunk_edges(10, 4, first=0)
    assert chunk_edges(3, 4, first=5) == [(0, 3)]


def test_a_run_s_first_chunk_is_one_time_chunk_of_the_store():
    """The first results come after one store time chunk, not a whole engine chunk; every
    chunk still ends on a time chunk's edge (or the resume cut, or the end)."""
    from liqgpu.pipeline import plan

    data, extra = random_market(4, 6000)
    s = make_series(data["close"], data["oi"], high=data["high"], low=data["low"],
                    open_=data["open_"], extra=extra)
    p = plan([s], ParamsV2(), every="5min", chunk_buckets=None)
    assert p.chunk_buckets >= 2 * p.tc  # else there is nothing to shorten
    got = [(c.b0, c.b1) for c in p.chunks()]
    assert got[0] == (0, p.tc)
    assert all(b1 % p.tc == 0 or b1 in (p.last, p.n_buckets) for _, b1 in got)
    assert got[-1][1] == p.n_buckets and all(a[1] == b[0] for a, b in zip(got, got[1:]))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[5], CASES[8]])
def test_unzeroed_chunk_cubes_get_every_cell_written(case, jit, threads, monkeypatch):
    """A chunk's own cubes are not zeroed first: a reused cube is zero outside the columns
    its last chunk wrote, and the blocks write every cell of their rows inside those (the
    snapshot columns, zeros beside them, the liquidated rows each block first reaches).
    Reused cubes full of NaN in those columns give the chunks zeroed cubes give, bit for bit,
    on blocks cut inside output rows too."""
    if jit:
        _compiled_or_skip(monkeypatch)
    monkeypatch.setattr(engine_mod, "SPLIT_POSITIONS", 0)  # two threads: every block split
    monkeypatch.setattr(engine_mod, "SPLIT_CELLS", 0)
    every, chunk, bp = case[6:9]
    monkeypatch.setattr(engine_mod, "BLOCK_POSITIONS", bp)
    s, p, grid = _case(case)

    def chunks():
        e = Engine(prepare([s], p), grid, every, dtype=np.float32, jit=jit, threads=threads)
        assert e._fast
        return [(c.intensity.copy(), c.liquidated.copy(), c.touched) for c in e.run(chunk)]

    want = chunks()
    get = engine_mod._CubePool.get
    poisoned = []

    def garbage(self, shape, dtype, zeroed=True):
        x = get(self, shape, dtype, zeroed)
        assert not zeroed
        c0, c1 = self.dirty(x)
        x[:, c0:c1] = np.nan  # what a cube may hold there: anything
        poisoned.append(c1 > c0)
        return x

    monkeypatch.setattr(engine_mod._CubePool, "get", garbage)
    got = chunks()
    assert sum(poisoned) >= 2  # reused cubes with columns written before
    assert len(got) == len(want) >= 3
    for (i0, l0, t0), (i1, l1, t1) in zip(want, got):
        assert i1.tobytes() == i0.tobytes() and l1.tobytes() == l0.tobytes() and t1 == t0
    assert any(i.any() for i, _, _ in want) and any(x.any() for _, x, _ in want)


def test_cube_pool_knows_the_columns_a_reused_cube_may_be_non_zero_in():
    """A new cube is zero everywhere; one marked with the columns its chunk wrote is zero
    outside them when reused unzeroed; zeroed it is clean again; an array the pool does not
    hold may be non-zero anywhere."""
    from liqgpu.model.engine import _CubePool

    pool = _CubePool(keep=2)
    a = pool.get((3, 8), np.float32, zeroed=False)
    assert pool.dirty(a) == (0, 0) and not a.any()
    a[:, 2:5] = 1
    pool.mark(a, (2, 5))
    del a
    b = pool.get((3, 8), np.float32, zeroed=False)
    assert pool.made == 1 and pool.dirty(b) == (2, 5) and b[:, 2:5].all()
    assert not b[:, :2].any() and not b[:, 5:].any()
    del b
    c = pool.get((3, 8), np.float32)  # zeroed
    assert not c.any() and pool.dirty(c) == (0, 0)
    assert pool.dirty(np.zeros((3, 8))) == (0, 8)
    # new arrays the pool does not keep (it is full of held ones) are known zero too
    d = pool.get((3, 8), np.float32, zeroed=False)
    e = pool.get((3, 8), np.float32, zeroed=False)
    assert pool.made == 3 and len(pool.bufs) == 2 and not any(x is e for x in pool.bufs)
    assert pool.dirty(e) == (0, 0)
    e[:, 1] = 1
    pool.mark(e, (1, 2))
    assert pool.dirty(e) == (1, 2) and pool.dirty(d) == (0, 0)
