"""Rendering: heatmaps, the liquidation map and the level list. Reads datasets and stores,
never runs the model; datashader and matplotlib are imported only when something is drawn."""

from .frames import heatmap, levels, profile
from .heatmap import render
from .levels import find_levels
from .liqmap import render_map

__all__ = ["find_levels", "heatmap", "levels", "profile", "render", "render_map"]
