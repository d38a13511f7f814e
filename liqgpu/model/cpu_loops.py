"""The compiled loops of :mod:`liqgpu.model.jit` (numba; imported only when they are used).

Module-level functions, so numba caches their machine code between processes (``cache=True``:
in ``__pycache__`` beside this file, or numba's user cache where that is read-only).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit as _njit

#: new positions whose crossings are searched together (:func:`new_positions`)
BATCH = 2048

njit = _njit(cache=True, nogil=True, boundscheck=False)


@njit
def bin_of(q, u, edges, geo):
    """Grid bin of level ``q``: j with edges[j] <= q < edges[j+1], else P (outside, NaN).
    ``u``: on a log grid (``geo``), (log q - log x_0) / log r, an estimate of it that is
    corrected against the edges; else the edges are searched."""
    P = edges.shape[0] - 1
    if not (q >= edges[0] and q < edges[P]):  # NaN too
        return P
    if geo:
        j = int(u)
        if j < 0:
            j = 0
        elif j > P - 1:
            j = P - 1
    else:
        lo, hi = 0, P - 1  # binary search: the last edge <= q
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if edges[mid] <= q:
                lo = mid
            else:
                hi = mid - 1
        j = lo
    while j > 0 and q < edges[j]:
        j -= 1
    while j < P - 1 and q >= edges[j + 1]:
        j += 1
    return j

@njit
def new_positions(w, i_new, t_new, addn, om, wts, share, ent, fac, g, m, age, suf, tabs, edges,
                  x0, inv, geo, kdw, nkd, D, ob, last, buf_level, buf_cell, buf_kd, buf_amount,
                  buf_opened, buf_birth, o, liq_d, liq_c, liq_k, liq_w, exp_d, exp_c, exp_k,
                  exp_w, opened):
    """The new positions of side ``w`` of one block: what the numpy tile loop of
    ``Engine._block_np1`` computes (see there), for every (step, entry point, tier).

    Each amount is formed where it is used, as the numpy block's ``base * share`` (``addn``:
    the amount added at each step, ``om``: its entry points' weights, ``wts``: the tiers'),
    not read from an array of them. Writes the dying (``liq_*``, ``exp_*``: block-local step
    of death, cell, kd, weight),
    the survivors into the state buffers from ``o``, each weight into ``D`` (when it has
    rows) and the opened amounts per (step, kd) into ``opened``. Returns (next free state
    offset, liquidated count, expired count).

    The crossings of a batch of about :data:`BATCH` positions are searched together, a
    table level at a time (independent loads the processor overlaps; one search after
    another waits on each load), and bins come from one logarithm per entry. The batch's
    weights enter ``D`` after, in a loop of their own: its rows are far apart in memory, and
    updates with nothing else between them are many in flight at once (the same updates in
    the same order)."""
    N0 = addn.shape[0]
    Np = om.shape[1]
    K = wts.shape[0]
    Q = Np * K
    J = tabs.shape[0]
    use_d = D.shape[0] > 0
    lf = np.empty(K)  # log grid: log(factor) / log r
    for k in range(K):
        lf[k] = math.log(fac[k]) * inv if geo else 0.0
    rb = max(1, BATCH // Q)  # rows a batch
    lev = np.empty(rb * Q)
    thr = np.empty(rb * Q)
    pos = np.empty(rb * Q, dtype=np.int64)
    cand = np.empty(rb * Q, dtype=np.int64)
    cpos = np.empty(rb * Q, dtype=np.int32)  # the candidates' search, packed
    cthr = np.empty(rb * Q)
    nl = 0
    ne = 0
    for r0 in range(0, N0, rb):
        r1 = min(N0, r0 + rb)
        nc = 0
        for r in range(r0, r1):
            s1 = i_new[r] + 1
            floor = suf[s1]  # the lowest value after the step: no crossing above it
            q = (r - r0) * Q
            for p in range(Np):
                e = ent[r, p]
                for k in range(K):
                    x = e * fac[k]
                    t = -x if w else x
                    lev[q] = x
                    thr[q] = t
                    pos[q] = m
                    if t >= floor and s1 < m:  # crosses in the block (NaN: never)
                        pos[q] = s1
                        cand[nc] = q
                        nc += 1
                    q += 1
        for c in range(nc):
            q = cand[c]
            cpos[c] = pos[q]
            cthr[c] = thr[q]
        for j in range(J - 1, -1, -1):  # binary lifting, the batch's candidates together
            step = 1 << j
            row = tabs[j]
            for c in range(nc):
                # branch-free: the outcome is a coin toss, a mispredicted branch costs more
                # than the load. A jump never passes the crossing (the window before it
                # holds no value at or below the level), which is before m: no bound check
                x = cpos[c]
                cpos[c] = x + step * (row[x] > cthr[c])
        for c in range(nc):
            pos[cand[c]] = cpos[c]
        for r in range(r0, r1):
            i = i_new[r]
            sh = share[r, w]
            gr = g[r]
            te = i + age if age >= 0 else m  # expiry step (block-local)
            for p in range(Np):
                e = ent[r, p]
                le = (math.log(e) - x0) * inv if geo and e > 0 else 0.0
                ao = addn[r] * om[r, p]
                for k in range(K):
                    q = p * K + k
                    b = (r - r0) * Q + q
                    amt = ao * wts[k] * sh
                    d = pos[b]
                    kd = kdw[q]
                    cell = bin_of(lev[b], le + lf[k], edges, geo) * nkd + kd
                    W = amt * gr
                    cand[b] = ob[r] + cell  # (cand and thr are free again: D's index
                    thr[b] = W  # and weight of each position, for the loop below)
                    expired = te < m and te <= d
                    if te < d:
                        d = te
                    if expired:
                        exp_d[ne] = d
                        exp_c[ne] = cell
                        exp_k[ne] = kd
                        exp_w[ne] = W
                        ne += 1
                    elif d < m:
                        liq_d[nl] = d
                        liq_c[nl] = cell
                        liq_k[nl] = kd
                        liq_w[nl] = W
                        nl += 1
                    opened[r, kd] += amt
                    if d >= m and amt > 0:
                        buf_level[o] = lev[b]
                        buf_cell[o] = cell
                        buf_kd[o] = kd
                        buf_amount[o] = W * last
                        buf_opened[o] = amt
                        buf_birth[o] = t_new[r]
                        o += 1
        if use_d:  # a tight loop: many independent updates in flight
            for b in range((r1 - r0) * Q):
                D[cand[b]] += thr[b]
    return o, nl, ne

@njit
def flows(m, nkd, live0, i_new, opened, g, liq_d, liq_k, liq_w, x_exp, f_closed, f_churn,
          Lq, closed, churned):
    """A block's flows per (step, kd), as the numpy block's ``flows`` computes them (see
    ``Engine._block_np1``) before it adds them per output row, in one pass instead of ten,
    the same sums in the same order: the weight liquidated per step (``Lq``, zero, ``m *
    nkd``, as ``np.bincount`` sums it), the live weight after each step's liquidation (the
    carried ``live0``, plus each new step's ``opened * g`` from the step after, minus the
    liquidated and ``x_exp``, the expired (empty if none), summed over the steps as
    ``np.cumsum`` does), times ``f_closed`` before the liquidation (plus ``Lq``) into
    ``closed`` and times ``f_churn`` (empty: no churn) into ``churned``, both ``(m, nkd)``."""
    for x in range(liq_d.shape[0]):
        Lq[liq_d[x] * nkd + liq_k[x]] += liq_w[x]
    N0 = i_new.shape[0]
    use_exp = x_exp.shape[0] > 0
    use_churn = f_churn.shape[0] > 0
    run = np.empty(nkd)  # the running sum of the live weight after liquidation
    nxt = 0  # the next new step (i_new is sorted)
    for t in range(m):
        born = -1  # the row of the new positions born the step before (alive from t)
        while nxt < N0 and i_new[nxt] + 1 < t:
            nxt += 1
        if nxt < N0 and i_new[nxt] + 1 == t:
            born = nxt
        for k in range(nkd):
            if t == 0:
                e = live0[k]
            elif born >= 0:
                e = opened[born, k] * g[born]
            else:
                e = 0.0
            lq = Lq[t * nkd + k]
            v = e - lq
            if use_exp:
                v = v - x_exp[t * nkd + k]
            if t:
                v = run[k] + v
            run[k] = v
            closed[t, k] = f_closed[t] * (v + lq)
            if use_churn:
                churned[t, k] = f_churn[t] * v


@njit
def row_weights(addn, om, wts, share, g, rows, wrow):
    """``np.maximum.at(wrow, rows[ok], base.max(axis=1) * share.max(axis=1) * g)`` over the
    rows of ``wrow`` (``ok``: ``rows < wrow.shape[0]``; ``engine.residue_floor``), NaN kept
    as numpy's maxima keep it; ``base[r, p * K + k]`` is ``addn[r] * om[r, p] * wts[k]``."""
    ns = wrow.shape[0]
    Np = om.shape[1]
    K = wts.shape[0]
    for r in range(addn.shape[0]):
        i = rows[r]
        if i >= ns:
            continue
        b = addn[r] * om[r, 0] * wts[0]
        for p in range(Np):
            ao = addn[r] * om[r, p]
            for k in range(K):
                x = ao * wts[k]
                if x > b or x != x:
                    b = x
        sh = share[r, 0]
        x = share[r, 1]
        if x > sh or x != x:
            sh = x
        w = b * sh * g[r]
        if w > wrow[i] or w != w:
            wrow[i] = w


