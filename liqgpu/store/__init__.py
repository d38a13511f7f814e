"""liqgpu stores: the dataset layout of MODEL.md in zarr (v3), written atomically, read lazily.

One module per concern, arrows pointing one way (none of them imports the pipeline or the API):

* :mod:`~liqgpu.store.layout`: dims, variables, CF attributes, zarr encoding (:func:`describe`,
  :func:`make_layout`, :func:`make_dataset`)
* :mod:`~liqgpu.store.writer`: the direct zarr writer (:class:`StoreWriter`, region writes per
  time chunk) and its write-behind thread
* :mod:`~liqgpu.store.resume`: the ``resume`` group that ``liqgpu update`` continues from
* :mod:`~liqgpu.store.atomic`: the writer lock, the one atomic commit, clean-up
* :mod:`~liqgpu.store.integrity`: checksums, the manifest, ``info --verify``
* :mod:`~liqgpu.store.remote`: object storage (publish, open)
* :mod:`~liqgpu.store.reader`: :func:`open_store`

Importing this package imports neither zarr nor xarray.
"""

from .layout import (BAR_VARS, CONVENTIONS, CUBE_VARS, FLAT_KEYS, FORMAT_NAME,  # noqa: F401
                     FORMAT_VERSION, LONG_NAMES, PRICE_VARS, REQUIRED_ARRAYS, REQUIRED_ATTRS,
                     TIER_VARS, TIME_UNITS, V2_TIER_VARS, Layout, _Lazy, _quiet_zarr, _var_attrs,
                     base_attrs, check_layout, chunking, compressors, describe, encoding_for,
                     make_dataset, make_layout, quote_currency, static_coords, zarr_specs)
from .reader import open_store, stamp  # noqa: F401
from .resume import read_group, resume_group, write_group  # noqa: F401
from .writer import (Group, Part, StoreSummary, StoreWriter, check_target, finish,  # noqa: F401
                     is_store, write_behind)

__all__ = ["open_store", "stamp", "StoreWriter", "StoreSummary", "Layout", "make_layout", "make_dataset",
           "describe", "check_target", "is_store", "finish", "write_group", "read_group",
           "resume_group", "base_attrs", "chunking", "encoding_for", "write_behind"]
