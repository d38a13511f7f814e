"""The store's codec, chosen by measurement (issue 13): encode and decode speed (one core) and
compression ratio of candidate codecs on REAL cube chunks written by liqgpu, and what each would
cost the year and the fleet.

Workloads (made with liqgpu itself, each a `liqgpu estimate` process of this tree, unless their
store is already in ``--work``):

* ``year v2`` / ``year v1``: 365 days of 1-minute bars (``synthetic_frame(days=365, seed=11)``),
  hourly output, model v2 (the default) and v1;
* ``d90 v2`` / ``d90 v1``: 90 days of 5-minute bars (``synthetic_frame(days=90, step="5min",
  seed=3)``);
* ``fleet 8x90d``: 8 series of bench/fleet.py's fleet (90 days of 5-minute bars each, v2, one
  store on a shared grid), standing in for its 200-series fleet.

The chunks are the ``intensity`` and ``liquidated`` chunk files of those stores (all-zero chunks
are not in a store, as the writer skips them), decoded back to the raw float32 bytes the writer
compressed (edge chunks padded with the fill value, as written). Up to ``--per-store`` of them
are taken from each store, evenly spread over its files.

Each codec encodes (then CRC32C of the output, as the writer does) and decodes (CRC check, then
decompress) every sampled chunk, one thread (``numcodecs.blosc.use_threads = False``), repeated
``--repeat`` times; the table shows the medians, in MB/s of raw float32 (1 MB = 1e6 bytes), and
the ratio raw / stored bytes (checksum included). The projections apply each workload's own
sampled encode speed to the raw bytes of the chunks its store really holds, and scale the bytes
the store's codec really wrote by the codec's stored bytes over the sampled files' bytes (the
"size vs" column compares with lz4 5 + shuffle, the setting before this bench):

* year: the ``year v2`` store (the default model);
* fleet: bench/fleet.py's 200 x 90 d v2 fleet, whose bytes are the 8-series store's x 25.

``Blosc`` rows are what zarr v3's ``BloscCodec`` reads and writes (bytes made here with
numcodecs' Blosc, typesize 4, as liqgpu's ChunkEncoder writes them); ``Zstd`` rows are
``zarr.codecs.ZstdCodec`` (numcodecs' Zstd underneath; level 0 means zstd's default, 3);
``none``: no compressor, only the checksum.

    python bench/codec_choice.py --work /tmp/codech              # everything (about 10 minutes)
    python bench/codec_choice.py --work /tmp/codech --quick      # fewer codecs and chunks
"""

from __future__ import annotations

import argparse
import os
import statistics as st
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from run import commit, machine  # bench/run.py: the same header as the other benches

ROOT = Path(__file__).resolve().parents[1]
CUBES = ("intensity", "liquidated")
FLEET_SERIES, FLEET_SAMPLE = 200, 8
FLEET_SCALE = FLEET_SERIES / FLEET_SAMPLE
SLOW = 20e6  # bytes/s: slower codecs are timed on 2 chunks a store, once

WORKLOADS = {  # name: (input, model)
    "year v2": ("year.parquet", "v2"),
    "year v1": ("year.parquet", "v1"),
    "d90 v2": ("d90.parquet", "v2"),
    "d90 v1": ("d90.parquet", "v1"),
    "fleet 8x90d": (None, "v2"),
}

FLEET_CHILD = r"""
import sys, liqgpu
fleet = [liqgpu.synthetic_series(days=90, step="5min", seed=i, exchange=f"ex{i % 10}",
                                 symbol=f"BTC{i}") for i in range(int(sys.argv[1]))]
liqgpu.estimate(fleet, every="1h", backend="numpy", out=sys.argv[2])
"""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def make_stores(work: Path) -> dict[str, Path]:
    """The workloads' stores in ``work`` (made with this tree's liqgpu where missing)."""
    work.mkdir(parents=True, exist_ok=True)
    inputs = {"year.parquet": "synthetic_frame(days=365, seed=11)",
              "d90.parquet": "synthetic_frame(days=90, step='5min', seed=3)"}
    for name, call in inputs.items():
        if not (work / name).exists():
            subprocess.run([sys.executable, "-c", "from liqgpu.synth import synthetic_frame; "
                            f"{call}.to_parquet({str(work / name)!r})"], check=True, env=_env())
    stores = {}
    for wl, (inp, model) in WORKLOADS.items():
        out = work / (wl.replace(" ", "_") + ".zarr")
        if not out.exists():
            print(f"making {out.name}", file=sys.stderr)
            if inp is None:
                cmd = [sys.executable, "-c", FLEET_CHILD, str(FLEET_SAMPLE), str(out)]
            else:
                cmd = [sys.executable, "-m", "liqgpu.cli", "estimate", str(work / inp), "-o",
                       str(out), "--model", model]
            subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
        stores[wl] = out
    return stores


