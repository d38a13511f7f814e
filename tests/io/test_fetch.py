"""liqgpu fetch binance against a local http.server serving generated archives."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from liqgpu.cli import main
from liqgpu.errors import InputError
from liqgpu.io.fetch import fetch_binance, plan

T0 = 1704067200000


def make_zip(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if text is not None:
            zf.writestr(name, text)
    return buf.getvalue()


class Site:
    """Files by URL path; ``drop`` paths send half the body then close; ``bad_sum`` paths publish
    a wrong checksum."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop: dict[str, int] = {}  # path -> how many more requests to drop
        self.requests: list[str] = []

    def add(self, rel: str, data: bytes, checksum: str | None = None):
        self.files["/" + rel] = data
        name = rel.rsplit("/", 1)[1]
        digest = checksum or hashlib.sha256(data).hexdigest()
        self.files["/" + rel + ".CHECKSUM"] = f"{digest}  {name}\n".encode()


@pytest.fixture
def site():
    s = Site()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            s.requests.append(self.path)
            data = s.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if s.drop.get(self.path, 0) > 0:
                s.drop[self.path] -= 1
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    s.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield s
    srv.shutdown()
    srv.server_close()


def kline_text(day: int) -> str:
    t = T0 + day * 86_400_000
    return "\n".join(f"{t + i * 60000},1,2,0.5,1.5,1,{t + i * 60000 + 59999},1,1,0.5,0.5,0"
                     for i in range(3)) + "\n"


def publish_days(site, days=(1, 2), datatype="klines"):
    for d in days:
        stamp = f"2024-01-{d:02d}"
        if datatype == "klines":
            rel = f"data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-{stamp}.zip"
            site.add(rel, make_zip(f"BTCUSDT-1m-{stamp}.csv", kline_text(d - 1)))
        else:
            rel = f"data/futures/um/daily/{datatype}/BTCUSDT/BTCUSDT-{datatype}-{stamp}.zip"
            site.add(rel, make_zip(f"BTCUSDT-{datatype}-{stamp}.csv", "create_time,symbol\n"))


def run(site, tmp_path, *extra, start="2024-01-01", end="2024-01-02", data="klines"):
    return CliRunner().invoke(main, ["fetch", "binance", "BTCUSDT", "--start", start, "--end", end,
                                     "--data", data, "--out", str(tmp_path / "raw"),
                                     "--base-url", site.url, "--backoff", "0", *extra])


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def test_plan_layout_and_monthly():
    p = plan("BTCUSDT", start="2024-01-01", end="2024-02-02", market="um", datatype="klines",
             interval="1m", today=date(2024, 6, 1))
    assert p[0][0] == "data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip"
    assert len(p[0][1]) == 31 and p[0][1][0].endswith("BTCUSDT-1m-2024-01-01.zip")
    assert [r for r, _ in p[1:]] == [
        "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-01.zip",
        "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-02.zip"]
    m = plan("BTCUSD_PERP", start="2024-01-01", end="2024-01-31", market="cm",
             datatype="liquidationSnapshot", today=date(2024, 6, 1))
    assert len(m) == 31 and m[0][0] == ("data/futures/cm/daily/liquidationSnapshot/BTCUSD_PERP/"
                                        "BTCUSD_PERP-liquidationSnapshot-2024-01-01.zip")


def test_download_verify_and_resume(site, tmp_path):
    publish_days(site)
    publish_days(site, datatype="metrics")
    res = run(site, tmp_path, data="klines,metrics")
    assert res.exit_code == 0, res.output
    assert "4 downloaded, 0 already complete" in res.output
    got = files_under(tmp_path / "raw")
    assert "um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip" in got
    assert "um/daily/metrics/BTCUSDT/BTCUSDT-metrics-2024-01-02.zip.CHECKSUM" in got
    assert not any(g.endswith(".part") for g in got)
    site.requests.clear()
    res = run(site, tmp_path, data="klines,metrics")
    assert res.exit_code == 0 and "0 downloaded, 4 already complete" in res.output
    assert site.requests == []  # nothing fetched again, not even checksums
    # the downloaded folder ingests directly
    out = tmp_path / "k.parquet"
    res = CliRunner().invoke(main, ["ingest", "binance-klines",
                                    str(tmp_path / "raw/um/daily/klines/BTCUSDT/1m"), "-o", str(out)])
    assert res.exit_code == 0 and "6 series rows" in res.output


def test_resume_after_interruption_downloads_only_the_rest(site, tmp_path):
    publish_days(site)
    # first run: day 2 is missing on the server -> error, day 1 complete
    del site.files["/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip"]
    res = run(site, tmp_path)
    assert res.exit_code == 2
    assert "BTCUSDT-1m-2024-01-02.zip: not found (HTTP 404)" in res.output
    publish_days(site)
    site.requests.clear()
    res = run(site, tmp_path)
    assert res.exit_code == 0 and "1 downloaded, 1 already complete" in res.output
    assert all("2024-01-02" in r for r in site.requests)


def test_monthly_archive_falls_back_to_daily(site, tmp_path):
    for d in range(1, 32):
        stamp = f"2024-01-{d:02d}"
        site.add(f"data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-{stamp}.zip",
                 make_zip(f"BTCUSDT-1m-{stamp}.csv", kline_text(d - 1)))
    s = fetch_binance("BTCUSDT", start="2024-01-01", end="2024-01-31", datatypes=["klines"],
                      out=tmp_path, base_url=site.url, backoff=0, today=date(2024, 3, 1))
    assert s["downloaded"] == 31
    assert site.requests[0].endswith("BTCUSDT-1m-2024-01.zip.CHECKSUM")


