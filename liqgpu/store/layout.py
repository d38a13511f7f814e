"""The dataset layout of MODEL.md: dimensions, variables, CF attributes, and how each variable
is encoded in zarr (v3): chunks, codecs, fill values.

A :class:`Layout` holds a dataset's variables without xarray; :func:`make_layout` builds it and
:func:`describe` fills in the CF metadata. The direct writer (:mod:`liqgpu.store.writer`) creates
zarr arrays from it (:func:`zarr_specs`, equal to what xarray's ``to_zarr`` makes of the same
dataset with :func:`encoding_for`); :func:`make_dataset` turns it into an xarray ``Dataset``.
"""

from __future__ import annotations

import contextlib
import warnings
from datetime import datetime, timezone

import numpy as np

from ..errors import InputError

CUBE_VARS = ("intensity", "liquidated")


TIER_VARS = ("added", "closed", "expired", "outside", "outside_liquidated")
V2_TIER_VARS = ("churned",)  # model v2 only


PRICE_VARS = ("open", "high", "low", "close", "oi")
# the same bucket bars under names no Dataset method shadows (``ds.close`` is a method;
# ``ds.bar_close`` is the data); format-1 stores have only PRICE_VARS


BAR_VARS = tuple(f"bar_{v}" for v in PRICE_VARS)


FORMAT_NAME = "liqgpu"


FORMAT_VERSION = 2  # 2: CF attributes, price_bounds, snapshot_time, base/quote (readers take 1)


CONVENTIONS = "CF-1.10"


FLAT_KEYS = {"name": "default", "separator": "."}


LONG_NAMES = {
    "intensity": "live liquidation-level notional at the bucket's last step",
    "liquidated": "estimated liquidated notional during the bucket",
    "added": "notional of positions opened during the bucket",
    "closed": "notional closed by falling open interest during the bucket",
    "expired": "notional of positions that reached max_age during the bucket",
    "churned": "notional closed and reopened by turnover (churn) during the bucket",
    "outside": "live notional whose level lies outside the price grid",
    "outside_liquidated": "liquidated notional whose level lay outside the price grid",
    "realized": "liquidations published by the exchange, binned on the grid",
}


#: bytes of float32 a cube chunk holds: a fleet's (price chunks of up to PRICE_CHUNK bins) and
#: one series' (whole price rows, where a row fits)
CHUNK_BYTES = 1 << 20
ROW_CHUNK_BYTES = 4 << 20
PRICE_CHUNK = 512


