"""Check the wheel set in .whl/ for the GPU machine (run by bench/gpu/prepare.sh, on this machine).

* exactly one wheel per pin of bench/gpu/wheels.txt, at that version, and nothing else;
* each wheel installs on CPython 3.12, manylinux x86_64 (its tags);
* each wheel's Requires-Dist (extras left out, markers read for Python 3.12 on Linux) is either
  another wheel of the set at a version the specifier allows, or a package of the machine's
  image (bench/gpu/gpu-site.txt, names only: their versions are not known here), or one of the
  few left out on purpose (LEFT_OUT, with why);
* the wheels plus the working tree that travels (tracked and untracked-not-ignored files) fit
  the 64 MiB that a device call carries, with a margin.

Exit 0 when all hold; 1 with one line per problem otherwise. ``--json`` writes the wheel list.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LIMIT = 64 * 2**20  # what one device call carries: working tree + carried paths
MARGIN = 4 * 2**20  # room for files a session adds before the run

# Needed on paper, not for what run.sh does (installs are --no-deps):
LEFT_OUT = {
    "bokeh": "rapids-dask-dependency pins it for Dask's dashboard; run.sh starts no dashboard",
    "pynvml": "the module comes from nvidia-ml-py, which the image has",
    "importlib-metadata": "the standard library's importlib.metadata serves on Python 3.12",
}
ALIASES = {"pynvml": "nvidia-ml-py"}


def target_env() -> dict:
    env = default_environment()
    env.update(python_version="3.12", python_full_version="3.12.3", implementation_name="cpython",
               platform_python_implementation="CPython", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix")
    return env


def supported_tags() -> set[Tag]:
    """Tags CPython 3.12 on glibc >= 2.28 x86_64 accepts (the subset that matters here)."""
    plats = ["linux_x86_64", "manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    plats += [f"manylinux_2_{n}_x86_64" for n in range(5, 36)]
    tags = set()
    for p in plats + ["any"]:
        for interp, abi in (("cp312", "cp312"), ("cp312", "abi3"), ("cp312", "none"),
                            ("py3", "none"), ("py312", "none"), ("py2.py3", "none")):
            tags.add(Tag(interp, abi, p))
        for v in range(2, 13):  # abi3 wheels built for older CPythons
            tags.add(Tag(f"cp3{v}", "abi3", p))
    return tags


def read_pins(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, ver = line.partition("==")
        pins[canonicalize_name(name)] = Version(ver)
    return pins


def read_site(path: Path) -> set[str]:
    return {canonicalize_name(x.strip()) for x in path.read_text().splitlines()
            if x.strip() and not x.startswith("#")}


def metadata(whl: Path):
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if re.match(r"[^/]+\.dist-info/METADATA$", n))
        return Parser().parsestr(z.read(name).decode())


def travelling_bytes() -> int:
    """Bytes of what a device call sends besides carried paths: tracked files plus untracked
    files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True).stdout
    total = 0
    for rel in out.decode().split("\0"):
        p = REPO / rel
        if rel and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def check(whl_dir: Path, pins: dict, site: set[str]) -> tuple[list[str], list[dict]]:
    problems, rows = [], []
    tags = supported_tags()
    env = target_env()
    wheels = sorted(whl_dir.glob("*.whl"))
    found: dict[str, tuple[Version, Path]] = {}
    for w in wheels:
        name, ver, _, wtags = parse_wheel_filename(w.name)
        if name in found:
            problems.append(f"two wheels of {name}: {found[name][1].name} and {w.name}")
        found[name] = (ver, w)
        if not (wtags & tags):
            problems.append(f"{w.name}: no tag that CPython 3.12 manylinux x86_64 accepts")
        if name not in pins:
            problems.append(f"{w.name}: not in wheels.txt (delete it: one version of each)")
        elif pins[name] != ver:
            problems.append(f"{w.name}: wheels.txt pins {name}=={pins[name]}")
        rows.append({"wheel": w.name, "name": str(name), "version": str(ver),
                     "bytes": w.stat().st_size})
    for name, ver in pins.items():
        if name not in found:
            problems.append(f"{name}=={ver}: no wheel in {whl_dir} (run bench/gpu/prepare.sh)")
    for name, (ver, w) in found.items():
        for line in metadata(w).get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep in found:
                if req.specifier and not req.specifier.contains(found[dep][0], prereleases=True):
                    problems.append(f"{name} needs {req}, the set has {dep}=={found[dep][0]}")
            elif dep in site or ALIASES.get(dep) in site:
                continue
            elif dep not in LEFT_OUT:
                problems.append(f"{name} needs {req}: neither a wheel of the set nor on the "
                                "GPU machine (add it to wheels.txt)")
    return problems, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--whl", type=Path, default=REPO / ".whl")
    ap.add_argument("--pins", type=Path, default=HERE / "wheels.txt")
    ap.add_argument("--site", type=Path, default=HERE / "gpu-site.txt")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    problems, rows = check(args.whl, read_pins(args.pins), read_site(args.site))
    wheel_bytes = sum(r["bytes"] for r in rows)
    tree = travelling_bytes()
    total = wheel_bytes + tree
    for r in sorted(rows, key=lambda r: -r["bytes"]):
        print(f"  {r['bytes'] / 2**20:7.2f} MiB  {r['wheel']}")
    print(f"wheels: {len(rows)}, {wheel_bytes / 2**20:.2f} MiB; working tree that travels: "
          f"{tree / 2**20:.2f} MiB; together {total / 2**20:.2f} MiB of {LIMIT / 2**20:.0f} MiB "
          f"(margin wanted {MARGIN / 2**20:.0f} MiB)")
    if total > LIMIT - MARGIN:
        problems.append(f"{total / 2**20:.2f} MiB would travel: over {LIMIT / 2**20:.0f} MiB "
                        f"less a {MARGIN / 2**20:.0f} MiB margin")
    for dep, why in LEFT_OUT.items():
        print(f"  left out on purpose: {dep} ({why})")
    if args.json:
        args.json.write_text(json.dumps({"wheels": rows, "wheel_bytes": wheel_bytes,
                                         "tree_bytes": tree, "limit_bytes": LIMIT,
                                         "problems": problems}, indent=2))
    for p in problems:
        print(f"check_wheels: {p}", file=sys.stderr)
    print("check_wheels: OK" if not problems else f"check_wheels: {len(problems)} problem(s)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
