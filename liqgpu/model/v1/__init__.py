"""Model v1: five leverage tiers, OI changes only (MODEL.md). Its fast engine is the shared
engine of :mod:`liqgpu.model.engine` with no churn, one entry point and one band per tier."""

from .params import DEFAULT_LEVERAGES, DEFAULT_WEIGHTS, MODEL_NAME, Params

__all__ = ["DEFAULT_LEVERAGES", "DEFAULT_WEIGHTS", "MODEL_NAME", "Params", "reference_estimate"]


def __getattr__(name):  # the reference imports the series module: loaded when asked for
    if name == "reference_estimate":
        from .reference import reference_estimate

        return reference_estimate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