def chunking(n_bins: int, n_tiers: int, n_buckets: int, n_series: int = 1) -> tuple[int, int]:
    """(time, price) chunk sizes of the cube variables.

    One series: whole price rows, ~4 MiB of float32 a chunk, while a row fits in that. Such a
    chunk is one contiguous piece of the engine's cubes, so the writer compresses it in place
    (no copy into its buffer), and a year store holds half the files (bench/RESULTS.md,
    2026-11-28).
    A fleet, or rows larger than that: price chunks of up to 512 bins, ~1 MiB, so the chunks
    outside a series' own price range are never written (each series pays for its range).
    """
    row = n_bins * n_tiers * 2 * 4
    whole = n_series == 1 and row <= ROW_CHUNK_BYTES
    pc = n_bins if whole or n_bins <= 2 * PRICE_CHUNK else PRICE_CHUNK
    per_bucket = pc * n_tiers * 2 * 4
    tc = max(1, min(n_buckets, (ROW_CHUNK_BYTES if whole else CHUNK_BYTES)
                    // max(per_bucket, 1)))
    if tc > 8:
        tc -= tc % 8
    return tc, pc


class _Lazy:
    """The shape and dtype of a variable whose data the writer fills chunk by chunk."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)


class _Var:
    __slots__ = ("dims", "data", "attrs")

    def __init__(self, dims, data, attrs=None):
        self.dims, self.data, self.attrs = tuple(dims), data, dict(attrs or {})

    @property
    def values(self):
        return self.data

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return np.dtype(self.data.dtype)


class _Coords:
    def __init__(self, layout: "Layout"):
        self._l = layout

    def __contains__(self, k) -> bool:
        return k in self._l._coords

    def __iter__(self):
        return iter(list(self._l._coords))

    def __setitem__(self, k, value) -> None:
        self._l._set(k, value)
        if k not in self._l._coords:
            self._l._coords.append(k)


class Layout:
    """A dataset's variables, dims and attributes without xarray: what :func:`describe`
    fills in and what :class:`StoreWriter` creates in zarr. ``to_xarray`` makes the Dataset.

    Variables whose data is written chunk by chunk hold a placeholder with their full shape
    and dtype; the others (coordinates, the bucket bars) hold their data.
    """

    def __init__(self, attrs: dict | None = None):
        self.attrs = dict(attrs or {})
        self.variables: dict[str, _Var] = {}
        self._coords: list[str] = []
        self.coords = _Coords(self)

    def _set(self, k, value) -> None:
        if isinstance(value, _Var):
            self.variables[k] = value
            return
        dims, data, *rest = value
        dims = (dims,) if isinstance(dims, str) else dims
        self.variables[k] = _Var(dims, data, rest[0] if rest else None)

    def __setitem__(self, k, value) -> None:
        self._set(k, value)

    def __getitem__(self, k) -> _Var:
        return self.variables[k]

    def __contains__(self, k) -> bool:
        return k in self.variables

    @property
    def data_vars(self) -> list[str]:
        return [k for k in self.variables if k not in self._coords]

    @property
    def sizes(self) -> dict:
        out = {}
        for v in self.variables.values():
            out.update(zip(v.dims, v.shape))
        return out

    def to_xarray(self):
        import xarray as xr

        def item(k):
            v = self.variables[k]
            return (v.dims, v.data, v.attrs)

        return xr.Dataset({k: item(k) for k in self.data_vars},
                          coords={k: item(k) for k in self._coords}, attrs=self.attrs)


def make_layout(arrays: dict, *, names, time, grid, params, prices, attrs: dict | None = None,
                series_meta: dict | None = None, describe_it: bool = True) -> Layout:
    """The dataset of buckets ``time`` as a :class:`Layout`: ``arrays`` maps the engine's
    variables (``intensity``... ``churned``; None for absent ones) to data or a placeholder,
    ``prices`` the bucket bars (``open``... ``oi``) to (series, time) arrays."""
    ds = Layout(attrs)
    cube_dims = ("series", "time", "price", "leverage", "side")
    tier_dims = ("series", "time", "leverage", "side")
    for v in CUBE_VARS:
        ds[v] = (cube_dims, arrays[v], _var_attrs(v))
    for v in TIER_VARS + V2_TIER_VARS:
        if arrays.get(v) is not None:
            ds[v] = (tier_dims, arrays[v], _var_attrs(v))
    for v in PRICE_VARS:
        for name in (v, f"bar_{v}"):
            if name in PRICE_VARS or name in BAR_VARS:
                ds[name] = (("series", "time"), prices[v],
                            {"units": "contracts or base units" if v == "oi" else
                             "quote per base", "long_name": f"{v} of the bucket"})
    ds.coords["series"] = ("series", np.asarray(names, dtype=str))
    ds.coords["time"] = ("time", time)
    ds.coords["price"] = ("price", grid.centres)
    for k, v in params.leverage_coords().items():
        ds.coords[k] = v if isinstance(v, tuple) else (k, v)
    ds.coords["side"] = ("side", np.asarray(["long", "short"], dtype=str))
    if series_meta:
        for k, v in series_meta.items():
            ds.coords[k] = ("series", np.asarray(v))
    ds.coords["price_edges"] = ("price_edge", grid.edges)
    if describe_it:
        describe(ds, grid=grid)
    return ds


def make_dataset(chunk, *, names, time, grid, params, prices, b0: int, attrs: dict | None = None,
                 series_meta: dict | None = None):
    """One time chunk of the dataset (xarray) from an engine :class:`ChunkResult`."""
    b1 = chunk.b1
    ds = make_layout({v: getattr(chunk, v, None) for v in CUBE_VARS + TIER_VARS + V2_TIER_VARS},
                     names=names, time=time[b0:b1], grid=grid, params=params,
                     prices={v: prices[v][:, b0:b1] for v in PRICE_VARS}, attrs=attrs,
                     series_meta=series_meta, describe_it=False)
    ds = ds.to_xarray()
    describe(ds, grid=grid)
    return ds


def quote_currency(symbols) -> str:
    """The quote currency of the series (``USDT``), or ``USD`` for a mix of dollar quotes."""
    from ..assets import split_symbol

    quotes = {split_symbol(s)[1] for s in symbols}
    return quotes.pop() if len(quotes) == 1 else "USD"


def describe(ds, *, grid=None) -> None:
    """CF-style metadata on every variable and coordinate (in place): ``units`` from the quote
    currency, ``long_name`` and ``description``; the bin edges as the ``price`` bounds; each
    snapshot's exact time (``snapshot_time``: the end of its bucket, so a lookup by it never
    looks ahead); base asset and quote currency per series."""
    from ..assets import split_symbol
    from .._time import parse_duration

    symbols = [str(s) for s in np.asarray(ds["symbol"].values)] if "symbol" in ds.coords \
        else [str(s).split(":", 1)[-1] for s in np.asarray(ds["series"].values)]
    quote = quote_currency(symbols)
    ds.attrs["Conventions"] = CONVENTIONS
    ds.coords["base"] = ("series", np.asarray([split_symbol(s)[0] for s in symbols], dtype=str))
    ds.coords["quote"] = ("series", np.asarray([split_symbol(s)[1] for s in symbols], dtype=str))
    for v in ds.data_vars:
        if v in LONG_NAMES:
            ds[v].attrs.update(units=quote, long_name=LONG_NAMES[v],
                               description=f"quote notional ({quote}) of positions; "
                                           + LONG_NAMES[v])
    for v in PRICE_VARS + BAR_VARS:
        v0 = v.removeprefix("bar_")
        if v in ds:
            ds[v].attrs.update(units="contracts or base units" if v0 == "oi" else quote,
                               long_name=f"{v0} of the bucket",
                               description="open interest at the bucket's last valid bar "
                                           "(the contract's native unit)" if v0 == "oi" else
                               f"bucket {v0} price ({quote} per base unit)")
    if grid is not None:
        e = np.asarray(grid.edges, dtype=np.float64)
        ds.coords["price_bounds"] = (("price", "bnds"), np.stack([e[:-1], e[1:]], axis=1))
        ds["price_bounds"].attrs.update(long_name="price bin bounds [lower, upper)", units=quote)
    ds["price"].attrs.update(units=quote, long_name="price bin centre", bounds="price_bounds",
                             description="bins are [lower, upper) edges in price_bounds")
    ds["price_edges"].attrs.update(units=quote, long_name="price bin edges")
    every = parse_duration(ds.attrs["every"]) if "every" in ds.attrs else None
    ds["time"].attrs.update(long_name="bucket open time (UTC)", standard_name="time",
                            description="intensity is the snapshot at the bucket's end "
                                        "(snapshot_time); flows are sums over the bucket")
    if every is not None:
        ds.coords["snapshot_time"] = ("time", snapshot_times(
            ds["time"].values, int(every.total_seconds() * 1e9), ds.attrs))
        ds["snapshot_time"].attrs.update(
            long_name="time of the intensity snapshot (UTC)",
            description="end of the bucket (of the last bar, data_end, in a bucket the bars "
                        "do not fill)")
    ds["series"].attrs.update(long_name="series (exchange:symbol)")
    ds["side"].attrs.update(long_name="side of the position (long, short)")
    if "leverage_lo" in ds.coords:
        ds["leverage"].attrs.update(long_name="leverage band",
                                    description="tiers L with leverage_lo <= L < leverage_hi")
        ds["leverage_lo"].attrs.update(long_name="band's lowest leverage", units="1")
        ds["leverage_hi"].attrs.update(long_name="band's highest leverage", units="1")
    else:
        ds["leverage"].attrs.update(long_name="leverage tier", units="1")
    for k, name in (("exchange", "exchange"), ("symbol", "contract symbol"),
                    ("kind", "contract kind (linear, inverse)"),
                    ("contract_size", "quote value of one inverse contract, or base units per "
                                      "OI unit (linear)"),
                    ("base", "base asset"), ("quote", "quote currency")):
        if k in ds.coords:
            ds[k].attrs.update(long_name=name)


def static_coords(ds) -> list[str]:
    """Coordinates written once with a store's first chunk (those without a ``time`` dim)."""
    return [c for c in ds.coords if "time" not in ds[c].dims]


def _var_attrs(v: str) -> dict:
    return {"units": "quote notional", "long_name": LONG_NAMES[v]}


def base_attrs(params, grid, *, step, every, fingerprint: str, sources: list[str],
               data_end=None, data_start=None) -> dict:
    """The store's attributes. ``data_end``: the close of its last bar (datetime64), where
    the last bucket's snapshot is taken when that bucket is not complete; ``data_start``: the
    open of its first bar (the first bucket starts before it when the bars do not begin on the
    clock)."""
    from .. import __version__

    a = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "engine": "liqgpu",
        "engine_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "step": _td_str(step),
        "every": _td_str(every),
        "fingerprint": fingerprint,
        "sources": list(sources),
        "time_zone": "UTC",
    }
    if data_start is not None:
        a["data_start"] = time_text(data_start)
    if data_end is not None:
        a["data_end"] = time_text(data_end)
    a.update(params.to_attrs())
    a.update(grid.to_attrs())
    return a