@njit
def subtract_dead(D, o_of, wd, cmin, d, c, W):
    """``D[o_of[d] * wd + c - cmin] -= W``, in order (``np.subtract.at``)."""
    for x in range(d.shape[0]):
        D[o_of[d[x]] * wd + c[x] - cmin] -= W[x]

@njit
def snapshot_cols(D, ns, wd, c0, c1, k, fac, G, Go):
    """The intensity rows of a block in its columns ``[c0, c1)``, from its difference array
    ``D`` ((ns + 1) rows of ``wd`` cells): the running sum over rows, scaled by ``fac`` into
    ``G`` (the in-grid columns ``[0, k)``, output dtype) and ``Go`` (the outside bin's). One
    pass over D instead of numpy's four; D's columns are left zeroed. Returns the largest cell
    written (after the cast), for :func:`snap_cols`. Column ranges are independent, so two
    threads may fill two of them at once."""
    top = 0.0
    for i in range(ns):
        f = fac[i]
        base = i * wd
        for c in range(c0, c1):
            if i:
                D[base + c] += D[base - wd + c]
                D[base - wd + c] = 0.0
            if c < k:
                G[i, c] = D[base + c] * f
                x = G[i, c]
            else:
                Go[i, c - k] = D[base + c] * f
                x = Go[i, c - k]
            if x > top:
                top = x
    for i in range(max(ns - 1, 0), ns + 1):  # the last snapshot row and the one past it
        for c in range(c0, c1):
            D[i * wd + c] = 0.0
    return top


