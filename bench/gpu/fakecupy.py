"""numpy posing as CuPy for the dry run of bench/gpu/parts.py on a machine without a GPU.

It offers only the CuPy calls that parts.py makes itself (device queries, events, the memory
pool, copies), with the same names and signatures, so that a typo in them fails here and not
on a GPU minute. Its numbers are CPU numbers and are labelled so in every record.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

__version__ = "0+numpy-posing-as-cupy"
POSING = True
ndarray = np.ndarray
float64, float32, int64 = np.float64, np.float32, np.int64
arange, empty_like, zeros, copyto = np.arange, np.empty_like, np.zeros, np.copyto


def asarray(x, dtype=None):
    return np.asarray(x, dtype=dtype)


def asnumpy(x):
    return np.asarray(x)


class _Pool:
    def __init__(self):
        self._used = 0

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._used

    def free_all_blocks(self):
        pass

    def malloc(self, size):
        self._used += size
        return SimpleNamespace(size=size)


_POOL = _Pool()


def get_default_memory_pool():
    return _POOL


class _Event:
    def __init__(self, *a, **k):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def _elapsed_ms(start, stop):
    return (stop.t - start.t) * 1e3


class _Device:
    def __init__(self, i=0):
        self.id = i
        self.compute_capability = "00"
        self.mem_info = (0, 0)

    def synchronize(self):
        pass


_props = {"name": b"numpy posing as cupy (dry run)", "totalGlobalMem": 0,
          "multiProcessorCount": 0, "major": 0, "minor": 0}

cuda = SimpleNamespace(
    Event=_Event,
    get_elapsed_time=_elapsed_ms,
    Device=_Device,
    set_allocator=lambda fn=None: None,
    runtime=SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: _props,
                            driverGetVersion=lambda: 0, runtimeGetVersion=lambda: 0),
)
