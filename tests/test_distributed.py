"""Distributed runs (liqgpu.distributed): one Dask task per series, equal to a one-process run.

The cluster is real (two single-threaded worker processes on 127.0.0.1) and every wait has a
timeout. Nothing here depends on timing: faults are injected through the tasks' test hook (a
marker file makes "first attempt only" deterministic).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow  # local clusters: seconds each

import liqgpu  # noqa: E402
from liqgpu.distributed import RunIncomplete, estimate_distributed, partial_path  # noqa: E402
from liqgpu.errors import InputError  # noqa: E402
from liqgpu.store import open_store  # noqa: E402
from liqgpu.synth import synthetic_series  # noqa: E402

EVERY = "15min"  # 192 buckets over 2 days: several time chunks per series
CHUNK = 56  # buckets per chunk (the zarr time chunk of this grid): partial last chunk
WAIT = 120  # seconds: the most any run here may wait for its tasks


@pytest.fixture(scope="module")
def fleet():
    """Four series: three of two days, and a shorter one starting later (padded in the store)."""
    out = [synthetic_series(days=2, step="5min", seed=i, exchange=f"ex{i}") for i in range(3)]
    late = synthetic_series(days=1, step="5min", seed=9, exchange="late",
                            start="2026-01-01T06:00:00Z")
    return out + [late]


@pytest.fixture(scope="module")
def reference(fleet, tmp_path_factory):
    """The same store written by liqgpu.estimate in this process."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    liqgpu.estimate(fleet, every=EVERY, chunk_buckets=CHUNK, backend="numpy", out=path)
    return path


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with nannies (a killed worker is restarted)."""
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 host="127.0.0.1", dashboard_address=None)
    try:
        with distributed.Client(c, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=WAIT)
        yield c
    finally:
        c.close(timeout=30)


def assert_same_store(got_path, ref_path) -> None:
    """Every variable identical, same chunking, attrs equal except creation time and backend."""
    got, ref = open_store(got_path, chunks=None), open_store(ref_path, chunks=None)
    assert sorted(got.variables) == sorted(ref.variables)
    assert dict(got.sizes) == dict(ref.sizes)
    for v in ref.variables:
        a, b = ref[v].values, got[v].values
        assert a.dtype == b.dtype, v
        np.testing.assert_array_equal(b, a, err_msg=v)
        assert got[v].attrs == ref[v].attrs, v
        assert got[v].encoding.get("chunks") == ref[v].encoding.get("chunks"), v
    skip = {"created", "backend"}
    assert {k: v for k, v in got.attrs.items() if k not in skip} == \
        {k: v for k, v in ref.attrs.items() if k not in skip}
    assert got.attrs["backend"] == "numpy+dask"
    assert not partial_path(got_path).exists()
    # the resume state (streamed from the tasks' saved states): the one-process run's, packed
    # the same way
    from liqgpu.store import read_group

    (ga, aa), (ra, rb) = read_group(got_path, "resume"), read_group(ref_path, "resume")
    assert aa == rb and list(ga) == list(ra)
    assert ga["state_level"].size > 0
    for k in ra:
        assert ga[k].dtype == ra[k].dtype and ga[k].shape == ra[k].shape, k
        np.testing.assert_array_equal(ga[k], ra[k], err_msg=k)
    assert (Path(got_path) / "resume" / "zarr.json").read_text() == \
        (Path(ref_path) / "resume" / "zarr.json").read_text()
    # the cube is not all zeros: the comparison above means something
    assert float(ref["intensity"].max()) > 0 and float(ref["liquidated"].max()) > 0


def calls_in(path) -> list[int]:
    return sorted(int(x) for x in path.read_text().split()) if path.exists() else []


def test_equals_single_process_run_on_local_workers(fleet, reference, tmp_path):
    out = tmp_path / "d.zarr"
    ds = estimate_distributed(fleet, out=out, every=EVERY, chunk_buckets=CHUNK, workers=2,
                              timeout=WAIT)
    assert ds.sizes["series"] == 4
    assert ds.sizes["time"] > CHUNK * 3  # several chunks were written per series
    assert_same_store(out, reference)
    # the late series is padded: NaN prices and nothing added before it starts
    late = open_store(out, chunks=None).sel(series="late:BTCUSDT")
    assert np.isnan(late["close"].values[:24]).all()
    assert float(late["added"].isel(time=slice(0, 24)).sum()) == 0.0


def test_equals_single_process_run_on_a_scheduler_and_overwrites(fleet, reference, cluster,
                                                                  tmp_path):
    out = tmp_path / "d.zarr"
    liqgpu.estimate(fleet[:1], every="1h", backend="numpy", out=out)  # something to replace
    estimate_distributed(fleet, out=out, every=EVERY, chunk_buckets=CHUNK, overwrite=True,
                         scheduler=cluster.scheduler_address, timeout=WAIT)
    assert_same_store(out, reference)


def test_worker_killed_mid_run_is_retried(fleet, reference, cluster, tmp_path):
    killed = tmp_path / "killed"
    calls = tmp_path / "calls"

    def kill_once(i, name):
        with open(calls, "a") as f:
            f.write(f"{i}\n")
        if i == 1 and not killed.exists():  # first attempt only: SIGKILL this worker process
            killed.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    out = tmp_path / "d.zarr"
    estimate_distributed(fleet, out=out, every=EVERY, chunk_buckets=CHUNK,
                         scheduler=cluster.scheduler_address, timeout=WAIT, _on_series=kill_once)
    assert killed.exists()
    assert calls_in(calls).count(1) == 2  # the killed task ran again (on a restarted worker)
    assert_same_store(out, reference)
    with distributed.Client(cluster.scheduler_address, timeout=30, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=WAIT)  # the nanny brought the worker back


def test_resume_skips_completed_series(fleet, reference, cluster, tmp_path, caplog):
    out = tmp_path / "d.zarr"
    calls = tmp_path / "calls"

    def fail_series_2(i, name):
        if i == 2:
            raise RuntimeError("injected failure")
        with open(calls, "a") as f:
            f.write(f"{i}\n")

    with pytest.raises(RunIncomplete, match=r"1 of 4 series failed.*--resume \(resume=True\)"):
        estimate_distributed(fleet, out=out, every=EVERY, chunk_buckets=CHUNK, retries=0,
                             scheduler=cluster.scheduler_address, timeout=WAIT,
                             _on_series=fail_series_2)
    assert not out.exists()  # nothing where the user asked for a store
    partial = partial_path(out)
    assert sorted(p.name for p in (partial / "done").glob("*.json")) == \
        ["0.json", "1.json", "3.json"]
    assert calls_in(calls) == [0, 1, 3]

    # other inputs cannot resume it (and nothing is changed)
    with pytest.raises(InputError, match="unfinished run there was for other series"):
        estimate_distributed(fleet, out=out, every="1h", resume=True,
                             scheduler=cluster.scheduler_address, timeout=WAIT)
    assert (partial / "done" / "0.json").exists()

    calls.unlink()

    def record(i, name):
        with open(calls, "a") as f:
            f.write(f"{i}\n")

    with caplog.at_level(logging.INFO, logger="liqgpu.distributed"):
        estimate_distributed(fleet, out=out, every=EVERY, chunk_buckets=CHUNK, resume=True,
                             scheduler=cluster.scheduler_address, timeout=WAIT,
                             _on_series=record)
    assert calls_in(calls) == [2]  # only the failed series was computed again
    assert "3 of 4 series already complete" in caplog.text
    assert_same_store(out, reference)


def test_a_new_run_discards_an_unfinished_one(fleet, cluster, tmp_path):
    out = tmp_path / "d.zarr"

    def fail_late(i, name):
        if i == 3:
            raise RuntimeError("injected failure")

    with pytest.raises(RunIncomplete):
        estimate_distributed(fleet, out=out, every=EVERY, chunk_buckets=CHUNK, retries=0,
                             scheduler=cluster.scheduler_address, timeout=WAIT,
                             _on_series=fail_late)
    # a new run without resume starts over and discards the partial one
    estimate_distributed(fleet[:3], out=out, every=EVERY, chunk_buckets=CHUNK,
                         scheduler=cluster.scheduler_address, timeout=WAIT)
    assert open_store(out).sizes["series"] == 3
    assert not partial_path(out).exists()


# -- bad input: one clear InputError, before any work ---------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_named(fleet, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    out = tmp_path / "d.zarr"
    with pytest.raises(InputError, match=f"--scheduler {address}: cannot connect"):
        estimate_distributed(fleet[:1], out=out, scheduler=address, connect_timeout=2)
    assert list(tmp_path.iterdir()) == []  # neither the store nor a partial run
    # not an address at all: said at once (a half-made client hung 20 s and printed a traceback)
    import time

    t = time.monotonic()
    with pytest.raises(InputError, match="--scheduler foo: not a scheduler address; give "
                                         "tcp://HOST:PORT"):
        estimate_distributed(fleet[:1], out=out, scheduler="foo")
    assert time.monotonic() - t < 5 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_workers_must_be_at_least_one(fleet, tmp_path, workers):
    with pytest.raises(InputError, match="--workers"):
        estimate_distributed(fleet[:1], out=tmp_path / "d.zarr", workers=workers)


def test_existing_store_needs_overwrite(fleet, tmp_path):
    out = tmp_path / "d.zarr"
    out.mkdir()
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        estimate_distributed(fleet[:1], out=out, workers=1)


def test_duplicate_series_names(fleet, tmp_path):
    twin = synthetic_series(days=1, step="5min", seed=5, exchange="ex0")
    with pytest.raises(InputError, match="ex0:BTCUSDT given twice"):
        estimate_distributed([fleet[0], twin], out=tmp_path / "d.zarr", workers=1)


def test_workers_and_scheduler_together(fleet, tmp_path):
    with pytest.raises(InputError, match="not both"):
        estimate_distributed(fleet[:1], out=tmp_path / "d.zarr", workers=2,
                             scheduler="tcp://127.0.0.1:8786")


def test_cuda_cluster_without_dask_cuda(fleet, tmp_path):
    if subprocess.run([sys.executable, "-c", "import dask_cuda"],
                      capture_output=True).returncode == 0:
        pytest.skip("dask-cuda is installed here")
    with pytest.raises(InputError, match="needs dask-cuda"):
        estimate_distributed(fleet[:1], out=tmp_path / "d.zarr", cluster="cuda")
    assert list(tmp_path.iterdir()) == []


def test_cli_estimate_with_workers_equals_single_process(tmp_path):
    import pandas as pd
    import xarray as xr
    from click.testing import CliRunner

    from liqgpu.cli import main

    files = []
    for i in range(2):
        s = liqgpu.synthetic_series(days=1, step="5min", seed=40 + i, exchange="ex",
                                    symbol=f"S{i}")
        f = tmp_path / f"s{i}.parquet"
        pd.DataFrame({"time": s.time, **s.columns}).assign(exchange="ex", symbol=f"S{i}") \
            .to_parquet(f)
        files.append(str(f))
    one, dist = tmp_path / "one.zarr", tmp_path / "dist.zarr"
    r = CliRunner().invoke(main, ["estimate", *files, "-o", str(one), "--backend", "numpy"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["estimate", *files, "-o", str(dist), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "(Dask, 2 series)" in r.output
    a, b = xr.open_zarr(one), xr.open_zarr(dist)
    for v in ("intensity", "liquidated", "closed", "added", "close"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    r = CliRunner().invoke(main, ["estimate", *files, "-o", str(tmp_path / "x.zarr"), "--resume"])
    assert r.exit_code == 2 and "--resume: only with --workers" in r.output


def test_distributed_store_can_be_updated_exactly(tmp_path):
    from liqgpu.updating import update

    fleet = [liqgpu.synthetic_series(days=1, step="5min", seed=60 + i, exchange="ex",
                                     symbol=f"U{i}") for i in range(2)]
    grid = "log:20000:200000:10"
    out = tmp_path / "d.zarr"
    estimate_distributed([s.slice(0, 200) for s in fleet], out=out, grid=grid, every="30min",
                         workers=1, timeout=120)
    got = update(out, [s.slice(190, len(s)) for s in fleet])
    ref = liqgpu.estimate(fleet, grid=grid, every="30min", backend="numpy")
    for v in ("intensity", "liquidated", "closed", "added", "expired", "close"):
        a, b = got[v].values.astype(float), ref[v].values.astype(float)
        assert np.nanmax(np.abs(a - b)) <= 1e-9 * np.nanmax(np.abs(b)), v


def test_realized_events_are_binned_as_in_one_process(fleet, cluster, tmp_path):
    import pandas as pd

    rng = np.random.default_rng(5)
    rows = []
    for s in fleet[:2] + [fleet[3]]:  # two full series and the late one
        j = rng.integers(0, len(s), 40)
        rows.append(pd.DataFrame({
            "time": pd.to_datetime(s.time[j], utc=True), "exchange": s.exchange,
            "symbol": s.symbol, "side": rng.choice(["long", "short"], j.size),
            "price": s["close"][j] * rng.uniform(0.99, 1.01, j.size),
            "notional": rng.uniform(1e3, 1e5, j.size)}))
    rows.append(pd.DataFrame({"time": pd.to_datetime([fleet[0].time[5]], utc=True),
                              "exchange": "nowhere", "symbol": "X", "side": ["long"],
                              "price": [100.0], "notional": [1.0]}))  # matches no series
    ev = pd.concat(rows, ignore_index=True).sort_values("time", ignore_index=True)
    ref, out = tmp_path / "ref.zarr", tmp_path / "d.zarr"
    liqgpu.estimate(fleet, every=EVERY, chunk_buckets=CHUNK, backend="numpy", out=ref,
                    realized=ev, allow_unmatched=True)
    estimate_distributed(fleet, out=out, every=EVERY, chunk_buckets=CHUNK, realized=ev,
                         scheduler=cluster.scheduler_address, timeout=WAIT,
                         allow_unmatched=True)
    assert_same_store(out, ref)
    got = open_store(out, chunks=None)
    summary = got.attrs["realized_summary"]
    assert summary["events"] == 121 and summary["binned"] == 120
    total = float(got["realized"].sum(dtype="float64"))
    assert total == pytest.approx(ev.loc[ev["exchange"] != "nowhere", "notional"].sum(),
                                  rel=1e-6)
    assert float(got["realized"].sel(series="ex2:BTCUSDT").sum()) == 0.0


def test_without_dask_distributed_installed(fleet, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(InputError, match=r"pip install 'liqgpu\[dist\]'"):
        estimate_distributed(fleet[:1], out=tmp_path / "d.zarr", workers=1)
    assert list(tmp_path.iterdir()) == []


def test_saved_state_headers_are_read_without_the_data(tmp_path):
    from liqgpu.distributed import _npz_heads

    f = tmp_path / "0.state.npz"
    np.savez(f, level=np.zeros(7), cell=np.arange(7, dtype=np.int64),
             kd=np.zeros((7, 2), dtype=np.int8), empty=np.zeros(0, dtype=np.float32))
    assert _npz_heads(f) == {"level": ((7,), np.dtype(np.float64)),
                             "cell": ((7,), np.dtype(np.int64)),
                             "kd": ((7, 2), np.dtype(np.int8)),
                             "empty": ((0,), np.dtype(np.float32))}


def test_an_interrupted_run_says_what_is_kept_and_how_to_go_on(fleet, tmp_path, monkeypatch,
                                                              caplog):
    """Ctrl-C (or SIGTERM) while the tasks run: the command says how many series are complete,
    where they are kept and that --resume continues (it said only 'Aborted!')."""
    import liqgpu.distributed as D

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(D, "_run_tasks", interrupted)
    out = tmp_path / "d.zarr"
    with caplog.at_level("WARNING"), pytest.raises(KeyboardInterrupt):
        estimate_distributed(fleet[:2], out=out, workers=1, every=EVERY, timeout=WAIT)
    assert "interrupted: 0 of 2 series complete, kept in" in caplog.text
    assert "with --resume to compute only the others" in caplog.text
    assert not out.exists()
