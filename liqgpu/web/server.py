"""Start the viewer's HTTP server (Panel on Bokeh's Tornado server)."""

from __future__ import annotations

import ipaddress
import logging

from ..errors import InputError

log = logging.getLogger(__name__)

DEFAULT_PORT = 8050
DEFAULT_HOST = "127.0.0.1"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """``port`` is a port number and free on ``host`` (an InputError naming the option
    otherwise: a server already there would end the viewer with a traceback)."""
    import errno
    import socket

    if not (0 <= int(port) <= 65535):
        raise InputError(f"--port {port}: not a port number (0 .. 65535)")
    if int(port) == 0:
        return
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: cannot be resolved ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"--port {port}: already in use on {host} (another server? "
                                 "choose another --port)") from None
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
                raise InputError(f"--host {host} --port {port}: cannot listen there "
                                 f"({exc.strerror})") from None
            raise


def serve(stores, *, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, show: bool = False,
          threaded: bool = False, poll: float = 1.0, viewer=None):
    """Serve the viewer of ``stores`` (read-only) at ``http://host:port/``.

    Parameters
    ----------
    stores : sequence of path
        The only stores the server opens; the browser never sends a path.
    port : int
    host : str
        The address to bind: ``127.0.0.1`` (default) keeps the viewer on this machine.
    show : bool
        Open a browser tab.
    threaded : bool
        Run the server in a background thread and return it (``.stop()`` ends it); otherwise
        block until interrupted.
    poll : float
        Seconds between checks for a changed store.
    viewer : liqgpu.web.app.Viewer, optional
        An already built viewer (its stores are used instead of ``stores``).

    Returns
    -------
    The server thread when ``threaded``, else the Bokeh server after it stopped.

    Examples
    --------
    >>> import liqgpu
    >>> liqgpu.serve(["demo.zarr"], port=8050)  # doctest: +SKIP
    """
    from .app import Viewer, _imports

    check_port(host, port)
    _hv, pn = _imports()
    v = viewer if viewer is not None else Viewer(list(stores), poll=poll)
    v.warm()
    if _is_loopback(host):
        origins = [f"127.0.0.1:{port}", f"localhost:{port}"]
    else:
        origins = ["*"]
        log.warning("serving on %s: anyone who can reach this address can read the stores",
                    host)
    log.info("serving %s at http://%s:%d/", ", ".join(str(s.path) for s in v.stores), host, port)
    return pn.serve({"/": v.panel}, port=int(port), address=host, websocket_origin=origins,
                    show=show, threaded=threaded, title="liqgpu", start=True,
                    verbose=False)
