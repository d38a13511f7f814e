"""Model v2 ("churn"): many log-spaced tiers, leverage bands, turnover and range entries.

Its parameters and added formulas are in :mod:`.params`, its step-by-step oracle in
:mod:`.reference`; the fast engine is shared with v1 (:mod:`liqgpu.model.engine`), since v1 is
v2 with no churn, one entry point and one band per tier.
"""

from .params import ParamsV2, entry_points

__all__ = ["ParamsV2", "entry_points", "reference_estimate_v2"]


def __getattr__(name):  # the reference imports the series module: loaded when asked for
    if name == "reference_estimate_v2":
        from .reference import reference_estimate_v2

        return reference_estimate_v2
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
