"""Model v1: parameters and formulas, the price grid, the reference and the fast engine."""

from .grid import Grid
from .params import Params, level_factor

__all__ = ["Grid", "Params", "level_factor"]