@njit
def snap_cols(G, Go, ns, c0, c1, k, top, floor, residue):
    """Residues snapped in the columns ``[c0, c1)`` of a block's intensity rows: a cell at or
    below ``residue`` of the largest (``top``, or of ``floor``) is 0, as
    ``engine.snap_residues`` does."""
    thr = max(top, floor) * residue
    for i in range(ns):
        for c in range(c0, min(c1, k)):
            if not G[i, c] > thr:
                G[i, c] = 0.0
        for c in range(max(c0, k), c1):
            if not Go[i, c - k] > thr:
                Go[i, c - k] = 0.0

@njit
def liquidated(L, rows_of, r0, wd, cmin, k, d, c, W, f_liq, acc, acc_o, touched):
    """Liquidated weights ``W * f_liq[d]`` summed per (output row, cell) in float64 in
    ``L`` (zero), then added once to the chunk's rows ``acc`` (in-grid columns) and
    ``acc_o`` (outside bin); only the cells hit are touched, and left zero in ``L``."""
    nt = 0
    for x in range(d.shape[0]):
        idx = (rows_of[d[x]] - r0) * wd + c[x] - cmin
        if L[idx] == 0.0:  # first hit (a repeat after a zero amount adds 0 below)
            touched[nt] = idx
            nt += 1
        L[idx] += W[x] * f_liq[d[x]]
    for t in range(nt):
        idx = touched[t]
        row = idx // wd
        col = idx - row * wd
        if col < k:
            acc[row, col] += L[idx]
        else:
            acc_o[row, col - k] += L[idx]
        L[idx] = 0.0


