"""The progress bar of long runs (rich), shown only when asked for and when there is more than
one step; used by the pipeline, the distributed runner and object-storage transfers."""

from __future__ import annotations

from typing import Iterable


def progress(it: Iterable, total: int, enabled: bool, label: str = "estimating"):
    """Yield from ``it``, advancing a bar of ``total`` steps when ``enabled``."""
    if not enabled or total <= 1:
        yield from it
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("chunks", total=total)
        for x in it:
            yield x
            bar.advance(task)