def read_chunks(store: Path, per_store: int):
    """(sampled raw chunks as bytes, raw bytes of all the store's cube chunks, their stored
    bytes, the sampled files' bytes, the store's codec): the chunk files of the cube arrays,
    decoded (CRC checked)."""
    import json

    import google_crc32c
    from numcodecs import Blosc

    files = sorted(p for v in CUBES for p in (store / v).iterdir() if p.name.startswith("c."))
    stored = sum(p.stat().st_size for p in files)
    first = Blosc().decode(files[0].read_bytes()[:-4])
    chunk_bytes = len(bytes(first))
    pick = np.unique(np.linspace(0, len(files) - 1, min(per_store, len(files))).astype(int))
    out, sampled = [], 0
    for i in pick:
        b = files[i].read_bytes()
        sampled += len(b)
        enc, crc = b[:-4], b[-4:]
        if google_crc32c.value(enc).to_bytes(4, "little") != crc:
            raise SystemExit(f"{files[i]}: bad checksum")
        raw = bytes(Blosc().decode(enc))
        assert len(raw) == chunk_bytes and np.frombuffer(raw, "<f4").any()
        out.append(raw)
    comp = json.loads((store / CUBES[0] / "zarr.json").read_text())["codecs"][1]
    cfg = comp.get("configuration", {})
    codec = " ".join(str(x) for x in (comp["name"], cfg.get("cname"), cfg.get("clevel"),
                                      cfg.get("shuffle"), cfg.get("level")) if x is not None)
    return out, chunk_bytes * len(files), stored, sampled, codec


def candidates(quick: bool) -> list[tuple[str, str, object]]:
    from numcodecs import Blosc, Zstd

    rows = [("none", "-", None)]
    names = ("lz4", "zstd", "blosclz") if quick else ("lz4", "lz4hc", "zstd", "blosclz", "zlib")
    levels = (1, 5) if quick else (1, 3, 5, 9)
    shuffles = (("shuffle", Blosc.SHUFFLE), ("bitshuffle", Blosc.BITSHUFFLE),
                ("noshuffle", Blosc.NOSHUFFLE))
    for cname in names:
        for lvl in levels:
            for sname, s in shuffles:
                rows.append(("Blosc", f"{cname} {lvl} {sname}",
                             Blosc(cname=cname, clevel=lvl, shuffle=s, typesize=4)))
    for lvl in ((1,) if quick else (0, 1, 3)):
        rows.append(("Zstd", f"level {lvl}", Zstd(level=lvl)))
    return rows


def is_slow(codec, chunk: bytes) -> bool:
    """Under 20 MB/s on this chunk: too slow for a writer; timed on 2 chunks a store, once."""
    if codec is None:
        return False
    t = time.perf_counter()
    codec.encode(chunk)
    return time.perf_counter() - t > len(chunk) / SLOW


