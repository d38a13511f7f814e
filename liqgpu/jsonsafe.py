"""Plain JSON values from what liqgpu computes (numpy scalars, NaN)."""

from __future__ import annotations

import math

import numpy as np


def json_safe(x):
    """numpy scalars -> Python numbers, NaN/inf -> None, tuples -> lists, recursively."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.floating):
        x = float(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.integer):
        return int(x)
    return x