def time_text(t) -> str:
    """A UTC time as ISO text with a Z, to the second (finer where it has to be)."""
    from .._time import exact_iso

    return exact_iso(t) + "Z"


def data_end(attrs) -> "np.datetime64 | None":
    """The close of a store's last bar (its ``data_end`` attribute), None where the store does
    not say (written before liqgpu kept it)."""
    raw = attrs.get("data_end") if attrs is not None else None
    if not raw:
        return None
    try:
        return np.datetime64(str(raw).rstrip("Z"), "ns")
    except ValueError:
        return None


def snapshot_times(time, every, attrs) -> np.ndarray:
    """When each bucket's intensity snapshot is taken: the bucket's end, or for a bucket the
    bars do not fill (the last one, on a clock it does not end on), the close of the last bar
    (what the engine snapshots there)."""
    t = np.asarray(time).astype("datetime64[ns]") + np.timedelta64(every, "ns")
    end = data_end(attrs)
    return t if end is None else np.minimum(t, end)


def _td_str(td) -> str:
    from datetime import timedelta

    from .._time import format_duration

    secs = float(np.timedelta64(td, "ns") / np.timedelta64(1, "s"))
    return format_duration(timedelta(seconds=secs))


#: the bytes-to-bytes codecs of the arrays liqgpu writes, as zarr v3 metadata spells them: a
#: compressor, then a crc32c checksum (checked first on reading, so a damaged chunk never
#: reaches the decompressor). Blosc's typesize is each array's item size. ``cube``: the
#: price-grid variables; ``blosc``: the other arrays; ``zstd``: coordinates (zarr's default).
CODECS = {
    # lz4 level 1, no shuffle, chosen by measurement (bench/codec_choice.py; bench/RESULTS.md,
    # 2026-11-27): on real cube chunks, one core, it encodes ~1.8x faster than lz4 5 + byte
    # shuffle (~2.4 against ~1.3 GB/s of float32), decodes faster, and the chunks are
    # 0.8-0.9x the size: they are mostly exact zeros, long runs lz4 finds better
    # unshuffled. Blosc-zstd 1 halves the size but is ~1.8x slower than before.
    "cube": ({"name": "blosc", "configuration": {"cname": "lz4", "clevel": 1,
                                                 "shuffle": "noshuffle", "blocksize": 0}},
             {"name": "crc32c"}),
    # the rest (per-tier sums, bars, the resume pack): dense float64, which lz4 only
    # compresses byte-shuffled (the resume pack of a year: 38 MB shuffled, 52 unshuffled)
    "blosc": ({"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5,
                                                  "shuffle": "shuffle", "blocksize": 0}},
              {"name": "crc32c"}),
    "zstd": ({"name": "zstd", "configuration": {"level": 0, "checksum": False}},
             {"name": "crc32c"}),
}


