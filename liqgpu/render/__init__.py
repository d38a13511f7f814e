"""Rendering: heatmaps, the liquidation map and the level list. Reads datasets and stores,
never runs the model; datashader and matplotlib are imported only when something is drawn.

``liqgpu.render(...)`` is :func:`liqgpu.render.heatmap.render`; this package, of the same
name, is callable too (Python binds a package over its parent's attribute of the same name
once any of its modules is imported: ``import liqgpu.render.select`` would otherwise leave
``liqgpu.render`` a module that cannot draw).
"""

import sys as _sys
import types as _types

from .frames import heatmap, levels, profile
from .heatmap import render
from .levels import find_levels
from .liqmap import render_map

__all__ = ["find_levels", "heatmap", "levels", "profile", "render", "render_map"]


class _CallablePackage(_types.ModuleType):
    """This package, callable as :func:`render`."""

    def __call__(self, *args, **kwargs):
        return render(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
