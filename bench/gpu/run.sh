#!/usr/bin/env bash
# The prepared GPU run (issue 14): one command of at most 10 minutes on the GPU machine.
# Installs the carried wheels (.whl/, from bench/gpu/prepare.sh) and runs the parts below, each
# under its own time limit (and never past the whole run's deadline), writing under $OUT:
#   summary.md, summary.json   every part's record and the headline figures
#   logs.txt                   every part's log, one after another
#   pytest-gpu.txt             pytest -m gpu (its own log, for the failures)
# Parts, in this order: env (device, driver, CUDA, CuPy, versions), pytest -m gpu, year v1/v2 on numpy and
# CuPy, render 16384x8192 numpy and CuPy, fleet 200 x 90 days on CuPy (store written, split of
# compute / transfer / compression), estimate --workers 1 --backend cupy through dask-cuda.
#
#   bash bench/gpu/run.sh                          # on the GPU machine (see bench/gpu/README.md)
#   LIQGPU_GPU_DRYRUN=1 OUT=/tmp/o bash bench/gpu/run.sh   # on a CPU: small sizes, numpy
#                                                          # posing as CuPy, nothing installed
# LIQGPU_GPU_DEADLINE (seconds, default 540) bounds the whole run; LIQGPU_GPU_YEAR_MODELS (default
# "v2 v1") and LIQGPU_GPU_FLEET_LIMIT (seconds, default 170) size those parts; LIQGPU_GPU_PARTS (e.g.
# "env year render") picks parts; "profile" (not in the default list) profiles the year
# engine line by line under CUDA_LAUNCH_BLOCKING=1.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
START=$(date +%s)
DEADLINE=${LIQGPU_GPU_DEADLINE:-540}
DRY=${LIQGPU_GPU_DRYRUN:-0}
OUT=${OUT:-$REPO/out/gpu}
PARTS=${LIQGPU_GPU_PARTS:-"env pytest year render daskcuda fleet"}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/liqgpu-gpurun.XXXXXX")  # not $OUT: at most 8 files come back
REC="$WORK/records"         # per-part JSON records: folded into $OUT/summary.json
LOGS="$WORK/logs"           # per-part logs: folded into $OUT/logs.txt
mkdir -p "$REC" "$LOGS"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg LIQGPU_GPU_DRYRUN=$DRY
export TMPDIR=${TMPDIR:-/tmp}

left() { echo $(( DEADLINE - ($(date +%s) - START) )); }

# part NAME LIMIT_S COMMAND...: runs COMMAND under `timeout` (the smaller of LIMIT_S and what is
# left of the deadline less 20 s for the summary), logs to $LOGS/NAME.log, notes the status.
part() {
    local name=$1 limit=$2; shift 2
    local rem=$(( $(left) - 20 ))
    if (( rem < 10 )); then
        echo "$name skipped:no-time-left" >> "$REC/status.txt"
        echo "== $name: skipped, no time left" | tee -a "$LOGS/$name.log"
        return
    fi
    (( limit > rem )) && limit=$rem
    echo "== $name (limit ${limit}s, $(left)s left of the run)" | tee -a "$LOGS/$name.log"
    local t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >> "$LOGS/$name.log" 2>&1
    local rc=$?
    local dt=$(( $(date +%s) - t0 ))
    local st=ok
    if (( rc == 124 || rc == 137 )); then st="timeout:${limit}s"; elif (( rc != 0 )); then st="exit:$rc"; fi
    echo "$name $st" >> "$REC/status.txt"
    echo "== $name: $st after ${dt}s" | tee -a "$LOGS/$name.log"
    tail -n 3 "$LOGS/$name.log" | sed "s/^/   [$name] /"
}

collect() {
    $PY bench/gpu/parts.py summary --out "$WORK" --dest "$OUT" $( [ "$DRY" = 1 ] && echo --dry ) \
        > "$LOGS/zz-summary.log" 2>&1 || cat "$LOGS/zz-summary.log"
    cat "$LOGS"/*.log > "$OUT/logs.txt" 2>/dev/null
}
trap collect EXIT

# -- setup: the carried wheels and liqgpu itself (no network there) -------------------------------
if [ "$DRY" != 1 ]; then
    SITE=/tmp/site
    if ls .whl/*.whl > /dev/null 2>&1; then
        echo "== setup: installing $(ls .whl/*.whl | wc -l) wheels into $SITE"
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl > "$LOGS/00-setup.log" 2>&1 \
            || { echo "setup: pip install failed:"; tail -20 "$LOGS/00-setup.log"; }
    else
        echo "setup: no .whl/ here: carry it (carry [\".whl\"]) after bench/gpu/prepare.sh" \
            | tee -a "$LOGS/00-setup.log"
    fi
    export PYTHONPATH=$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}
    command -v nvidia-smi > /dev/null && nvidia-smi >> "$LOGS/00-setup.log" 2>&1
    $PY -m pip list 2>/dev/null | grep -i -E "^(numpy|cupy|numba|pandas|xarray|scipy|pyarrow) " \
        >> "$LOGS/00-setup.log"
else
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
echo "setup done at $(( $(date +%s) - START ))s" >> "$LOGS/00-setup.log"

P="$PY bench/gpu/parts.py"
DRYF=$( [ "$DRY" = 1 ] && echo --dry )
for p in $PARTS; do
    case $p in
    env) part env 60 $P env --out "$WORK" $DRYF ;;
    pytest)
        part pytest 100 $PY -m pytest -m gpu -q -p no:cacheprovider ${LIQGPU_GPU_PYTEST_PATHS:-tests}
        cp "$LOGS/pytest.log" "$OUT/pytest-gpu.txt" 2>/dev/null
        $P pytest --out "$WORK" --log "$LOGS/pytest.log" $DRYF > /dev/null 2>&1 ;;
    year)
        for m in ${LIQGPU_GPU_YEAR_MODELS:-v2 v1}; do  # the default model first
            part year-$m-cupy 70 $P year --backend cupy --model $m --name year-$m-cupy --out "$WORK" $DRYF
            part year-$m-numpy 60 $P year --backend numpy --model $m --repeats 1 --name year-$m-numpy --out "$WORK" $DRYF
        done ;;
    render) part render 110 $P render --out "$WORK" $DRYF ;;
    fleet) part fleet-v2-cupy ${LIQGPU_GPU_FLEET_LIMIT:-170} $P fleet --backend cupy --model v2 --name fleet-v2-cupy --out "$WORK" $DRYF
           if grep -q '"skipped"' "$REC/fleet-v2-cupy.json" 2>/dev/null; then  # no v2 yet: v1
               part fleet-v1-cupy 170 $P fleet --backend cupy --model v1 --name fleet-v1-cupy --out "$WORK" $DRYF
           fi ;;
    daskcuda) part daskcuda 75 $P daskcuda --backend cupy --model v2 --name daskcuda --timeout 65 --out "$WORK" $DRYF
              if grep -q '"skipped"' "$REC/daskcuda.json" 2>/dev/null; then
                  part daskcuda-v1 60 $P daskcuda --backend cupy --model v1 --name daskcuda-v1 --timeout 55 --out "$WORK" $DRYF
              fi ;;
    profile) part profile 120 env CUDA_LAUNCH_BLOCKING=1 $P profile --backend cupy --model v2 --out "$WORK" $DRYF ;;
    *) echo "run.sh: unknown part $p" ;;
    esac
done
collect
trap - EXIT
rm -rf "$WORK"
cat "$OUT/summary.md"
echo "run.sh: done in $(( $(date +%s) - START ))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
