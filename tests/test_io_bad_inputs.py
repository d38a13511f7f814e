"""Bad-input corpus: each is one clear sentence naming the file, exit code 2, nothing written.

(Fetch errors — 404, checksum mismatch, dropped connection, empty archive — are in test_fetch.py.)
"""

from __future__ import annotations

import zipfile

import pytest
from click.testing import CliRunner

from liqgpu.cli import main

T0 = 1704067200000
METRICS_HEADER = ("create_time,symbol,sum_open_interest,sum_open_interest_value,"
                  "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
                  "count_long_short_ratio,sum_taker_long_short_vol_ratio")


def kline(t, o=100.0):
    return f"{t},{o},{o + 1},{o - 1},{o},1,{t + 59999},1,1,1,1,0"


def zipped(path, text):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.stem + ".csv", text)
    return path


def truncated(tmp):
    p = zipped(tmp / "BTCUSDT-1m-2024-01-01.zip", "\n".join(kline(T0 + i * 60000)
                                                             for i in range(500)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return "binance-klines", p, "not a zip archive or truncated"


def empty_archive(tmp):
    p = tmp / "BTCUSDT-1m-2024-01-01.zip"
    zipfile.ZipFile(p, "w").close()
    return "binance-klines", p, "the archive is empty"


def wrong_columns(tmp):
    p = tmp / "BTCUSDT-1m-2024-01-01.csv"
    p.write_text(f"{T0},1,2,0.5,1,3,4,5\n")
    return "binance-klines", p, "8 columns, expected 12"


def missing_column(tmp):
    p = tmp / "BTCUSDT-metrics-2024-01-01.csv"
    p.write_text("create_time,symbol,sum_open_interest_value\n2024-01-01 00:05:00,BTCUSDT,1\n")
    return "binance-metrics", p, "missing column 'sum_open_interest'"


def mixed_symbols(tmp):
    p = tmp / "BTCUSDT-metrics-2024-01-01.csv"
    p.write_text("\n".join([METRICS_HEADER, "2024-01-01 00:05:00,BTCUSDT,1,1,1,1,1,1",
                            "2024-01-01 00:10:00,ETHUSDT,1,1,1,1,1,1"]))
    return "binance-metrics", p, "mixed symbols in one file"


def duplicated_times(tmp):
    p = tmp / "BTCUSDT-1m-2024-01-01.csv"
    p.write_text("\n".join([kline(T0), kline(T0 + 60000), kline(T0 + 60000)]))
    return "binance-klines", p, r"row 3, column 'open_time': 2024-01-01T00:01:00Z repeats"


def unsorted_times(tmp):
    p = tmp / "BTCUSDT-1m-2024-01-01.csv"
    p.write_text("\n".join([kline(T0), kline(T0 + 120000), kline(T0 + 60000), kline(T0 + 180000)]))
    return "binance-klines", p, "row 3, column 'open_time'.* is before the previous row"


def not_a_number(tmp):
    p = tmp / "liq.csv"
    p.write_text(f"updatedTime,symbol,side,size,price\n{T0},BTCUSDT,Buy,abc,40000\n")
    return "bybit-liquidations", p, r"row 1 \(line 2\), column 'size': 'abc' is not a number"


def bad_side(tmp):
    p = tmp / "liq.csv"
    p.write_text(f"updatedTime,symbol,side,size,price\n{T0},BTCUSDT,Long,1,40000\n")
    return "bybit-liquidations", p, "'Long' is not Buy or Sell"


def wrong_epoch(tmp):
    p = tmp / "BTCUSDT-1m-2024-01-01.csv"
    p.write_text("\n".join([kline(17), kline(18)]))
    return "binance-klines", p, "outside 2009..2100"


def bad_json(tmp):
    p = tmp / "fo.jsonl"
    p.write_text('{"e":"forceOrder","o":{"s":"BTCUSDT"}}\n{not json\n')
    return "binance-forceorder", p, "line 2 is not JSON"


def empty_gz(tmp):
    import gzip

    p = tmp / "BTCUSDT-1m-2024-01-01.csv.gz"
    p.write_bytes(gzip.compress(b""))
    return "binance-klines", p, "the file is empty"


CASES = [truncated, empty_archive, wrong_columns, missing_column, mixed_symbols,
         duplicated_times, unsorted_times, not_a_number, bad_side, wrong_epoch, bad_json,
         empty_gz]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_one_sentence_exit_2_nothing_written(tmp_path, case):
    src = tmp_path / "in"
    src.mkdir()
    fmt, path, pattern = case(src)
    outdir = tmp_path / "out"
    outdir.mkdir()
    res = CliRunner().invoke(main, ["ingest", fmt, str(path), "-o", str(outdir / "x.parquet")])
    assert res.exit_code == 2, res.output
    msg = res.output.strip()
    assert msg.startswith("Error: ") and len(msg.splitlines()) == 1, msg
    assert path.name in msg
    import re

    assert re.search(pattern, msg), msg
    assert list(outdir.iterdir()) == []


def test_missing_input_and_bad_out_folder(tmp_path):
    res = CliRunner().invoke(main, ["ingest", "binance-klines", str(tmp_path / "nope.zip"),
                                    "-o", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "nope.zip: no such file" in res.output
    p = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    p.write_text("\n".join([kline(T0), kline(T0 + 60000)]))
    res = CliRunner().invoke(main, ["ingest", "binance-klines", str(p),
                                    "-o", str(tmp_path / "no" / "x.parquet")])
    assert res.exit_code == 2 and "no such folder" in res.output
