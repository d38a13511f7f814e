"""Moved: model v1's parameters to :mod:`liqgpu.model.v1`, the shared formulas to
:mod:`liqgpu.model.formulas`, durations to :mod:`liqgpu._time`. Kept until every importer moves."""

from .._time import format_duration, parse_duration  # noqa: F401
from .formulas import *  # noqa: F401,F403
from .formulas import KINDS, SIDES  # noqa: F401
from .v1.params import DEFAULT_LEVERAGES, DEFAULT_WEIGHTS, MODEL_NAME, Params  # noqa: F401
