"""Input files: parsing, validation (file, row, column named), gaps and resampling."""

import numpy as np
import pandas as pd
import pytest

from liqgpu.errors import InputError
from liqgpu.series import load_series

HEADER = "time,open,high,low,close,oi\n"


def write(tmp_path, body, name="bars.csv", header=HEADER):
    p = tmp_path / name
    p.write_text(header + body)
    return p


def rows(n=4, start_ms=1_767_225_600_000, step_ms=60_000):
    return "".join(f"{start_ms + i * step_ms},100,101,99,100,{10 + i}\n" for i in range(n))


def test_epoch_ms_and_iso_times_agree(tmp_path):
    a = load_series(write(tmp_path, rows(3)), exchange="x", symbol="Y")
    iso = "".join(f"2026-01-01T00:0{i}:00Z,100,101,99,100,{10 + i}\n" for i in range(3))
    b = load_series(write(tmp_path, iso, "iso.csv"), exchange="x", symbol="Y")
    assert (a.time == b.time).all()
    assert a.time[0] == np.datetime64("2026-01-01T00:00:00")
    assert a.step == np.timedelta64(60, "s")


def test_parquet_with_tz_aware_times_and_metadata_columns(tmp_path):
    t = pd.date_range("2026-01-01T02:00", periods=3, freq="5min", tz="Europe/Berlin")
    df = pd.DataFrame({"time": t, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5,
                       "oi": [1.0, 2.0, 3.0], "exchange": "bybit", "symbol": "ETHUSDT"})
    p = tmp_path / "s.parquet"
    df.to_parquet(p)
    s = load_series(p)
    assert s.name == "bybit:ETHUSDT"
    assert s.time[0] == np.datetime64("2026-01-01T01:00:00")  # converted to UTC


def test_gaps_become_nan_rows(tmp_path):
    body = rows(2) + "1767225780000,100,101,99,100,13\n"  # skips 00:02
    s = load_series(write(tmp_path, body))
    assert len(s) == 4 and s.n_gaps == 1
    assert np.isnan(s["close"][2]) and s["oi"][3] == 13


def test_resample_to_coarser_step(tmp_path):
    body = ("1767225600000,10,12,9,11,1\n1767225660000,11,15,10,14,2\n"
            "1767225720000,14,14,7,8,\n1767225780000,8,9,8,9,4\n")
    s = load_series(write(tmp_path, body), step="2m")
    assert len(s) == 2
    np.testing.assert_array_equal(s["open"], [10, 14])
    np.testing.assert_array_equal(s["high"], [15, 14])
    np.testing.assert_array_equal(s["low"], [9, 7])
    np.testing.assert_array_equal(s["close"], [14, 9])
    np.testing.assert_array_equal(s["oi"], [2, 4])


