"""The prepared GPU run (bench/gpu/run.sh) in its dry mode: every part runs end to end on the
CPU (small sizes, numpy posing as CuPy) and the summary has a record with numbers for each, so
that the first GPU minutes are not lost on a typo. Also the wheel pins' sanity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "bench" / "gpu"


def _dry_run(out: Path, parts: str) -> subprocess.Popen:
    env = {**os.environ, "LIQGPU_GPU_DRYRUN": "1", "OUT": str(out), "LIQGPU_GPU_PARTS": parts,
           "PYTHON": sys.executable, "LIQGPU_GPU_DEADLINE": "400",
           "LIQGPU_GPU_PYTEST_PATHS": "tests/model/test_backend.py tests/render/test_render_backend.py"}
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.Popen(["bash", str(GPU / "run.sh")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_dry_run_every_part_has_numbers(tmp_path):
    # two runs side by side: the slow parts (numba compiles, a Dask cluster) beside the rest
    runs = [(tmp_path / "a", _dry_run(tmp_path / "a", "env pytest year fleet")),
            (tmp_path / "b", _dry_run(tmp_path / "b", "render daskcuda"))]
    parts = {}
    for out, proc in runs:
        text, _ = proc.communicate(timeout=480)
        assert proc.returncode == 0, text[-3000:]
        files = sorted(p.name for p in out.iterdir())
        assert files == ["logs.txt", "pytest-gpu.txt", "summary.json", "summary.md"] or \
            files == ["logs.txt", "summary.json", "summary.md"], files
        s = json.loads((out / "summary.json").read_text())
        assert s["dry"] is True
        assert "DRY RUN" in (out / "summary.md").read_text()
        parts.update(s["parts"])
        for name, st in s["status"].items():
            assert st == "ok", (name, st, text[-3000:])
    def res(name):
        r = parts[name]
        assert r["status"] == "ok", (name, r.get("error"))
        assert r["dry"] is True
        return r["result"]

    env = res("env")
    assert env["device"]["posing"] is True and env["versions"]["numpy"]
    assert "passed" in res("pytest")["line"] or "skipped" in res("pytest")["line"]
    for b in ("numpy", "cupy"):
        y = res(f"year-v1-{b}")
        assert y["seconds"] > 0 and y["out_bytes"] > 0 and y["checksum_liquidated"] > 0
        assert y["split"]["engine_s"] > 0
    assert res("year-v1-cupy")["copy"]["seconds"] > 0 and res("year-v1-cupy")["x_copy"] > 0
    # model v2 runs where it has landed, and is a logged skip where not
    for name in ("year-v2-numpy", "year-v2-cupy", "fleet-v2-cupy", "daskcuda"):
        assert parts[name]["status"] in ("ok", "skipped"), parts[name]
    fleet = res("fleet-v2-cupy") if parts["fleet-v2-cupy"]["status"] == "ok" \
        else res("fleet-v1-cupy")
    assert fleet["series_per_s"] > 0 and fleet["store_bytes"] > 0
    sp = fleet["split"]
    assert sp["compute_s"] > 0 and sp["compression_s"] > 0 and sp["store_write_s"] > 0
    assert sp["compressed_in"] > sp["compressed_out"] > 0
    r = res("render")
    assert r["rows"]["numpy"]["aggregate_s"] > 0 and r["rows"]["cupy"]["aggregate_s"] > 0
    assert r["rows"]["cupy"]["posing"] is True
    assert 0 <= r["rel_l1_cupy_vs_numpy"] < 0.25
    d = res("daskcuda") if parts["daskcuda"]["status"] == "ok" else res("daskcuda-v1")
    assert d["exit_code"] == 0 and d["series_per_s"] > 0
    assert d["attrs_backend"] == "numpy+dask"  # dry: LocalCluster; on the GPU: cupy+dask


def test_wheel_pins():
    sys.path.insert(0, str(GPU))
    try:
        import check_wheels
    finally:
        sys.path.remove(str(GPU))
    pins = check_wheels.read_pins(GPU / "wheels.txt")
    site = check_wheels.read_site(GPU / "gpu-site.txt")
    for need in ("zarr", "numcodecs", "donfig", "datashader", "dask", "distributed",
                 "dask-cuda"):
        assert need in pins, need
    assert not set(pins) & site, "a pinned wheel the machine already has"
    assert {"numpy", "cupy-cuda13x", "xarray", "pandas", "numba"} <= site
    # dask-cuda's pin on dask/distributed (rapids-dask-dependency) is what the set carries
    assert pins["dask"] == pins["distributed"]


def test_check_wheels_flags_a_missing_set(tmp_path):
    r = subprocess.run([sys.executable, str(GPU / "check_wheels.py"), "--whl", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1
    assert "no wheel in" in r.stderr and "prepare.sh" in r.stderr


@pytest.mark.skipif(not (REPO / ".whl").is_dir(), reason="no .whl/ (bench/gpu/prepare.sh)")
def test_prepared_wheels_check():
    r = subprocess.run(["bash", str(GPU / "prepare.sh"), "--check"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
