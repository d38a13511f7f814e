"""The price grid of MODEL.md."""

import numpy as np
import pytest

from liqgpu.errors import InputError
from liqgpu.model.grid import Grid


def test_linear_grid_edges_and_bins():
    g = Grid.linear(100, 109, 2)  # x_P is the first edge >= stop
    assert g.edges.tolist() == [100, 102, 104, 106, 108, 110]
    j = g.bin_index(np.array([99.99, 100, 101.99, 102, 109.99, 110, np.nan]))
    assert j.tolist() == [5, 0, 0, 1, 4, 5, 5]  # P = 5 marks outside


def test_log_grid():
    g = Grid.log(1000, 1100, 10)
    r = 1.001
    np.testing.assert_allclose(g.edges, 1000 * r ** np.arange(g.edges.size), rtol=1e-13)
    assert g.edges[-1] >= 1100 > g.edges[-2]
    assert g.n_bins == int(np.ceil(np.log(1.1) / np.log(r)))


def test_covering_grid_holds_extremes():
    g = Grid.covering(1234.5, 98765.4)
    j = g.bin_index(np.array([1234.5, 98765.4]))
    assert (j < g.n_bins).all()
    assert g.spec.startswith("log:") and g.spec.endswith(":10")


@pytest.mark.parametrize("spec", ["cubic:1:2:3", "log:1:2", "log:a:2:3", "linear:5:4:1",
                                  "log:0:10:5", "linear:1:2:-1", "log:1:1e9:0.0001"])
def test_bad_grid_specs(spec):
    with pytest.raises(InputError, match="--grid"):
        Grid.parse(spec)
