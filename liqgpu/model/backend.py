"""Moved to :mod:`liqgpu.backend` (the backend's resolution and its cpu and cuda operations);
this name stays so that existing imports keep working."""

from ..backend import BACKENDS, INSTALL_HINT, array_namespace, gpu_available, resolve

__all__ = ["BACKENDS", "INSTALL_HINT", "array_namespace", "gpu_available", "resolve"]
