"""The direct zarr writer of `liqgpu estimate`: the store it writes equals, array by array and
bit for bit, the one xarray's ``to_zarr`` wrote before (kept here as the reference), and the
command line's estimate path imports neither xarray, dask, pandas, scipy nor zarr."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import liqgpu
from liqgpu import store as store_mod
from liqgpu.store import layout as layout_mod
from liqgpu.model.v1 import Params


# -- the reference: the xarray writer liqgpu used before (first chunk, then appends) -------------
def _xarray_store(path: Path, mem, *, tc: int, pc: int, cb: int) -> None:
    """Write the in-memory run ``mem`` as liqgpu's xarray-based StoreWriter did: one dataset
    per engine chunk from make_dataset, the first written with the encoding, the others
    appended along time without their static coordinates, then finish(). (A one-bucket store,
    never appended to, also kept xarray's global ``coordinates`` attribute; no longer.)"""
    from types import SimpleNamespace

    from liqgpu.events import REALIZED_ATTRS
    from liqgpu.model.grid import Grid
    from liqgpu.model.registry import params_from_attrs

    attrs = {k: v for k, v in mem.attrs.items() if k != "Conventions"}
    grid = Grid(mem["price_edges"].values, attrs["grid"])
    params = params_from_attrs(attrs)
    names = [str(x) for x in mem["series"].values]
    meta = {k: mem[k].values for k in ("exchange", "symbol", "kind", "contract_size")}
    prices = {v: mem[v].values for v in store_mod.PRICE_VARS}
    fields = [v for v in store_mod.CUBE_VARS + store_mod.TIER_VARS + store_mod.V2_TIER_VARS
              if v in mem]
    from liqgpu.model.engine import chunk_edges

    nb = mem.sizes["time"]
    with store_mod._quiet_zarr():  # the engine's chunks, cut before the last bucket (resume)
        for b0, b1 in chunk_edges(nb, cb, nb - 1):
            chunk = SimpleNamespace(b0=b0, b1=b1, **{"churned": None, **{
                v: mem[v].values[:, b0:b1] for v in fields}})
            ds = store_mod.make_dataset(chunk, names=names, time=mem["time"].values, grid=grid,
                                        params=params, prices=prices, b0=b0, attrs=attrs,
                                        series_meta=meta)
            if "realized" in mem:
                ds["realized"] = (("series", "time", "price", "side"),
                                  mem["realized"].values[:, b0:b1],
                                  {**REALIZED_ATTRS, "units": ds["intensity"].attrs["units"]})
            if b0 == 0:
                ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=False,
                           encoding=store_mod.encoding_for(ds, tc, pc))
            else:
                ds.drop_vars(store_mod.static_coords(ds), errors="ignore").to_zarr(
                    path, append_dim="time", consolidated=False, zarr_format=3)
    store_mod.finish(path, dict(ds.attrs))


def _arrays(root: Path) -> dict:
    """Every array's metadata (consolidated) and chunk files' bytes, outside the resume group."""
    meta = json.loads((root / "zarr.json").read_text())
    out = {}
    for name, m in meta["consolidated_metadata"]["metadata"].items():
        if name.startswith("resume") or m.get("node_type") != "array":
            continue
        files = {f: (root / name / f).read_bytes() for f in os.listdir(root / name)
                 if f != "zarr.json"}
        out[name] = (m, files)
    return out


def _root_attrs(root: Path) -> dict:
    a = dict(json.loads((root / "zarr.json").read_text())["attributes"])
    a.pop("created")
    return a


@pytest.fixture(scope="module")
def market():
    a = liqgpu.synthetic_series(days=2, seed=4, exchange="binance", symbol="BTCUSDT")
    b = liqgpu.synthetic_series(days=2, seed=5, exchange="okx", symbol="ETH-USDT-SWAP")
    rng = np.random.default_rng(3)
    rows = []
    for s in (a, b):
        j = rng.integers(0, len(s), 30)
        rows.append(pd.DataFrame({
            "time": pd.to_datetime(s.time[j], utc=True), "exchange": s.exchange,
            "symbol": s.symbol, "side": rng.choice(["long", "short"], j.size),
            "price": s["close"][j] * rng.uniform(0.99, 1.01, j.size),
            "notional": rng.uniform(1e3, 1e5, j.size)}))
    ev = pd.concat(rows, ignore_index=True).sort_values("time", ignore_index=True)
    return [a, b], ev