def compressors(kind: str = "blosc") -> tuple:
    """:data:`CODECS` ``[kind]`` as zarr codec objects, for writes through zarr or xarray."""
    from zarr.registry import get_codec_class

    return tuple(get_codec_class(c["name"]).from_dict(c) for c in CODECS[kind])


#: the variables on the price grid: zarr's fill value 0, and chunks all 0 are not stored (a
#: series' bins far from its prices cost nothing; readers see zeros there, as zarr defines).
#: Their ``_FillValue`` attribute stays NaN, so xarray masks nothing.
SPARSE_VARS = CUBE_VARS + ("realized",)


def encoding_for(ds, tc: int, pc: int) -> dict:
    """The xarray ``to_zarr`` encoding of a liqgpu store's variables (zarr codec objects)."""
    return _encoding(ds, tc, pc, compressors)


def _encoding(ds, tc: int, pc: int, codecs) -> dict:
    """Each variable's chunks, codecs (``codecs(name)`` of a :data:`CODECS` name), fill value
    and chunk keys."""
    comp, cube = codecs("blosc"), codecs("cube")
    enc = {}
    K = ds.sizes["leverage"]
    for v in CUBE_VARS:
        enc[v] = {"chunks": (1, tc, pc, K, 2), "compressors": cube, "fill_value": 0.0,
                  "write_empty_chunks": False}
    if "realized" in ds:
        enc["realized"] = {"chunks": (1, tc, pc, 2), "compressors": cube, "fill_value": 0.0,
                           "write_empty_chunks": False}
    for v in TIER_VARS + V2_TIER_VARS:
        if v in ds:
            enc[v] = {"chunks": (1, max(tc, 256), K, 2), "compressors": comp}
    for v in PRICE_VARS + BAR_VARS:
        if v in ds:
            enc[v] = {"chunks": (1, max(tc, 1024)), "compressors": comp}
    enc["time"] = {"units": "milliseconds since 1970-01-01", "dtype": "int64",
                   "calendar": "proleptic_gregorian", "chunks": (max(tc, 1024),),
                   "compressors": codecs("zstd")}
    if "snapshot_time" in ds.variables:
        enc["snapshot_time"] = dict(enc["time"])
    for v in ds.variables:  # coordinates and anything else: checksummed too
        enc.setdefault(v, {"compressors": codecs("zstd")})
    for e in enc.values():  # flat chunk files (c.0.1.2): no folder per chunk row, so cloning a
        e["chunk_key_encoding"] = FLAT_KEYS  # store for `update` makes no directories
    return enc


