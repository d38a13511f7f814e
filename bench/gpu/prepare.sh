#!/usr/bin/env bash
# Download, on this (networked) machine, the wheels the GPU machine lacks into .whl/ at the
# repository root (git-ignored; a device call carries it with carry [".whl"]), then check the
# set: one wheel per pin of bench/gpu/wheels.txt, CPython 3.12 manylinux x86_64 tags, every
# Requires-Dist covered (by the set or by the machine's image, bench/gpu/gpu-site.txt), and
# wheels + working tree under the 64 MiB a device call carries.
#
#   bash bench/gpu/prepare.sh            # download what is missing, drop stale wheels, check
#   bash bench/gpu/prepare.sh --check    # check only (no network)
set -euo pipefail
cd "$(dirname "$0")/../.."
WHL=.whl
PINS=bench/gpu/wheels.txt
PY=${PYTHON:-python3}

if ! git check-ignore -q "$WHL/x.whl"; then
    echo "prepare.sh: $WHL/ is not git-ignored; add it to .gitignore (it must not be committed)" >&2
    exit 2
fi
mkdir -p "$WHL"

if [ "${1:-}" != "--check" ]; then
    mapfile -t reqs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$PINS" | grep -v '^$')
    # one pip call for the whole set; manylinux tags from 2014 up to glibc 2.35 (pip matches
    # each tag exactly, so name them all)
    plats=()
    for p in manylinux1_x86_64 manylinux2014_x86_64 $(for n in 17 24 26 27 28 31 34 35; do
            echo manylinux_2_${n}_x86_64; done); do
        plats+=(--platform "$p")
    done
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${plats[@]}" -d "$WHL" "${reqs[@]}" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    # drop wheels of other versions (two versions of one package stop the install there)
    "$PY" - "$WHL" "$PINS" <<'EOF'
import sys
from pathlib import Path
from packaging.utils import canonicalize_name, parse_wheel_filename
whl, pins = Path(sys.argv[1]), Path(sys.argv[2])
want = {}
for line in pins.read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
        n, _, v = line.partition("==")
        want[canonicalize_name(n)] = v
for w in whl.glob("*.whl"):
    n, v, _, _ = parse_wheel_filename(w.name)
    if want.get(n) != str(v):
        print(f"prepare.sh: removing {w.name} (not pinned)")
        w.unlink()
EOF
fi
"$PY" bench/gpu/check_wheels.py --whl "$WHL"
