"""Moved to :mod:`liqgpu.events` (the one module for events); kept until every importer moves."""

from .events import bin_realized, check_matched  # noqa: F401
