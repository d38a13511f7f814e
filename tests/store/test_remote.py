"""Stores on object storage (liqgpu.store.remote), through fsspec's in-memory filesystem: publish with
the root metadata last, readers see the whole store or none, URLs work wherever stores are read."""

from __future__ import annotations

import json
import uuid

import fsspec
import numpy as np
import pytest
from click.testing import CliRunner

import liqgpu
from liqgpu.cli import main
from liqgpu.distributed import estimate_distributed
from liqgpu.errors import InputError
from liqgpu.store.remote import publish
from liqgpu.store import open_store


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    path = tmp_path_factory.mktemp("remote") / "btc.zarr"
    liqgpu.estimate(liqgpu.synthetic_series(days=2, step="5min", seed=3), every="1h",
                    backend="numpy", out=path)
    return path


@pytest.fixture
def url():
    u = f"memory://liqgpu-test-{uuid.uuid4().hex[:8]}/btc.zarr"
    yield u
    fs = fsspec.filesystem("memory")
    root = u.split("://", 1)[1].split("/", 1)[0]
    if fs.exists(root):
        fs.rm(root, recursive=True)


def objects(u: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(u)
    return sorted(fs.find(root)) if fs.exists(root) else []


def test_published_store_reads_back_equal(local, url):
    publish(local, url)
    a, b = open_store(local, chunks=None), open_store(url, chunks=None)
    assert sorted(a.variables) == sorted(b.variables) and a.attrs == b.attrs
    for v in a.variables:
        np.testing.assert_array_equal(b[v].values, a[v].values, err_msg=v)
    assert float(b["intensity"].sum()) > 0
    n_local = sum(1 for p in local.rglob("*") if p.is_file())
    assert len(objects(url)) == n_local


def test_root_metadata_goes_last_and_a_failed_upload_leaves_nothing(local, url, monkeypatch):
    fs = fsspec.filesystem("memory")
    real_put = type(fs).put_file
    order = []

    def recording(self, lpath, rpath, **kw):
        order.append(rpath)
        return real_put(self, lpath, rpath, **kw)

    monkeypatch.setattr(type(fs), "put_file", recording)
    publish(local, url)
    assert order[-1].endswith("btc.zarr/zarr.json") and len(order) > 10
    assert not any(o.endswith("btc.zarr/zarr.json") for o in order[:-1])

    # a second upload (overwrite) that dies half-way: readers then see no store, not a mix
    def failing(self, lpath, rpath, **kw):
        if len(order) > 15:
            raise OSError("connection reset")
        order.append(rpath)
        return real_put(self, lpath, rpath, **kw)

    order.clear()
    monkeypatch.setattr(type(fs), "put_file", failing)
    with pytest.raises(OSError, match="connection reset"):
        publish(local, url, overwrite=True)
    assert objects(url) == []
    with pytest.raises(InputError, match="no such store"):
        open_store(url)


def test_existing_and_foreign_targets(local, url, tmp_path):
    publish(local, url)
    with pytest.raises(InputError, match="already exists.*--overwrite"):
        publish(local, url)
    other = tmp_path / "other.zarr"
    liqgpu.estimate(liqgpu.synthetic_series(days=1, step="5min", seed=8), every="1h",
                    backend="numpy", out=other)
    publish(other, url, overwrite=True)  # replaced: the old objects are gone
    assert open_store(url).sizes["time"] == 24
    assert len(objects(url)) == sum(1 for p in other.rglob("*") if p.is_file())
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    with pytest.raises(InputError, match="not a liqgpu store; refusing"):
        publish(local, url, overwrite=True)
    with pytest.raises(InputError, match="not a liqgpu store"):
        open_store(url)
    with pytest.raises(InputError, match="not a liqgpu store"):
        publish(tmp_path, "memory://x/y.zarr")
    fs.rm_file(f"{root}/zarr.json")  # other objects under the prefix, no store: left alone
    fs.pipe_file(f"{root}/notes.txt", b"someone else's")
    with pytest.raises(InputError, match="objects exist under this prefix"):
        publish(local, url, overwrite=True)
    assert fs.cat_file(f"{root}/notes.txt") == b"someone else's"


def test_cli_estimate_info_render_publish_on_a_url(local, url, tmp_path):
    s = liqgpu.synthetic_series(days=1, step="5min", seed=4)
    bars = tmp_path / "bars.parquet"
    import pandas as pd

    pd.DataFrame({"time": s.time, **s.columns}).to_parquet(bars)
    run = CliRunner().invoke
    r = run(main, ["estimate", str(bars), "--out", url, "--backend", "numpy", "--every", "1h"])
    assert r.exit_code == 0, r.output
    ref = liqgpu.estimate(s, every="1h", backend="numpy")
    np.testing.assert_array_equal(open_store(url)["intensity"].values, ref["intensity"].values)
    r = run(main, ["info", url, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["dims"]["time"] == 24
    png = tmp_path / "h.png"
    r = run(main, ["render", url, "--out", str(png), "--width", "800", "--height", "450"])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run(main, ["estimate", str(bars), "--out", url, "--backend", "numpy"])
    assert r.exit_code == 2 and "already exists" in r.output
    r = run(main, ["update", url, str(bars)])
    assert r.exit_code == 2 and "cannot be updated in place" in r.output
    r = run(main, ["publish", str(local), url, "--overwrite"])
    assert r.exit_code == 0 and "published" in r.output
    assert open_store(url).sizes["time"] == open_store(local).sizes["time"]
    r = run(main, ["publish", str(local), str(tmp_path / "copy.zarr")])
    assert r.exit_code == 2 and "not a URL" in r.output


def test_distributed_url_needs_local_workers(url):
    fleet = [liqgpu.synthetic_series(days=1, step="5min", seed=1)]
    with pytest.raises(InputError, match="local --workers only"):
        estimate_distributed(fleet, out=url, scheduler="tcp://127.0.0.1:1")
    assert objects(url) == []


def test_distributed_run_on_local_workers_published_to_a_url(url):
    pytest.importorskip("distributed")
    fleet = [liqgpu.synthetic_series(days=1, step="5min", seed=20 + i, exchange=f"e{i}")
             for i in range(2)]
    ds = estimate_distributed(fleet, out=url, workers=1, every="1h", timeout=120)
    ref = liqgpu.estimate(fleet, every="1h", backend="numpy")
    assert ds.attrs["backend"] == "numpy+dask"
    for v in ("intensity", "liquidated", "closed", "close"):
        np.testing.assert_array_equal(ds[v].values, ref[v].values, err_msg=v)


def test_publishing_a_store_onto_itself_is_refused(local):
    before = sorted(p.relative_to(local) for p in local.rglob("*"))
    for target in (local, local / "inner.zarr"):
        with pytest.raises(InputError, match="itself"):
            publish(local, f"file://{target}", overwrite=True)
    assert sorted(p.relative_to(local) for p in local.rglob("*")) == before
    assert open_store(local).sizes["time"] == 48


def test_an_upload_cut_off_mid_object_leaves_nothing_and_can_be_redone(local, tmp_path,
                                                                        monkeypatch):
    """Ctrl-C while an object is being written (a file:// target): that object, the others and
    the folders made for them go, so publishing again works (it was refused: 'objects exist
    under this prefix'). A missing source is said to be missing."""
    fs = fsspec.filesystem("file")
    real_put = type(fs).put_file
    n = []

    def cut(self, lpath, rpath, **kw):
        n.append(rpath)
        if len(n) == 12:
            with open(rpath, "wb") as f:  # part of the object is there when the interrupt lands
                f.write(b"partial")
            raise KeyboardInterrupt
        return real_put(self, lpath, rpath, **kw)

    monkeypatch.setattr(type(fs), "put_file", cut)
    url = f"file://{tmp_path}/pub.zarr"
    with pytest.raises(KeyboardInterrupt):
        publish(local, url)
    assert not (tmp_path / "pub.zarr").exists()
    monkeypatch.setattr(type(fs), "put_file", real_put)
    publish(local, url)
    assert open_store(url).sizes["time"] == open_store(local).sizes["time"]
    with pytest.raises(InputError, match="nope.zarr: no such store"):
        publish(tmp_path / "nope.zarr", f"file://{tmp_path}/other.zarr")
