"""The array backend, chosen once at the public entry point: ``auto``, ``numpy`` or ``cupy``.

:func:`resolve` turns the ``backend=`` option into a name and an array namespace (``xp``), and
:func:`ops_for` gives the namespace's operations module: :mod:`liqgpu.backend.cpu` for numpy,
:mod:`liqgpu.backend.cuda` for CuPy. The two modules offer the same functions (the engine's hot
spots: scatter-adds, the first-passage search, copies to the host), so the model's array code
runs unchanged on both and calls ``ops.scatter_add(...)`` instead of testing which backend it is
on. Nothing here imports CuPy until a GPU is asked for; :mod:`liqgpu.backend.cuda` imports it
only inside the functions that launch work, and finds its raw kernels (``kernels/*.cu``)
through :mod:`liqgpu.backend.kernels`.

Examples
--------
>>> import numpy as np
>>> from liqgpu.backend import ops_for, resolve
>>> name, xp = resolve("numpy")
>>> ops = ops_for(xp)
>>> ops.name, ops.on_host
('numpy', True)
>>> t = np.zeros(3); ops.scatter_add(t, np.array([0, 2, 2]), np.array([1.0, 2.0, 3.0])); t
array([1., 0., 5.])
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from ..errors import BackendUnavailable, InputError

log = logging.getLogger(__name__)
BACKENDS = ("auto", "numpy", "cupy")
INSTALL_HINT = "install the GPU extra: pip install 'liqgpu[gpu]' (CuPy for CUDA 13)"

__all__ = ["BACKENDS", "INSTALL_HINT", "array_namespace", "gpu_available", "ops_for", "resolve"]


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        return False


def resolve(backend: str = "auto"):
    """Return ``(name, xp)`` for a backend name; ``auto`` is CuPy when a GPU is usable."""
    if backend not in BACKENDS:
        raise InputError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "numpy":
        return "numpy", np
    if backend == "auto":
        if gpu_available():
            import cupy

            return "cupy", cupy
        return "numpy", np
    try:
        import cupy
    except ImportError:
        raise BackendUnavailable(f"--backend cupy: CuPy is not installed; {INSTALL_HINT}") from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001
        raise BackendUnavailable(
            f"--backend cupy: CuPy cannot reach a CUDA device ({exc}); use --backend numpy"
        ) from None
    if n < 1:
        raise BackendUnavailable("--backend cupy: no CUDA device is visible; use --backend numpy")
    return "cupy", cupy


def ops_for(xp):
    """The operations module of array namespace ``xp``: :mod:`.cpu` for numpy, :mod:`.cuda`
    for any other (CuPy). Called once, where an engine is built."""
    if xp is np:
        from . import cpu

        return cpu
    from . import cuda

    return cuda


def array_namespace(*arrays):
    """numpy or cupy, from the arrays themselves (CuPy is looked up in sys.modules, never
    imported); mixed inputs raise."""
    spaces = set()
    cp = sys.modules.get("cupy")
    for a in arrays:
        if cp is not None and isinstance(a, cp.ndarray):
            spaces.add("cupy")
        else:
            spaces.add("numpy")
    if len(spaces) > 1:
        raise TypeError("mixed numpy and cupy arrays")
    return cp if spaces == {"cupy"} else np
