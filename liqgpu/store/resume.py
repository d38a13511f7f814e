"""The resume state of an updatable store: the ``resume`` group (live positions before the last
bucket, the last valid OI, every input bar) that ``liqgpu update`` continues from exactly.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .layout import FLAT_KEYS, _quiet_zarr, compressors

def pack_arrays(arrays: dict) -> tuple[list, dict]:
    """Named arrays packed one flat array per dtype: ``layout`` (name, dtype, shape, offset of
    each) and ``{dtype: flat array}`` (what :func:`write_group` stores as ``pack_<dtype>``)."""
    layout, parts = [], {}
    for k, v in arrays.items():
        v = np.asarray(v)
        same = parts.setdefault(v.dtype.str, [])
        layout.append([k, v.dtype.str, list(v.shape), int(sum(p.size for p in same))])
        same.append(v.ravel())
    return layout, {dt: (np.concatenate(p) if p else np.zeros(0, dtype=dt))
                    for dt, p in parts.items()}


def write_group(root, name: str, arrays: dict, attrs: dict) -> None:
    """Write (or replace) a sub-group holding named arrays and attributes.

    The arrays are packed, one flat zarr array per dtype (``pack_<dtype>``), with their names,
    shapes and offsets in the group's ``layout`` attribute: a store's resume state has a dozen
    small arrays, and one zarr array each cost more than the data. :func:`read_group` unpacks.
    """
    import zarr

    comp = compressors()
    layout, packs = pack_arrays(arrays)
    with _quiet_zarr():
        g = zarr.open_group(str(root), mode="r+")
        if name in g:
            del g[name]
        sub = g.create_group(name)
        for dt, flat in packs.items():
            a = sub.create_array(f"pack_{np.dtype(dt).name}", shape=flat.shape, dtype=flat.dtype,
                                 chunks=(max(flat.size, 1),), compressors=comp,
                                 chunk_key_encoding=FLAT_KEYS)
            if flat.size:
                a[...] = flat
        sub.update_attributes({**attrs, "layout": layout})  # one write, not one per key


def read_group(root, name: str):
    """(arrays, attrs) of a sub-group written by :func:`write_group`, or None."""
    import zarr

    from .integrity import read_error

    with _quiet_zarr():
        g = zarr.open_group(str(root), mode="r")
        if name not in g:
            return None
        sub = g[name]
        attrs = dict(sub.attrs)
        layout = attrs.pop("layout", None)
        if layout is None:
            raise InputError(f"{root}: its {name!r} group was written by an older liqgpu; "
                             f"estimate the store again")
        packs = {}
        for dt in {d for _, d, _, _ in layout}:
            key = f"pack_{np.dtype(dt).name}"
            if key not in sub:
                raise InputError(f"{root}: array {name}/{key} is damaged (missing); estimate "
                                 f"the store again")
            try:
                packs[np.dtype(dt).str] = sub[key][...]
            except Exception as exc:  # noqa: BLE001 - a damaged chunk is one sentence
                err = read_error(exc)
                if err is None:
                    raise
                raise err from None
    out = {}
    for k, dt, shape, offset in layout:
        n = int(np.prod(shape, dtype=np.int64))
        out[k] = packs[np.dtype(dt).str][offset:offset + n].reshape(shape)
    return out, attrs


def resume_group(series: list, step: np.timedelta64, state: dict, resume_step: int):
    """What `liqgpu update` needs to continue a run exactly: the live positions before step
    ``resume_step`` (the start of the last bucket), the last valid OI before it per series, and
    every input bar on the common time axis (to check overlaps and recompute the last bucket)."""
    from ..model.inputs import align, last_valid_before
    from ..series import OPTIONAL, REQUIRED

    time, offsets = align(series)
    T = time.size
    cols = [c for c in REQUIRED + OPTIONAL if any(c in s.columns for s in series)]
    arrays = {f"state_{k}": v for k, v in state.items()}
    arrays["bars_time"] = time.astype("datetime64[ns]").view(np.int64)
    for c in cols:
        a = np.full((len(series), T), np.nan)
        for i, s in enumerate(series):
            if c in s.columns:
                a[i, offsets[i]] = s[c]
        arrays[f"bars_{c}"] = a
    oi_prev = []
    for i in range(len(series)):
        oi_prev.append(last_valid_before(arrays["bars_oi"][i], resume_step))
    attrs = {
        "resume_step": int(resume_step),
        "n_steps": int(T),
        "step_ns": int(step / np.timedelta64(1, "ns")),
        "oi_prev": [None if not np.isfinite(x) else x for x in oi_prev],
        "columns": [[c for c in cols if c in s.columns] for s in series],
    }
    return arrays, attrs
