"""The fast engine for model v1: array code that runs unchanged on numpy and CuPy (``xp``).

Where the two need different code (scatter-adds, the first-passage search, copies to the host)
the engine calls its backend's operations module, ``self.ops`` (:mod:`liqgpu.backend`: ``cpu``
or ``cuda``, the same functions), chosen once when the engine is built.

How it avoids looping over steps and positions
----------------------------------------------
Proportional closure multiplies *every* live position by the same factor (1 - c_t), so within a
block of steps the amount at step t of a position opened at s with amount a is
``a * exp(Lc_t - Lc_s)`` where Lc is the cumulative ``log(1 - c)``. Each position is stored once
with a normalized weight ``W = a * exp(-Lc_s)``; its death step is found directly:

* liquidation: the first step after opening whose trigger low (long) is <= its level, or whose
  trigger high (short) is >= it. New positions use a sparse table of range minima with binary
  lifting (log2(block) gathers); positions carried in from earlier blocks all start at the
  block's first step, so a search in the running minimum gives theirs.
* expiry: opening step + A; closure to zero (c_t = 1) splits blocks, killing what is carried in.

Outputs follow from these events: liquidated/expired amounts are scattered by (bucket, cell),
intensity snapshots are a cumulative sum over snapshots of +W at birth and -W at death, scaled
by ``exp(Lc)`` at the snapshot, and the per-step closed amount comes from the same difference
trick per (tier, side). Blocks are re-based whenever the cumulative log closure falls below
``-LOG_FLOOR`` so nothing under- or overflows, and output is produced one time chunk at a time so
memory stays bounded on long histories.

A "cell" is (series, price bin, tier, side), flattened; bin P is the ``outside`` bin.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from ..backend import ops_for
from . import jit as _jit
from .grid import Grid
from .inputs import Inputs

log = logging.getLogger(__name__)

LOG_FLOOR = 500.0  # re-base when the cumulative log closure of a block falls below -LOG_FLOOR
NEVER = np.iinfo(np.int64).max // 4

ALIVE, LIQUIDATED, EXPIRED, ZEROED = 0, 1, 2, 3
RETIRE = 1e-14  # v2: a position below this fraction of its opening amount is retired (churned)
BLOCK_POSITIONS = 1 << 20  # v2: new positions per block (bounds memory; blocks retire positions)
TILE_POSITIONS = 1 << 17  # v2 numpy: new positions handled together (their passes stay in cache)
STATE_KEYS = ("level", "side", "cell", "kd", "series", "birth", "amount", "opened")
RESIDUE = 1e-12  # relative size below which a snapshot cell is cancellation residue
#: compiled loops on two threads: the parts a side's new positions are cut in (at snapshot rows:
#: each adds to rows of the difference array of its own), taken by whichever thread is free
NEW_PARTS = 3
#: compiled loops on two threads: the least work for which a block shares its positions
#: (carried and new) and its snapshot rows' cells; below it the hand-over costs more than it
#: saves
SPLIT_POSITIONS = 1 << 14
SPLIT_CELLS = 1 << 16


@dataclass
class ChunkResult:
    """Output buckets [b0, b1) of every series (arrays on the host, numpy)."""

    b0: int
    b1: int
    intensity: np.ndarray  # (S, nb, P, K, 2)
    liquidated: np.ndarray  # (S, nb, P, K, 2)
    added: np.ndarray  # (S, nb, K, 2) float64
    closed: np.ndarray
    expired: np.ndarray
    outside: np.ndarray
    outside_liquidated: np.ndarray
    churned: np.ndarray | None = None  # (S, nb, K, 2) float64; model v2 only
    #: per series, the price bins ``[j0, j1)`` outside which its cubes are zero (None: any);
    #: or, per cube (``intensity``, ``liquidated``), such a list for this chunk's buckets
    spans: list | dict | None = None
    #: numpy, one series: per cube, the bins ``[j0, j1)`` of this engine's grid that its
    #: blocks wrote in this chunk (every other cell is zero); None where not tracked
    touched: dict | None = None


CHUNK_FIELDS = ("intensity", "liquidated", "added", "closed", "expired", "outside",
                "outside_liquidated", "churned")


@dataclass
class State:
    """Live positions carried across blocks (flat arrays, on the engine's device)."""

    level: object
    side: object  # 0 long, 1 short
    cell: object  # flat cell index (series, bin, tier, side)
    kd: object  # flat (series, tier, side) index
    series: object
    birth: object  # global step of opening
    amount: object  # current amount (quote notional)
    opened: object  # amount at opening (retirement of churned-out positions, v2)

    @classmethod
    def empty(cls, xp) -> "State":
        i = xp.zeros(0, dtype=xp.int64)
        f = xp.zeros(0, dtype=xp.float64)
        return cls(f, i, i, i, i, i, f, f)

    def take(self, mask) -> "State":
        return State(*(getattr(self, k)[mask] for k in STATE_KEYS))

    def __len__(self) -> int:
        return int(self.level.shape[0])


#: a store run is cut into at least this many time chunks (where the store's chunking allows):
#: the write-behind thread writes chunk i while the engine computes chunk i + 1, so a run in one
#: chunk wrote nothing until the engine had finished (30 days, v2: 0.85 -> 0.74 s in process)
MIN_CHUNKS = 8


def chunk_buckets_for(n_series: int, n_cells: int, n_every: int, *, budget_bytes: int,
                      multiple: int = 1, max_steps: int = 1 << 17,
                      n_buckets: int | None = None) -> int:
    """Buckets per time chunk so the chunk's float64 cubes stay under ``budget_bytes``, and,
    given ``n_buckets``, so the run has about :data:`MIN_CHUNKS` chunks or more (each a
    ``multiple`` of buckets)."""
    per_bucket = 8 * 4 * n_series * n_cells  # D, cumsum, intensity, liquidated
    nb = max(1, budget_bytes // max(per_bucket, 1))
    nb = min(nb, max(1, max_steps // n_every))
    if n_buckets is not None:
        per_chunk = -(-int(n_buckets) // MIN_CHUNKS)  # ceil
        nb = min(nb, -(-per_chunk // multiple) * multiple)  # up to whole multiples
    nb = max(multiple, (nb // multiple) * multiple)
    return int(nb)


def series_engine_bytes(params, step, n_steps: int, n_bins: int, chunk_buckets: int,
                        every: int) -> int:
    """About the most one series' numpy :class:`Engine` holds while it runs, its chunk cubes
    apart: its inputs, its live positions in two sets of state buffers and its scratch
    difference array. The live positions are bounded by the steps a position can live (model
    v2 retires what churn has shrunk below ``RETIRE`` of its opening amount; ``max_age``
    expires them), each step opening one per (entry point, tier, side), plus a block's new
    ones. What :func:`liqgpu.pipeline.series_groups` holds a group's engines to."""
    n_points = params.entry_mode[1]
    per_step = n_points * params.n_tiers * 2
    life = int(n_steps)
    phi = params.churn_per_step(step) if params.model == "v2" else 0.0
    if phi > 0:
        life = min(life, int(math.log(RETIRE) / math.log1p(-phi)) + 1)
    age = params.max_age_steps(step)
    if age is not None:
        life = min(life, int(age) + 1)
    block = min(int(n_steps), int(chunk_buckets) * int(every))
    positions = (life + block) * per_step
    state = int(2 * 1.25 * 42 * positions)  # 42 bytes a position in the buffers
    inputs = int(n_steps) * 8 * (12 + 2 * n_points)
    scratch = (int(chunk_buckets) + 1) * (int(n_bins) + 1) * 2 * int(params.n_out) * 8
    return state + inputs + scratch


def positions(inputs) -> int:
    """How many positions a run over these inputs opens at most: one per (series, step, entry
    point, tier, side)."""
    return int(inputs.n_series) * int(inputs.n_steps) * int(inputs.entry_points) \
        * int(inputs.weights.size) * 2


def chunk_edges(n_buckets: int, chunk_buckets: int, cut: int | None = None,
                first: int | None = None) -> list:
    """Consecutive ``(b0, b1)`` chunks of ``chunk_buckets`` buckets, also split at ``cut`` and
    at ``first`` (a shorter first chunk: the run's first results, and its progress, come
    sooner)."""
    edges = set(range(0, n_buckets, chunk_buckets)) | {n_buckets}
    for at in (cut, first):
        if at is not None and 0 <= at < n_buckets:
            edges.add(at)
    edges = sorted(edges)
    return list(zip(edges[:-1], edges[1:]))


def merge_states(parts: list[dict], *, ncell: int, K: int) -> dict:
    """Live positions of single-series engines (series ``i`` = ``parts[i]``), renumbered as
    one batched engine over all of them numbers its cells, tier-sides and series."""
    if len(parts) == 1:  # one engine: already numbered so, but for its series column
        return {**parts[0], "series": np.zeros(parts[0]["level"].shape, dtype=np.int64)}
    out = []
    for i, a in enumerate(parts):
        a = {k: state_column(k, v, i, ncell=ncell, K=K) for k, v in a.items()}
        a["series"] = np.full(a["level"].shape, i, dtype=np.int64)
        out.append(a)
    return {k: np.concatenate([p[k] for p in out]) for k in out[0]}


def state_column(k: str, a, i: int, *, ncell: int, K: int):
    """Column ``k`` of a single-series engine's live positions, numbered as series ``i`` of
    one batched engine numbers them (cells and tier-sides shifted; ``series`` is set apart).
    ``K``: cells of the output's leverage dimension."""
    if k == "cell":
        return a + i * ncell
    if k == "kd":
        return a + i * 2 * K
    return a


def make_engine(inputs: Inputs, grid: Grid, every: int, *, xp=np, dtype=np.float32,
                jit: bool | None = None, threads: int | None = None):
    """The engine for these inputs: on numpy, one :class:`Engine` per series, each on the bins
    its own levels can reach, run in lockstep (:class:`SeriesEngines`; ``jit``: its compiled
    loops, None: decided from these inputs' size; ``threads``: theirs, None:
    :func:`.jit.threads`); on CuPy, one batched :class:`Engine` (large launches)."""
    if ops_for(xp).on_host:
        return SeriesEngines(inputs, grid, every, dtype=dtype, jit=jit, threads=threads)
    return Engine(inputs, grid, every, xp=xp, dtype=dtype)


def own_bins(inputs: Inputs, grid: Grid, cells=None, n_out: int = 1) -> tuple[int, int]:
    """The bins ``[j0, j1)`` of ``grid`` that the levels of these inputs (one series) can reach,
    widened to hold the price bins of ``cells`` (saved positions, numbered on the whole grid with
    ``n_out`` leverage cells). At least one bin; the whole grid when no level is known."""
    return bins_of_range(inputs.level_range(), grid, cells, n_out)


def bins_of_range(level_range, grid: Grid, cells=None, n_out: int = 1) -> tuple[int, int]:
    """:func:`own_bins` of a series whose level range (``Inputs.level_range``) is known."""
    P = grid.n_bins
    lo, hi = level_range
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return 0, P
    e = grid.edges
    j0 = int(np.clip(np.searchsorted(e, lo, side="right") - 1, 0, P - 1))
    j1 = int(np.clip(np.searchsorted(e, hi, side="right"), j0 + 1, P))
    if cells is not None and len(cells):
        bins = np.asarray(cells, dtype=np.int64) // (2 * n_out)
        bins = bins[bins < P]  # bin P: outside the grid, wherever the span is
        if bins.size:
            j0, j1 = min(j0, int(bins.min())), max(j1, int(bins.max()) + 1)
    return j0, j1


def _sub_grid(grid: Grid, j0: int, j1: int) -> Grid:
    if (j0, j1) == (0, grid.n_bins):
        return grid
    return Grid(edges=grid.edges[j0:j1 + 1], spec=f"{grid.spec}[{j0}:{j1}]")


class SeriesEngines:
    """Several series, each in its own :class:`Engine`, advanced chunk by chunk together.

    The series are independent. One batched engine makes every step's arrays ``S`` times wider,
    and on a CPU those dense per-chunk cubes fall out of cache: 48 series of 30 days ran 3x
    slower batched than one by one. Each series also runs on its own span of the grid, the bins
    ``[j0, j1)`` its levels can reach (:func:`own_bins`): series at other prices on the same
    grid add no work to it. Its cubes are placed back on the whole grid (zeros elsewhere), so
    each series' numbers are the same as in a run of that series alone on the whole grid (and
    as in a distributed task), whatever other series share the store. Offers what the callers
    use of :class:`Engine`: ``n_buckets``, ``ncell``, ``run``, ``state_arrays``, ``load_state``
    and ``peak_live``.
    """

    def __init__(self, inputs, grid: Grid, every: int, *, dtype=np.float32,
                 jit: bool | None = None, threads: int | None = None):
        self.inputs, self.grid, self.every, self.dtype = inputs, grid, int(every), dtype
        self.threads = threads
        self.P = grid.n_bins
        self.n_buckets = -(-inputs.n_steps // self.every)
        self.K, self.B = int(inputs.weights.size), int(inputs.n_out)
        self.ncell = (self.P + 1) * self.B * 2  # numbered on the whole grid, as one engine does
        self._peaks = [0]  # the peak live positions of groups already run and dropped
        if isinstance(inputs, Inputs):
            self.spans = [own_bins(inputs.select(i), grid) for i in range(inputs.n_series)]
        else:  # a FleetInputs: engines are made when their series group runs (group())
            self.spans = [bins_of_range(inputs.series_range(i), grid)
                          for i in range(inputs.n_series)]
        # the compiled loops: decided (and loaded) once for the run, a cost per process
        cells = self.n_buckets * sum(j1 - j0 for j0, j1 in self.spans) * self.B * 2
        self.jit = _jit.wanted(positions(inputs), cells) if jit is None else jit
        self.engines = [self._engine(i) for i in range(inputs.n_series)] \
            if isinstance(inputs, Inputs) else None

    def _engine(self, i: int) -> "Engine":
        return Engine(self.inputs.select(i), _sub_grid(self.grid, *self.spans[i]), self.every,
                      dtype=self.dtype, jit=self.jit, threads=self.threads)

    def _made(self) -> list:
        """The engines, made now from a :class:`~liqgpu.model.inputs.FleetInputs` if they
        were not (a run over every series at once)."""
        if self.engines is None:
            self.inputs = self.inputs.group(0, self.inputs.n_series)
            self.engines = [self._engine(i) for i in range(self.inputs.n_series)]
        return self.engines

    @property
    def peak_live(self) -> int:  # an upper bound of the joint peak
        return sum(e.peak_live for e in self.engines or ()) + max(self._peaks)

    def group(self, s0: int, s1: int) -> "SeriesEngines":
        """Series ``[s0, s1)`` as a SeriesEngines of their own, numbered from 0: a fleet run in
        series groups holds one group's chunk cubes at a time. The same engines, not copies;
        from a :class:`~liqgpu.model.inputs.FleetInputs`, the group's inputs and engines are
        made here (and freed with the group), so one group's are held at a time."""
        import copy

        g = copy.copy(self)
        g.spans = self.spans[s0:s1]
        if self.engines is None:
            g.inputs = self.inputs.group(s0, s1)
            g.engines = [g._engine(i) for i in range(s1 - s0)]
        else:
            g.engines = self.engines[s0:s1]
        return g

    def drop_state(self) -> None:
        """After the last chunk: forget every engine's live positions and buffers (a fleet run
        in series groups keeps only the resume state of a finished group, not its engines')."""
        self._peaks.append(sum(e.peak_live for e in self.engines))
        for e in self.engines:
            e.state = State.empty(e.xp)
            e.__dict__.pop("_statebufs", None)
            e.__dict__.pop("_cubes", None)
            e.__dict__.pop("_scratch", None)
            e.__dict__.pop("_sorted", None)

    def run(self, chunk_buckets: int, *, on_bucket=None, first: int | None = None):
        """As :meth:`Engine.run`, with the series stacked in each :class:`ChunkResult`."""
        cut, fn = on_bucket if on_bucket is not None else (None, None)
        self._made()
        for b0, b1 in chunk_edges(self.n_buckets, chunk_buckets, cut, first):
            if b0 == cut:
                fn(self)
            yield self.chunk(b0, b1)

    def chunk(self, b0: int, b1: int) -> ChunkResult:
        """Buckets [b0, b1) of every series, on the whole grid; chunks in order. Each engine's
        cubes are placed in the stacked ones as soon as computed (and then dropped), so a chunk
        takes its stacked cubes and one series' own."""
        engines = self._made()
        S, whole = len(engines), self.spans[0] == (0, self.P)
        out: dict = {}
        small: dict = {}
        stacked = not (S == 1 and whole)  # else: one series on the whole grid, its own arrays
        if stacked:  # each engine computes straight into its span of the stacked cubes
            nb = min(b1, self.n_buckets) - b0
            out = {f: np.zeros((S, nb, self.P, self.B, 2), dtype=self.dtype)
                   for f in ("intensity", "liquidated")}
        touched = {"intensity": [], "liquidated": []}  # per cube, each series' written bins
        for i, e in enumerate(engines):
            j0, j1 = self.spans[i]
            into = {f: c[i, :, j0:j1].reshape(c.shape[1], -1) for f, c in out.items()}
            # (bins, cells, sides) are contiguous in each row: views, never copies
            assert all(np.may_share_memory(v, out[f]) for f, v in into.items())
            part = e.chunk(b0, b1, into=into)
            for f, spans in touched.items():
                t = part.touched[f] if part.touched is not None else (0, j1 - j0)
                spans.append((j0 + t[0], j0 + t[1]) if t[1] > t[0] else (0, 0))
            for f in CHUNK_FIELDS:
                x = getattr(part, f)
                if x is None:
                    continue
                if f not in ("intensity", "liquidated"):
                    small.setdefault(f, []).append(x)
                elif not stacked:
                    out[f] = x
            del part
        for f, parts in small.items():
            out[f] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return ChunkResult(b0=b0, b1=b1, **{f: out[f] for f in CHUNK_FIELDS if f in out},
                           spans=touched)

    def _cells(self, cell, i: int, to_global: bool):
        """Cell numbers of series ``i``'s positions between its span and the whole grid."""
        j0, j1 = self.spans[i]
        if (j0, j1) == (0, self.P):
            return cell
        w = 2 * self.B
        b, rest = np.divmod(np.asarray(cell, dtype=np.int64), w)
        if to_global:
            b = np.where(b == j1 - j0, self.P, b + j0)
        else:
            b = np.where(b == self.P, j1 - j0, b - j0)
        return b * w + rest

    def state_arrays(self) -> dict:
        """Every engine's live positions, numbered as one batched engine on the whole grid
        numbers them."""
        parts = []
        for i, e in enumerate(self._made()):
            a = e.state_arrays()
            a["cell"] = self._cells(a["cell"], i, to_global=True)
            parts.append(a)
        return merge_states(parts, ncell=self.ncell, K=self.B)

    def load_state(self, arrays: dict, *, step_offset: int = 0) -> None:
        """Split saved positions (numbered as by :meth:`state_arrays`) among the engines; a
        series whose positions lie outside its span gets a span that holds them."""
        series = np.asarray(arrays["series"], dtype=np.int64)
        for i in range(len(self._made())):
            m = series == i
            sub = {k: np.asarray(v)[m] for k, v in arrays.items()}
            sub["cell"] = sub["cell"] - i * self.ncell
            span = own_bins(self.inputs.select(i), self.grid, sub["cell"], self.B)
            if span != self.spans[i]:
                self.spans[i] = span
                self.engines[i] = self._engine(i)
            sub["cell"] = self._cells(sub["cell"], i, to_global=False)
            sub["kd"] = sub["kd"] - i * 2 * self.B
            sub["series"] = np.zeros(int(m.sum()), dtype=np.int64)
            self.engines[i].load_state(sub, step_offset=step_offset)


class Engine:
    """Runs model v1 or v2 over prepared inputs, one time chunk of output buckets at a time.

    v1 is v2 with no churn, one entry point per bar and one output cell per tier. With churn,
    every live amount is multiplied by (1 - c_t)(1 - φ_t) each step, so the normalized-weight
    trick of v1 still holds with the combined log factor; churned amounts per step follow from
    the same difference arrays as closed ones, and positions below ``RETIRE`` of their opening
    amount are retired (counted as churned) at block starts, which bounds the live set.

    Parameters
    ----------
    inputs : Inputs
    grid : Grid
    every : int
        Output step in model steps.
    xp : module
        numpy or cupy; its operations module (:func:`liqgpu.backend.ops_for`, ``self.ops``)
        is chosen here once.
    dtype : numpy dtype
        Dtype of ``intensity`` and ``liquidated`` in the results (float32 in stores).
    jit : bool or None
        numpy, one series: run the block's hot loops compiled (:mod:`.jit`, the same results)
        once they are loaded; None: where :func:`.jit.wanted` says so for this run's size.
    threads : int or None
        The compiled loops' threads: 2 runs a block's two sides at once (the same results);
        None: :func:`.jit.threads` (``LIQGPU_THREADS``, else 2 where two processors are free).
    """

    def __init__(self, inputs: Inputs, grid: Grid, every: int, *, xp=np, dtype=np.float32,
                 jit: bool | None = None, threads: int | None = None):
        self.inp = inputs
        self.grid = grid
        self.n = int(every)
        self.xp = xp
        self.ops = ops_for(xp)
        self.dtype = dtype
        self.S = inputs.n_series
        self.T = inputs.n_steps
        self.K = inputs.weights.size
        self.B = int(inputs.n_out)  # output cells of the leverage dimension (v1: tiers)
        self.P = grid.n_bins
        self.ncell = (self.P + 1) * self.B * 2
        self.n_buckets = -(-self.T // self.n)
        self.A = inputs.max_age_steps
        d = xp.asarray
        self.edges = d(grid.edges)
        self.lo = d(inputs.lo)
        self.hi = d(inputs.hi)
        c = inputs.close_frac
        self.cfrac = d(c)
        self.zero = d(c >= 1.0)
        with np.errstate(divide="ignore"):
            logf = np.where(c >= 1.0, 0.0, np.log1p(-np.minimum(c, 1.0)))
        logf = np.maximum(logf, -LOG_FLOOR)
        self.logc = d(logf)  # closure alone (zeroed at closures to zero in each block)
        self.churn = inputs.churn is not None
        if self.churn:
            self.phi = d(inputs.churn)
            self.logp = d(np.log1p(-inputs.churn))
            logf = logf + np.log1p(-inputs.churn)
        self.logf = d(logf)
        self.retire = bool(inputs.retire)
        n_pos = inputs.entry.shape[2] * self.K * 2
        self.max_block = max(64, BLOCK_POSITIONS // n_pos) if self.retire else None
        self.entry = d(inputs.entry)
        self.omega = d(inputs.omega)
        self.band_of = d(inputs.band_of)
        self.add = d(inputs.add)
        self.share = d(inputs.share)
        self.factors = d(inputs.factors)
        self.weights = d(inputs.weights)
        self.state = State.empty(xp)
        self.peak_live = 0
        # numpy, one series: the specialised block (_block_np1), v1 (no churn) and v2
        self._fast = self.ops.on_host and self.S == 1
        self._cubes = _CubePool()  # the numpy path's chunk cubes, reused when free
        self._loggrid = _geometric(grid.edges) if self._fast else None
        # the compiled loops (numba) for large runs, used from the block they are loaded in
        # (the same results): ``jit`` None decides from this run's size
        if jit is None:
            jit = _jit.wanted(positions(inputs), self.n_buckets * self.ncell)
        self._jit = bool(self._fast and jit)
        self._threads = 1
        if self._jit:
            _jit.preload()
            self._threads = _jit.threads() if threads is None else max(1, int(threads))

    # ------------------------------------------------------------------------------------------
    def run(self, chunk_buckets: int, *, on_bucket=None, first: int | None = None):
        """Yield :class:`ChunkResult` for consecutive chunks of ``chunk_buckets`` buckets.

        ``on_bucket=(b, fn)`` splits the chunks at bucket ``b`` and calls ``fn(self)`` there,
        with the state as it is before that bucket's first step (for resumable stores);
        ``first``: the first chunk's end (:func:`chunk_edges`).
        """
        cut, fn = on_bucket if on_bucket is not None else (None, None)
        for b0, b1 in chunk_edges(self.n_buckets, chunk_buckets, cut, first):
            if b0 == cut:
                fn(self)
            yield self.chunk(b0, b1)

    def state_arrays(self) -> dict:
        """The live positions on the host (numpy), for saving."""
        to_host = self.ops.to_host
        st = self.state
        keys = STATE_KEYS if self.retire else STATE_KEYS[:-1]
        # copies: the numpy path writes its next states into the same buffers
        out = {k: np.array(to_host(getattr(st, k))) for k in keys}
        for k in ("side", "cell", "kd", "series", "birth"):  # the numpy path keeps int8 ones
            out[k] = out[k].astype(np.int64, copy=False)
        return out

    def load_state(self, arrays: dict, *, step_offset: int = 0) -> None:
        """Start from saved live positions; ``step_offset`` is subtracted from their births (the
        saved run's step that is this run's step 0)."""
        d = self.xp.asarray
        self.state = State(
            level=d(np.asarray(arrays["level"], dtype=np.float64)),
            side=d(np.asarray(arrays["side"], dtype=np.int64)),
            cell=d(np.asarray(arrays["cell"], dtype=np.int64)),
            kd=d(np.asarray(arrays["kd"], dtype=np.int64)),
            series=d(np.asarray(arrays["series"], dtype=np.int64)),
            birth=d(np.asarray(arrays["birth"], dtype=np.int64) - step_offset),
            amount=d(np.asarray(arrays["amount"], dtype=np.float64)),
            opened=d(np.asarray(arrays.get("opened", arrays["amount"]), dtype=np.float64)),
        )

    def chunk(self, b0: int, b1: int, into: dict | None = None) -> ChunkResult:
        """Compute buckets [b0, b1); chunks must be requested in order. ``into`` (numpy, one
        series): zeroed arrays (nb, bins x leverage cells x 2) of the output dtype, views
        into a larger cube as well, that receive ``intensity`` and ``liquidated``."""
        xp, S, n = self.xp, self.S, self.n
        nb = b1 - b0
        t0, t1 = b0 * n, min(b1 * n, self.T)
        width = S * self.ncell
        nkd = S * 2 * self.B
        fast = self._fast
        # numpy, one series: the cubes in the output dtype, the outside bin (float64) apart.
        # The chunk's own cubes are not zeroed first: a reused cube is zero outside the
        # columns its last chunk wrote (its pool's ``dirty``), and each block zeroes those of
        # the rows it is the first to reach where it does not write (:meth:`_fill_rows`,
        # :meth:`_liq_rows`), so no pass of its own zeroes a cube
        into = into if fast and into is not None else {}
        self._fill = fast and not into
        self._liq_filled = 0  # rows of the liquidated cube zeroed so far
        cube = (lambda: self._cubes.get((nb, self.P * 2 * self.B), self.dtype,
                                        zeroed=not self._fill)) if fast else \
            (lambda: xp.zeros((nb, width)))
        acc = {
            "intensity": into["intensity"] if "intensity" in into else cube(),
            "liquidated": into["liquidated"] if "liquidated" in into else cube(),
            "added": xp.zeros((nb, nkd)),
            "closed": xp.zeros((nb, nkd)),
            "expired": xp.zeros((nb, nkd)),
        }
        if self.churn:
            acc["churned"] = xp.zeros((nb, nkd))
        if fast:
            acc["outside"] = np.zeros((nb, nkd))
            acc["outside_liquidated"] = np.zeros((nb, nkd))
        tables = None if fast else _SparseTables(self.lo[:, t0:t1], -self.hi[:, t0:t1], xp,
                                                 ops=self.ops)
        self._touched = {"intensity": [None, None], "liquidated": [None, None]} if fast else None
        for a, b in self._blocks(t0, t1):
            if fast:
                self._block_np1(a, b, b0, acc)
            else:
                self._block(a, b, t0, b0, tables, acc)
        if fast:  # (none left: the blocks reached every row)
            z0, z1 = self._liq_rows(nb)
            self._zero_liq(acc, z0, z1)
        if self._fill:  # the columns each cube may hold non-zero cells in, for its next chunk
            for f, (c0, c1) in self._touched.items():
                self._cubes.mark(acc[f], (0, 0) if c0 is None else (c0, c1))
        if b1 >= self.n_buckets:
            self._release()
        return self._finish(b0, b1, acc)

    def _liq_rows(self, r1: int) -> tuple[int, int]:
        """The rows ``[z0, z1)`` of the chunk's unzeroed liquidated cube (``self._fill``) a
        block reaching up to row ``r1`` zeroes (those no block before it reached: a block's
        first row may be the last one's), counted as zeroed; (0, 0) if none."""
        if not self._fill or r1 <= self._liq_filled:
            return 0, 0
        z0, self._liq_filled = self._liq_filled, r1
        return z0, r1

    def _zero_liq(self, acc, z0: int, z1: int) -> None:
        """Zero the rows ``[z0, z1)`` of the chunk's unzeroed liquidated cube where it may
        hold a value (the columns its last chunk wrote)."""
        if z1 > z0:
            d0, d1 = self._cubes.dirty(acc["liquidated"])
            if d1 > d0:
                acc["liquidated"][z0:z1, d0:d1] = 0

    def _fill_rows(self, acc, rows, c0: int, c1: int) -> None:
        """Zero the intensity ``rows`` (a slice: a block's snapshot rows) of the chunk's
        unzeroed cube (``self._fill``) outside the columns ``[c0, c1)`` the snapshot writes,
        where it may hold a value (the columns its last chunk wrote)."""
        if not self._fill:
            return
        d0, d1 = self._cubes.dirty(acc["intensity"])
        x = acc["intensity"][rows]
        if min(c0, d1) > d0:
            x[:, d0:min(c0, d1)] = 0
        if d1 > max(c1, c0, d0):
            x[:, max(c1, c0, d0):d1] = 0

    def _touch(self, cube: str, c0: int, c1: int) -> None:
        """Columns ``[c0, c1)`` of the chunk's ``cube`` were written (the union is kept)."""
        span = self._touched[cube]
        span[0] = c0 if span[0] is None else min(span[0], c0)
        span[1] = c1 if span[1] is None else max(span[1], c1)

    def _release(self) -> None:
        """After the last chunk: free the numpy path's scratch buffers and its spare set of
        state buffers (the current state stays where it is)."""
        self.__dict__.pop("_scratch", None)
        self.__dict__.pop("_dyingbufs", None)
        self._cubes.clear()
        sets = self.__dict__.get("_statebufs")
        if sets is not None:
            sets[1 - self._turn] = None

    def _blocks(self, t0: int, t1: int):
        """Split [t0, t1) at closures to zero and where cumulative log closure < -LOG_FLOOR."""
        zero = self.ops.to_host(self.zero[:, t0:t1])
        logf = self.ops.to_host(self.logf[:, t0:t1])
        cuts = set(np.flatnonzero(zero.any(axis=0)[1:]) + 1)
        a = 0
        m = t1 - t0
        while a < m:
            seg = logf[:, a:].copy()
            seg[:, 0] = np.where(zero[:, a], 0.0, seg[:, 0])
            seg = np.where(zero[:, a:], 0.0, seg)
            low = np.cumsum(seg, axis=1).min(axis=0)
            nxt = [c for c in cuts if c > a]
            b = min(nxt) if nxt else m
            under = np.flatnonzero(low[: b - a] < -LOG_FLOOR)
            if under.size and under[0] > 0:
                b = a + int(under[0])
            if self.max_block is not None:
                b = min(b, a + self.max_block)
            yield t0 + a, t0 + b
            a = b

    # ------------------------------------------------------------------------------------------
    def _block(self, a: int, b: int, t0: int, b0: int, tables, acc) -> None:
        """Advance the model over global steps [a, b) (no closure to zero after step a)."""
        xp, ops, S, K, B, n, A = self.xp, self.ops, self.S, self.K, self.B, self.n, self.A
        m = b - a
        width = S * self.ncell
        nkd = S * 2 * B
        bucket_of = lambda t: t // n - b0  # noqa: E731
        zero_a = self.zero[:, a]
        logf = xp.where(self.zero[:, a:b], 0.0, self.logc[:, a:b])
        if self.churn:
            logp = self.logp[:, a:b]
            logf = logf + logp
        Lc = xp.cumsum(logf, axis=1)  # (S, m): log factor from the block start through step
        Lc_prev = xp.concatenate([xp.zeros((S, 1)), Lc[:, :-1]], axis=1)

        st = self.state
        if self.retire and len(st):  # v2: what churn has shrunk to nothing counts as churned
            # index arrays, not boolean masks: on CuPy each mask index is its own compaction
            small = st.amount < RETIRE * st.opened
            old = xp.flatnonzero(small)
            if old.shape[0]:
                ops.scatter_add(acc["churned"], bucket_of(a) * nkd + st.kd[old], st.amount[old])
                st = self.state = st.take(xp.flatnonzero(~small))
        # --- new positions opened in [a, b): (step, entry point, tier, side) ----------------
        s_new, i_new = xp.nonzero(self.add[:, a:b] > 0)
        t_new = i_new + a
        N0 = int(s_new.shape[0])
        Np = int(self.entry.shape[2])
        shape = (N0, Np, K, 2)
        base = (self.add[s_new, t_new][:, None, None, None]
                * self.omega[s_new, t_new][:, :, None, None]
                * self.weights[None, None, :, None])
        amt = (base * self.share[s_new, t_new][:, None, None, :]).reshape(-1)
        lev = (self.entry[s_new, t_new][:, :, None, None]
               * self.factors[s_new][:, None, :, :]).reshape(-1)
        n_side = xp.broadcast_to(xp.arange(2)[None, None, None, :], shape).reshape(-1)
        n_tier = xp.broadcast_to(xp.arange(K)[None, None, :, None], shape).reshape(-1)
        n_series = xp.repeat(s_new, Np * 2 * K)
        n_birth = xp.repeat(t_new, Np * 2 * K)
        keep = amt > 0
        if not bool(keep.all()):
            amt, lev, n_side, n_tier, n_series, n_birth = (
                x[keep] for x in (amt, lev, n_side, n_tier, n_series, n_birth))
        n_band = self.band_of[n_tier]
        n_bin = self.grid.bin_index(lev, xp=xp, edges=self.edges)
        n_cell = n_series * self.ncell + (n_bin * B + n_band) * 2 + n_side
        n_kd = n_series * (2 * B) + n_band * 2 + n_side
        n_W = amt * xp.exp(-Lc[n_series, n_birth - a])

        # liquidation steps: first step after opening where the range reaches the level
        start = n_birth + 1 - t0
        thr = xp.where(n_side == 0, lev, -lev)
        which = n_side  # table 0: lows (longs), table 1: -highs (shorts)
        n_liq = tables.first_at_or_below(which, n_series, start, thr) + t0

        # --- carried positions --------------------------------------------------------------
        c_liq = tables.first_at_or_below(st.side, st.series,
                                         xp.full(len(st), a - t0, dtype=xp.int64),
                                         xp.where(st.side == 0, st.level, -st.level),
                                         sorted_from=a - t0) + t0 if len(st) else st.birth

        # --- unify carried and new ------------------------------------------------------------
        cat = xp.concatenate
        W = cat([st.amount, n_W])
        cell = cat([st.cell, n_cell])
        kd = cat([st.kd, n_kd])
        ser = cat([st.series, n_series])
        birth = cat([st.birth, n_birth])
        born = cat([xp.full(len(st), a - 1, dtype=xp.int64), n_birth])  # a-1: carried in
        level = cat([st.level, lev])
        side = cat([st.side, n_side])
        opened = cat([st.opened, amt])
        t_liq = cat([c_liq, n_liq])
        t_liq = xp.where(t_liq < b, t_liq, NEVER)
        if A is not None:
            t_exp = birth + A
            t_exp = xp.where(t_exp < b, t_exp, NEVER)
        else:
            t_exp = xp.full(W.shape, NEVER, dtype=xp.int64)
        carried = born < a
        zeroed = carried & zero_a[ser] & (t_exp != a)
        death = xp.minimum(t_liq, t_exp)
        death = xp.where(zeroed, a, death)
        cause = xp.full(W.shape, ALIVE, dtype=xp.int8)
        cause = xp.where(t_liq < NEVER, LIQUIDATED, cause)
        cause = xp.where(t_exp <= t_liq, xp.where(t_exp < NEVER, EXPIRED, cause), cause)
        cause = xp.where(zeroed, ZEROED, cause).astype(xp.int8)
        dead = cause != ALIVE
        dloc = xp.where(dead, death - a, 0)

        # liquidated: after that step's closure, before its churn
        # (each subset gathered through one index array: on CuPy every boolean-mask index is a
        # compaction of its own, and these were a third of the block's time)
        i_l = xp.flatnonzero(cause == LIQUIDATED)
        ser_l, dloc_l, W_l, kd_l = ser[i_l], dloc[i_l], W[i_l], kd[i_l]
        if self.churn:
            val = W_l * xp.exp(Lc[ser_l, dloc_l] - logp[ser_l, dloc_l])
        else:
            val = W_l * xp.exp(Lc[ser_l, dloc_l])
        ops.scatter_add(acc["liquidated"], bucket_of(death[i_l]) * width + cell[i_l], val)
        # expired: amount before that step's closure
        i_e = xp.flatnonzero(cause == EXPIRED)
        val = W[i_e] * xp.exp(Lc_prev[ser[i_e], dloc[i_e]])
        ops.scatter_add(acc["expired"], bucket_of(death[i_e]) * nkd + kd[i_e], val)
        # closed to zero at the block's first step (carried positions only; Lc_prev = 0 there)
        m_z = cause == ZEROED
        i_z = xp.flatnonzero(m_z)
        ops.scatter_add(acc["closed"], bucket_of(a) * nkd + kd[i_z], W[i_z])
        # added
        ops.scatter_add(acc["added"], bucket_of(n_birth) * nkd + n_kd, amt)

        # partial closures per step: c_t * (live amount before the closure at t)
        # alive before closure at t for t in [born+1, end): end = death+1 (liquidated),
        # death (expired), never counted if zeroed.
        end = xp.where(cause == LIQUIDATED, dloc + 1, xp.where(cause == EXPIRED, dloc, m))
        live_w = xp.where(m_z, 0.0, W)
        E = xp.zeros((m + 1, nkd))
        ops.diff_scatter(E, born - a + 1, end, kd, live_w)
        live_pre = xp.cumsum(E.reshape(m + 1, S, 2 * B)[:m], axis=0)  # (m, S, 2B)
        scale = xp.exp(Lc_prev).T[:, :, None]  # (m, S, 1)
        cf = self.cfrac[:, a:b].T[:, :, None]
        closed_step = (cf * live_pre * scale).reshape(m, nkd)
        steps_b = (xp.arange(a, b) // n - b0)
        ops.scatter_rows(acc["closed"], steps_b, closed_step)
        if self.churn:
            # churn at t: φ_t * (live after closure and liquidation at t); those liquidated at t
            # were alive before the closure, so take them out of live_pre
            Lq = xp.zeros(m * nkd)
            ops.scatter_add(Lq, dloc_l * nkd + kd_l, W_l)
            live_post = live_pre - Lq.reshape(m, S, 2 * B)
            fac = xp.exp(Lc - logp).T[:, :, None]  # (m, S, 1): after closure, before churn
            churn_step = (self.phi[:, a:b].T[:, :, None] * live_post * fac).reshape(m, nkd)
            ops.scatter_rows(acc["churned"], steps_b, churn_step)

        # intensity snapshots at bucket ends inside [a, b)
        snaps = _snapshot_steps(a, b, n, self.T, xp)  # global steps
        ns = int(snaps.shape[0])
        if ns:
            o_birth = xp.searchsorted(snaps, born, side="left")
            o_death = xp.where(dead, xp.searchsorted(snaps, death, side="left"), ns)
            D = xp.zeros((ns + 1, width))
            ops.diff_scatter(D, o_birth, o_death, cell, W)
            G = xp.cumsum(D[:ns], axis=0)
            fac = xp.exp(Lc[:, snaps - a]).T  # (ns, S)
            G = G.reshape(ns, S, self.ncell) * fac[:, :, None]
            G = G.reshape(ns, width)
            # +W and -W of a dead position cancel to rounding, not to zero: snap such residues
            # (far below MODEL.md's 1e-9 tolerance) so empty cells are exactly empty.
            top = float(xp.abs(G).max()) if G.size else 0.0
            G = xp.where(G > top * RESIDUE, G, 0.0)
            acc["intensity"][snaps // n - b0] = G

        # survivors carry on with their current amount
        alive = xp.flatnonzero(~dead)
        last = xp.exp(Lc[:, m - 1])
        ser_a = ser[alive]
        self.state = State(
            level=level[alive], side=side[alive], cell=cell[alive], kd=kd[alive],
            series=ser_a, birth=birth[alive], amount=W[alive] * last[ser_a],
            opened=opened[alive],
        )
        self.peak_live = max(self.peak_live, len(self.state))

    def _block_np1(self, a: int, b: int, b0: int, acc) -> None:
        """:meth:`_block` for numpy and one series (v1 and v2): the same model, fewer passes.

        The per-position work is memory-bound, so new positions are handled in tiles of
        ``TILE_POSITIONS`` (one side, a run of opening steps: every pass over a tile stays in
        cache) and never filtered (a zero amount adds nothing; only survivors with an amount are
        carried). Each tile's levels, liquidation steps (:class:`_Crossing`), cells and weights
        feed the intensity difference array directly; those that die are gathered for the
        liquidated cube and the per-step live amounts, the survivors straight into the next
        state's buffers (reused from block to block). Carried positions stay sorted by side
        (longs first), so each side's are one slice. The added and born amounts per (step, band,
        side) are dense sums. Masks are applied by ``flatnonzero`` + ``take`` or a multiply by
        the boolean (boolean indexing and ``where=`` are several times slower), and intensity
        rows are scaled into the output dtype in one pass. Results equal :meth:`_block`'s up to
        the order of floating-point sums (relative 1e-15). v1 ran :meth:`_block` until this
        path took it too (year, 1-minute bars: engine 4.1 -> 1.7 s).
        """
        n, A, B, K, P = self.n, self.A, self.B, self.K, self.P
        m = b - a
        nkd = 2 * B
        row_a = a // n - b0
        jit = _jit.loaded() if self._jit else None  # the compiled loops, once loaded
        # compiled, on two threads: pieces of a block that add to different elements (a cell
        # is one side's; a half of a side's new positions has its own snapshot rows), so every
        # sum adds the same terms in the same order as on one thread
        pool = _jit.helper() if jit is not None and self._threads > 1 else None
        zero_a = bool(self.zero[0, a])
        logc = self.logc[0, a:b]
        if zero_a:
            logc = logc.copy()
            logc[0] = 0.0
        logp = self.logp[0, a:b] if self.churn else np.zeros(m)  # v1: no churn
        Lc = np.cumsum(logc + logp)
        Lc_prev = np.empty(m)
        Lc_prev[0] = 0.0
        Lc_prev[1:] = Lc[:-1]
        f_liq = np.exp(Lc - logp)  # liquidated at t: after t's closure, before its churn
        f_exp = np.exp(Lc_prev)  # expired at t: before t's closure
        vals = (self.lo[0, a:b], -self.hi[0, a:b])  # liquidation when vals[side][t] <= thr
        rows_of = np.arange(a, b) // n - b0  # output row of each block step

        st, segs = self._side_sorted(compact=jit is None)
        nc = sum(hi - lo for _, lo, hi in segs)
        if jit is None:  # numpy: each side one slice, longs first
            split = sum(hi - lo for w, lo, hi in segs if w == 0)
            sides = ((0, slice(0, split)), (1, slice(split, nc)))

        # --- carried positions: death (block-local step; m: none in this block) -------------
        c_W = cw = st.amount  # cw: zero where gone at the block's start
        c_d = c_liq = c_exp = None
        if nc and jit is None:  # (compiled: below, once the block's cells are known)
            c_d = np.full(nc, m, dtype=np.int64)
            for w, sl in sides:
                q = st.level[sl]
                if w:
                    q = -q
                # most carried positions do not cross in this block: search only the others
                # (first t with run[t] <= q: m minus the count of such t)
                run = np.minimum.accumulate(vals[w])  # non-increasing
                hit = np.flatnonzero(q >= run[-1])
                if hit.size:
                    c_d[sl][hit] = m - np.searchsorted(run[::-1].copy(), q[hit], side="right")
            c_liq = c_d < m  # for now: liquidated in this block
            if A is not None:
                c_te = st.birth + (A - a)  # >= 0
                c_exp = (c_te < m) & (c_te <= c_d)
                np.minimum(c_d, c_te, out=c_d)
                c_liq &= ~c_exp
            # gone at the block's start: retired (v2: what churn has shrunk to nothing counts as
            # churned), or closed to zero unless expiring there
            c_gone = None
            if self.retire:
                ret = c_W < RETIRE * st.opened
                if bool(ret.any()):
                    acc["churned"][row_a] += _bincount(np.compress(ret, st.kd),
                                                       np.compress(ret, c_W), nkd)
                    c_gone = ret
            if zero_a:
                c_zero = np.ones(nc, dtype=bool) if c_exp is None else ~(c_exp & (c_d == 0))
                if c_gone is not None:
                    c_zero &= ~c_gone
                acc["closed"][row_a] += _bincount(np.compress(c_zero, st.kd),
                                                  np.compress(c_zero, c_W), nkd)
                c_gone = c_zero if c_gone is None else (c_gone | c_zero)
            if c_gone is not None:
                c_liq &= ~c_gone
                if c_exp is not None:
                    c_exp &= ~c_gone
                c_d[c_gone] = 0
                cw = c_W * ~c_gone

        # --- new positions: one per (step, entry point, tier, side) --------------------------
        addb = self.add[0, a:b]
        i_new = np.flatnonzero(addb > 0)  # block-local steps
        t_new = i_new + a
        N0 = int(i_new.shape[0])
        Np = int(self.entry.shape[2])
        Q = Np * K
        addn, om = addb[i_new], self.omega[0, t_new]
        if jit is None:  # amount before the side's share
            base = ((addn[:, None] * om)[:, :, None] * self.weights).reshape(N0, Q)
        else:  # the same, formed by the compiled loops where they use it
            base = (addn, om, self.weights)
        share = self.share[0, t_new]  # (N0, 2)
        ent = self.entry[0, t_new]  # (N0, Np)
        g = np.exp(-Lc)[i_new]  # normalized weight of a unit amount born at each step
        last = math.exp(float(Lc[m - 1]))

        # the columns (cells) this block touches, and its intensity difference array:
        # a position is in snapshots [birth's, death's) (o_of: step -> the first snapshot at or
        # after it, ns: none in this block): +W at the first, -W at the second (row ns: dropped)
        cmin, wd = self._cell_range([st.cell[lo:hi] for _, lo, hi in segs], ent)
        snaps = _snapshot_steps(a, b, n, self.T, np) - a  # block-local
        ns = int(snaps.shape[0])
        D = self._zeros((ns + 1) * wd, "D") if ns and wd else None
        o_of = np.searchsorted(snaps, np.arange(m + 1), side="left")
        ob = o_of[i_new] * wd - cmin
        # carried positions' amounts per cell at the start (live from the first snapshot), and
        # per (band, side) from those: cells are (bin, band, side) and cmin a multiple of 2B
        live0 = np.zeros(nkd)
        wmax = 0.0  # the largest weight of the carried positions (entered in D's first row)
        if pool is not None and nc + N0 * Q < SPLIT_POSITIONS:
            pool = None  # too little to share
        cells0 = churned = closed = None
        if nc and jit is not None:  # the carried positions' sums per cell and kd, filled in
            # by the compiled loop that finds their deaths (each side its own cells and kd)
            cells0, churned, closed = np.zeros(wd), np.zeros(nkd), np.zeros(nkd)
        elif nc:
            cells0 = _bincount(st.cell - cmin, cw, wd)
            wmax = float(cw.max())
            live0 = cells0.reshape(-1, nkd).sum(axis=0)
            if D is not None:
                D[:wd] = cells0
        carried = None if cells0 is None or jit is None else \
            (cmin, cells0, np.empty(0) if D is None else D[:wd], churned, closed)

        buf = self._state_buffers(nc + 2 * N0 * Q)
        # (step, cell, kd, W) of those that die in the block, in the order they are found: the
        # numpy loops append arrays; the compiled ones write into one reused set of buffers
        dying = _Dying(None if jit is None else self._dying_buffers(nc + 2 * N0 * Q))
        opened = np.zeros((N0, nkd))  # amount opened per (step, kd)
        cross = [_Crossing(v) for v in vals]
        rows = max(1, TILE_POSITIONS // max(Q, 1))
        o = n_long = 0
        if jit is not None:  # compiled: each side's carried, then new positions, in pieces
            segs, wmax = self._sides_jit(pool, jit, st, segs, a, zero_a, m, last, buf, dying,
                                         i_new, t_new, base, share, ent, g, cross, D, ob,
                                         opened, carried)
        for w, sl in sides if jit is None else ():  # numpy
            if nc:  # carried positions of this side
                grp = (c_d[sl], st.cell[sl], st.kd[sl], c_W[sl])
                for key, mask in (("liq", c_liq), ("exp", c_exp)):
                    if mask is not None:
                        idx = np.flatnonzero(mask[sl])
                        dying.append(key, tuple(np.take(x, idx) for x in grp))
                o = self._carry(buf, o, np.flatnonzero(c_d[sl] >= m), last,  # gone: c_d = 0
                                st.level[sl], st.cell[sl], st.kd[sl], c_W[sl], st.opened[sl],
                                st.birth[sl])
            for i0 in range(0, N0, rows):  # tile by tile
                i1 = min(N0, i0 + rows)
                amt = base[i0:i1] * share[i0:i1, w, None]  # (r, Q)
                lev = (ent[i0:i1, :, None] * self.factors[0, :, w]).reshape(i1 - i0, Q)
                d = cross[w].first(i_new[i0:i1], -lev if w else lev)
                cell, kd = self._cells(lev, ent[i0:i1], w)
                W = amt * g[i0:i1, None]
                liq = d < m
                exp = None
                if A is not None:
                    te = (i_new[i0:i1] + A)[:, None]
                    exp = (te < m) & (te <= d)
                    np.minimum(d, te, out=d)
                    liq &= ~exp
                grp = (d.reshape(-1), cell.reshape(-1), kd.reshape(-1), W.reshape(-1))
                for key, mask in (("liq", liq), ("exp", exp)):
                    if mask is not None:
                        idx = np.flatnonzero(mask)
                        dying.append(key, tuple(np.take(x, idx) for x in grp))
                if D is not None:  # rows in order: nearly sorted indices, where add.at is fast
                    np.add.at(D, (cell + ob[i0:i1, None]).reshape(-1), grp[3])
                self._add_opened(opened[i0:i1], amt, w)
                keep = d >= m
                keep &= amt > 0  # only positions with an amount are carried
                idx = np.flatnonzero(keep)
                births = np.repeat(t_new[i0:i1], np.count_nonzero(keep, axis=1))
                o = self._carry(buf, o, idx, last, lev.reshape(-1), grp[1], grp[2], grp[3],
                                amt.reshape(-1), births, gathered_births=True)
            if w == 0:
                n_long = o
        if carried is not None:  # the compiled split summed the carried amounts
            live0 = cells0.reshape(-1, nkd).sum(axis=0)
            if self.retire:
                acc["churned"][row_a] += churned
            if zero_a:
                acc["closed"][row_a] += closed

        # --- flows ----------------------------------------------------------------------------
        liq, exp = dying.arrays("liq"), dying.arrays("exp")
        # in-grid cells go to the output cubes (output dtype), the outside bin (float64) apart
        k = max(0, min(wd, P * nkd - cmin))  # columns of the block that are in the grid
        o0 = max(cmin - P * nkd, 0)

        def flows():
            if exp is not None and exp[0].size:
                dd, _, kk, ww = exp
                self.ops.scatter_add(acc["expired"], rows_of[dd] * nkd + kk, ww * f_exp[dd])
            if N0:
                self.ops.scatter_rows(acc["added"], rows_of[i_new], opened)
            f_closed = self.cfrac[0, a:b] * f_exp
            f_churn = self.phi[0, a:b] * f_liq if self.churn else None
            if jit is not None:  # the same, fused in one pass
                none = np.empty(0)
                x_exp = none if exp is None or not exp[0].size else \
                    _bincount(exp[0] * nkd + exp[2], exp[3], m * nkd)
                dl = (np.empty(0, dtype=np.int32), np.empty(0, dtype=self._kd_dtype), none) \
                    if liq is None else (liq[0], liq[2], liq[3])
                closed_step = np.empty((m, nkd))
                churn_step = np.empty((m, nkd) if self.churn else (0, nkd))
                jit.flows(m, nkd, live0, i_new, opened, g, *dl, x_exp, f_closed,
                          none if f_churn is None else f_churn, np.zeros(m * nkd), closed_step,
                          churn_step)
            else:
                Lq = np.zeros(m * nkd)  # W liquidated per (step, kd)
                if liq is not None and liq[0].size:
                    Lq = _bincount(liq[0] * nkd + liq[2], liq[3], m * nkd)
                # live amount per (step, kd) after each step's liquidation (before closure:
                # + Lq): alive on [start, d) with start 0 (carried) or birth + 1 (new), d = m
                # if alive
                E = np.zeros((m + 1, nkd))
                E[0] = live0
                E[i_new + 1] += opened * g[:, None]
                live_post = E[:m]
                live_post -= Lq.reshape(m, nkd)
                if exp is not None and exp[0].size:
                    live_post -= _bincount(exp[0] * nkd + exp[2], exp[3],
                                           m * nkd).reshape(m, nkd)
                np.cumsum(live_post, axis=0, out=live_post)
                live_pre = live_post + Lq.reshape(m, nkd)
                closed_step = f_closed[:, None] * live_pre
                if self.churn:
                    churn_step = f_churn[:, None] * live_post
            self.ops.scatter_rows(acc["closed"], rows_of, closed_step)
            if self.churn:
                self.ops.scatter_rows(acc["churned"], rows_of, churn_step)

        def subtract():  # the dying leave the difference array
            for dead in (liq, exp):
                if dead is not None and dead[0].size:
                    if jit is not None:
                        jit.subtract_dead(D, o_of, wd, cmin, *dead[:2], dead[3])
                    else:
                        np.subtract.at(D, o_of[dead[0]] * wd + (dead[1] - cmin), dead[3])

        def snap_floor():  # (needs nothing above: the helper thread takes it with subtract)
            return residue_floor(wmax, base, share, g, o_of[i_new], np.exp(Lc[snaps]), jit)

        # the rows of an unzeroed liquidated cube this block is the first to reach
        z0, z1 = self._liq_rows(int(rows_of[-1]) + 1)
        zm = (z0 + z1) // 2

        def fill(lo, hi):
            self._zero_liq(acc, lo, hi)

        floor = None
        if D is not None and pool is not None:  # compiled, two threads: side by side
            _, floor = _beside(pool, lambda: (subtract(), fill(zm, z1), snap_floor())[2],
                               lambda: (flows(), fill(z0, zm)))
        else:
            flows()
            if D is not None:
                subtract()
            fill(z0, z1)

        # --- intensity snapshots at bucket ends inside [a, b) ---------------------------------
        if ns:
            r = int(snaps[0] + a) // n - b0
            snap_rows = slice(r, r + ns)
            width = acc["intensity"].shape[1]
        if ns and D is None:  # no cell: the rows are 0 (in an unzeroed cube: made so)
            self._fill_rows(acc, snap_rows, 0, 0)
        if D is not None:
            fac = np.exp(Lc[snaps])
            if floor is None:
                floor = snap_floor()
            G = acc["intensity"][r: r + ns, cmin:cmin + k]
            Go = acc["outside"][r: r + ns, o0:o0 + wd - k]
        if D is not None and jit is not None:  # the same, fused in one pass
            if pool is not None and wd >= 2 and ns * wd >= SPLIT_CELLS:  # half the columns
                h = wd // 2
                top = max(_beside(  # each with one side of the rows outside the block's columns
                    pool, lambda: (self._fill_rows(acc, snap_rows, 0, cmin + k),
                                   jit.snapshot_cols(D, ns, wd, h, wd, k, fac, G, Go))[1],
                    lambda: (self._fill_rows(acc, snap_rows, cmin, width),
                             jit.snapshot_cols(D, ns, wd, 0, h, k, fac, G, Go))[1]))
                _beside(pool, lambda: jit.snap_cols(G, Go, ns, h, wd, k, top, floor, RESIDUE),
                        lambda: jit.snap_cols(G, Go, ns, 0, h, k, top, floor, RESIDUE))
            else:
                self._fill_rows(acc, snap_rows, cmin, cmin + k)
                top = jit.snapshot_cols(D, ns, wd, 0, wd, k, fac, G, Go)
                jit.snap_cols(G, Go, ns, 0, wd, k, top, floor, RESIDUE)
        elif D is not None:
            self._fill_rows(acc, snap_rows, cmin, cmin + k)
            top = snapshot_rows(D[: ns * wd].reshape(ns, wd), fac, G, Go if k < wd else None,
                                zero=True)
            D[ns * wd:] = 0.0  # the row past the last snapshot
            snap_residues([x for x in (G, Go) if x is not None and x.size], floor, top)
        if D is not None and k > 0:  # the columns the snapshot rows were written in
            self._touch("intensity", cmin, cmin + k)

        # --- liquidated amounts: summed in float64 over the block (in the difference array's
        # buffer, free again), then added to the chunk's rows -----------------------------------
        if liq is not None and liq[0].size:
            dd, cc, _, ww = liq
            r0, r1 = row_a, int(rows_of[-1]) + 1  # output rows of the block
            L = self._zeros((r1 - r0) * wd, "D")
            c_lo, c_hi = int(cc.min()), int(cc.max()) + 1  # the liquidated cells' columns
            if c_lo < cmin + k:
                self._touch("liquidated", c_lo, min(c_hi, cmin + k))
            if jit is not None:  # only the cells hit, no pass over the block's rows
                args = (L, rows_of, r0, wd, cmin, k)
                outs = (f_liq, acc["liquidated"][r0:r1, cmin:cmin + k],
                        acc["outside_liquidated"][r0:r1, o0:o0 + wd - k])
                nl0 = dying.first_side.get("liq", 0)  # the longs' (two threads: each side's
                if pool is not None and 0 < nl0 < dd.shape[0]:  # cells are its own)
                    _beside(pool, lambda: jit.liquidated(*args, dd[nl0:], cc[nl0:], ww[nl0:],
                                                         *outs, np.empty(dd.shape[0] - nl0,
                                                                         dtype=np.int64)),
                            lambda: jit.liquidated(*args, dd[:nl0], cc[:nl0], ww[:nl0], *outs,
                                                   np.empty(nl0, dtype=np.int64)))
                else:
                    jit.liquidated(*args, dd, cc, ww, *outs,
                                   np.empty(dd.shape[0], dtype=np.int64))
            else:
                np.add.at(L, (rows_of[dd] - r0) * wd + (cc - cmin), ww * f_liq[dd])
                liquidated_into(acc["liquidated"], acc["outside_liquidated"],
                                L.reshape(r1 - r0, wd), r0, cmin, k, o0, c_lo, c_hi)

        # --- survivors carry on with their current amount, longs first ----------------------
        if jit is None:
            segs = ((0, 0, n_long), (1, n_long, o))
        self._live = (buf, tuple(x for x in segs if x[2] > x[1]))
        self.peak_live = max(self.peak_live, sum(hi - lo for _, lo, hi in segs))

    def _sides_jit(self, pool, jit, st, segs, a, zero_a, m, last, buf, dying, i_new, t_new,
                   base, share, ent, g, cross, D, ob, opened, carried) -> tuple[tuple, float]:
        """Both sides' carried and new positions through the compiled loops: the dying, the
        survivors and the opened amounts side after side, in the state's order. ``segs``: the
        carried positions, (side, start, end) index ranges of ``st`` in the state's order.
        Returns the survivors' ranges in ``buf`` likewise, and the carried positions' largest
        live amount.

        The work is cut in pieces: a side's carried positions with the first part of its new
        ones (in that order: both add to the difference array's first row), and the other
        parts (:data:`NEW_PARTS` in all, rows cut where a snapshot row starts, so the parts add
        to different rows of it). Each piece writes its survivors from the most the pieces before it can have, and
        its dying likewise (moved down after): no piece waits for another's count. With
        ``pool`` (a second thread) this thread and ``pool``'s take the pieces in turn,
        whichever is free (the sides seldom cost the same: in a rising market the shorts cross
        more levels, the longs live longer); the survivors then stay where they were written,
        the state in up to three ranges a side. Without it the pieces run in turn on this
        thread, each where the last one ended, the new positions of a side in one part, with
        the same results."""
        addn, om, wts = base
        N0, Q = addn.shape[0], om.shape[1] * wts.shape[0]
        keys = ("liq", "exp") if self.A is not None else ("liq",)
        cuts = [0]  # the parts' first rows: each where a snapshot row starts
        for i in range(1, NEW_PARTS if pool is not None and N0 else 1):
            r = int(np.searchsorted(ob, ob[N0 * i // NEW_PARTS], side="left"))
            if cuts[-1] < r < N0:
                cuts.append(r)
        halves = tuple(zip(cuts, cuts[1:] + [N0])) if N0 else ((0, N0),)
        self._kdw_of(0)
        for c in cross:
            c.tables()  # built here, not on two threads
        runs = [np.minimum.accumulate(c.vals) for c in cross]  # non-increasing
        age_off = 0 if self.A is None else int(self.A - a)
        retire = RETIRE if self.retire else -1.0

        # the pieces in the state's order, (side, carried ranges or None, rows), and the tasks
        pieces, tasks = [], [[] for _ in range(2 * len(halves))]
        for w in (0, 1):
            mine = np.array([(lo, hi) for v, lo, hi in segs if v == w],
                            dtype=np.int64).reshape(-1, 2)
            if mine.shape[0]:
                tasks[w].append(len(pieces))
                pieces.append((w, mine, None))
            for i, h in enumerate(halves):
                tasks[w + 2 * i].append(len(pieces))
                pieces.append((w, None, h))
        sizes = [int((c[:, 1] - c[:, 0]).sum()) if c is not None else (h[1] - h[0]) * Q
                 for _, c, h in pieces]  # each piece's most survivors and most dying
        at = [sum(sizes[:p]) for p in range(len(pieces))]
        rooms = {key: dying.room(key, sum(sizes)) for key in keys}
        no_exp = tuple(np.empty(0, dtype=x.dtype) for x in rooms["liq"])

        def run(p, start, at_liq, at_exp):
            w, c, h = pieces[p]
            liq = tuple(x[at_liq:] for x in rooms["liq"])
            exp = tuple(x[at_exp:] for x in rooms["exp"]) if "exp" in rooms else no_exp
            if c is not None:
                return jit.carried(
                    c, w, runs[w], m, self.A is not None, age_off, retire, zero_a, st.level,
                    st.birth, st.amount, st.opened, st.cell, st.kd, last, buf["level"],
                    buf["cell"], buf["kd"], buf["amount"], buf["opened"], buf["birth"], start,
                    *liq, *exp, *carried)
            r0, r1 = h
            return self._new_call(jit, w, i_new[r0:r1], t_new[r0:r1],
                                  (addn[r0:r1], om[r0:r1], wts),
                                  share[r0:r1], ent[r0:r1], g[r0:r1], cross[w], m, D, ob[r0:r1],
                                  last, buf, start, liq, exp, opened[r0:r1]) + (0.0,)

        if pool is None:  # one thread: each piece where the last one ended
            out, o, n = [], 0, {"liq": 0, "exp": 0}
            for p in range(len(pieces)):
                end, nl, ne, wm = run(p, o, n["liq"], n["exp"])
                out.append((pieces[p][0], o, end, wm))
                o = end
                n["liq"] += nl
                n["exp"] += ne
            for key in keys:
                dying.took(key, n[key])
            first_side = None
        else:  # two threads: each piece from its most
            order = iter([t for t in tasks if t])  # each thread takes the next task when free
            lock = threading.Lock()
            results = [None] * len(pieces)

            def worker():
                while True:
                    with lock:
                        task = next(order, None)
                    if task is None:
                        return
                    for p in task:  # in turn
                        results[p] = run(p, at[p], at[p], at[p])

            _beside(pool, worker, worker)
            out = [(pieces[p][0], at[p], results[p][0], results[p][3])
                   for p in range(len(pieces))]
            first_side = sum(1 for w, _, _ in pieces if w == 0)  # the longs' pieces
            for key, c in (("liq", 1), ("exp", 2))[:len(keys)]:
                arrays, n = rooms[key], 0
                for p in range(len(pieces)):
                    k = results[p][c]
                    if k and at[p] != n:
                        for x in arrays:
                            x[n:n + k] = x[at[p]:at[p] + k]
                    n += k
                    if p == first_side - 1:
                        dying.first_side[key] = n
                dying.took(key, n)
        ranges = []  # the survivors' ranges in the state's order, adjacent ones joined
        for w, lo, hi, _ in out:
            if hi <= lo:
                continue
            if ranges and ranges[-1][0] == w and ranges[-1][2] == lo:
                ranges[-1] = (w, ranges[-1][1], hi)
            else:
                ranges.append((w, lo, hi))
        return tuple(ranges), max([wm for *_, wm in out], default=0.0)

    def _kdw_of(self, w):
        """The kd of each (entry point, tier) column of side ``w``'s new positions."""
        kdw = self.__dict__.get("_kdw")
        if kdw is None:
            Q = int(self.entry.shape[2]) * self.K
            kdw = self._kdw = [np.tile(self.band_of * 2 + side, Q // self.K).astype(
                self._kd_dtype) for side in (0, 1)]
        return kdw[w]

    def _new_call(self, jit, w, i_new, t_new, base, share, ent, g, cross, m, D, ob, last, buf,
                  o, liq, exp, opened):
        """:func:`.cpu_loops.new_positions` of side ``w`` into these dying arrays; returns
        (next free offset, liquidated, expired)."""
        suf, tabs = cross.tables()
        geo = self._loggrid
        x0, inv = geo if geo is not None else (0.0, 0.0)
        return jit.new_positions(
            w, i_new, t_new, *base, share, ent, np.ascontiguousarray(self.factors[0, :, w]), g,
            m, -1 if self.A is None else int(self.A), suf, tabs, self.edges, x0, inv,
            geo is not None, self._kdw_of(w), 2 * self.B, np.empty(0) if D is None else D, ob,
            last, buf["level"], buf["cell"], buf["kd"], buf["amount"], buf["opened"],
            buf["birth"], o, *liq, *exp, opened)

    @staticmethod
    def _carry(buf, o, idx, last, level, cell, kd, W, opened, birth, gathered_births=False):
        """Write the positions ``idx`` of these arrays into the state buffers from ``o``, with
        their current amount (``W * last``); return the next free offset."""
        c = int(idx.shape[0])
        sl = slice(o, o + c)
        for key, x in (("level", level), ("cell", cell), ("kd", kd), ("amount", W),
                       ("opened", opened)):
            np.take(x, idx, out=buf[key][sl], mode="clip")  # not "raise": that buffers out
        buf["amount"][sl] *= last
        if gathered_births:
            buf["birth"][sl] = birth
        else:
            np.take(birth, idx, out=buf["birth"][sl], mode="clip")
        return o + c

    def _state_buffers(self, size: int) -> dict:
        """Arrays for the next block's live positions (at most ``size``), reused from block to
        block: two sets used in turn (one holds the current state while the other is written)."""
        sets = self.__dict__.setdefault("_statebufs", [None, None])
        self._turn = i = 1 - getattr(self, "_turn", 0)
        buf = sets[i]
        if buf is None or buf["level"].shape[0] < size:
            sets[i] = None
            cap = max(size, int(1.25 * (0 if buf is None else buf["level"].shape[0])))
            buf = sets[i] = {"level": np.empty(cap), "cell": np.empty(cap, dtype=np.int32),
                             "kd": np.empty(cap, dtype=self._kd_dtype), "amount": np.empty(cap),
                             "opened": np.empty(cap), "birth": np.empty(cap, dtype=np.int32),
                             "series": np.zeros(cap, dtype=np.int64)}
        return buf

    def _dying_buffers(self, size: int) -> dict:
        """Arrays for a block's dying positions (liquidated, expired: step, cell, kd, weight;
        at most ``size`` of each), reused from block to block (:class:`_Dying`)."""
        bufs = self.__dict__.get("_dyingbufs")
        if bufs is None or bufs["liq"][0].shape[0] < size:
            cap = max(size, int(1.25 * (0 if bufs is None else bufs["liq"][0].shape[0])))
            self._dyingbufs = bufs = None
            bufs = self._dyingbufs = {  # (steps and cells fit in int32: less to write and read)
                key: (np.empty(cap, dtype=np.int32), np.empty(cap, dtype=np.int32),
                      np.empty(cap, dtype=self._kd_dtype), np.empty(cap))
                for key in ("liq", "exp")}
        return bufs

    @property
    def _kd_dtype(self):
        return np.int8 if 2 * self.B <= 127 else np.int64

    @property
    def state(self) -> State:
        """The live positions (flat arrays). The numpy path keeps them in ranges of its state
        buffers (``_live``, longs first); they are gathered here, copied, when asked for."""
        live = self.__dict__.get("_live")
        if live is None:
            return self.__dict__["_state"]
        buf, segs = live
        idx = np.concatenate([np.arange(lo, hi) for _, lo, hi in segs] or [np.zeros(0, int)])
        side = np.concatenate([np.full(hi - lo, w, dtype=np.int8) for w, lo, hi in segs]
                              or [np.zeros(0, np.int8)])
        return State(side=side, **{k: buf[k][idx] for k in STATE_KEYS if k != "side"})

    @state.setter
    def state(self, st: State) -> None:
        self.__dict__["_state"] = st
        self.__dict__["_live"] = None

    def _side_sorted(self, compact: bool = False):
        """The live positions and their ranges, ``(state, ((side, start, end), ...))`` with
        the longs first: as :meth:`_block_np1` left them in its buffers, else the state
        sorted once, stably, and given the block's dtypes. ``compact``: in one range a side
        (the numpy loops'), gathered if they are not."""
        live = self.__dict__.get("_live")
        if live is not None:
            buf, segs = live
            one = [x for x in segs if x[0] == 0] + [x for x in segs if x[0] == 1]
            if not compact:
                return State(**{k: buf.get(k) for k in STATE_KEYS}), segs  # (no side)
            if len(segs) <= 2 and all(
                    lo == (one[i - 1][2] if i else 0) for i, (_, lo, _) in enumerate(one)):
                n = one[-1][2] if one else 0  # in one range a side, from 0: the first n
                return State(**{k: None if k == "side" else buf[k][:n]
                                for k in STATE_KEYS}), segs
        st = self.state
        s = getattr(self, "_sorted", None)
        if s is None or s[0] is not st:
            side = st.side
            if side.shape[0] > 1 and bool((side[1:] < side[:-1]).any()):
                st = st.take(np.argsort(side, kind="stable"))
            st.kd = st.kd.astype(self._kd_dtype)
            st.side = st.side.astype(np.int8)
            st.cell = st.cell.astype(np.int32)  # < 2^31 cells, steps (as the state buffers)
            st.birth = st.birth.astype(np.int32)
            self.state = st
            n0 = int(np.count_nonzero(st.side == 0))
            self._sorted = s = (st, tuple(x for x in ((0, 0, n0), (1, n0, len(st)))
                                          if x[2] > x[1]))
        return s

    def _cell_range(self, cells, ent):
        """(first cell, number of cells) that carried positions (``cells``: arrays of their
        cells) and the new positions of entries ``ent`` can have: a bound from the lowest and
        highest level, in whole groups of ``2B`` cells (one bin)."""
        nkd = 2 * self.B
        lo, hi = [], []
        for c in cells:
            if c.shape[0]:
                lo.append(int(c.min()))
                hi.append(int(c.max()) + 1)
        ok = ent[np.isfinite(ent)]
        if ok.size < ent.size:  # (step, point) without an entry: bin P
            hi.append((self.P + 1) * nkd)
        if ok.size:
            f = self.factors[0]
            q = np.array([ok.min() * f.min(), ok.max() * f.max()])  # factors > 0
            j = self.grid.bin_index(q, xp=np, edges=self.edges)
            # a level below or above the grid is in bin P (and below, the lowest in it is 0)
            below = q[0] < self.grid.edges[0]
            lo.append(0 if below else int(j[0]) * nkd)
            hi.append((self.P if below or j[1] == self.P else int(j[1])) * nkd + nkd)
        if not lo and not hi:
            return 0, 0
        cmin = min(lo) if lo else min(hi) - nkd
        cmax = max(hi)
        cmin -= cmin % nkd  # whole (band, side) groups of cells
        cmax += -cmax % nkd
        return cmin, cmax - cmin

    def _cells(self, lev, ent, w):
        """Cells and (band, side) indices of new levels ``lev`` (r, Np * K) of side ``w`` built
        as entry x factor: on a geometric grid the bins come from log(entry) + log(factor) and
        one correction step against the edges (the same bins as :meth:`Grid.bin_index`); else
        by a search in the edges."""
        B, P, K = self.B, self.P, self.K
        nkd = 2 * B
        r, Q = lev.shape
        g = self._loggrid
        if g is None:
            j = self.grid.bin_index(lev.reshape(-1), xp=np, edges=self.edges).reshape(r, Q)
        else:
            x0, inv = g
            with np.errstate(invalid="ignore", divide="ignore"):
                le = (np.log(ent) - x0) * inv  # (r, Np)
                lf = np.log(self.factors[0, :, w]) * inv  # (K,)
                u = (le[:, :, None] + lf).reshape(r, Q)
                j = u.astype(np.int64)  # truncated; out of range or NaN: any value, clipped
            del u
            np.clip(j, 0, P - 1, out=j)
            # one correction step each way: inside the grid the estimate is within one bin;
            # below it j ends at -1, above it at P
            e = self.grid.edges
            np.subtract(j, lev < np.take(e, j), out=j)
            np.add(j, lev >= np.take(e[1:], j), out=j)  # j = -1: e[P], no step
            below = j < 0
            if bool(below.any()):
                j[below] = P
            nan = np.isnan(le)  # (step, point) without an entry: outside
            if bool(nan.any()):
                j.reshape(r, -1, K)[nan] = P
        kdw = np.tile(self.band_of * 2 + w, Q // K)  # (Q,): kd of each (point, tier)
        j *= nkd
        j += kdw
        kd = np.empty((r, Q), dtype=self._kd_dtype)
        kd[...] = kdw
        return j, kd

    def _add_opened(self, out, amt, w) -> None:
        """Add the amounts ``amt`` (rows, (entry point, tier)) of side ``w`` to ``out`` (rows,
        (band, side)), one column at a time in (point, tier) order: the order the compiled loop
        (:mod:`.cpu_loops`) adds them in, so both paths give the same bits (and a run may
        switch between them at any block)."""
        bo = self.inp.band_of
        K = self.K
        for q in range(amt.shape[1]):
            col = out[:, int(bo[q % K]) * 2 + w]
            col += amt[:, q]

    def _zeros(self, size: int, name: str):
        """A zeroed float64 scratch vector, reused between blocks (the caller zeroes it after
        use): a fresh np.zeros of tens of MB per block costs its page faults every time."""
        bufs = self.__dict__.setdefault("_scratch", {})
        buf = bufs.get(name)
        if buf is None or buf.shape[0] < size:
            bufs[name] = None
            buf = bufs[name] = np.zeros(size)
        return buf[:size]

    def _finish(self, b0: int, b1: int, acc) -> ChunkResult:
        S, K, P = self.S, self.B, self.P
        nb = b1 - b0
        to_host = self.ops.to_host

        def cube(x):
            c = x.reshape(nb, S, P + 1, K, 2).transpose(1, 0, 2, 3, 4)
            return c

        touched = None
        if self._fast:  # already in the output dtype, the outside bin apart (S = 1)
            nkd = 2 * K  # cells (columns) of a bin
            touched = {f: (0, 0) if c0 is None else (c0 // nkd, -(-c1 // nkd))
                       for f, (c0, c1) in self._touched.items()}
            intensity = acc["intensity"].reshape(1, nb, P, K, 2)
            outside = acc["outside"].reshape(1, nb, K, 2)
            liquidated = acc["liquidated"].reshape(1, nb, P, K, 2)
            outside_liquidated = acc["outside_liquidated"].reshape(1, nb, K, 2)
        else:
            inten = cube(acc["intensity"])
            intensity = to_host(inten[:, :, :P].astype(self.dtype))
            outside = to_host(inten[:, :, P].copy())
            liq = cube(acc["liquidated"])
            liquidated = to_host(liq[:, :, :P].astype(self.dtype))
            outside_liquidated = to_host(liq[:, :, P].copy())

        def small(x):
            return to_host(x.reshape(nb, S, K, 2).transpose(1, 0, 2, 3))

        return ChunkResult(
            b0=b0,
            b1=b1,
            intensity=intensity,
            liquidated=liquidated,
            added=small(acc["added"]),
            closed=small(acc["closed"]),
            expired=small(acc["expired"]),
            outside=outside,
            outside_liquidated=outside_liquidated,
            churned=small(acc["churned"]) if self.churn else None,
            touched=touched,
        )


# ----------------------------------------------------------------------------------------------
#: bytes of float64 snapshot rows scaled at once by :func:`snapshot_rows` (they stay in cache
#: between the scaling, the cast into the output and the maximum)
SNAP_BATCH_BYTES = 256 * 1024


def snapshot_rows(Dr, fac, G, Go, zero: bool = False) -> float:
    """A block's intensity rows from its difference rows ``Dr`` ((ns, wd), float64, summed
    over rows in place): row ``i`` scaled by ``fac[i]`` into ``G[i]`` (its first ``k``
    columns, the output dtype) and ``Go[i]`` (the rest: the outside bins; None when there are
    none). Returns the largest value written, as the output dtype holds it (what ``max()`` of
    ``G`` and ``Go`` gives: rounding is monotone).

    The running sum goes row by row (``cumsum(axis=0)`` is several times slower); the scaling
    runs on batches of rows into a float64 scratch that stays in cache, then is cast into the
    output (a float64 product cast to float32 is what a mixed-type multiply writes, bit for bit,
    without numpy's buffered casting loop), and the maximum is taken there, so the snapping
    needs no pass of its own for it. ``zero``: leave ``Dr`` zeroed instead (each batch of rows
    zeroed while still in cache, the last row of a batch once the next one has added it), which
    saves the caller a pass over it."""
    ns, wd = Dr.shape
    k = G.shape[1]
    step = max(1, SNAP_BATCH_BYTES // (8 * max(wd, 1)))
    T = np.empty((min(step, ns), wd))
    top = -np.inf
    for i0 in range(0, ns, step):
        i1 = min(ns, i0 + step)
        for i in range(max(i0, 1), i1):
            np.add(Dr[i - 1], Dr[i], out=Dr[i])
        Tb = T[: i1 - i0]
        np.multiply(Dr[i0:i1], fac[i0:i1, None], out=Tb)
        if k:
            np.copyto(G[i0:i1], Tb[:, :k], casting="unsafe")
        if Go is not None:
            np.copyto(Go[i0:i1], Tb[:, k:], casting="unsafe")
        if Tb.size:
            top = max(top, float(Tb.max()))
        if zero:  # rows i0 - 1 (the last batch's last, added into row i0 by now) to i1 - 2
            Dr[max(i0 - 1, 0):i1 - 1] = 0.0
    if zero and ns:
        Dr[ns - 1] = 0.0
    return float(G.dtype.type(top)) if ns and wd else 0.0


#: the numpy path adds a block's liquidated sums into the chunk's cube cell by cell (the
#: cells with a sum) where they are fewer than 1 / SPARSE_LIQUIDATED of the rows x columns
#: the block's liquidations span, else over that whole region
SPARSE_LIQUIDATED = 8


def liquidated_into(out, out_o, L2, r0: int, cmin: int, k: int, o0: int, c_lo: int,
                    c_hi: int) -> None:
    """Add a block's liquidated sums ``L2`` into the chunk's cubes, and zero ``L2``.

    ``L2``: float64, chunk rows ``r0...`` by the block's columns (block column ``j`` is the
    chunk's column ``cmin + j``), non-zero only in the columns ``[c_lo, c_hi)`` the
    liquidations hit. Columns below ``k`` go to ``out`` (the output dtype), the rest to the
    outside bins ``out_o`` from its column ``o0``.

    A block's liquidations lie on the levels its prices reached: a few cells of each row, hit
    many times (year v1: 2.5 M liquidations in 0.1 M cells of a 30 M-cell region). So the
    region is scanned once for its non-zero sums, and only those cells of ``out`` are read,
    added to (in float64, then rounded: what the region's in-place add of float64 into the
    output dtype gives, bit for bit) and written, the others not touched, nor their pages
    faulted in. A sum of exactly 0 adds nothing (the cube holds no -0.0: its sums are of
    non-negative amounts)."""
    c0, c1 = c_lo - cmin, c_hi - cmin
    if c0 < k:
        sub = L2[:, c0:min(c1, k)]
        # a mask, then its flat indices: np.nonzero of the strided float64 region is ~10x slower
        hit = np.flatnonzero(sub != 0)
        if hit.size * SPARSE_LIQUIDATED < sub.size:
            r, c = np.divmod(hit, sub.shape[1])
            rr, cc = r + r0, c + (cmin + c0)
            out[rr, cc] = out[rr, cc] + sub[r, c]
            sub[r, c] = 0.0
        else:
            out[r0:r0 + sub.shape[0], cmin + c0:cmin + min(c1, k)] += sub
            sub[...] = 0.0
    if c1 > k:
        j0 = max(c0, k)
        out_o[r0:r0 + L2.shape[0], o0 + j0 - k:o0 + c1 - k] += L2[:, j0:c1]
        L2[:, j0:c1] = 0.0


def residue_floor(w_carried: float, base, share, g, rows, fac, jit=None) -> float:
    """The scale of a block's cancellation residues, in the snapshots' units: over its snapshot
    rows, the largest weight entered at or before the row times the row's factor (what that
    position holds there, or would had it lived). The carried positions enter the first row
    with weights up to ``w_carried``; a new position at step ``r`` enters row ``rows[r]`` (none
    where that is past the last: born after the block's last snapshot) with its weight
    ``base * share * g`` (largest per step: the row's largest base times its larger share).

    Not the largest weight times the smallest factor: a position born after a snapshot has a
    weight above its amount by the survival since then, which under heavy churn (v2, churn 100
    an hour) is many orders of magnitude, and cells far above their residues were snapped."""
    ns = fac.shape[0]
    wrow = np.zeros(ns)
    if ns:
        wrow[0] = w_carried
    if jit is not None:  # the compiled loops: the same, in one pass (``base``: its factors)
        if base[0].size:
            jit.row_weights(*base, share, g, rows, wrow)
    elif base.size:
        w_new = base.max(axis=1) * share.max(axis=1) * g
        ok = rows < ns
        np.maximum.at(wrow, rows[ok], w_new[ok])
    return float((np.maximum.accumulate(wrow) * fac).max()) if ns else 0.0


def snap_residues(parts: list, floor: float, top: float | None = None) -> None:
    """Snap the cancellation residues of a block's snapshot rows ``parts`` in place.

    +W and -W of a dead position cancel to rounding, not to zero: a cell at or below
    :data:`RESIDUE` of the largest (far below MODEL.md's 1e-9 tolerance), or of ``floor``
    (the block's residue scale, :func:`residue_floor`: a block whose cells all emptied has
    only residues left), and every negative one (a residue: far below ``floor``), becomes
    exactly 0.
    Compared as integers (the bits of a non-negative float order as the float; a negative
    one's are negative): one compare and one multiply per cell, the result as ``not x > thr``
    (``cpu_loops.snapshots``) gives. ``top``: the largest cell of ``parts`` where the caller
    knows it (:func:`snapshot_rows`), else found here. Rows go a batch at a time through one
    mask buffer that stays in cache (a mask of a whole block is tens of MB of fresh pages)."""
    if top is None:
        top = max([float(x.max()) for x in parts], default=0.0)
    top = max(top, floor)
    for x in parts:
        ints = np.int32 if x.dtype.itemsize == 4 else np.int64
        xi = x.view(ints)
        thr = np.asarray(top * RESIDUE, dtype=x.dtype).view(ints)
        if xi.ndim != 2 or not xi.size:
            np.multiply(xi, xi > thr, out=xi)
            continue
        step = max(1, SNAP_MASK_CELLS // xi.shape[1])
        mask = np.empty((min(step, xi.shape[0]), xi.shape[1]), dtype=bool)
        for i0 in range(0, xi.shape[0], step):
            rows = xi[i0:i0 + step]
            m = mask[: rows.shape[0]]
            np.greater(rows, thr, out=m)
            np.multiply(rows, m, out=rows)


#: cells of the snapshot rows snapped at once by :func:`snap_residues` (its mask stays in cache)
SNAP_MASK_CELLS = 64 * 1024


def _geometric(edges):
    """(log x_0, 1 / log r) when the edges are x_0 r^j to well within a bin (a log grid), so
    that floor((log q - log x_0) / log r) is a level's bin or a neighbour of it; else None."""
    P = edges.size - 1
    if P < 1 or edges[0] <= 0:
        return None
    lx = np.log(edges)
    lr = (lx[-1] - lx[0]) / P
    if not lr > 0:
        return None
    off = (lx - lx[0]) / lr - np.arange(P + 1)
    return (float(lx[0]), 1.0 / lr) if float(np.abs(off).max()) < 0.25 else None


class _Dying:
    """The positions that die in a block, per kind (``liq``, ``exp``): (step, cell, kd,
    weight) arrays in the order they are found. The numpy loops :meth:`append` arrays of their
    own; the compiled loops write into the free :meth:`room` of one set of buffers (no arrays
    allocated per call, no concatenation) and report what they wrote (:meth:`took`)."""

    __slots__ = ("bufs", "parts", "n", "seen", "first_side")

    def __init__(self, bufs=None):
        self.bufs = bufs
        self.first_side = {}  # two threads: how many of the entries are the longs'
        self.parts = {"liq": [], "exp": []}
        self.n = {"liq": 0, "exp": 0}
        self.seen = {"liq": False, "exp": False}

    def append(self, key: str, arrays: tuple) -> None:
        self.parts[key].append(arrays)

    def room(self, key: str, size: int) -> tuple:
        """The buffers' next ``size`` free entries of ``key`` (views to write into)."""
        at = self.n[key]
        if at + size > self.bufs[key][0].shape[0]:  # the compiled loops do not check bounds
            raise RuntimeError(f"dying buffers too small: {at} + {size} > "
                               f"{self.bufs[key][0].shape[0]}")
        return tuple(x[at:at + size] for x in self.bufs[key])

    def took(self, key: str, count: int) -> None:
        """``count`` entries of ``key`` were written at the start of the last room."""
        self.n[key] += count
        self.seen[key] = True

    def arrays(self, key: str):
        """The block's dying of ``key`` as one tuple of arrays, or None if none was found."""
        if self.seen[key]:
            return tuple(x[:self.n[key]] for x in self.bufs[key])
        parts = self.parts[key]
        return tuple(np.concatenate(x) for x in zip(*parts)) if parts else None


def _beside(pool, there, here) -> tuple:
    """``here()`` on this thread while ``there()`` runs on ``pool``'s: (here's result, there's).
    The other thread is waited for even when ``here`` fails, so nothing writes into a block's
    arrays after it has ended."""
    later = pool.submit(there)
    try:
        mine = here()
    except BaseException:
        try:
            later.result()
        except BaseException:  # the first error is the one to report
            pass
        raise
    return mine, later.result()


def _bincount(idx, weights, minlength):
    """np.bincount with weights, always float64 (numpy returns int64 for empty input)."""
    if idx.shape[0] == 0:
        return np.zeros(minlength)
    return np.bincount(idx, weights=weights, minlength=minlength)


_REFCOUNTS = sys.implementation.name == "cpython" and hasattr(sys, "getrefcount")


class _CubePool:
    """The output cubes of an engine's chunks (numpy), reused once nothing holds them.

    A chunk's cubes are tens of MB of fresh memory; its pages cost the kernel's faults and
    zeroing on first touch, which was more than zeroing memory already mapped (year v1,
    in one process: the engine 1.06 s with fresh cubes a chunk, 0.94 s with cubes reused and
    zeroed). A cube is reused only when no chunk, view or copy in flight (the store writer's
    queue, a caller's list) refers to it any more: CPython's reference count of the array,
    which every view holds through its ``base``, says so. Buffers in use are never touched.
    """

    def __init__(self, keep: int = 8):
        self.keep = keep  # e.g. two cubes each of the chunk computed, queued and being written
        self.bufs: list = []
        # id of a 2-d array handed out -> (a weak reference to it, the columns [c0, c1) it may
        # be non-zero in): the pool's, and new ones it did not keep (held by a caller)
        self._dirty: dict = {}
        self.made = 0  # arrays allocated (the rest were reused)
        # an array only a list holds: what a free one counts, read the same way (interpreters
        # differ in whether getrefcount's argument counts)
        self._probe = [np.empty(0)]

    def zeros(self, shape, dtype) -> np.ndarray:
        """A zeroed array of ``shape`` and ``dtype``: a free one of the pool, else new."""
        return self.get(shape, dtype)

    def get(self, shape, dtype, zeroed: bool = True) -> np.ndarray:
        """An array of ``shape`` and ``dtype``, a free one of the pool, else new (zero);
        zeroed unless ``zeroed`` is false: then a reused one holds what it held, zero outside
        the columns :meth:`dirty` gives."""
        dtype = np.dtype(dtype)
        i = self._free(shape, dtype)
        if i is not None:
            x = self.bufs[i]
            if zeroed:
                x.fill(0)
                self._dirty[id(x)] = (weakref.ref(x), (0, 0))
            return x
        if len(self.bufs) >= self.keep:  # full: a free array of another shape makes room
            i = self._free()
            if i is not None:
                del self.bufs[i]
        b = np.zeros(shape, dtype=dtype)
        self.made += 1
        if len(self.bufs) < self.keep:
            self.bufs.append(b)
        if len(self._dirty) > 4 * self.keep:  # forget the arrays gone
            self._dirty = {k: v for k, v in self._dirty.items() if v[0]() is not None}
        self._dirty[id(b)] = (weakref.ref(b), (0, 0))  # new: zero
        return b

    def _free(self, shape=None, dtype=None) -> "int | None":
        """The index of an array nothing else holds (of ``shape`` and ``dtype`` if given)."""
        if not _REFCOUNTS:  # no reference counts to go by: nothing is reused
            return None
        free = sys.getrefcount(self._probe[0])
        for i in range(len(self.bufs)):
            # as many references as the probe's: the pool's list alone refers to it
            if sys.getrefcount(self.bufs[i]) <= free and (
                    shape is None or (self.bufs[i].shape == shape and self.bufs[i].dtype == dtype)):
                return i
        return None

    def dirty(self, x) -> tuple[int, int]:
        """The columns ``[c0, c1)`` outside which the 2-d array ``x`` the pool handed out is
        zero (none for a new one, what :meth:`mark` said since); all of them for any other."""
        ref, span = self._dirty.get(id(x), (None, None))
        return span if ref is not None and ref() is x else (0, x.shape[1])

    def mark(self, x, span: tuple[int, int]) -> None:
        """The array ``x`` the pool handed out is zero outside the columns ``span`` now."""
        ref, _ = self._dirty.get(id(x), (None, None))
        if ref is not None and ref() is x:
            self._dirty[id(x)] = (ref, (int(span[0]), int(span[1])))

    def clear(self) -> None:
        self.bufs.clear()
        self._dirty.clear()


class _Crossing:
    """First step after an opening at which a block's lows (or minus highs) ``vals`` reach a
    level: :meth:`first`. Tables are built on first use and shared by every call."""

    def __init__(self, vals):
        self.vals = vals
        self.m = vals.shape[0]
        self.suf = None
        self.tabs = None

    def _build(self):
        m, vals = self.m, self.vals
        suf = np.empty(m + 1)  # suf[t] = min(vals[t:])
        suf[m] = np.inf
        suf[:m] = np.minimum.accumulate(vals[::-1])[::-1]
        # tabs[j][p] = min(vals[p : p + 2^j]) (to the block's end), each level into its row
        tabs = np.empty((max(1, (m - 1).bit_length()), m))
        tabs[0] = vals
        for j in range(1, tabs.shape[0]):
            prev, nxt, s = tabs[j - 1], tabs[j], 1 << (j - 1)
            np.minimum(prev[:-s], prev[s:], out=nxt[:-s])
            nxt[-s:] = prev[-s:]  # windows past the block's end: what is left of it
        self.suf, self.tabs = suf, tabs

    def tables(self):
        """(suf, tabs) as arrays: ``suf[t]`` the minimum of the values from ``t`` on
        (``suf[m]`` = inf), ``tabs[j, p]`` the minimum of ``vals[p : p + 2^j]``."""
        if self.suf is None:
            self._build()
        return self.suf, self.tabs

    def first(self, steps, thr, out=None):
        """First block-local step ``t > steps[r]`` with ``vals[t] <= thr[r, j]`` (``m`` if none).

        A threshold below the minimum of ``vals`` after its step never crosses in the block (most
        of them); the others are found by binary lifting over the tables of range minima
        (log2(m) gathers from small, cached tables), which never leaves the block since a
        crossing exists.
        """
        m = self.m
        R, Qn = thr.shape
        if out is None:
            out = np.empty((R, Qn), dtype=np.int64)
        out.fill(m)
        if R == 0 or m < 2:
            return out
        if self.suf is None:
            self._build()
        cand = thr >= self.suf[steps + 1][:, None]  # crosses in the block (NaN: never)
        flat = np.flatnonzero(cand)
        if flat.size == 0:
            return out
        q = np.take(thr.reshape(-1), flat) if thr.flags.c_contiguous else thr[cand]
        pos = np.repeat(steps + 1, np.count_nonzero(cand, axis=1))
        nq = pos.shape[0]
        v = np.empty(nq)
        gt = np.empty(nq, dtype=bool)
        inc = np.empty(nq, dtype=np.int64)
        for j in range(len(self.tabs) - 1, -1, -1):
            np.take(self.tabs[j], pos, out=v, mode="clip")
            np.greater(v, q, out=gt)
            np.multiply(gt, 1 << j, out=inc)
            pos += inc
        np.minimum(pos, m, out=pos)
        out.reshape(-1)[flat] = pos
        return out


def _cross_new(vals, steps, thr, out=None):
    """First block-local step ``t > steps[r]`` with ``vals[t] <= thr[r, j]`` (``m`` if none);
    see :meth:`_Crossing.first`."""
    return _Crossing(vals).first(steps, thr, out)


def _snapshot_steps(a: int, b: int, n: int, T: int, xp):
    """Global steps in [a, b) that end an output bucket."""
    first = ((a // n) + 1) * n - 1
    s = list(range(first, b, n))
    if b == T and (not s or s[-1] != T - 1) and T - 1 >= a:
        s.append(T - 1)
    return xp.asarray(np.asarray(s, dtype=np.int64))


class _SparseTables:
    """Range-minimum tables over a chunk for two value arrays (lows, and minus highs).

    ``first_at_or_below(which, series, start, thr)`` returns, per query, the first local index
    >= start whose value is <= thr (the chunk length if none): the backend's
    ``first_cross`` (:mod:`liqgpu.backend`), by binary lifting over these tables.
    """

    def __init__(self, v0, v1, xp, ops=None):
        self.xp = xp
        self.ops = ops_for(xp) if ops is None else ops
        S, m = v0.shape
        self.m = m
        J = max(1, int(math.ceil(math.log2(m + 1))))
        L = 1 << J
        self.L = L
        vals = xp.full((2, S, L), xp.inf)
        vals[0, :, :m] = v0
        vals[1, :, :m] = v1
        self.levels = [vals.reshape(-1)]
        self.shape = (2, S, L)
        cur = vals
        for j in range(1, J):
            h = 1 << (j - 1)
            nxt = cur.copy()
            nxt[:, :, : L - h] = xp.minimum(cur[:, :, : L - h], cur[:, :, h:])
            self.levels.append(nxt.reshape(-1))
            cur = nxt
        self.J = J

    def first_at_or_below(self, which, series, start, thr, sorted_from=None):
        """``sorted_from``: every query starts there (one series' carried positions)."""
        return self.ops.first_cross(self, which, series, start, thr, sorted_from=sorted_from)

    def lift(self, which, series, start, thr):
        """:meth:`first_at_or_below` in array code (numpy or CuPy): binary lifting, as the
        ``first_cross`` kernel does it one thread per query."""
        xp = self.xp
        S, L = self.shape[1], self.L
        base = (which * S + series) * L
        pos = start.astype(xp.int64)
        for j in range(self.J - 1, -1, -1):
            v = self.levels[j][base + xp.minimum(pos, L - 1)]
            pos = xp.where(v > thr, pos + (1 << j), pos)
        return xp.minimum(pos, self.m)