def one_pass(codec, chunks: list[bytes]) -> tuple[float, float, int]:
    """Encode seconds (compress, then CRC32C of the output), decode seconds (CRC check, then
    decompress) and the stored bytes (checksum included) of ``chunks``."""
    import google_crc32c

    crc = google_crc32c.value
    t = time.perf_counter()
    encoded = []
    for raw in chunks:
        e = raw if codec is None else codec.encode(raw)
        encoded.append((e, crc(e)))
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    for e, c in encoded:
        assert crc(e) == c
        if codec is not None:
            codec.decode(e)
    t_dec = time.perf_counter() - t
    for raw, (e, _) in zip(chunks[:2], encoded[:2]):  # lossless
        assert (raw if codec is None else bytes(codec.decode(e))) == raw
    return t_enc, t_dec, sum(len(e) + 4 for e, _ in encoded)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/liqgpu-codecs"),
                    help="folder of the inputs and stores (made where missing)")
    ap.add_argument("--per-store", type=int, default=24, help="chunks sampled per store")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer codecs and levels")
    ap.add_argument("--only", nargs="*", help="only the rows whose 'codec settings' contain "
                    "one of these (e.g. 'lz4 5' 'Zstd'); lz4 5 shuffle is always kept")
    args = ap.parse_args()

    import numcodecs
    import numcodecs.blosc

    numcodecs.blosc.use_threads = False  # one core: the writer runs one codec per pool thread
    stores = make_stores(args.work)
    load0 = os.getloadavg()
    data = {wl: read_chunks(p, args.per_store) for wl, p in stores.items()}
    fleet_raw = data["fleet 8x90d"][1] * FLEET_SCALE
    year_raw = data["year v2"][1]
    MB = 1e6

    rows = [r for r in candidates(args.quick)
            if not args.only or r[1] == "lz4 5 shuffle"
            or any(o in f"{r[0]} {r[1]}" for o in args.only)]
    # rounds: every codec once per round, so the machine's load (shared cores) hits each alike
    sample = {}  # (row, workload) -> the chunks timed
    times = {}  # (row, workload) -> [(encode s, decode s, stored bytes)]
    for rnd in range(args.repeat):
        for i, (kind, settings, codec) in enumerate(rows):
            for wl, (ch, *_) in data.items():
                if rnd == 0:
                    slow = is_slow(codec, ch[0])
                    sample[i, wl] = ch[::max(1, len(ch) // 2)][:2] if slow else ch
                elif len(sample[i, wl]) < len(ch):
                    continue  # slow: once
                times.setdefault((i, wl), []).append(one_pass(codec, sample[i, wl]))
        print(f"round {rnd + 1} of {args.repeat} done", file=sys.stderr)

    results = []
    for i, (kind, settings, codec) in enumerate(rows):
        per = {}
        for wl in data:
            ts = times[i, wl]
            per[wl] = (st.median(t[0] for t in ts), st.median(t[1] for t in ts), ts[0][2],
                       sum(map(len, sample[i, wl])))
        slow = any(len(sample[i, wl]) < len(data[wl][0]) for wl in data)
        n = sum(p[3] for p in per.values())
        enc = sum(p[0] for p in per.values())
        dec = sum(p[1] for p in per.values())
        stored = sum(p[2] for p in per.values())

        def project(wl, raw, written):
            """Encode seconds of the store's raw chunks; its bytes: what the store's codec
            really wrote, times this codec's stored bytes over the sampled files' bytes."""
            e, _, s, nbytes = per[wl]
            if codec is None:  # no compressor: the raw bytes and their checksums
                return raw / nbytes * e, raw * (1 + 4 / len(data[wl][0][0]))
            return raw / nbytes * e, None if slow else written * s / data[wl][3]

        ys, yb = project("year v2", year_raw, data["year v2"][2])
        fs, fb = project("fleet 8x90d", fleet_raw, data["fleet 8x90d"][2] * FLEET_SCALE)
        if slow:
            settings += " (slow: 2 chunks a store, 1 run)"
        results.append((kind, settings, n / enc / MB, n / dec / MB, n / stored, ys, yb, fs, fb))
    load1 = os.getloadavg()

    ref = next(r for r in results if r[1] == "lz4 5 shuffle")  # the setting before this bench
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"## {now} · commit {commit()} · store codec by measurement (bench/codec_choice.py)\n")
    print(f"Machine: {machine()}; numcodecs {numcodecs.__version__}, c-blosc "
          f"{numcodecs.blosc.VERSION_STRING}. One thread, medians of {args.repeat} rounds "
          f"(every codec once a round); load average {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after.\n")
    print("Chunks (intensity + liquidated chunk files, decoded; sampled / in the store):")
    for wl, (ch, raw, stored, _, _) in data.items():
        print(f"* {wl}: {len(ch)} / {raw // len(ch[0])} chunks of {len(ch[0]) / 2**20:.2f} MiB;"
              f" store's cubes {raw / MB:.0f} MB raw, {stored / MB:.0f} MB written")
    print(f"\nProjections (cube chunks only): year = the year v2 store's {year_raw / 1e9:.2f} GB "
          f"of raw chunks, {data['year v2'][2] / 1e6:.0f} MB written ({data['year v2'][4]}); "
          "fleet = "
          f"{FLEET_SERIES} series x 90 d v2, {fleet_raw / 1e9:.1f} GB raw, "
          f"{data['fleet 8x90d'][2] * FLEET_SCALE / 1e9:.2f} GB written (the 8-series store's "
          f"x {FLEET_SCALE:g}). Write s: encode time on one core (the writer's pool spreads it "
          "over the cores the engine leaves); sizes: the bytes the store's codec wrote x the "
          "codec's stored bytes over the store's on the same chunks.\n")
    print("| codec | settings | encode MB/s | decode MB/s | ratio | size vs lz4 5 shuffle | "
          "year write s | year MB | fleet write s | fleet GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, settings, e, d, r, ys, yb, fs, fb in results:
        mark = "**" if settings == "lz4 5 shuffle" else ""
        yb = "-" if yb is None else f"{yb / MB:.0f}"
        fb = "-" if fb is None else f"{fb / 1e9:.2f}"
        print(f"| {kind} | {mark}{settings}{mark} | {e:.0f} | {d:.0f} | {r:.2f} | "
              f"{ref[4] / r:.2f}x | {ys:.2f} | {yb} | {fs:.0f} | {fb} |")


if __name__ == "__main__":
    main()