@pytest.mark.parametrize("case", ["v2-realized", "v1", "v2-one-chunk"])
def test_direct_writer_equals_the_xarray_store(tmp_path, market, case):
    series, ev = market
    kw = dict(every="30min", backend="numpy", chunk_buckets=16)
    if case == "v2-realized":
        kw.update(realized=ev)
    elif case == "v1":
        kw.update(params=Params(), every="1h", chunk_buckets=8)
        series = series[:1]
    else:
        kw.update(every="2h", chunk_buckets=None)
    new = tmp_path / "new.zarr"
    summary = liqgpu.estimate(series, out=new, reopen=False, **kw)
    mem = liqgpu.estimate(series, **kw)
    # the same chunks as the store run: the whole-chunk rounding of api.estimate
    P, K, nb = mem.sizes["price"], mem.sizes["leverage"], mem.sizes["time"]
    tc, pc = store_mod.chunking(P, K, nb, mem.sizes["series"])
    ref = tmp_path / "ref.zarr"
    meta = json.loads((new / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    cb = meta["intensity"]["chunk_grid"]["configuration"]["chunk_shape"][1]
    assert cb == tc
    # (the in-memory run cuts its chunks where the store run does, so the numbers are equal)
    _xarray_store(ref, mem, tc=tc, pc=pc, cb=kw['chunk_buckets'] or nb)
    got, want = _arrays(new), _arrays(ref)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name][0] == want[name][0], name  # dims, dtype, chunks, codecs, fill, attrs
        assert sorted(got[name][1]) == sorted(want[name][1]), name
        for f, data in want[name][1].items():
            assert got[name][1][f] == data, (name, f)  # bit for bit
    assert _root_attrs(new) == _root_attrs(ref)
    # the summary the command line prints from
    assert summary.sizes["series"] == len(series) and summary.sizes["time"] == nb
    assert ("realized" in summary) == (case == "v2-realized")
    # readable as before
    import xarray as xr

    plain = xr.open_zarr(new)
    assert plain["intensity"].dims == ("series", "time", "price", "leverage", "side")
    assert set(plain.coords) == set(liqgpu.open_store(ref).coords)


def test_writer_assembles_chunk_rows_split_between_parts(tmp_path, market):
    """Chunk sizes that do not divide the engine's parts: the per-tier arrays (256-bucket chunks)
    are assembled in memory and each chunk written once, complete."""
    series, _ = market
    out = tmp_path / "s.zarr"
    liqgpu.estimate(series[0], every="5min", backend="numpy", out=out, chunk_buckets=40)
    whole = liqgpu.estimate(series[0], every="5min", backend="numpy", chunk_buckets=40)
    ds = liqgpu.open_store(out, chunks=None)
    for v in ("added", "closed", "churned", "close", "bar_oi"):
        np.testing.assert_array_equal(ds[v].values, whole[v].values)
    np.testing.assert_array_equal(ds["time"].values, whole["time"].values)


# -- the parquet reader without pandas ------------------------------------------------------------
def _frames():
    t = pd.date_range("2026-03-01", periods=50, freq="1min", tz="UTC")
    base = pd.DataFrame({"time": t, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5,
                         "oi": np.linspace(1e3, 2e3, 50)})
    yield "tz", base, {}
    f = base.copy()
    f["time"] = f["time"].astype("int64") // 10**6
    f["exchange"], f["symbol"], f["contract_size"] = "okx", "BTC-USD-SWAP", 100.0
    f["kind"] = "inverse"
    f.loc[7, "close"] = np.nan
    f = f.drop(index=[10, 11])
    yield "epoch-ms-meta-gap", f, {}
    f = base.copy()
    f["time"] = (f["time"].astype("int64") // 10**9).astype(float)
    f["volume"] = np.arange(50, dtype=np.int64)
    yield "epoch-s-float", f, {}
    f = base.copy().rename(columns={"close": "Close"})
    f["time"] = f["time"].dt.tz_localize(None).astype("datetime64[ms]")
    yield "naive-ms-upper", f, {}
    f = base.copy()
    f.loc[5, "high"] = 90.0
    yield "bad-high", f, {}
    f = base.copy()
    f["time"] = f["time"].iloc[::-1].to_numpy()
    yield "not-increasing", f, {}
    f = base.copy()
    f["exchange"] = ["a", "b"] * 25
    yield "two-exchanges", f, {}
    f = base.copy()
    f["oi"] = f["oi"].astype(str)
    f.loc[3, "oi"] = "x"
    yield "string-oi", f, {}
    f = base.copy().set_index("time")
    yield "time-index", f, {}
    f = base.copy()
    f["time"] = f["time"].astype("int64") // 10**6
    f.loc[4, "time"] = -5
    yield "negative-epoch", f, {}


@pytest.mark.parametrize("case", [c for c, _, _ in _frames()])
def test_parquet_without_pandas_reads_as_pandas_did(tmp_path, case, monkeypatch):
    from liqgpu import series as series_mod
    from liqgpu.errors import InputError

    _, df, kw = next(x for x in _frames() if x[0] == case)
    p = tmp_path / "BTCUSDT.parquet"
    df.to_parquet(p, index=case == "time-index")

    def load():
        try:
            return series_mod.load_series(p, **kw)
        except InputError as exc:
            return str(exc)

    got = load()
    with monkeypatch.context() as m:
        m.setattr(series_mod, "_read_parquet", lambda path: pd.read_parquet(path))
        want = load()
    if isinstance(want, str):
        assert got == want
        return
    assert not isinstance(got, str), got
    assert got.fingerprint() == want.fingerprint()
    assert (got.exchange, got.symbol, got.kind, got.contract_size, got.n_gaps) == \
        (want.exchange, want.symbol, want.kind, want.contract_size, want.n_gaps)


# -- what the command line imports -----------------------------------------------------------------
HEAVY = ("dask", "xarray", "pandas", "scipy", "zarr")  # zarr: the store is written directly

_PROBE = """
import sys
from liqgpu.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("HEAVY", sorted(m for m in {heavy!r} if m in sys.modules), "EXIT", code)
"""


def _run_cli(*args):
    env = dict(os.environ)
    env.pop("LIQGPU_JIT", None)  # as run: a small run never loads numba (which brings scipy)
    root = str(Path(liqgpu.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("HEAVY")][-1]
    return line, r.stdout


def test_estimate_command_imports_no_xarray_dask_pandas_scipy_zarr(tmp_path):
    from liqgpu.synth import synthetic_frame

    src = tmp_path / "btc.parquet"
    synthetic_frame(days=1, seed=1).to_parquet(src, index=False)
    line, out = _run_cli("estimate", src, "-o", tmp_path / "o.zarr", "--backend", "numpy")
    assert line == "HEAVY [] EXIT 0", out
    assert "wrote" in out and "1 series x 24 buckets" in out
    assert liqgpu.open_store(tmp_path / "o.zarr").sizes["time"] == 24
    line, out = _run_cli("estimate", "--help")
    assert line == "HEAVY [] EXIT 0", out


# -- the store package and the pipeline: names kept, arrows one way --------------------------------
def test_public_names_and_one_way_imports():
    import re

    import liqgpu.store

    assert liqgpu.open_store is liqgpu.store.open_store
    pkg = Path(liqgpu.store.__file__).parent
    for f in pkg.glob("*.py"):  # store never imports the API, the pipeline or update
        assert not re.search(r"from \.\.(api|pipeline|update|distributed|sweep)\b",
                             f.read_text()), f
    assert not re.search(r"from \.api\b", (pkg.parent / "pipeline.py").read_text())
    # callers use the pipeline and the events module; from the API only estimate
    allowed = {"estimate"}
    for m in ("updating.py", "distributed.py", "sweep.py", "store/remote.py"):
        for names in re.findall(r"from \.+api import \(?([^)\n]+)", (pkg.parent / m).read_text()):
            got = {n.strip().split(" ")[0] for n in names.split("#")[0].split(",") if n.strip()}
            assert got <= allowed, (m, got)


def test_importing_the_store_package_and_pipeline_is_light():
    code = ("import sys, liqgpu.store, liqgpu.pipeline, liqgpu.api; "
            "print(sorted(m for m in ('zarr', 'xarray', 'dask', 'pandas', 'scipy') "
            "if m in sys.modules))")
    env = dict(os.environ)
    root = str(Path(liqgpu.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_write_behind_prepares_on_the_writer_thread_first():
    """``prepare`` runs once, on the writer thread, before the first chunk is written and while
    the producer computes it; an error there reaches the caller and nothing is written."""
    import threading

    from liqgpu.store.writer import write_behind

    log = []
    computed = threading.Event()

    def prepare():
        log.append(("prepare", threading.current_thread().name))
        computed.wait(5)  # the producer computes its first chunk meanwhile

    def chunks():
        for i in range(3):
            if i == 0:
                log.append(("computed", 0))
                computed.set()
            yield i

    write_behind(chunks(), lambda x: log.append(("write", x)), prepare=prepare)
    assert log[0] == ("computed", 0) or log[1] == ("computed", 0)
    assert ("prepare", "liqgpu-writer") in log[:2]
    assert [x for x in log if x[0] == "write"] == [("write", 0), ("write", 1), ("write", 2)]

    def bad():
        raise OSError("disk full")

    written = []
    with pytest.raises(OSError, match="disk full"):
        write_behind(iter(range(3)), written.append, prepare=bad)
    assert written == []


def _sample(dtype, shape, fill, rng):
    """Random data of ``dtype`` with whole chunks, a whole series and part of an edge chunk
    equal to the fill value (None: zarr's default, zero or the empty string)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        data = rng.lognormal(0, 4, shape).astype(dtype)
    elif dtype.kind == "U":
        data = rng.choice(np.array(["a", "bc", "xyz", "é€"], dtype=dtype), shape)
    elif dtype.kind == "b":
        data = rng.random(shape) < 0.7
    else:
        data = rng.integers(1, 100, shape).astype(dtype)
    fill = ("" if dtype.kind == "U" else dtype.type(0)) if fill is None else fill
    data[:, :, 3:6] = fill  # whole chunks of fill: not written
    data[1] = fill  # a whole series of fill
    data[2, 8:, :, 1] = fill  # part of an edge chunk
    if dtype.kind == "f":  # the emptiness check's edges: equal to the fill, not the same bits
        if np.isnan(fill):  # a chunk of NaN of another payload: all fill, not written
            data[0, 0:4, 0:3].view(f"u{dtype.itemsize}")[...] = \
                np.array(np.nan, dtype).view(f"u{dtype.itemsize}") + 1
        else:  # a chunk of -0.0: equal to 0, not written
            data[0, 0:4, 0:3] = -0.0
        data[0, 4:8, 0:3] = fill  # all fill but one tiny value: written
        data[0, 5, 1, 0] = 0.0 if np.isnan(fill) else np.finfo(dtype).smallest_subnormal
    return data


@pytest.mark.parametrize("dtype,fill,codecs", [
    ("float32", 0.0, "cube"), ("float32", 0.0, "blosc"), ("float64", float("nan"), "blosc"),
    ("float32", float("nan"), "blosc"), ("int64", None, "zstd"), ("float64", float("nan"), "zstd"),
    ("<U3", None, "zstd"), ("uint8", None, "blosc"), ("bool", None, "zstd")])
@pytest.mark.parametrize("probe", [True, False], ids=["encoded-first", "checked-first"])
def test_direct_arrays_are_zarrs(tmp_path, monkeypatch, dtype, fill, codecs, probe):
    """An array written by liqgpu.store.direct (its zarr.json, then chunk rows as the store
    writer writes them, or the whole array at once, or through the encoder of an array zarr
    created, as distributed tasks write) is the one zarr writes, file for file and
    byte for byte (edge chunks padded, all-fill chunks left out, NaN fill), and zarr reads it;
    with small chunks encoded before the all-fill check, and with large ones checked first."""
    import zarr

    from liqgpu.store import direct
    from liqgpu.store.direct import ChunkEncoder, create_array
    from liqgpu.store.layout import _quiet_zarr, compressors

    if not probe:
        monkeypatch.setattr(direct, "PROBE_BYTES", 0)

    shape, chunks = (3, 10, 7, 2), (1, 4, 3, 2)
    data = _sample(dtype, shape, fill, np.random.default_rng(1))
    attrs = {"long_name": "x", "pair": (1, 2), "n": np.int64(3)}
    dims = ("series", "time", "price", "side")
    spec = {"shape": shape, "dtype": np.dtype(dtype), "chunks": chunks, "codecs": codecs,
            "fill_value": fill, "attributes": attrs, "dimension_names": dims}
    with _quiet_zarr():
        root = zarr.create_group(str(tmp_path / "z"), zarr_format=3)
        a = root.create_array("x", chunk_key_encoding={"name": "default", "separator": "."},
                              config={"write_empty_chunks": False}, shape=shape, dtype=dtype,
                              chunks=chunks, compressors=compressors(codecs), fill_value=fill,
                              attributes={**attrs, "n": 3}, dimension_names=dims)
        a[...] = data

    def files(folder):
        return {f: (folder / f).read_bytes() for f in os.listdir(folder)}

    want = files(tmp_path / "z" / "x")
    assert len(want) < 1 + 3 * 3 * 3  # some chunks left out
    rows = create_array(tmp_path / "rows" / "x", spec)
    for s in range(shape[0]):
        for r in range(-(-shape[1] // chunks[1])):
            rows.write_row(s, r, data[s:s + 1, r * 4:(r + 1) * 4])
    create_array(tmp_path / "all" / "x", spec, data)
    (tmp_path / "doc" / "x").mkdir(parents=True)  # the encoder of an array zarr created
    (tmp_path / "doc" / "x" / "zarr.json").write_bytes(want["zarr.json"])
    ChunkEncoder.for_array(tmp_path / "doc" / "x").write_all(data)
    with _quiet_zarr():  # other codecs: not written here
        root.create_array("y", shape=shape, dtype=dtype, chunks=chunks,
                          chunk_key_encoding={"name": "default", "separator": "."})
    assert ChunkEncoder.for_array(tmp_path / "z" / "y") is None
    for how in ("rows", "all", "doc"):
        got = files(tmp_path / how / "x")
        assert sorted(got) == sorted(want), how
        assert json.loads(got.pop("zarr.json")) == json.loads(want["zarr.json"]), how
        for f in got:
            assert got[f] == want[f], (how, f)
        with _quiet_zarr():
            back = zarr.open_array(str(tmp_path / how / "x"), mode="r")[...]
        np.testing.assert_array_equal(back, data)


def test_direct_groups_and_consolidated_metadata_are_zarrs(tmp_path):
    """Groups, the resume group (write_group) and the root's consolidated metadata written
    without zarr (liqgpu.store.finish) equal zarr's own (consolidate_metadata), and zarr and
    liqgpu read them back."""
    import shutil

    import zarr

    from liqgpu.store.direct import create_array, group_doc
    from liqgpu.store.layout import _quiet_zarr, compressors

    attrs = {"format": "liqgpu", "leverages": (2.0, 5.5), "n": np.float64(0.5)}
    state = {"a": np.arange(7, dtype=np.int64), "b": np.linspace(0, 1, 5).reshape(5, 1),
             "c": np.zeros(3, dtype=np.int64)}
    with _quiet_zarr():
        root = zarr.create_group(str(tmp_path / "z"), zarr_format=3, attributes={"old": 1})
        root.create_array("x", shape=(4,), dtype="float64", chunks=(4,),
                          compressors=compressors("zstd"), fill_value=np.nan,
                          chunk_key_encoding={"name": "default", "separator": "."},
                          attributes={"units": "1"}, dimension_names=("x",))[...] = np.arange(4.)
        sub = root.create_group("resume")
        for dt in ("float64", "int64"):
            packed = np.concatenate([v.ravel() for v in state.values() if v.dtype == dt])
            sub.create_array(f"pack_{dt}", shape=packed.shape, dtype=dt, chunks=packed.shape,
                             compressors=compressors(),
                             chunk_key_encoding={"name": "default", "separator": "."}
                             )[...] = packed
        sub.update_attributes({"k": [1, 2], "layout": store_mod.resume.pack_arrays(state)[0]})
    assert json.loads((tmp_path / "z" / "zarr.json").read_text()) == \
        group_doc({"old": 1})
    shutil.copytree(tmp_path / "z", tmp_path / "d")
    mine = tmp_path / "d"
    shutil.rmtree(mine / "x")  # the array and the group again, without zarr
    create_array(mine / "x", {"shape": (4,), "dtype": np.dtype("float64"), "chunks": (4,),
                              "codecs": "zstd", "fill_value": np.nan, "attributes": {"units": "1"},
                              "dimension_names": ("x",)}, np.arange(4.))
    store_mod.write_group(mine, "resume", state, {"k": [1, 2]})
    from liqgpu.store.integrity import MANIFEST_ATTR, MANIFEST_VERSION

    with _quiet_zarr():  # finish also marks the store as one written with a manifest
        zarr.open_group(str(tmp_path / "z"), mode="r+").update_attributes(
            {**attrs, "n": 0.5, MANIFEST_ATTR: MANIFEST_VERSION})
        zarr.consolidate_metadata(str(tmp_path / "z"), zarr_format=3)
    store_mod.finish(mine, attrs)
    for f in ("zarr.json", "x/zarr.json", "resume/zarr.json", "resume/pack_int64/zarr.json",
              "resume/pack_float64/c.0", "resume/pack_int64/c.0", "x/c.0"):
        want, got = (tmp_path / "z" / f).read_bytes(), (mine / f).read_bytes()
        if f.endswith(".json"):
            want, got = json.loads(want), json.loads(got)
        assert got == want, f
    with _quiet_zarr():
        assert zarr.open_group(str(mine), mode="r", use_consolidated=True).attrs["old"] == 1
    arrays, back = store_mod.read_group(mine, "resume")
    assert back == {"k": [1, 2]}
    for k, v in state.items():
        np.testing.assert_array_equal(arrays[k], v)


def test_chunk_encoder_skips_chunks_outside_each_series_span(tmp_path):
    """With spans, price chunks wholly outside a series' span are neither read nor written;
    chunks inside or straddling it are written as without spans."""
    from liqgpu.store.direct import ChunkEncoder

    shape, chunks = (2, 4, 12, 2), (1, 4, 3, 2)  # price chunks: [0,3) [3,6) [6,9) [9,12)
    spec = {"shape": shape, "dtype": np.dtype("float32"), "chunks": chunks,
            "codecs": "blosc", "fill_value": 0.0}
    rng = np.random.default_rng(2)
    data = np.zeros(shape, dtype=np.float32)
    spans = [(4, 7), (0, 3)]  # series 0: bins 4..6 (chunks 1, 2); series 1: bins 0..2 (chunk 0)
    for i, (j0, j1) in enumerate(spans):
        data[i, :, j0:j1] = rng.uniform(1, 2, (4, j1 - j0, 2))
    plain = ChunkEncoder.for_spec(tmp_path / "plain", spec)
    plain.write_row(0, 0, data)
    marked = data.copy()
    marked[0, :, 9:] = 7.0  # outside series 0's span: must not be read with spans
    marked[1, :, 6:] = 7.0
    span = ChunkEncoder.for_spec(tmp_path / "span", spec)
    span.write_row(0, 0, marked, spans)
    want = sorted(os.listdir(tmp_path / "plain"))
    assert want == ["c.0.0.1.0", "c.0.0.2.0", "c.1.0.0.0"]
    assert sorted(os.listdir(tmp_path / "span")) == want
    for f in want:
        assert (tmp_path / "span" / f).read_bytes() == (tmp_path / "plain" / f).read_bytes()


def test_writer_skips_chunks_the_engine_never_wrote_and_the_store_is_whole(tmp_path,
                                                                           monkeypatch):
    """The engine's per-chunk bins (``ChunkResult.spans`` per cube) let the writer skip price
    chunks unread; the store still holds every non-zero cell of the in-memory run, and a chunk
    row split at the resume bucket gets the union of its two pieces' bins."""
    from liqgpu.store.direct import ChunkEncoder

    s = liqgpu.synthetic_series(days=6, seed=21)
    kw = dict(every="1h", backend="numpy", chunk_buckets=24)
    # price chunks, as a fleet's or rows larger than a whole-row chunk get
    monkeypatch.setattr(layout_mod, "ROW_CHUNK_BYTES", 0)
    looked = {"intensity": 0, "liquidated": 0}
    orig = ChunkEncoder._write

    def counting(self, data, idxs, origin):
        idxs = list(idxs)
        if self.folder.name in looked:
            looked[self.folder.name] += len(idxs)
        return orig(self, data, iter(idxs), origin)

    monkeypatch.setattr(ChunkEncoder, "_write", counting)
    out = tmp_path / "s.zarr"
    liqgpu.estimate([s], out=out, reopen=False, **kw)
    mem = liqgpu.estimate([s], **kw)
    got = liqgpu.open_store(out, chunks=None)
    meta = json.loads((out / "intensity" / "zarr.json").read_text())
    tc, pc = meta["chunk_grid"]["configuration"]["chunk_shape"][1:3]
    P, nb = mem.sizes["price"], mem.sizes["time"]
    assert P > 2 * pc  # several price chunks, so there is something to skip
    total = -(-nb // tc) * -(-P // pc)
    for v in ("intensity", "liquidated"):
        np.testing.assert_array_equal(got[v].values, mem[v].values, err_msg=v)
        assert float(np.abs(mem[v].values).max()) > 0
        assert looked[v] <= total, (v, looked[v], total)
    # liquidations stay near the price: most of their chunks are never read (live levels span
    # the grid here: 2x leverage lies 50 % away)
    assert looked["liquidated"] < total // 2, (looked, total)


def test_union_of_span_lists():
    from liqgpu.store.writer import spans_of, union_spans

    assert union_spans([(3, 5), (0, 0), (1, 2)], [(4, 9), (2, 4), (0, 0)]) == \
        [(3, 9), (2, 4), (1, 2)]
    assert union_spans([(0, 0)], [(0, 0)]) == [(0, 0)]
    assert union_spans(None, [(1, 2)]) is None and union_spans([(1, 2)], None) is None
    per_cube = {"intensity": [(0, 7)], "liquidated": [(2, 3)]}
    assert spans_of(per_cube, "liquidated") == [(2, 3)]
    assert spans_of(per_cube, "added") is None and spans_of(per_cube, "realized") is None
    assert spans_of([(1, 4)], "intensity") == [(1, 4)] and spans_of([(1, 4)], "added") is None


def test_chunk_file_write_finishes_a_short_write(tmp_path, monkeypatch):
    """A chunk file's body and checksum go out in one writev; what a short write leaves is
    written after it, so the file holds every byte in order."""
    from liqgpu.store import direct

    real = os.writev
    monkeypatch.setattr(direct.os, "writev", lambda fd, pieces: real(fd, [pieces[0][:7]]))
    body, tail = bytes(range(256)) * 40, b"\x01\x02\x03\x04"
    fd = os.open(tmp_path / "c.0", os.O_WRONLY | os.O_CREAT, 0o644)
    direct._write_all(fd, body, tail)
    os.close(fd)
    assert (tmp_path / "c.0").read_bytes() == body + tail


def test_chunking_one_series_whole_rows_fleets_price_chunks():
    """One series: chunks of whole price rows, ~4 MiB of float32 (a multiple of 8 buckets);
    a fleet, or a row over 4 MiB: 512-bin price chunks of ~1 MiB; a small grid is whole rows
    either way, and a short run one chunk."""
    from liqgpu.store.layout import chunking

    assert chunking(2608, 5, 8760) == (40, 2608)  # 40 x 104,320 bytes: 3.98 MiB
    assert chunking(2608, 5, 8760, n_series=3) == (48, 512)  # 48 x 20,480 bytes: 0.94 MiB
    assert chunking(60000, 40, 100)[1] == 512  # a row of 19 MB
    assert chunking(800, 5, 8760, n_series=3) == (32, 800)
    assert chunking(800, 5, 6) == (6, 800)


def test_one_series_cube_chunks_are_compressed_in_place(tmp_path, monkeypatch):
    """A one-series store's cube chunks are contiguous pieces of the engine's cubes: the
    writer compresses them where they are, copying none into its buffer but the last, short
    time chunk (padded); the store equals the in-memory run."""
    from liqgpu.store.direct import ChunkEncoder

    s = liqgpu.synthetic_series(days=6, seed=21)
    kw = dict(every="1h", backend="numpy")
    copied = {"intensity": 0, "liquidated": 0}
    orig = ChunkEncoder._buffer

    def buffer(self):
        if self.folder.name in copied:
            copied[self.folder.name] += 1
        return orig(self)

    monkeypatch.setattr(ChunkEncoder, "_buffer", buffer)
    out = tmp_path / "s.zarr"
    liqgpu.estimate([s], out=out, reopen=False, **kw)
    meta = json.loads((out / "intensity" / "zarr.json").read_text())
    tc, pc = meta["chunk_grid"]["configuration"]["chunk_shape"][1:3]
    mem = liqgpu.estimate([s], **kw)
    assert pc == mem.sizes["price"] and mem.sizes["time"] > tc  # whole rows, several chunks
    short = int(mem.sizes["time"] % tc != 0)
    assert copied == {"intensity": short, "liquidated": short}
    got = liqgpu.open_store(out, chunks=None)
    for v in ("intensity", "liquidated"):
        np.testing.assert_array_equal(got[v].values, mem[v].values, err_msg=v)
