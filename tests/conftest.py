"""Shared fixtures: the ``xp`` fixture over numpy and CuPy, the ``gpu`` marker, real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI replays the same examples every run (a submission must not land or fail by the draw);
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIQGPU_SHARED_DATA", REPO.parent / "shared" / "data" / "real"))


def _gpu_reason() -> str | None:
    """None when CuPy imports and a CUDA device is visible, else why not."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'liqgpu[gpu]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no CUDA device"
    except Exception as exc:  # noqa: BLE001
        return f"CuPy cannot reach a CUDA device ({type(exc).__name__})"
    return None


GPU_REASON = _gpu_reason()


def pytest_collection_modifyitems(config, items):
    if GPU_REASON is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test: {GPU_REASON}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array namespace under test: numpy everywhere, CuPy where a GPU is visible."""
    if request.param == "numpy":
        return np
    import cupy

    return cupy


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/real; skips when absent unless LIQGPU_REQUIRE_SHARED_DATA=1 (CI)."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if os.environ.get("LIQGPU_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(f"LIQGPU_REQUIRE_SHARED_DATA=1 but {SHARED_DATA} does not exist")
    pytest.skip(f"real data not found at {SHARED_DATA} (set LIQGPU_SHARED_DATA)")
