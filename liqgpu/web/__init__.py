"""The browser viewer: ``liqgpu serve STORE...`` (needs the ``viewer`` extra).

Nothing here imports HoloViews, Panel or Bokeh until :func:`serve` or :func:`viewer` is called.
"""

from __future__ import annotations

INSTALL = "pip install 'liqgpu[viewer]'"  # from a clone: pip install '.[viewer]'


def serve(*args, **kwargs):
    """Serve the viewer of ``stores`` over HTTP (see :func:`liqgpu.web.server.serve`)."""
    from .server import serve as _serve

    return _serve(*args, **kwargs)


def viewer(*args, **kwargs):
    """The viewer as an object for notebooks (see :class:`liqgpu.web.app.Viewer`)."""
    from .app import Viewer

    return Viewer(*args, **kwargs)
