"""``liqgpu serve``: the command line of the browser viewer."""

from __future__ import annotations

import importlib.util
import logging

import click

from ..cli_common import UserError, user_errors
from . import INSTALL

log = logging.getLogger(__name__)

NEEDS = ("panel", "holoviews", "bokeh")


def missing_viewer_packages() -> list[str]:
    return [m for m in NEEDS if importlib.util.find_spec(m) is None]


@click.command()
@click.argument("stores", nargs=-1, required=True, type=click.Path())
@click.option("--port", type=int, default=8050, show_default=True, help="HTTP port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; the default keeps the viewer on this machine.")
@click.option("--show", is_flag=True, help="Open a browser tab.")
@user_errors
def serve(stores, port, host, show):
    """Serve an interactive heatmap of STORE... in the browser (read-only)."""
    missing = missing_viewer_packages()
    if missing:
        raise UserError(f"the viewer needs {', '.join(missing)}: install it with `{INSTALL}` "
                        "(from a clone: `pip install '.[viewer]'`)")
    from .server import check_port, serve as run

    check_port(host, port)
    click.echo(f"liqgpu viewer of {', '.join(stores)} at http://{host}:{port}/ (Ctrl-C stops it)")
    run(list(stores), port=port, host=host, show=show)


COMMANDS = [serve]
