"""`liqgpu update`: appending equals estimating the whole history; bad input leaves the store's
bytes unchanged; a killed update leaves the old or the new store, never a mix."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import liqgpu
from liqgpu.cli import main
from liqgpu.errors import InputError
from liqgpu.updating import update

from helpers import make_series, random_market

VARS = ("intensity", "liquidated", "added", "closed", "expired", "outside", "outside_liquidated",
        "open", "high", "low", "close", "oi")


def market(seed, n, nan_rows=0.03, **kw):
    d, e = random_market(seed, n, nan_rows=nan_rows, **kw)
    return make_series(d["close"], d["oi"], high=d["high"], low=d["low"], open_=d["open_"],
                       extra=e, exchange="ex", symbol="BTC")


def assert_same(got, ref, tol=1e-9):
    """MODEL.md's float64 tolerance; the float32 cubes may also differ by one float32 step
    (two runs whose float64 sums agree to 1e-12 can round to neighbouring float32 values: v2's
    rounding follows where the time chunks start, and an update starts its own)."""
    for v in VARS:
        a, b = got[v].values.astype(float), ref[v].values.astype(float)
        assert a.shape == b.shape, v
        scale = max(np.nanmax(np.abs(b)) if np.isfinite(b).any() else 0.0, 1e-300)
        assert np.array_equal(np.isnan(a), np.isnan(b)), v
        err = np.abs(a - b)
        if ref[v].dtype == np.float32:
            step = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float32))
            err = np.where(err <= step, 0.0, err)
        assert np.nanmax(err, initial=0.0) / scale <= tol, v
    assert (got["time"].values == ref["time"].values).all()


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), n=st.integers(40, 260), every=st.integers(1, 9),
       cuts=st.lists(st.floats(0.05, 0.95), min_size=1, max_size=3),
       overlap=st.integers(0, 12), max_age=st.sampled_from([None, "7min", "45min"]),
       nan_rows=st.sampled_from([0.0, 0.1]))
def test_updates_equal_one_estimate(tmp_path_factory, seed, n, every, cuts, overlap, max_age,
                                    nan_rows):
    s = market(seed, n, nan_rows=nan_rows)
    p = liqgpu.Params(max_age=max_age)
    ref = liqgpu.estimate(s, params=p, every=every, backend="numpy")
    grid = ref.attrs["grid"]
    ref = liqgpu.estimate(s, params=p, grid=grid, every=every, backend="numpy")
    splits = sorted({max(2, min(n - 1, int(c * n))) for c in cuts})
    out = tmp_path_factory.mktemp("u") / "s.zarr"
    liqgpu.estimate(s.slice(0, splits[0]), params=p, grid=grid, every=every, backend="numpy",
                    out=out)
    ends = splits[1:] + [n]
    for a, b in zip(splits, ends):
        got = update(out, s.slice(max(0, a - overlap), b), allow_outside=True)
    assert_same(got, ref)
    assert got.attrs["fingerprint"] == ref.attrs["fingerprint"]
    assert got.attrs["data_end"] == ref.attrs["data_end"]
    assert (got["snapshot_time"].values == ref["snapshot_time"].values).all()


def test_a_bucket_the_bars_do_not_fill_is_timed_by_its_last_bar(tmp_path):
    """5-minute bars ending at 11:40 (closing 11:45), hourly buckets: the last bucket's
    snapshot is the state after the 11:40 bar, so its snapshot_time, the store's data_end,
    `levels` and the render's title say 11:45, not the bucket's 12:00; an update that fills
    the bucket moves them to 12:00, as one estimate of all the bars has them."""
    from liqgpu.render.levels import find_levels
    from liqgpu.render.select import select

    d, e = random_market(5, 12 * 24)
    s = make_series(d["close"], d["oi"], high=d["high"], low=d["low"], open_=d["open_"],
                    extra=e, exchange="ex", symbol="BTC", step="5min")  # 00:00 .. 23:55
    t0 = s.time[0]
    part = s.slice(0, 12 * 11 + 9)  # up to 11:40, closing 11:45
    out = tmp_path / "s.zarr"
    grid = liqgpu.estimate(s, every="1h", backend="numpy").attrs["grid"]  # all the bars'
    liqgpu.estimate(part, every="1h", backend="numpy", grid=grid, out=out)
    ds = liqgpu.open_store(out)
    end = t0 + np.timedelta64(11 * 60 + 45, "m")
    assert ds.attrs["data_end"] == np.datetime_as_string(end, unit="s") + "Z"
    st = ds["snapshot_time"].values
    assert st.size == 12 and st[-1] == end and st[-2] == t0 + np.timedelta64(11, "h")
    assert (np.diff(st[:-1]) == np.timedelta64(1, "h")).all()
    top = find_levels(out, top=1)
    assert top and top[0]["time"] == ds.attrs["data_end"]
    assert select(ds).time_range == (t0, end)
    r = CliRunner().invoke(main, ["levels", str(out)])
    assert r.exit_code == 0 and f"levels at {ds.attrs['data_end']}" in r.output, r.output

    got = update(out, s.slice(12 * 11, len(s)))
    ref = liqgpu.estimate(s, every="1h", backend="numpy", grid=grid)
    assert got.attrs["data_end"] == ref.attrs["data_end"] == \
        np.datetime_as_string(t0 + np.timedelta64(1, "D"), unit="s") + "Z"
    assert (got["snapshot_time"].values == ref["snapshot_time"].values).all()
    assert got["snapshot_time"].values[-1] == t0 + np.timedelta64(1, "D")


def test_update_across_a_gap_and_twice_via_cli(tmp_path):
    s = market(7, 300, nan_rows=0.0)
    # bars 150..169 missing from the files: the update starts after a gap
    df = pd.DataFrame({"time": s.time, **{k: v for k, v in s.columns.items()}})
    a, b, c = df.iloc[:150], df.iloc[170:240], df.iloc[230:]
    for name, part in (("a", a), ("b", b), ("c", c)):
        part.assign(exchange="ex", symbol="BTC").to_parquet(tmp_path / f"{name}.parquet")
    out = tmp_path / "s.zarr"
    r = CliRunner().invoke(main, ["estimate", str(tmp_path / "a.parquet"), "-o", str(out),
                                  "--every", "20m", "--grid", "log:10:500:10", "--backend", "numpy"])
    assert r.exit_code == 0, r.output
    for name in ("b", "c"):
        r = CliRunner().invoke(main, ["update", str(out), str(tmp_path / f"{name}.parquet")])
        assert r.exit_code == 0, r.output
        assert "updated" in r.output
    full = pd.concat([a, b, c.iloc[10:]]).assign(exchange="ex", symbol="BTC")
    full.to_parquet(tmp_path / "full.parquet")
    ref = liqgpu.estimate(liqgpu.load_series(tmp_path / "full.parquet"), grid="log:10:500:10",
                          every="20m", backend="numpy")
    assert_same(liqgpu.open_store(out), ref)


@pytest.fixture()
def small_store(tmp_path):
    s = market(11, 200)
    out = tmp_path / "s.zarr"
    liqgpu.estimate(s.slice(0, 120), every="15min", grid="log:5:5000:10", backend="numpy", out=out)
    return s, out


def test_bad_updates_leave_the_store_bytes_unchanged(tmp_path, small_store):
    s, out = small_store
    before = tree_digest(out)
    other = make_series(s["close"], s["oi"], high=s["high"], low=s["low"], exchange="ex",
                        symbol="ETH")
    changed = s.slice(100, 200)
    changed.columns["close"] = changed.columns["close"].copy()
    changed.columns["close"][5] *= 1.01
    old = market(12, 50)
    cases = [
        (other.slice(100, 200), "holds series ex:BTC"),
        (changed, "disagrees with the stored"),
        (make_series(s["close"][:200], s["oi"][:200], high=s["high"][:200], low=s["low"][:200],
                     exchange="ex", symbol="BTC", kind="inverse", contract_size=10).slice(120, 200),
         "the store has linear"),
    ]
    for series, message in cases:
        with pytest.raises(InputError, match=message):
            update(out, series)
        assert tree_digest(out) == before
    with pytest.raises(InputError, match="not a liqgpu store"):
        update(tmp_path, s)
    # through the CLI: exit 2, one sentence
    f = tmp_path / "eth.csv"
    pd.DataFrame({"time": other.time, **other.columns}).to_csv(f, index=False)
    r = CliRunner().invoke(main, ["update", str(out), str(f), "--exchange", "ex", "--symbol", "ETH"])
    assert r.exit_code == 2 and "holds series ex:BTC" in r.output
    assert tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    del old


def test_levels_beyond_the_grid_are_refused_or_tracked(tmp_path):
    n = 120
    close = np.r_[np.full(60, 100.0), np.full(60, 200.0)]
    oi = np.arange(n, dtype=float) + 10
    s = make_series(close, oi, high=close * 1.001, low=close * 0.999, exchange="ex", symbol="BTC")
    out = tmp_path / "s.zarr"
    liqgpu.estimate(s.slice(0, 60), every="10min", backend="numpy", out=out)
    before = tree_digest(out)
    with pytest.raises(InputError, match="beyond the store's grid.*--allow-outside"):
        update(out, s.slice(60, n))
    assert tree_digest(out) == before
    got = update(out, s.slice(60, n), allow_outside=True)
    assert float(got["outside"].isel(time=-1).sum()) > 0


def test_follow_applies_new_files_once(tmp_path, small_store):
    s, out = small_store
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i, (a, b) in enumerate(((110, 160), (150, 200))):
        part = s.slice(a, b)
        pd.DataFrame({"time": part.time, **part.columns}).assign(exchange="ex", symbol="BTC") \
            .to_parquet(inbox / f"{i:03d}.parquet")
    r = CliRunner().invoke(main, ["update", str(out), "--follow", str(inbox), "--interval", "1s",
                                  "--max-polls", "2"])
    assert r.exit_code == 0, r.output
    assert "follow: 2 file(s) applied" in r.output
    ref = liqgpu.estimate(s, every="15min", grid=liqgpu.open_store(out).attrs["grid"],
                          backend="numpy")
    assert_same(liqgpu.open_store(out), ref)
    r = CliRunner().invoke(main, ["update", str(out), "--follow", str(inbox), "--interval", "1s",
                                  "--max-polls", "1"])
    assert "follow: 0 file(s) applied" in r.output


def _part(s, a, b, path):
    part = s.slice(a, b)
    pd.DataFrame({"time": part.time, **part.columns}).assign(exchange="ex", symbol="BTC") \
        .to_parquet(path)
    return path


def test_follow_applies_a_poll_s_files_in_bar_order_and_outlasts_bad_and_partial_ones(
        tmp_path, small_store, caplog):
    """Files named against their bars' order are applied in the bars' order; a file still
    being copied (cut short) is tried again at the next poll and applied once complete; a file
    the store refuses is logged and left alone while the others go on; the store ends equal to
    one estimate of all the bars."""
    import logging

    from liqgpu.updating import follow

    s, out = small_store
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _part(s, 150, 170, inbox / "a_late.parquet")  # named first, its bars second
    _part(s, 110, 155, inbox / "b_first.parquet")
    whole = _part(s, 165, 200, tmp_path / "c.parquet").read_bytes()
    (inbox / "c_copying.parquet").write_bytes(whole[: len(whole) // 3])  # a copy under way
    other = make_series(s["close"], s["oi"], high=s["high"], low=s["low"], exchange="ex",
                        symbol="ETH")
    pd.DataFrame({"time": other.time, **other.columns}).assign(exchange="ex", symbol="ETH") \
        .to_parquet(inbox / "d_other_symbol.parquet")
    applied = []

    def finish_the_copy(f):
        applied.append(f.name)
        if len(applied) == 2:  # after the first poll's files: the copy completes
            (inbox / "c_copying.parquet").write_bytes(whole)

    with caplog.at_level(logging.INFO, logger="liqgpu.updating"):
        n = follow(out, inbox, interval="0.2s", max_polls=4, on_update=finish_the_copy)
    assert n == 3 and applied == ["b_first.parquet", "a_late.parquet", "c_copying.parquet"]
    ref = liqgpu.estimate(s, every="15min", grid=liqgpu.open_store(out).attrs["grid"],
                          backend="numpy")
    assert_same(liqgpu.open_store(out), ref)
    text = caplog.text
    assert "c_copying.parquet: not usable yet" in text
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "d_other_symbol.parquet" in errors[0].getMessage() \
        and "left alone until the file changes" in errors[0].getMessage()


def test_an_update_after_a_hole_says_so(tmp_path, small_store, caplog):
    import logging

    s, out = small_store
    with caplog.at_level(logging.WARNING, logger="liqgpu.updating"):
        update(out, s.slice(130, 200))  # the store ends at bar 119
    assert "10 bar(s) (10m) missing between the store's last bar and the new ones" in caplog.text


KILLER = """
import sys, liqgpu
from liqgpu.updating import update
update(sys.argv[1], [liqgpu.load_series(sys.argv[2])])
print("done", flush=True)
"""


@pytest.mark.slow
def test_killed_update_leaves_old_or_new_store(tmp_path):
    s = liqgpu.synthetic_series(days=4, seed=5, exchange="ex", symbol="BTC")
    n = len(s)
    cut = n * 2 // 3
    new = tmp_path / "new.parquet"
    pd.DataFrame({"time": s.time[cut:], **{k: v[cut:] for k, v in s.columns.items()}}) \
        .assign(exchange="ex", symbol="BTC").to_parquet(new)
    base = tmp_path / "base.zarr"
    grid = "log:20000:200000:10"
    liqgpu.estimate(s.slice(0, cut), every="5min", grid=grid, backend="numpy", out=base)
    old = liqgpu.open_store(base).load()
    full = liqgpu.estimate(s, every="5min", grid=grid, backend="numpy")
    script = tmp_path / "kill_me.py"
    script.write_text(KILLER)
    outcomes = set()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(Path(liqgpu.__file__).parents[1])
    for i, delay in enumerate((0.5, 1.6, 2.2, 2.8, 60.0)):
        store = tmp_path / f"s{i}.zarr"
        subprocess.run(["cp", "-a", str(base), str(store)], check=True)
        p = subprocess.Popen([sys.executable, str(script), str(store), str(new)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
        ds = liqgpu.open_store(store)  # always a readable store
        if ds.sizes["time"] == old.sizes["time"]:
            assert_same(ds, old, tol=0)
            outcomes.add("old")
        else:
            assert_same(ds, full)
            outcomes.add("new")
        # a later update finishes the job, whatever was left behind
        got = update(store, [liqgpu.load_series(new)])
        assert_same(got, full)
        assert not list(tmp_path.glob(f".s{i}.zarr.*"))
    assert "new" in outcomes
    print("outcomes", sorted(outcomes))


def test_follow_on_a_missing_store_is_a_clear_error(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    r = CliRunner().invoke(main, ["update", str(tmp_path / "nope.zarr"), "--follow", str(inbox),
                                  "--max-polls", "1"])
    assert r.exit_code == 2 and "nope.zarr: no such store" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_series_ending_earlier_than_the_others_is_refused_clearly(tmp_path):
    from liqgpu.updating import update

    a = liqgpu.synthetic_series(days=1, step="5min", seed=71, exchange="ex", symbol="A")
    b = liqgpu.synthetic_series(days=1, step="5min", seed=72, exchange="ex", symbol="B")
    out = tmp_path / "s.zarr"
    liqgpu.estimate([a.slice(0, 200), b.slice(0, 176)], every="1h", backend="numpy", out=out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match="ends at .* in the store while others go on"):
        update(out, [a.slice(190, len(a)), b.slice(170, len(b))])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_update_takes_the_backend_and_says_what_it_did(tmp_path):
    s = market(8, 240, nan_rows=0.0)
    df = pd.DataFrame({"time": s.time, **{k: v for k, v in s.columns.items()}})
    df.iloc[:200].assign(exchange="ex", symbol="BTC").to_parquet(tmp_path / "a.parquet")
    df.iloc[190:].assign(exchange="ex", symbol="BTC").to_parquet(tmp_path / "b.parquet")
    out = tmp_path / "s.zarr"
    r = CliRunner().invoke(main, ["estimate", str(tmp_path / "a.parquet"), "-o", str(out),
                                  "--every", "20m", "--grid", "log:10:500:10"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["update", str(out), str(tmp_path / "b.parquet"), "--backend",
                                  "numpy"])
    assert r.exit_code == 0, r.output
    ds = liqgpu.open_store(out)
    t = pd.DatetimeIndex(ds["time"].values)
    assert f"now {t[0].isoformat()}Z .. {t[-1].isoformat()}Z ({len(t)} buckets)" in r.output
    r = CliRunner().invoke(main, ["update", str(out), str(tmp_path / "b.parquet"), "--backend",
                                  "tpu"])
    assert r.exit_code == 2 and "--backend" in r.output


def test_liqgpu_update_stays_the_function_once_its_module_is_imported():
    """`liqgpu.update` is the function in ``__all__``, also after its module (liqgpu.updating)
    has been imported (a module of the same name used to shadow it: "module is not
    callable")."""
    import subprocess
    import sys

    code = ("import liqgpu, liqgpu.updating, liqgpu.cli; "
            "assert callable(liqgpu.update) and liqgpu.update is liqgpu.updating.update; "
            "print(liqgpu.update.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "liqgpu.updating"


def test_update_takes_several_files_of_one_series(tmp_path, small_store):
    """`update STORE FILE...` with consecutive (and overlapping) files of the store's series:
    joined in time order, the same store as one file of all the bars; bars that disagree
    between two files are refused naming the bar."""
    s, out = small_store
    files = [_part(s, 160, 200, tmp_path / "c.parquet"), _part(s, 110, 140, tmp_path / "a.parquet"),
             _part(s, 135, 165, tmp_path / "b.parquet")]
    r = CliRunner().invoke(main, ["update", str(out), *map(str, files)])
    assert r.exit_code == 0, r.output
    ref = liqgpu.estimate(s, every="15min", grid=liqgpu.open_store(out).attrs["grid"],
                          backend="numpy")
    assert_same(liqgpu.open_store(out), ref)
    bad = s.slice(190, 200)
    bad.columns["close"] = bad.columns["close"] * 1.01
    with pytest.raises(InputError, match=r"bar .*, column 'close': .* disagrees with"):
        update(out, [s.slice(185, 200), bad])
