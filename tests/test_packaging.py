"""The wheel carries the CUDA sources (kernels/*.cu -> liqgpu/kernels/) and installs find them.

These build a real wheel with pip and install it (and an editable install) into fresh virtual
environments, then look for the kernels from a directory outside the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KERNELS = sorted(p.name for p in (REPO / "kernels").glob("*.cu"))

pytestmark = pytest.mark.slow

PROBE = """
import json, liqgpu
from liqgpu.backend import kernels as k
paths = k.kernel_paths()
print(json.dumps({
    "liqgpu": liqgpu.__file__,
    "dir": str(k.kernel_dir()),
    "paths": [str(p) for p in paths],
    "sources": {p.name: k.kernel_source(p.name) for p in paths},
}))
"""


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd, cwd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_clean_env(), capture_output=True,
                       text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}"
    return r


def _can_build_offline() -> bool:
    """Whether this interpreter's setuptools can build the wheel without build isolation."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    if (major, minor) >= (70, 1):  # bdist_wheel is part of setuptools since 70.1
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return major >= 69


def _build_flags() -> list[str]:
    # Without a recent setuptools here, pip builds in an isolated environment (it needs an
    # index for setuptools>=69, the local mirror or PyPI).
    return ["--no-build-isolation"] if _can_build_offline() else []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *_build_flags(), "-w", out, REPO],
         cwd=out)
    wheels = list(out.glob("liqgpu-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _venv(root: Path) -> Path:
    """A fresh venv (no pip, no system site) that can import this interpreter's dependencies.

    Only the dependencies' folder is appended to its path (a .pth file): liqgpu itself must
    come from what is installed into the venv, never from the checkout.
    """
    _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent)
    py = root / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, env=_clean_env()).stdout
    # The dependencies, through a folder of links that leaves liqgpu itself out: when the suite
    # runs from an installed liqgpu (as in CI), that copy must not shadow the one under test.
    deps = root / "deps"
    deps.mkdir()
    for d in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(d).iterdir():
            if entry.name.lower().startswith(("liqgpu", "__editable__", "_liqgpu")):
                continue
            if not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    Path(site.strip(), "_liqgpu_test_deps.pth").write_text(f"{deps}\n")
    return py


def _pip_into(py: Path, *args) -> None:
    # --ignore-installed: the venv sees the outer interpreter's packages (liqgpu among them when
    # the suite runs from an installed copy, as in CI), which pip would otherwise call satisfied
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps",
          "--ignore-installed", *args], cwd=py.parent)


def _probe(py: Path, cwd: Path) -> dict:
    r = _run([py, "-c", PROBE], cwd=cwd)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_repo_has_kernels():
    assert KERNELS == ["first_cross.cu", "scatter.cu"]


def test_packages_list_is_complete():
    """pyproject's explicit package list names every package under liqgpu/ (and the kernels)."""
    tomllib = pytest.importorskip("tomllib")
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "liqgpu").rglob(
        "__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert conf["package-dir"]["liqgpu.kernels"] == "kernels"
    assert listed - found == {"liqgpu.kernels"}


def test_wheel_carries_every_kernel(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for k in KERNELS:
            assert f"liqgpu/kernels/{k}" in names
            assert z.read(f"liqgpu/kernels/{k}") == (REPO / "kernels" / k).read_bytes()
    assert "liqgpu/backend/kernels.py" in names
    assert not any(n.startswith("kernels/") for n in names), "kernels/ must not be top-level"


def test_installed_wheel_finds_kernels(wheel, tmp_path):
    py = _venv(tmp_path / "venv")
    _pip_into(py, "--no-index", wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    got = _probe(py, outside)
    site = (tmp_path / "venv").resolve()
    assert Path(got["liqgpu"]).resolve().is_relative_to(site), got["liqgpu"]
    assert Path(got["dir"]).resolve() == Path(got["liqgpu"]).resolve().parent / "kernels"
    assert [Path(p).name for p in got["paths"]] == KERNELS
    for p in got["paths"]:
        assert Path(p).resolve().is_relative_to(site)
    for k in KERNELS:
        assert got["sources"][k] == (REPO / "kernels" / k).read_text()


def test_editable_install_finds_kernels(tmp_path):
    py = _venv(tmp_path / "venv")
    _pip_into(py, *_build_flags(), "-e", REPO)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    got = _probe(py, outside)
    assert Path(got["liqgpu"]).resolve() == (REPO / "liqgpu" / "__init__.py").resolve()
    assert Path(got["dir"]).resolve() == (REPO / "kernels").resolve()  # the checkout fallback
    assert [Path(p).name for p in got["paths"]] == KERNELS
    for k in KERNELS:
        assert got["sources"][k] == (REPO / "kernels" / k).read_text()