def test_checksum_mismatch_is_an_error_and_nothing_kept(site, tmp_path):
    rel = "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip"
    site.add(rel, make_zip("BTCUSDT-1m-2024-01-01.csv", kline_text(0)), checksum="0" * 64)
    res = run(site, tmp_path, "--retries", "2", end="2024-01-01")
    assert res.exit_code == 2
    assert f"{site.url}/{rel}: checksum mismatch" in res.output and "after 2 attempt" in res.output
    assert files_under(tmp_path / "raw") == []


def test_dropped_connection_retried_then_error(site, tmp_path):
    publish_days(site, days=(1,))
    path = "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip"
    site.drop[path] = 1  # one dropped body, then fine
    res = run(site, tmp_path, end="2024-01-01")
    assert res.exit_code == 0 and "1 downloaded" in res.output
    site.drop[path] = 10
    res = run(site, tmp_path / "again", "--retries", "2", end="2024-01-01")
    assert res.exit_code == 2
    assert "BTCUSDT-1m-2024-01-01.zip: connection dropped" in res.output
    assert files_under(tmp_path / "again" / "raw") == []


def test_empty_archive_is_an_error(site, tmp_path):
    rel = "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip"
    site.add(rel, make_zip("x", None))
    with pytest.raises(InputError, match=r"BTCUSDT-1m-2024-01-01.zip: the archive is empty"):
        fetch_binance("BTCUSDT", start="2024-01-01", end="2024-01-01", out=tmp_path,
                      base_url=site.url, backoff=0)
    assert files_under(tmp_path) == []


def test_skip_missing_and_bad_dates(site, tmp_path):
    publish_days(site, days=(1,))
    res = run(site, tmp_path, "--skip-missing", "--json")
    assert res.exit_code == 0, res.output
    assert '"missing": 1' in res.output
    res = run(site, tmp_path, start="2024-01-05", end="2024-01-01")
    assert res.exit_code == 2 and "before --start" in res.output


# -- issue 12: paths, deadlines, one-line errors ------------------------------------------------
@pytest.mark.parametrize("args,word", [
    (["BTCUSDT", "--interval", "../../../../escape"], "--interval"),
    (["../../ESCAPE"], "symbol"),
    (["BTC/USDT"], "symbol"),
    (["BTCUSDT", "--interval", "1m/../../x"], "--interval"),
])
def test_symbol_and_interval_cannot_leave_out(tmp_path, args, word):
    """Defect 4: path components are allow-listed before anything is opened."""
    work = tmp_path / "a" / "b" / "c" / "d"
    work.mkdir(parents=True)
    res = CliRunner().invoke(main, ["fetch", "binance", *args, "--start", "2024-01-01",
                                    "--end", "2024-01-01", "--data", "klines", "--out",
                                    str(work / "raw"), "--base-url", "http://127.0.0.1:9",
                                    "--retries", "1", "--backoff", "0"])
    assert res.exit_code == 2, res.output
    assert word in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def _serve(handler_cls):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def test_trickling_server_hits_the_deadline(tmp_path, monkeypatch):
    """Defect 8: one byte every 0.2 s keeps no read waiting, but the whole download has a
    deadline."""
    import time as _time

    import liqgpu.io.fetch as f

    stop = threading.Event()

    class Trickle(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not stop.is_set():
                try:
                    self.wfile.write(b"a")
                    self.wfile.flush()
                except OSError:
                    return
                _time.sleep(0.2)

    srv, url = _serve(Trickle)
    monkeypatch.setattr(f, "DEADLINE_READS", 3)
    t0 = _time.monotonic()
    try:
        res = CliRunner().invoke(main, ["fetch", "binance", "BTCUSDT", "--start", "2024-01-01",
                                        "--end", "2024-01-01", "--data", "klines", "--out",
                                        str(tmp_path / "raw"), "--base-url", url, "--retries",
                                        "1", "--backoff", "0", "--timeout", "0.5"])
    finally:
        stop.set()
        srv.shutdown()
        srv.server_close()
    assert _time.monotonic() - t0 < 10
    assert res.exit_code == 2 and "took too long" in res.output, res.output
    err = [x for x in res.output.splitlines() if "WARNING" not in x]
    assert len(err) == 1 and err[0].startswith("Error: "), res.output


def test_redirect_loop_is_one_sentence(tmp_path):
    """Defect 18."""

    class Loop(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", self.path)
            self.end_headers()

    srv, url = _serve(Loop)
    try:
        res = CliRunner().invoke(main, ["fetch", "binance", "BTCUSDT", "--start", "2024-01-01",
                                        "--end", "2024-01-01", "--data", "klines", "--out",
                                        str(tmp_path / "raw"), "--base-url", url,
                                        "--retries", "1", "--backoff", "0"])
    finally:
        srv.shutdown()
        srv.server_close()
    assert res.exit_code == 2, res.output
    err = [x for x in res.output.splitlines() if "WARNING" not in x]
    assert len(err) == 1 and "redirect" in err[0], res.output
