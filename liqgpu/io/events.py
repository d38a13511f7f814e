"""Moved to :mod:`liqgpu.events` (the one module for events); kept until every importer moves."""

from ..events import (EVENT_COLUMNS, PRICE_KINDS, load_events, make_events,  # noqa: F401
                      order_side_to_position, validate_events)
