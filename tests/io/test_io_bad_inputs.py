"""Bad-input corpus: each is one clear sentence naming the file, exit code 2, nothing written.

(Fetch errors — 404, checksum mismatch, dropped connection, empty archive — are in test_fetch.py.)
"""

from __future__ import annotations

import zipfile

import numpy as np

import pytest
from click.testing import CliRunner

from liqgpu.cli import main
from liqgpu.errors import InputError

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


# -- issue 12: series files (estimate), archives, events (evaluate) ------------------------------
def series_csv(path, n=40, step_s=300, t0_s=1704067200, unit="ms", header="time,open,high,low,close,oi",
               gap_at=None, gap_s=0, oi=None, extra=""):
    rows = [header]
    for i in range(n):
        t = t0_s + i * step_s + (gap_s if gap_at is not None and i >= gap_at else 0)
        tv = t * 1000 if unit == "ms" else t
        o = oi if (oi is not None and i == n // 2) else 1000 + i
        rows.append(f"{tv},100,101,99,100.5,{o}{extra}")
    path.write_text("\n".join(rows) + "\n")
    return path


def both_cases(tmp):
    return [], series_csv(tmp / "s.csv", header="time,open,high,low,close,oi,Open",
                          extra=",100"), "columns 'open' and 'Open' are the same column"


def oi_1e308(tmp):
    return [], series_csv(tmp / "s.csv", oi="1e308"), r"row 21 \(line 22\), column 'oi': 1e\+308"


def gap_200_years(tmp):
    return [], series_csv(tmp / "s.csv", gap_at=20, gap_s=200 * 365 * 86400), \
        r"row 21 \(line 22\), column 'time': a gap of .* longer than --max-gap 90d"


def gap_over_max_gap(tmp):
    return ["--max-gap", "5d"], series_csv(tmp / "s.csv", gap_at=20, gap_s=10 * 86400), \
        "longer than --max-gap 5d"


def too_many_bars(tmp):
    return ["--max-bars", "30"], series_csv(tmp / "s.csv"), "more than --max-bars 30"


def bad_symbol_column(tmp):
    p = series_csv(tmp / "s.csv", header="time,open,high,low,close,oi,symbol", extra=",BTC USDT")
    return [], p, "column 'symbol' holds 'BTC USDT'"


def vwap_without_volumes(tmp):
    return ["--entry", "vwap"], series_csv(tmp / "s.csv"), \
        "entry vwap needs the columns 'volume' and 'quote_volume'.*pass another --entry"


def vwap_without_quote_volume(tmp):
    p = series_csv(tmp / "s.csv", header="time,open,high,low,close,oi,volume", extra=",3")
    return ["--entry", "vwap"], p, "entry vwap needs the column 'quote_volume', which"


def taker_without_taker_volume(tmp):
    p = series_csv(tmp / "s.csv", header="time,open,high,low,close,oi,volume", extra=",3")
    return ["--side-split", "taker"], p, \
        "side split taker needs the column 'taker_buy_volume'.*pass --side-split both"


def cut_off_last_row(tmp):
    p = series_csv(tmp / "s.csv")
    p.write_text(p.read_text() + "1704079200000,100,10")  # a download cut off mid-row
    return [], p, r"row 41 \(line 42\): 3 of 6 fields; the row is cut off"


def time_off_the_grid(tmp):
    p = series_csv(tmp / "s.csv", n=40)
    lines = p.read_text().splitlines()
    t, rest = lines[31].split(",", 1)
    lines[31] = f"{int(t) + 60_000},{rest}"  # data row 31 one minute late
    p.write_text("\n".join(lines) + "\n")
    return [], p, r"row 31 \(line 32\), column 'time': 2024-01-01T02:31:00Z is off the 5m grid"


SERIES_CASES = [both_cases, oi_1e308, gap_200_years, gap_over_max_gap, too_many_bars,
                bad_symbol_column, vwap_without_volumes, vwap_without_quote_volume,
                taker_without_taker_volume, cut_off_last_row, time_off_the_grid]


@pytest.mark.parametrize("case", SERIES_CASES, ids=[c.__name__ for c in SERIES_CASES])
def test_bad_series_file_one_sentence_exit_2_nothing_written(tmp_path, case):
    import re

    src = tmp_path / "in"
    src.mkdir()
    extra, path, pattern = case(src)
    outdir = tmp_path / "out"
    outdir.mkdir()
    res = CliRunner().invoke(main, ["estimate", str(path), "-o", str(outdir / "s.zarr"),
                                    "--backend", "numpy", "--every", "1h", *extra])
    assert res.exit_code == 2, res.output
    msg = res.output.strip()
    assert msg.startswith("Error: ") and len(msg.splitlines()) == 1, msg
    assert path.name in msg or "--" in msg
    assert re.search(pattern, msg), msg
    assert list(outdir.iterdir()) == []


def test_gap_is_accepted_when_max_gap_allows_it(tmp_path):
    p = series_csv(tmp_path / "s.csv", gap_at=20, gap_s=10 * 86400)
    res = CliRunner().invoke(main, ["estimate", str(p), "-o", str(tmp_path / "s.zarr"),
                                    "--backend", "numpy", "--every", "1h", "--max-gap", "20d"])
    assert res.exit_code == 0, res.output


def test_epoch_seconds_are_read_as_seconds(tmp_path):
    """Defect 13: seconds were read as milliseconds (1970, a 300 ms step)."""
    import liqgpu

    s_sec = liqgpu.load_series(series_csv(tmp_path / "sec.csv", unit="s"))
    s_ms = liqgpu.load_series(series_csv(tmp_path / "ms.csv", unit="ms"))
    assert (s_sec.time == s_ms.time).all() and s_sec.step == s_ms.step
    assert str(s_sec.time[0]).startswith("2024-01-01") and s_sec.step == np.timedelta64(300, "s")


def test_file_name_with_spaces_and_accents_is_a_usable_default_symbol(tmp_path):
    """Defect 19: the default symbol came from the file name and was refused as --symbol."""
    import liqgpu

    p = series_csv(tmp_path / "my data é.csv")
    s = liqgpu.load_series(p)
    assert s.symbol == "my_data"
    res = CliRunner().invoke(main, ["estimate", str(p), "-o", str(tmp_path / "s.zarr"),
                                    "--backend", "numpy", "--every", "1h"])
    assert res.exit_code == 0, res.output


def test_zip_bomb_stops_at_the_unpacked_size_cap(tmp_path, monkeypatch):
    """Defect 5: members are streamed with a cap, headers that lie included."""
    import liqgpu.io.archive as archive

    p = tmp_path / "BTCUSDT-1m-2024-01-01.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("BTCUSDT-1m-2024-01-01.csv", b"0" * (8 << 20))
    assert p.stat().st_size < 100_000
    monkeypatch.setattr(archive, "MAX_UNPACKED", 1 << 20)
    res = CliRunner().invoke(main, ["ingest", "binance-klines", str(p), "-o",
                                    str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "unpacks to more than 1 MiB" in res.output, res.output
    assert not (tmp_path / "x.parquet").exists()
    # the stream itself is capped too (sizes in headers may lie)
    with zipfile.ZipFile(p) as zf, zf.open(zf.infolist()[0]) as fh:
        with pytest.raises(InputError, match="unpacks to more than"):
            archive._read_capped(fh, str(p), 1 << 20)


def test_gz_bomb_stops_at_the_cap(tmp_path, monkeypatch):
    import gzip

    import liqgpu.io.archive as archive

    p = tmp_path / "BTCUSDT-1m-2024-01-01.csv.gz"
    p.write_bytes(gzip.compress(b"0" * (4 << 20)))
    monkeypatch.setattr(archive, "MAX_UNPACKED", 1 << 20)
    res = CliRunner().invoke(main, ["ingest", "binance-klines", str(p), "-o",
                                    str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "unpacks to more than" in res.output, res.output


def test_temporary_of_a_killed_ingest_is_removed_by_the_next(tmp_path):
    """Defect 17 for ingest outputs: a dead writer's .NAME.PID.tmp goes, a live one's stays."""
    import os
    import subprocess
    import sys

    from liqgpu.outputs import write_atomic

    out = tmp_path / "x.parquet"
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True)
    dead = tmp_path / f".x.parquet.{int(p.stdout)}.tmp"
    dead.write_bytes(b"half")
    live = tmp_path / f".x.parquet.{os.getppid()}.tmp"
    live.write_bytes(b"busy")
    write_atomic(out, lambda t: t.write_bytes(b"ok"))
    assert out.read_bytes() == b"ok" and not dead.exists() and live.exists()


def test_bad_epoch_time_in_ingest_names_its_row(tmp_path):
    """Epoch times with one bad value: the row holding it is named (not the first row, whose
    number the text-time parser could not read)."""
    p = series_csv(tmp_path / "s.csv", n=40)
    lines = p.read_text().splitlines()
    lines[31] = "garbage," + lines[31].split(",", 1)[1]
    p.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(main, ["ingest", "generic", str(p), "--map",
                                    "time=time,open=open,high=high,low=low,close=close,oi=oi",
                                    "-o", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2, res.output
    assert "row 31 (line 32), column 'time': cannot read 'garbage' as a time" in res.output
    assert not (tmp_path / "x.parquet").exists()


def test_bad_epoch_time_in_events_names_its_row(tmp_path):
    from liqgpu.events import load_realized

    p = tmp_path / "ev.csv"
    rows = ["time,side,notional,price"] + [f"{T0 + i * 1000},long,100,42000" for i in range(20)]
    rows[13] = "soon,long,100,42000"
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"ev.csv: row 13, column 'time': cannot read 'soon'"):
        load_realized(p)


def test_a_write_error_without_a_file_name_names_the_output(tmp_path):
    """Libraries that raise without errno or file name (Arrow's 'Failed to open local file'):
    the error names the file the user asked for, not a temporary, and the CLI says it in one
    sentence."""
    from liqgpu.cli_common import UserError, user_errors
    from liqgpu.outputs import write_atomic

    out = tmp_path / "x.parquet"

    def write(p):
        raise PermissionError("Failed to open local file. Detail: [errno 13] Permission denied")

    with pytest.raises(PermissionError) as e:
        write_atomic(out, write)
    assert e.value.filename == str(out) and not list(tmp_path.iterdir())
    with pytest.raises(UserError, match=f"^{out}: permission denied$"):
        user_errors(lambda: write_atomic(out, write))()


def test_a_far_price_names_the_file_and_bar_not_a_grid_option_never_given(tmp_path):
    """One bar at 1e-300 makes the default grid (10 bps over every level) millions of bins: the
    error names the file and the bar's time (and the option that avoids it), not a --grid the
    user did not give."""
    import pandas as pd

    import liqgpu

    s = liqgpu.synthetic_series(days=1, seed=2)
    df = pd.DataFrame({"time": pd.to_datetime(s.time).tz_localize("UTC"),
                       **{c: s[c] for c in ("open", "high", "low", "close", "oi")}})
    df.loc[50, ["open", "high", "low", "close"]] = 1e-300
    f = tmp_path / "tiny.csv"
    df.to_csv(f, index=False)
    r = CliRunner().invoke(main, ["estimate", str(f), "-o", str(tmp_path / "t.zarr")])
    assert r.exit_code == 2, r.output
    when = pd.Timestamp(s.time[50]).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "the default grid (10 bps over every level" in r.output
    assert f"tiny.csv: lowest low 1e-300 at {when}" in r.output and "or give --grid" in r.output
    assert not (tmp_path / "t.zarr").exists()