@njit
def first_at_or_below(run, q):
    """First ``t`` with ``run[t] <= q`` in the non-increasing ``run`` (its length if none)."""
    lo, hi = 0, run.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if run[mid] <= q:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit
def carried(segs, w, run, m, aged, age_off, retire, zero_a, level, birth, amount, opened,
            cell, kd, last, buf_level, buf_cell, buf_kd, buf_amount, buf_opened, buf_birth, o,
            liq_d, liq_c, liq_k, liq_w, exp_d, exp_c, exp_k, exp_w, cmin, cells0, d0, churned,
            closed):
    """The carried positions of side ``w`` of a block (the index ranges ``segs``, ``(k, 2)``,
    in order): what the numpy block computes for them (see ``Engine._block_np1``), in one pass.

    Each position's step of death: ``run`` is the running minimum of the lows (longs) or
    minus highs (shorts), which the level (minus the level) crosses at the first step it is
    at or above (``m``: not in this block); expiry (``aged``) at block-local step ``birth +
    age_off``. Gone at the block's start: retired (``retire`` >= 0, what churn shrank below
    ``retire`` of its opening amount: summed per kd into ``churned``) or closed to zero
    (``zero_a``: into ``closed``). The liquidated and expired (step, cell, kd, weight) go
    into ``liq_*``/``exp_*``, the survivors into the state buffers from ``o`` with their
    amount times ``last``, the live amounts at the start per cell from ``cmin`` into
    ``cells0`` and ``d0`` (the difference array's first row, where it has one). A side writes
    only its own cells and kd. Returns (next offset, liquidated, expired, the largest live
    amount)."""
    nl = 0
    ne = 0
    wmax = 0.0
    use_d = d0.shape[0] > 0
    for s in range(segs.shape[0]):
        for x in range(segs[s, 0], segs[s, 1]):
            q = -level[x] if w else level[x]
            d = m
            if q >= run[m - 1]:  # crosses in the block (most do not; NaN never)
                d = first_at_or_below(run, q)
            liq = d < m
            exp = False
            if aged:
                te = birth[x] + age_off
                exp = te < m and te <= d
                if te < d:
                    d = te
                liq = liq and not exp
            a = amount[x]
            k = kd[x]
            live = a
            if retire >= 0.0 and a < retire * opened[x]:  # retired
                churned[k] += a
                live = 0.0
                d = 0
            elif zero_a and not (exp and d == 0):  # closed to zero
                closed[k] += a
                live = 0.0
                d = 0
            elif liq:
                liq_d[nl] = d
                liq_c[nl] = cell[x]
                liq_k[nl] = k
                liq_w[nl] = a
                nl += 1
            elif exp:
                exp_d[ne] = d
                exp_c[ne] = cell[x]
                exp_k[ne] = k
                exp_w[ne] = a
                ne += 1
            if live > wmax:
                wmax = live
            c = cell[x] - cmin
            cells0[c] += live
            if use_d:
                d0[c] += live
            if d >= m:
                buf_level[o] = level[x]
                buf_cell[o] = cell[x]
                buf_kd[o] = k
                buf_amount[o] = a * last
                buf_opened[o] = opened[x]
                buf_birth[o] = birth[x]
                o += 1
    return o, nl, ne, wmax


