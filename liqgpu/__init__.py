"""liqgpu: estimate where crypto-futures positions get liquidated, and render heatmaps.

The public API (nothing heavy is imported until a function is called: no CuPy, no datashader):

>>> import liqgpu
>>> s = liqgpu.synthetic_series(days=2, seed=1)         # or liqgpu.load_series("bars.parquet")
>>> ds = liqgpu.estimate(s, every="1h", backend="numpy")  # xarray Dataset (MODEL.md layout)
>>> ds = liqgpu.estimate(s, out="btc.zarr")              # doctest: +SKIP
>>> liqgpu.render("btc.zarr", out="btc.png")            # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "Grid",
    "InputError",
    "Params",
    "Series",
    "estimate",
    "heatmap",
    "levels",
    "load_series",
    "open_store",
    "profile",
    "render",
    "snapshot_at",
    "synthetic_series",
    "serve",
    "update",
    "viewer",
    "__version__",
]

_LAZY = {
    "estimate": ("liqgpu.api", "estimate"),
    "open_store": ("liqgpu.store", "open_store"),
    "load_series": ("liqgpu.series", "load_series"),
    "Series": ("liqgpu.series", "Series"),
    "Grid": ("liqgpu.model.grid", "Grid"),
    "Params": ("liqgpu.model.v1.params", "Params"),
    "InputError": ("liqgpu.errors", "InputError"),
    "synthetic_series": ("liqgpu.synth", "synthetic_series"),
    "render": ("liqgpu.render", "render"),
    "levels": ("liqgpu.render.frames", "levels"),
    "profile": ("liqgpu.render.frames", "profile"),
    "heatmap": ("liqgpu.render.frames", "heatmap"),
    "snapshot_at": ("liqgpu.render.frames", "snapshot_at"),
    "update": ("liqgpu.updating", "update"),
    "serve": ("liqgpu.web", "serve"),
    "viewer": ("liqgpu.web", "viewer"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'liqgpu' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
