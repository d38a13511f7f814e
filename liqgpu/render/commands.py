"""Click commands of the rendering module (registered on the ``liqgpu`` group by cli.py)."""

from __future__ import annotations

import click

from ..cli_common import user_errors


@click.command("render")
@click.argument("store", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--width", type=int, default=1600, show_default=True)
@click.option("--height", type=int, default=900, show_default=True)
@user_errors
def render_cmd(store, out, width, height):
    """Render a store's liquidation heatmap (intensity over tiers and sides) to a PNG."""
    from . import render as draw

    draw(store, out=out, width=width, height=height)
    click.echo(f"wrote {out}: {width}x{height}")


COMMANDS = [render_cmd]
