"""Heatmap rendering: reads datasets and stores, never runs the model."""

from .heatmap import render

__all__ = ["render"]
