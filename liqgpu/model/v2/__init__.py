"""Model v2 ("churn"): many log-spaced tiers, leverage bands, turnover and range entries.

Its parameters and added formulas are in :mod:`.params`, its step-by-step oracle in
:mod:`.reference`; the fast engine is shared with v1 (:mod:`liqgpu.model.engine`), since v1 is
v2 with no churn, one entry point and one band per tier.
"""

from .params import ParamsV2, entry_points

__all__ = ["ParamsV2", "entry_points"]
