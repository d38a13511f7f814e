"""MODEL.md formulas: liquidation levels, entry prices, shares, parameters."""

import math

import numpy as np
import pytest

from liqgpu.errors import InputError
from liqgpu._time import parse_duration
from liqgpu.model.formulas import entry_price, level_factor, side_shares
from liqgpu.model.v1.params import Params


def test_binance_worked_example():
    # MODEL.md: linear long, e = 67,000, L = 10, m = 0.004 gives 60,542.17
    q = 67_000 * level_factor("linear", 10, 0.004, "long")
    assert round(q, 2) == 60542.17


@pytest.mark.parametrize(
    "kind, side, expected",
    [
        ("linear", "long", 67_000 * (1 - 0.1) / (1 - 0.004)),
        ("linear", "short", 67_000 * (1 + 0.1) / (1 + 0.004)),
        ("inverse", "long", 67_000 * (1 + 0.004) / (1 + 0.1)),
        ("inverse", "short", 67_000 * (1 - 0.004) / (1 - 0.1)),
    ],
)
def test_level_table(kind, side, expected):
    assert 67_000 * level_factor(kind, 10, 0.004, side) == pytest.approx(expected, rel=1e-15)


def test_levels_sit_on_the_right_side_of_entry():
    for kind in ("linear", "inverse"):
        for lev in (2, 5, 20, 125):
            assert level_factor(kind, lev, 0.004, "long") < 1 < level_factor(kind, lev, 0.004, "short")
    # inverse long at 100x, m=0.004: e(1.004)/(1.01)
    assert level_factor("inverse", 100, 0.004, "long") == pytest.approx(1.004 / 1.01)


def test_entry_methods():
    o, h, l, c = (np.array([x]) for x in (10.0, 14.0, 8.0, 12.0))
    assert entry_price("hlc3", o, h, l, c)[0] == pytest.approx(34 / 3)
    assert entry_price("close", o, h, l, c)[0] == 12
    assert entry_price("ohlc4", o, h, l, c)[0] == 11
    vol, qv = np.array([2.0, 0.0]), np.array([23.0, 5.0])
    e = entry_price("vwap", np.r_[o, o], np.r_[h, h], np.r_[l, l], np.r_[c, c], vol, qv)
    assert e[0] == 11.5 and e[1] == pytest.approx(34 / 3)  # volume 0 falls back to hlc3


def test_taker_shares():
    v, tb = np.array([10.0, 0.0, np.nan, 4.0]), np.array([7.0, 0.0, 1.0, 1.0])
    s = side_shares("taker", v, tb, n=4)
    np.testing.assert_allclose(s, [[1.4, 0.6], [1, 1], [1, 1], [0.5, 1.5]])
    np.testing.assert_array_equal(side_shares("both", v, tb, n=4), np.ones((4, 2)))


@pytest.mark.parametrize(
    "kw, word",
    [
        (dict(leverages=(1.0,), weights=(1.0,)), "leverages"),
        (dict(leverages=(5, 10), weights=(0.5,)), "weights"),
        (dict(leverages=(5, 10), weights=(0.6, 0.6)), "sum to 1"),
        (dict(mmr=0.3), "mmr"),
        (dict(entry="typical"), "entry"),
        (dict(side_split="x"), "side_split"),
        (dict(closure="fifo"), "closure"),
        (dict(max_age="soon"), "duration"),
    ],
)
def test_bad_params(kw, word):
    with pytest.raises(InputError, match=word):
        Params(**kw)


def test_durations():
    assert parse_duration("90m").total_seconds() == 5400
    assert parse_duration("7d").total_seconds() == 7 * 86400
    assert parse_duration("none") is None
    p = Params(max_age="2h")
    assert p.max_age_steps(np.timedelta64(5, "m")) == 24
    with pytest.raises(InputError, match="shorter than the model step"):
        Params(max_age="30s").max_age_steps(np.timedelta64(1, "m"))
    assert math.isclose(Params().to_attrs()["mmr"], 0.004)