@pytest.mark.parametrize(
    "body, header, expected",
    [
        ("", HEADER, "no rows"),
        (rows(1), HEADER, "only one row"),
        (rows(3), "time,open,high,low,close\n", "missing column 'oi'"),
        (rows(2) + "1767225720000,100,abc,99,100,5\n", HEADER, r"row 3 \(line 4\), column 'high': 'abc'"),
        (rows(2) + "1767225660000,100,101,99,100,5\n", HEADER, "row 3.*repeats"),
        (rows(2) + "1767225000000,100,101,99,100,5\n", HEADER, "row 3.*is before"),
        (rows(2) + "1767225750000,100,101,99,100,5\n", HEADER, "row 3.*off the 1m grid"),
        (rows(2) + "1767225720000,100,98,99,100,5\n", HEADER, "row 3.*high 98 is below low 99"),
        (rows(2) + "1767225720000,100,101,-1,100,5\n", HEADER, "row 3.*'low'.*must be > 0"),
        (rows(2) + "1767225720000,100,101,99,100,-5\n", HEADER, "row 3.*'oi'.*negative"),
        (rows(2) + "yesterday,100,101,99,100,5\n", HEADER, "row 3.*'time'"),
    ],
)
def test_bad_files_name_file_row_and_column(tmp_path, body, header, expected):
    p = write(tmp_path, body, header=header)
    with pytest.raises(InputError, match=expected) as e:
        load_series(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("moved,shift_ms,expected", [
    (4, 60_000, r"row 5 \(line 6\), column 'time': 2026-01-01T00:21:00Z is off the 5m grid"),
    (4, 30_000, r"row 5 \(line 6\), column 'time': 2026-01-01T00:20:30Z is off the 5m grid"),
    (0, 60_000, r"row 1 \(line 2\), column 'time': 2026-01-01T00:01:00Z is off the 5m grid"),
    (11, 120_000, r"row 12 \(line 13\), column 'time': 2026-01-01T00:57:00Z is off the 5m grid")])
def test_off_grid_time_names_the_row_that_moved(tmp_path, moved, shift_ms, expected):
    """One time off a 5-minute series' grid: the row that moved is named, with the series'
    own step (not the smallest difference, which a moved row makes)."""
    t0, step = 1_767_225_600_000, 300_000
    body = "".join(f"{t0 + i * step + (shift_ms if i == moved else 0)},100,101,99,100,{10 + i}\n"
                   for i in range(12))
    with pytest.raises(InputError, match=expected):
        load_series(write(tmp_path, body))


@pytest.mark.parametrize("last,expected", [
    ("1767225840000,100,101\n", r"row 5 \(line 6\): 3 of 6 fields; the row is cut off"),
    ("1767225840000\n", r"row 5 \(line 6\): 1 of 6 fields"),
    ("1767225840000,100,101,99,100,\n", None),  # every field there, one empty: a gap value
])
def test_cut_off_row_is_refused(tmp_path, last, expected):
    """A row with fewer fields than the header (a download cut off mid-row) is named, not read
    as a bar of missing values."""
    p = write(tmp_path, rows(4) + last)
    if expected is None:
        assert np.isnan(load_series(p)["oi"][4])
        return
    with pytest.raises(InputError, match=expected) as e:
        load_series(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("bar,expected", [
    ("99.2,99.5,99,100", r"row 3 \(line 4\), column 'high': high 99.5 is below close 100"),
    ("102,101,99,100", r"row 3 \(line 4\), column 'high': high 101 is below open 102"),
    ("100,101,100.5,100.2", r"row 3 \(line 4\), column 'low': low 100.5 is above open 100"),
    ("100.2,101,99,98", r"row 3 \(line 4\), column 'low': low 99 is above close 98"),
])
def test_bar_range_holds_open_and_close(tmp_path, bar, expected):
    with pytest.raises(InputError, match=expected):
        load_series(write(tmp_path, rows(2) + f"1767225720000,{bar},5\n"))


def test_empty_file_and_missing_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(InputError, match="empty"):
        load_series(p)
    with pytest.raises(InputError, match="no such file"):
        load_series(tmp_path / "nope.csv")


def test_bad_step_and_metadata(tmp_path):
    p = write(tmp_path, rows(4))
    with pytest.raises(InputError, match="--step 90s"):
        load_series(p, step="90s")
    with pytest.raises(InputError, match="--kind"):
        load_series(p, kind="quanto")
    with pytest.raises(InputError, match="--contract-size"):
        load_series(p, contract_size=0)


def test_nan_values_are_gaps_not_errors(tmp_path):
    body = rows(2) + "1767225720000,,,,,\n" + "1767225780000,100,101,99,100,nan\n"
    s = load_series(write(tmp_path, body))
    assert np.isnan(s["close"][2]) and np.isnan(s["oi"][3])


def test_a_bar_moved_by_half_a_step_is_refused_not_taken_as_a_finer_step(tmp_path):
    """One 1-minute bar moved by 30 s makes every difference a multiple of 30 s: taken as the
    step, 30 s would double the model steps and fill every other one with NaN (wrong totals,
    exit 0). It is named instead; a real finer step with many gaps still loads."""
    t0, step = 1_767_225_600_000, 60_000
    body = "".join(f"{t0 + i * step + (30_000 if i == 10 else 0)},100,101,99,100,{10 + i}\n"
                   for i in range(300))
    with pytest.raises(InputError, match=r"row 11 \(line 12\), column 'time': "
                                         r"2026-01-01T00:10:30Z is off the 1m grid"):
        load_series(write(tmp_path, body))
    # 30-second bars, every other one missing after the first fifth: a 30 s series with gaps
    keep = [i for i in range(600) if i < 120 or i % 2 == 0]
    body = "".join(f"{t0 + i * 30_000},100,101,99,100,{10 + i}\n" for i in keep)
    s = load_series(write(tmp_path, body))
    assert s.step == np.timedelta64(30, "s") and len(s) == 599  # 00:00:00 .. 04:59:00
