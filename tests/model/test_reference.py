"""The reference implementation on markets worked out by hand."""

import numpy as np
import pytest

from liqgpu.model.grid import Grid
from liqgpu.model.v1 import Params, reference_estimate

from helpers import make_series

ONE_TIER = dict(leverages=(10,), weights=(1.0,), mmr=0.0, entry="close")
GRID = Grid.linear(80, 120, 5)  # bins of 5: 90 -> bin 2, 110 -> bin 6


def hand_market(**kw):
    # t0 no previous OI; t1 +10 OI at 100 -> long@90 and short@110 of 1000 each;
    # t2 OI -25% closes 250 of each; t3 high 112 liquidates the short;
    # t4 low 89 liquidates the long.
    return make_series(close=[100, 100, 100, 105, 95], oi=[10, 20, 15, 15, 15],
                       high=[100, 101, 105, 112, 100], low=[100, 99, 95, 100, 89], **kw)


def test_hand_market_step_by_step():
    out = reference_estimate(hand_market(), Params(**ONE_TIER), GRID, every=1)
    L, S = 0, 1
    inten, liq = out["intensity"][:, :, 0, :], out["liquidated"][:, :, 0, :]
    assert inten[0].sum() == 0
    assert inten[1, 2, L] == pytest.approx(1000) and inten[1, 6, S] == pytest.approx(1000)
    assert inten[1].sum() == pytest.approx(2000)
    assert out["closed"][2, 0].tolist() == pytest.approx([250, 250])
    assert inten[2, 2, L] == pytest.approx(750) and inten[2, 6, S] == pytest.approx(750)
    assert liq[3, 6, S] == pytest.approx(750) and liq[3].sum() == pytest.approx(750)
    assert inten[3, 6, S] == 0 and inten[3, 2, L] == pytest.approx(750)
    assert liq[4, 2, L] == pytest.approx(750)
    assert inten[4].sum() == 0
    assert out["added"][1, 0].tolist() == [1000, 1000]


def test_hand_market_buckets_of_two():
    out = reference_estimate(hand_market(), Params(**ONE_TIER), GRID, every=2)
    # buckets: [0,1], [2,3], [4] (partial, still emitted)
    assert out["intensity"].shape[0] == 3
    assert out["intensity"][0, 2, 0, 0] == pytest.approx(1000)  # snapshot after step 1
    assert out["closed"][1, 0].tolist() == pytest.approx([250, 250])
    assert out["liquidated"][1, 6, 0, 1] == pytest.approx(750)
    assert out["liquidated"][2, 2, 0, 0] == pytest.approx(750)


def test_expiry_before_liquidation_and_outside():
    p = Params(**ONE_TIER, max_age="3min")
    out = reference_estimate(hand_market(), p, GRID, every=1)
    # opened at t1, expires at t1 + 3 = t4, before the low of t4 could liquidate it
    assert out["expired"][4, 0].tolist() == pytest.approx([750, 0])
    assert out["liquidated"][4].sum() == 0
    narrow = Grid.linear(95, 105, 5)  # both levels outside
    out = reference_estimate(hand_market(), Params(**ONE_TIER), narrow, every=1)
    assert out["outside"][1, 0].tolist() == pytest.approx([1000, 1000])
    assert out["outside_liquidated"][3, 0].tolist() == pytest.approx([0, 750])
    assert out["intensity"].sum() == 0 and out["liquidated"].sum() == 0


def test_mark_range_and_gaps():
    # mark range decides liquidation: traded low touches 89 but mark low stays at 91
    s = make_series(close=[100, 100, np.nan, 95], oi=[10, 20, np.nan, 20],
                    high=[100, 101, np.nan, 100], low=[100, 99, np.nan, 89],
                    extra={"mark_high": [100, 101, np.nan, 100], "mark_low": [100, 99, np.nan, 91]})
    out = reference_estimate(s, Params(**ONE_TIER), GRID, every=1)
    assert out["liquidated"].sum() == 0
    assert out["intensity"][3, 2, 0, 0] == pytest.approx(1000)


def test_oi_change_across_gap_lands_after_it_and_zero_oi_closes_all():
    s = make_series(close=[100, 100, 100, 100, 100], oi=[10, np.nan, 30, 0, 5],
                    high=[100] * 5, low=[100] * 5)
    out = reference_estimate(s, Params(**ONE_TIER), GRID, every=1)
    assert out["added"][1].sum() == 0
    assert out["added"][2, 0].tolist() == [2000, 2000]  # ΔOI = 30 - 10 at the first valid step
    assert out["closed"][3, 0].tolist() == [2000, 2000]  # OI to zero closes everything
    assert out["added"][4, 0].tolist() == [500, 500]


def test_inverse_amounts_use_contract_size():
    s = make_series(close=[50_000, 50_000], oi=[100, 300], kind="inverse", contract_size=100)
    p = Params(leverages=(10,), weights=(1.0,), mmr=0.004, entry="close")
    out = reference_estimate(s, p, Grid.log(40_000, 60_000, 10), every=1)
    assert out["added"][1, 0].tolist() == [20_000, 20_000]  # 200 contracts x 100 USD
    j = Grid.log(40_000, 60_000, 10).bin_index(np.array([50_000 * 1.004 / 1.1]))[0]
    assert out["intensity"][1, j, 0, 0] == pytest.approx(20_000)
