"""liqgpu.store.stamp: an equal stamp means an unchanged store; every writer changes it."""

import numpy as np

import liqgpu
from liqgpu.store import stamp
from liqgpu.synth import synthetic_series
from liqgpu.updating import update


def test_stamp_changes_with_every_write_and_only_then(tmp_path):
    s = synthetic_series(days=2, seed=3)
    store = tmp_path / "s.zarr"
    first = s.slice(0, 1440)
    liqgpu.estimate(first, every="1h", backend="numpy", out=store, model="v1")
    a = stamp(store, "zarr.json", "resume/zarr.json")
    assert len(a) == 3 and all(x is not None for x in a)
    liqgpu.open_store(store).load()  # reading changes nothing
    assert stamp(store, "zarr.json", "resume/zarr.json") == a
    update(store, s.slice(1440, len(s)), allow_outside=True)
    b = stamp(store, "zarr.json", "resume/zarr.json")
    assert b != a and b[0][0] != a[0][0]  # the atomic commit put a new folder in place
    assert stamp(tmp_path / "missing.zarr", "zarr.json") == (None, None)
    assert np.datetime64(liqgpu.open_store(store)["time"].values[-1]) > s.time[1439]
