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
