"""The models: the price grid, the shared formulas, model v1 and v2 (each its parameters and
reference) behind one registry, and the one fast engine both run on."""

from .grid import Grid
from .formulas import level_factor
from .v1.params import Params

__all__ = ["Grid", "Params", "level_factor"]
