"""The demo: a synthetic market -> estimate -> store -> heatmap PNG, with no network or files.

``liqgpu demo`` calls :func:`demo`; every check of its options happens before anything is
computed or written.
"""

from __future__ import annotations

import time
from pathlib import Path

from .errors import InputError


def demo(out="liqgpu-demo", *, days: float = 30, seed: int = 7, every="15m", width: int = 1600,
         height: int = 900, backend: str = "auto", model: str = "v2", max_age=None,
         progress: bool = False) -> dict:
    """Write ``OUT/demo.zarr`` and ``OUT/demo.png`` from a synthetic market.

    Parameters
    ----------
    out : path
        Folder (made if absent). A ``demo.zarr`` already there is replaced only when it is a
        liqgpu store.
    days, seed : the synthetic market (1-minute bars)
    every : output step
    width, height : size of the PNG
    backend, model, max_age : as in :func:`liqgpu.estimate`

    Returns
    -------
    dict
        ``store``, ``png`` (paths), ``dataset`` (the store, opened), ``estimate_s`` and
        ``total_s`` (seconds).

    Examples
    --------
    >>> r = demo("/tmp/liqgpu-demo", days=2)  # doctest: +SKIP
    >>> r["png"]  # doctest: +SKIP
    PosixPath('/tmp/liqgpu-demo/demo.png')
    """
    from .api import estimate
    from .model.registry import params_from_options
    from .render import render
    from .render.style import check_size
    from .store import is_store
    from .synth import synthetic_series

    check_size(width, height)  # bad options fail before anything is computed or written
    params = params_from_options(model, max_age=max_age)
    series = synthetic_series(days=days, seed=seed)
    params.max_age_steps(series.step)  # a --max-age shorter than a bar fails before any write
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    store, png = folder / "demo.zarr", folder / "demo.png"
    if store.exists() and not is_store(store):
        raise InputError(f"{store}: exists and is not a liqgpu store; refusing to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    ds = estimate(series, params=params, every=every, backend=backend, out=store,
                  overwrite=True, progress=progress)
    t_est = time.perf_counter() - t
    render(store, out=png, width=width, height=height)
    return {"store": store, "png": png, "dataset": ds, "estimate_s": t_est,
            "total_s": time.perf_counter() - t}
