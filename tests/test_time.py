"""liqgpu._time: the one place durations and UTC times are read and written."""

import doctest
from datetime import timedelta

import numpy as np
import pytest

import liqgpu._time as T
from liqgpu.errors import InputError


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("90min", 5400),
                                           ("1.5h", 5400), ("7d", 604800), ("1w", 604800)])
def test_parse_duration_units(text, seconds):
    assert T.parse_duration(text) == timedelta(seconds=seconds)
    assert T.duration_ns(text) == seconds * 10**9


@pytest.mark.parametrize("text", ["", "none", "never", None])
def test_parse_duration_none(text):
    assert T.parse_duration(text) is None


@pytest.mark.parametrize("text", ["1y", "-1h", "0m", "h", "nanh", "1 hour"])
def test_bad_duration_names_the_option(text):
    with pytest.raises(InputError, match=r"^--every: cannot read"):
        T.parse_duration(text, option="--every")


def test_duration_ns_needs_a_duration():
    with pytest.raises(InputError, match="^--interval: a duration is needed"):
        T.duration_ns("none", option="--interval")


@pytest.mark.parametrize("td, text", [(timedelta(days=14), "2w"), (timedelta(hours=36), "36h"),
                                      (timedelta(minutes=90), "90m"), (timedelta(seconds=61), "61s")])
def test_format_duration_round_trip(td, text):
    assert T.format_duration(td) == text
    assert T.parse_duration(text) == td
    assert T.td64_str(np.timedelta64(int(td.total_seconds()), "s")) == text


def test_iso_and_parse_time_are_utc():
    assert T.iso(np.datetime64("2026-04-01T00:00")) == "2026-04-01"
    assert T.iso(np.datetime64("2026-04-01T12:30:05")) == "2026-04-01T12:30:05Z"
    assert T.parse_time("2026-04-01T02:00+02:00", "--test") == np.datetime64("2026-04-01T00:00", "ns")
    assert T.parse_time("2026-04-01 02:00", "--test") == np.datetime64("2026-04-01T02:00", "ns")
    assert T.parse_time("  ", "--test") is None
    with pytest.raises(InputError, match=r"^--train: cannot read 'soon'"):
        T.parse_time("soon", "--train")


def test_docstring_examples():
    assert doctest.testmod(T).failed == 0
