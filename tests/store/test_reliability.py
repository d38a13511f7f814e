"""Issue 12: nothing lost, nothing outside --out, no traceback.

Store life (defects 1-3, 10, 17): a SIGKILL at every commit point of every write path leaves the
old or the new store at the target (readable, equal to one of the two) and the next run cleans
what was left; two updates of one store run one after the other. Damaged stores (9, 12, 15) are
one sentence naming the store and the array, exit 2.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import liqgpu
from liqgpu.cli import main
from liqgpu.errors import InputError

from helpers import make_series, random_market

GRID = "log:5:5000:10"
REPO = Path(liqgpu.__file__).resolve().parents[1]


def market(seed=11, n=200):
    d, e = random_market(seed, n, nan_rows=0.0)
    return make_series(d["close"], d["oi"], high=d["high"], low=d["low"], open_=d["open_"],
                       extra=e, exchange="ex", symbol="BTC")


def write_bars(s, path, a=0, b=None):
    b = len(s) if b is None else b
    pd.DataFrame({"time": s.time[a:b], **{k: v[a:b] for k, v in s.columns.items()}}) \
        .assign(exchange="ex", symbol="BTC").to_parquet(path)
    return path


@pytest.fixture()
def bars(tmp_path):
    s = market()
    return (s, write_bars(s, tmp_path / "a.parquet", 0, 120),
            write_bars(s, tmp_path / "b.parquet", 110, 160),
            write_bars(s, tmp_path / "c.parquet", 150, 200))


def cli(*args, env=None, timeout=120):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LIQGPU_CRASH", "LIQGPU_PAUSE"))}
    e.update(env or {})
    e["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-c", "from liqgpu.cli import main; main()", *args],
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(*args, env=None):
    p = cli(*args, env=env)
    out, err = p.communicate(timeout=120)
    return p.returncode, out + err


def run_here(*args):
    """The same command in this process (fast: no interpreter start)."""
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


def estimate_args(src, out, every="15min", extra=()):
    return ["estimate", str(src), "-o", str(out), "--every", every, "--grid", GRID,
            "--backend", "numpy", *extra]


def leftovers(target: Path):
    return sorted(p.name for p in target.parent.glob(f".{target.name}.*"))


def every_of(path):
    return liqgpu.open_store(path).attrs["every"]


# -- defects 3 and 17: estimate --overwrite, estimate to a new path ------------------------------
@pytest.mark.parametrize("point,no_exchange", [
    ("estimate-writing", False), ("before-commit", False), ("after-exchange", False),
    ("after-aside", True), ("after-commit", True)])
def test_killed_estimate_overwrite_leaves_old_or_new(tmp_path, bars, point, no_exchange):
    _, a, _, _ = bars
    out = tmp_path / "s.zarr"
    assert run_here(*estimate_args(a, out, "15min"))[0] == 0
    env = {"LIQGPU_CRASH_AT": point}
    if no_exchange:
        env["LIQGPU_NO_RENAME_EXCHANGE"] = "1"
    rc, text = run(*estimate_args(a, out, "30min", ["--overwrite"]), env=env)
    assert rc == -9, text
    # after-aside: the target is gone until the next run restores it (what a reader does)
    assert every_of(out) in ("15m", "30m")
    if point in ("estimate-writing", "before-commit", "after-aside"):
        assert every_of(out) == "15m"
    else:
        assert every_of(out) == "30m"
    assert leftovers(out) == []  # open_store cleaned what the killed run left
    assert run_here(*estimate_args(a, out, "1h", ["--overwrite"]))[0] == 0
    assert every_of(out) == "1h" and leftovers(out) == []


def test_killed_first_estimate_leaves_nothing_and_next_run_cleans(tmp_path, bars):
    _, a, _, _ = bars
    out = tmp_path / "s.zarr"
    rc, _ = run(*estimate_args(a, out), env={"LIQGPU_CRASH_AT": "before-commit"})
    assert rc == -9 and not out.exists()
    assert leftovers(out)  # the killed run's .s.zarr.tmp-* folder
    assert run_here(*estimate_args(a, out))[0] == 0
    assert leftovers(out) == []


def test_sigterm_of_estimate_removes_its_temporary(tmp_path, bars):
    _, a, _, _ = bars
    out = tmp_path / "s.zarr"
    p = cli(*estimate_args(a, out), env={"LIQGPU_PAUSE_AT": "estimate-writing",
                                         "LIQGPU_PAUSE_S": "30"})
    deadline = time.time() + 60
    while not list(tmp_path.glob(".s.zarr.lock")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    p.terminate()
    p.communicate(timeout=60)
    assert p.returncode != 0 and not out.exists()
    assert leftovers(out) == []


# -- defects 1, 2 and update's crash points ------------------------------------------------------
@pytest.mark.parametrize("point,no_exchange", [
    ("update-cloned", False), ("before-commit", False), ("after-exchange", False),
    ("after-aside", True)])
def test_killed_update_leaves_old_or_new(tmp_path, bars, point, no_exchange):
    s, a, b, _ = bars
    out = tmp_path / "s.zarr"
    assert run_here(*estimate_args(a, out))[0] == 0
    n_old = liqgpu.open_store(out).sizes["time"]
    env = {"LIQGPU_CRASH_AT": point}
    if no_exchange:
        env["LIQGPU_NO_RENAME_EXCHANGE"] = "1"
    rc, text = run("update", str(out), str(b), env=env)
    assert rc == -9, text
    n = liqgpu.open_store(out).sizes["time"]
    assert (n > n_old) if point == "after-exchange" else (n == n_old)
    assert leftovers(out) == []
    assert run_here("update", str(out), str(b))[0] == 0
    t = liqgpu.open_store(out)["time"].values
    assert (np.diff(t) > np.timedelta64(0)).all() and t.size > n_old


def test_two_updates_at_once_run_one_after_the_other(tmp_path, bars):
    s, a, b, c = bars
    out = tmp_path / "s.zarr"
    assert run_here(*estimate_args(a, out))[0] == 0
    # A holds the store (paused after cloning it); B waits for A's swap, then appends onto it
    pa = cli("update", str(out), str(b), env={"LIQGPU_PAUSE_AT": "update-cloned",
                                              "LIQGPU_PAUSE_S": "2"})
    deadline = time.time() + 60
    while not list(tmp_path.glob(".s.zarr.upd-*")) and time.time() < deadline:
        time.sleep(0.02)
    clone = list(tmp_path.glob(".s.zarr.upd-*"))
    assert clone
    # a third writer that will not wait fails in one sentence, and leaves A's clone alone
    rc, text = run("update", str(out), str(c), env={"LIQGPU_LOCK_WAIT": "0"})
    assert rc == 2 and "another liqgpu process" in text and "Traceback" not in text, text
    assert all(p.exists() for p in clone)
    pb = cli("update", str(out), str(c), env={"LIQGPU_LOCK_WAIT": "60"})
    ra, rb = pa.communicate(timeout=120), pb.communicate(timeout=120)
    assert pa.returncode == 0, ra
    # B ran after A: its bars 150.. overlap A's result and extend it
    assert pb.returncode == 0, rb
    got = liqgpu.open_store(out)
    t = got["time"].values
    assert (np.diff(t) > np.timedelta64(0)).all()
    ref = liqgpu.estimate(s, every="15min", grid=GRID, backend="numpy")
    np.testing.assert_array_equal(t, ref["time"].values)
    np.testing.assert_allclose(got["intensity"].values, ref["intensity"].values, rtol=1e-6,
                               atol=1e-3)
    assert leftovers(out) == []


def test_sigterm_right_after_the_clone_leaves_no_clone(tmp_path, bars):
    """SIGTERM while an update holds its fresh clone (paused there): the clone is removed on
    the way out and the store is the old one (the pause point sat outside the clean-up)."""
    import signal

    _, a, b, _ = bars
    out = tmp_path / "s.zarr"
    assert run_here(*estimate_args(a, out))[0] == 0
    before = liqgpu.open_store(out).load()
    p = cli("update", str(out), str(b), env={"LIQGPU_PAUSE_AT": "update-cloned",
                                             "LIQGPU_PAUSE_S": "20"})
    deadline = time.time() + 60
    while not list(tmp_path.glob(".s.zarr.upd-*")) and time.time() < deadline:
        time.sleep(0.02)
    assert list(tmp_path.glob(".s.zarr.upd-*"))
    time.sleep(0.3)  # into the pause
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode != 0
    assert list(tmp_path.glob(".s.zarr.upd-*")) == [] and leftovers(out) == []
    assert liqgpu.open_store(out).load().identical(before)


@pytest.mark.parametrize("point", ["before-commit", "after-exchange", "after-aside"])
def test_killed_distributed_commit_leaves_old_or_new(tmp_path, bars, point):
    _, a, _, _ = bars
    out = tmp_path / "s.zarr"
    assert run_here(*estimate_args(a, out))[0] == 0
    partial = tmp_path / ".s.zarr.dist-partial"
    assert run_here(*estimate_args(a, tmp_path / "new.zarr", "30min"))[0] == 0
    partial.mkdir()
    os.replace(tmp_path / "new.zarr", partial / "store.zarr")
    env = {"LIQGPU_CRASH_AT": point, "PYTHONPATH": str(REPO),
           **({"LIQGPU_NO_RENAME_EXCHANGE": "1"} if point == "after-aside" else {})}
    p = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from liqgpu.distributed import _commit; "
                        "_commit(Path(sys.argv[1]), Path(sys.argv[2]))", str(partial), str(out)],
                       env={**os.environ, **env}, capture_output=True, text=True)
    assert p.returncode == -9, p.stderr
    assert every_of(out) == ("30m" if point == "after-exchange" else "15m")
    assert [x for x in leftovers(out) if "dist-partial" not in x] == []


def test_publish_waits_for_the_store_lock(tmp_path, bars, monkeypatch):
    from liqgpu.store.remote import publish
    from liqgpu.store.atomic import store_lock

    _, a, _, _ = bars
    out = tmp_path / "s.zarr"
    liqgpu.estimate(liqgpu.load_series(a), every="15min", grid=GRID, backend="numpy", out=out)
    monkeypatch.setenv("LIQGPU_LOCK_WAIT", "0")
    with store_lock(out):
        with pytest.raises(InputError, match="another liqgpu process"):
            publish(out, f"file://{tmp_path / 'pub.zarr'}")
    publish(out, f"file://{tmp_path / 'pub.zarr'}")
    assert liqgpu.open_store(f"file://{tmp_path / 'pub.zarr'}").sizes["time"] > 0


# -- defect 10: disk full --------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["estimate", "update"])
def test_disk_full_is_one_sentence_and_keeps_the_old_store(tmp_path, bars, monkeypatch, command):
    import liqgpu.store.writer as store  # estimate's and update's finish()

    _, a, b, _ = bars
    out = tmp_path / "s.zarr"
    liqgpu.estimate(liqgpu.load_series(a), every="15min", grid=GRID, backend="numpy", out=out)
    before = liqgpu.open_store(out).load()

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".s.zarr.tmp-x"))

    monkeypatch.setattr(store, "finish", full)
    args = estimate_args(a, out, "30min", ["--overwrite"]) if command == "estimate" \
        else ["update", str(out), str(b)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "no space left" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    after = liqgpu.open_store(out).load()
    assert after.identical(before) and leftovers(out) == []


def test_disk_full_in_a_chunk_write_names_the_store(tmp_path, bars, monkeypatch):
    """A chunk file's write fails with no file name (os.writev on a full disk): the sentence
    names the store the user gave, not 'the output folder'."""
    import liqgpu.store.direct as direct

    _, a, _, _ = bars
    out = tmp_path / "s.zarr"

    def full(fd, *pieces):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct, "_write_all", full)
    r = CliRunner().invoke(main, estimate_args(a, out, "30min", []))
    assert r.exit_code == 2, r.output
    assert f"{out}: no space left on the device" in r.output and "Traceback" not in r.output
    assert not out.exists() and leftovers(out) == []


# -- defects 9, 12, 15 and 7: damaged stores -----------------------------------------------------
@pytest.fixture()
def store(tmp_path, bars):
    s, a, b, _ = bars
    out = tmp_path / "s.zarr"
    liqgpu.estimate(liqgpu.load_series(a), every="15min", grid=GRID, backend="numpy", out=out)
    return out, b


READERS = [
    ("render", lambda st, tmp: ["render", str(st), "-o", str(tmp / "x.png")]),
    ("map", lambda st, tmp: ["map", str(st), "-o", str(tmp / "m.png")]),
    ("levels", lambda st, tmp: ["levels", str(st)]),
    ("info", lambda st, tmp: ["info", str(st)]),
    ("info --verify", lambda st, tmp: ["info", "--verify", str(st)]),
    ("evaluate", lambda st, tmp: ["evaluate", str(st), "--realized", str(agg_file(tmp))]),
]


def agg_file(tmp):
    s = market()
    p = tmp / "agg.csv"
    pd.DataFrame({"time": s.time[::15].astype("datetime64[ms]").astype(np.int64),
                  "long": 1.0, "short": 2.0}).to_csv(p, index=False)
    return p


def chunk_files(folder: Path) -> list:
    """The chunk files of an array folder (nested ``c/0/1`` or flat ``c.0.1`` keys)."""
    nested = [p for p in (folder / "c").rglob("*") if p.is_file()] if (folder / "c").is_dir() \
        else []
    return nested + [p for p in folder.glob("c.*") if p.is_file()]


def chunk_of(store, array):
    files = sorted(chunk_files(store / array), key=lambda p: -p.stat().st_size)
    return files[0] if files else None


def assert_one_sentence(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, r.output


def as_pre_manifest_store(out: Path) -> None:
    """What a store written before the manifest looks like: no manifest file, and no root
    attribute saying it had one."""
    import json

    from liqgpu.store.integrity import MANIFEST, MANIFEST_ATTR

    (out / MANIFEST).unlink()
    doc = json.loads((out / "zarr.json").read_text())
    del doc["attributes"][MANIFEST_ATTR]
    (out / "zarr.json").write_text(json.dumps(doc))


def garble(f: Path):
    b = bytearray(f.read_bytes())
    for i in range(8, len(b), 7):
        b[i] ^= 0x5A
    f.write_bytes(bytes(b))


def test_manifest_and_checksums_are_written(store):
    from liqgpu.store.integrity import MANIFEST, verify

    out, _ = store
    man = json_load(out / MANIFEST)
    assert "intensity" in man["arrays"] and man["arrays"]["intensity"]
    assert '"crc32c"' in (out / "intensity" / "zarr.json").read_text()
    assert '"crc32c"' in (out / "time" / "zarr.json").read_text()
    rep = verify(out)
    assert rep["manifest"] and rep["arrays"] >= 15
    r = CliRunner().invoke(main, ["info", "--verify", str(out)])
    assert r.exit_code == 0 and "intact" in r.output, r.output


def json_load(p):
    import json

    return json.loads(Path(p).read_text())


@pytest.mark.parametrize("damage", ["garbage", "truncated", "deleted-chunk", "deleted-array"])
@pytest.mark.parametrize("reader", READERS, ids=[r[0] for r in READERS])
def test_damaged_store_is_one_sentence_naming_the_array(tmp_path, store, damage, reader):
    import shutil

    out, _ = store
    f = chunk_of(out, "intensity")
    if damage == "garbage":
        garble(f)
    elif damage == "truncated":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "deleted-chunk":
        f.unlink()
    else:
        shutil.rmtree(out / "intensity")
    r = CliRunner().invoke(main, reader[1](out, tmp_path))
    if damage == "garbage" and reader[0] in ("info", "evaluate"):  # may not read that chunk
        assert r.exit_code in (0, 2)
        return
    assert_one_sentence(r, str(out), "intensity")


@pytest.mark.parametrize("array", ["intensity", "time", "resume/pack_float64"])
def test_update_on_a_damaged_store_is_one_sentence(store, array):
    import shutil

    out, b = store
    f = chunk_of(out, array)
    f.unlink() if array != "intensity" else shutil.rmtree(out / array)
    before = sorted(p.name for p in out.rglob("*"))
    r = CliRunner().invoke(main, ["update", str(out), str(b)])
    assert_one_sentence(r, str(out), array.split("/")[0])
    assert sorted(p.name for p in out.rglob("*")) == before


def test_garbage_chunk_of_a_store_without_manifest_is_one_sentence(tmp_path, store):
    """Stores written before the manifest still read; their checksums still catch garbage."""
    out, b = store
    as_pre_manifest_store(out)
    assert liqgpu.open_store(out).sizes["time"] > 0
    garble(chunk_of(out, "intensity"))
    for args in (["render", str(out), "-o", str(tmp_path / "x.png")],
                 ["info", "--verify", str(out)]):
        r = CliRunner().invoke(main, args)
        assert_one_sentence(r, "intensity", "damaged")
    garble(chunk_of(out, "time"))
    for args in (["update", str(out), str(b)], ["levels", str(out)]):
        r = CliRunner().invoke(main, args)
        assert_one_sentence(r, "array time", "damaged")


def test_lost_manifest_and_garbled_array_metadata_are_damage(tmp_path, store):
    """A store written with a manifest that has lost it, or whose array metadata no longer
    matches its consolidated copy (both read fine through the consolidated metadata and
    passed --verify): one sentence naming the store (not update's temporary clone) and the
    array, in every command."""
    import shutil

    from liqgpu.store.integrity import MANIFEST

    out, b = store
    keep = tmp_path / "keep.zarr"
    shutil.copytree(out, keep)
    (out / "intensity" / "zarr.json").write_text("[]")
    for args in (["info", "--verify", str(out)], ["render", str(out), "-o", str(tmp_path / "x.png")],
                 ["levels", str(out)], ["update", str(out), str(b)]):
        r = CliRunner().invoke(main, args)
        assert_one_sentence(r, f"{out}: array intensity is damaged", "consolidated metadata")
    shutil.rmtree(out)
    shutil.copytree(keep, out)
    (out / MANIFEST).unlink()
    for args in (["info", "--verify", str(out)], ["levels", str(out)]):
        r = CliRunner().invoke(main, args)
        assert_one_sentence(r, f"{out}: its manifest {MANIFEST} is missing")
    # the marker is the store's own bookkeeping: a copy made with xarray (no manifest) reads
    from liqgpu.store.integrity import MANIFEST_ATTR

    ds = liqgpu.open_store(keep)
    assert MANIFEST_ATTR not in ds.attrs
    ds.isel(time=slice(0, 4)).to_zarr(tmp_path / "sub.zarr", zarr_format=3, consolidated=True)
    r = CliRunner().invoke(main, ["info", str(tmp_path / "sub.zarr")])
    assert r.exit_code == 0, r.output


def test_resume_group_that_does_not_match_the_store_is_refused(store):
    """Defect 7: a resume group read as zeros (1970) is refused, not recomputed from 1970."""
    import zarr

    out, b = store
    as_pre_manifest_store(out)  # an older store: only the consistency check can tell
    for folder in (out / "resume").iterdir():
        if folder.is_dir():
            for f in chunk_files(folder):
                f.unlink()
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["update", str(out), str(b)])
    assert_one_sentence(r, "resume", "damaged")
    assert time.perf_counter() - t0 < 10
    assert zarr.open_group(str(out), mode="r")  # untouched


def test_plain_xarray_store_with_liqgpu_format_is_one_sentence(tmp_path, bars):
    import xarray as xr

    p = tmp_path / "plain.zarr"
    from liqgpu.store import _quiet_zarr

    with _quiet_zarr():
        xr.Dataset({"x": ("t", np.arange(3.0))}, attrs={"format": "liqgpu"}).to_zarr(
            p, zarr_format=3, consolidated=True)
    ev = tmp_path / "ev.csv"
    ev.write_text("time,long,short\n2024-01-01,1,2\n")
    for args in (["info", str(p)], ["evaluate", str(p), "--realized", str(ev)],
                 ["levels", str(p)], ["update", str(p), str(bars[2])]):
        r = CliRunner().invoke(main, args)
        assert_one_sentence(r, str(p), "not a liqgpu store")


def test_store_missing_time_or_intensity_is_one_sentence(tmp_path, store):
    import shutil

    import zarr

    out, b = store
    as_pre_manifest_store(out)
    for name in ("time", "intensity"):
        shutil.rmtree(out / name)
    from liqgpu.store import _quiet_zarr

    with _quiet_zarr():
        zarr.consolidate_metadata(str(out), zarr_format=3)
    r = CliRunner().invoke(main, ["update", str(out), str(b)])
    assert_one_sentence(r, str(out), "missing")


# -- defect 16: evaluate --realized reads events as estimate --realized does ---------------------
def events_file(path, ds, unit="ms", symbol="BTC", exchange="ex"):
    t = ds["time"].values.astype("datetime64[ms]").astype(np.int64)[1:6]
    price = ds["close"].values[0, 1:6]
    tv = t // 1000 if unit == "s" else t
    pd.DataFrame({"time": tv, "exchange": exchange, "symbol": symbol, "side": "long",
                  "price": price, "notional": 1000.0}).to_csv(path, index=False)
    return path


def test_evaluate_refuses_another_symbols_events_and_reads_seconds(tmp_path, store):
    out, _ = store
    ds = liqgpu.open_store(out)
    r = CliRunner().invoke(main, ["evaluate", str(out), "--realized",
                                  str(events_file(tmp_path / "eth.csv", ds, symbol="ETHUSDT"))])
    assert_one_sentence(r, "eth.csv", "ethusdt", "not of the store's")
    res = {}
    for unit in ("ms", "s"):
        p = events_file(tmp_path / f"ev_{unit}.csv", ds, unit=unit)
        r = CliRunner().invoke(main, ["evaluate", str(out), "--realized", str(p), "--json",
                                      str(tmp_path / f"{unit}.json")])
        assert r.exit_code == 0, r.output
        res[unit] = json_load(tmp_path / f"{unit}.json")
    drop = ("realized", "store", "source")
    clean = {u: {k: v for k, v in d.items() if k not in drop} for u, d in res.items()}
    assert clean["s"] == clean["ms"]
    # a file with the store's events and another series' is refused unless --allow-unmatched
    mixed = pd.concat([pd.read_csv(events_file(tmp_path / "a.csv", ds)),
                       pd.read_csv(events_file(tmp_path / "b.csv", ds, symbol="ETHUSDT"))])
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    r = CliRunner().invoke(main, ["evaluate", str(out), "--realized", str(tmp_path / "mixed.csv")])
    assert_one_sentence(r, "mixed.csv", "5 of 10 events", "--allow-unmatched")
    r = CliRunner().invoke(main, ["evaluate", str(out), "--realized", str(tmp_path / "mixed.csv"),
                                  "--allow-unmatched", "--json", str(tmp_path / "mixed.json")])
    assert r.exit_code == 0, r.output
    got = json_load(tmp_path / "mixed.json")
    assert {k: v for k, v in got.items() if k not in drop} == clean["ms"]


def test_update_after_a_200_year_gap_is_refused(tmp_path, store):
    """Defect 6 for update: bars starting long after the store's end."""
    out, _ = store
    s = market()
    far = s.time + np.timedelta64(200 * 365, "D")
    pd.DataFrame({"time": far[150:], **{k: v[150:] for k, v in s.columns.items()}}) \
        .assign(exchange="ex", symbol="BTC").to_parquet(tmp_path / "far.parquet")
    before = sorted(p.name for p in out.rglob("*"))
    r = CliRunner().invoke(main, ["update", str(out), str(tmp_path / "far.parquet")])
    assert_one_sentence(r, "far.parquet", "--max-gap")
    assert sorted(p.name for p in out.rglob("*")) == before


# -- power loss: the new store is on the disk before its name is ---------------------------------
def _record_commit_steps(monkeypatch):
    """The order of the commit's steps (flush, renames, folder syncs, deletions), recorded."""
    from liqgpu.store import atomic

    steps = []
    real = {k: getattr(atomic, k) for k in ("flush", "_sync_dir", "_exchange", "_rmtree")}
    real_replace = os.replace

    def flush(folder):
        steps.append(("flush", Path(folder).name))
        real["flush"](folder)

    def sync_dir(folder):
        steps.append(("sync_dir", Path(folder).name))
        real["_sync_dir"](folder)

    def exchange(a, b):
        ok = real["_exchange"](a, b)
        steps.append(("exchange" if ok else "no exchange", Path(a).name))
        return ok

    def rmtree(p):
        steps.append(("delete", Path(p).name))
        real["_rmtree"](p)

    def replace(a, b):  # (the stores' own renames, not those of files inside them)
        if Path(a).parent == Path(b).parent and Path(b).name.lstrip(".").startswith("s.zarr"):
            steps.append(("rename", Path(a).name, Path(b).name))
        real_replace(a, b)

    monkeypatch.setattr(atomic, "flush", flush)
    monkeypatch.setattr(atomic, "_sync_dir", sync_dir)
    monkeypatch.setattr(atomic, "_exchange", exchange)
    monkeypatch.setattr(atomic, "_rmtree", rmtree)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return steps


@pytest.mark.parametrize("command,no_exchange", [
    ("estimate", False), ("overwrite", False), ("overwrite", True), ("update", False),
    ("update", True)])
def test_commit_puts_the_new_store_on_disk_before_the_swap(tmp_path, bars, monkeypatch,
                                                            command, no_exchange):
    """Every write path flushes the new store (its files' data and names) before any rename
    points at it, syncs the folder after the rename, and only then deletes the old store: a
    power loss at any point leaves the old store or the whole new one."""
    _, a, b, _ = bars
    out = tmp_path / "s.zarr"
    if command != "estimate":
        assert run_here(*estimate_args(a, out, "15min"))[0] == 0
    if no_exchange:
        monkeypatch.setenv("LIQGPU_NO_RENAME_EXCHANGE", "1")
    steps = _record_commit_steps(monkeypatch)
    args = {"estimate": estimate_args(a, out, "15min"),
            "overwrite": estimate_args(a, out, "30min", ["--overwrite"]),
            "update": ["update", str(out), str(b)]}[command]
    rc, text = run_here(*args)
    assert rc == 0, text
    kinds = [s[0] for s in steps]
    assert kinds[0] == "flush" and steps[0][1].startswith(".s.zarr.")  # the new store's folder
    new = steps[0][1]
    swap = next(i for i, s in enumerate(steps) if s[0] == "exchange"
                or (s[0] == "rename" and s[1] == new))
    assert kinds.index("flush") < swap
    assert steps[swap + 1] == ("sync_dir", tmp_path.name)  # the rename on the disk
    deletes = [i for i, k in enumerate(kinds) if k == "delete"]
    assert all(i > swap + 1 for i in deletes)
    if command == "estimate":
        assert steps[swap] == ("rename", new, "s.zarr") and not deletes
    elif no_exchange:  # the old store aside, the new one in, then the old one deleted
        assert steps[swap - 1][0] == "rename" and steps[swap - 1][1] == "s.zarr"
        assert len(deletes) == 1 and steps[deletes[0]][1] == steps[swap - 1][2]
    else:
        assert steps[swap] == ("exchange", new) and len(deletes) == 1
    assert leftovers(out) == [] and liqgpu.open_store(out).sizes["time"] > 0


def test_flush_without_syncfs_syncs_every_file_and_folder(tmp_path, monkeypatch):
    """Where the system has no syncfs, every file and every folder of the new store is synced
    (folders after what they hold)."""
    from liqgpu.store import atomic

    root = tmp_path / "new"
    for rel in ("zarr.json", "intensity/zarr.json", "intensity/c.0.0", "resume/pack_f8/c.0"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * 10)
    synced = []
    real = atomic._fsync
    monkeypatch.setattr(atomic, "_syncfs", lambda: None)
    monkeypatch.setattr(atomic, "_fsync", lambda p: (synced.append(Path(p)), real(p)))
    atomic.flush(root)
    files = {p for p in root.rglob("*") if p.is_file()}
    folders = {p for p in root.rglob("*") if p.is_dir()} | {root}
    assert set(synced) == files | folders and len(synced) == len(files) + len(folders)
    for d in folders:  # a folder after everything in it
        assert all(synced.index(d) > synced.index(p) for p in synced if d in p.parents)


def test_failed_flush_is_one_sentence_and_keeps_the_old_store(tmp_path, bars, monkeypatch):
    """A disk that fails the flush (EIO) before the swap: one sentence, exit 2, the old store
    as it was, no temporary left."""
    from liqgpu.store import atomic

    _, a, _, _ = bars
    out = tmp_path / "s.zarr"
    assert run_here(*estimate_args(a, out, "15min"))[0] == 0
    before = liqgpu.open_store(out).load()

    def failing():
        def syncfs(fd):
            import ctypes
            ctypes.set_errno(errno.EIO)
            return -1
        return syncfs

    monkeypatch.setattr(atomic, "_syncfs", failing)
    r = CliRunner().invoke(main, estimate_args(a, out, "30min", ["--overwrite"]))
    assert_one_sentence(r, f"{out}: cannot be written", "nothing was replaced")
    assert liqgpu.open_store(out).load().identical(before) and leftovers(out) == []


def test_flush_with_syncfs_on_this_system(tmp_path):
    """On Linux the flush is one syncfs of the folder's file system, and it succeeds here."""
    from liqgpu.store import atomic

    if not sys.platform.startswith("linux"):
        pytest.skip("syncfs is Linux's")
    assert atomic._syncfs() is not None
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_bytes(b"1")
    atomic.flush(tmp_path / "new")
