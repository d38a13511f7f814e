"""Helpers for testing liqgpu and code built on it (in the manner of ``xarray.testing``).

:mod:`liqgpu.testing.kernels` emulates the raw CUDA kernels on the CPU, thread by thread, so
the CUDA backend's logic is checked without a GPU. Nothing here is imported by ``import liqgpu``.
"""