#: the ``_FillValue`` attribute xarray writes for float variables in zarr v3 (NaN, base64)
_NAN_FILL = "AAAAAAAA+H8="


#: how xarray encodes times in liqgpu stores
TIME_UNITS = {"units": "milliseconds since 1970-01-01", "calendar": "proleptic_gregorian"}


def zarr_specs(ds: Layout, tc: int, pc: int) -> dict:
    """Each variable of ``ds`` as the zarr array xarray's ``to_zarr`` makes of it with
    :func:`encoding_for`: dtype (times as int64 milliseconds), chunks, codecs, fill value,
    dimension names and attributes (``coordinates``, ``_FillValue``, time units); the codecs
    as a :data:`CODECS` name (what :mod:`liqgpu.store.direct` writes; no zarr import)."""
    enc = _encoding(ds, tc, pc, lambda name: name)
    non_dim = [k for k in ds.coords if ds[k].dims != (k,)]
    specs = {}
    for k, v in ds.variables.items():
        attrs = dict(v.attrs)
        if k not in ds.coords:
            near = sorted(c for c in non_dim if set(ds[c].dims) <= set(v.dims))
            if near:
                attrs["coordinates"] = " ".join(near)
        dtype, fill = v.dtype, None
        if dtype.kind == "M":
            dtype = np.dtype(np.int64)
            attrs.update(TIME_UNITS)
        elif dtype.kind == "f":
            fill = 0.0 if k in SPARSE_VARS else np.nan
            attrs["_FillValue"] = _NAN_FILL
        e = enc[k]
        chunks = e.get("chunks") or tuple(max(n, 1) for n in v.shape)
        specs[k] = {"shape": v.shape, "dtype": dtype, "chunks": tuple(chunks),
                    "codecs": e["compressors"], "fill_value": fill, "attributes": attrs,
                    "dimension_names": v.dims}
    return specs


@contextlib.contextmanager
def _quiet_zarr():
    """zarr warns that consolidated metadata and some dtypes are not in the v3 spec yet."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
        warnings.filterwarnings("ignore", message=".*may not be supported by other zarr.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module="zarr")
        try:
            from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning
        except ImportError:  # older zarr
            pass
        else:
            warnings.simplefilter("ignore", UnstableSpecificationWarning)
            warnings.simplefilter("ignore", ZarrUserWarning)
        yield


#: what every liqgpu store holds (a plain xarray store carrying format=liqgpu does not)
REQUIRED_ARRAYS = ("time", "series", "price", "leverage", "side", "price_edges") \
    + CUBE_VARS + TIER_VARS + PRICE_VARS


REQUIRED_ATTRS = ("step", "every", "grid", "leverages", "weights", "mmr", "entry", "side_split",
                  "closure")


def check_layout(ds, where) -> None:
    """One sentence when a store lacks an array (or attribute) every liqgpu store has."""
    gone = [a for a in REQUIRED_ATTRS if a not in ds.attrs]
    if gone:
        raise InputError(f"{where}: not a liqgpu store (its attributes lack "
                         f"{', '.join(gone[:4])}; format=liqgpu alone is not enough)")
    missing = [v for v in REQUIRED_ARRAYS if v not in ds.variables]
    if missing:
        raise InputError(f"{where}: array {missing[0]} is missing "
                         f"({'damaged or not a liqgpu store' if len(missing) < 5 else 'not a liqgpu store'}"
                         f"; missing: {', '.join(missing[:6])})")
