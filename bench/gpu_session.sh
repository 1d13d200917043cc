#!/usr/bin/env bash
# One GPU session's measurements, in one device call (one command, under 10 minutes).
#
#   bash bench/gpu_session.sh            # writes everything under $OUT (default ./gpu-out)
#
# Steps, each timed, each run even when an earlier one failed, a summary at the end:
#   the CUDA compile check first (tests/test_cuda_compile.py: every kernel to PTX and a cubin
#   for sm_80 and sm_90, with the launch signatures the simulator tests recorded; it needs no
#   GPU, so a failure here is the same failure CI reports, seen before the GPU runs anything),
#   the GPU (nvidia-smi), the GPU tests (pytest --gpu -m gpu), bench_gpu.py (the map step,
#   device-resident), bench_lpm.py --gpu, bench_hll.py --gpu. The three benchmarks
#   write their sections into $OUT/RESULTS-gpu.md; copy those into bench/RESULTS.md after.
#
# Sizes are chosen to fit about 8 minutes on an H100, and each step has a wall-clock cap so
# that even with every cap reached the script ends near 580 s, inside the call's 600: the
# compile check (40 s), the GPU queries (70 s together), the GPU tests (115 s), bench_gpu at
# its default 2^27 records, about 40 GB of device memory, ~30 s of it generating records on
# the host (150 s),
# bench_lpm at its default 2x10^7 addresses per case (110 s), bench_hll at its defaults,
# 10^7 addresses (75 s; last, so the least needed step is the one a slow run loses).
#
# What the device machine lacks (its image has numba, numba-cuda, CuPy, pyarrow, psutil,
# pytest, not dask, bokeh or tomli-w; nothing can be fetched there), prepared here first:
#   - the libloc table (../shared does not travel): copy it into the repo, ignored, and carry
#       echo /.gpu-data/ >> .git/info/exclude
#       mkdir -p .gpu-data/prefix2asn && cp -r ../shared/data/prefix2asn/libloc_ipfire .gpu-data/prefix2asn/
#   - tomli-w, which the GPU tests' synthesize needs (see /work/.library/device/README.md):
#       echo /.whl/ >> .git/info/exclude
#       python3 -m pip download --no-deps --only-binary=:all: -d .whl tomli-w
#   - the kernel launches the simulator tests recorded (the compile check's signatures; the
#     device image has no dask or bokeh to rerun those tests): run the test suite here, which
#     writes .cuda-launches.jsonl (git-ignored), and carry it. The check uses the image's
#     numba-cuda, NVVM and nvJitLink (cuda-bindings); the nvidia-nvvm wheel is 75 MB, over
#     what a call can carry, so if the image has no NVVM the step fails saying so (it runs
#     with FLOWATLAS_CUDA_CHECK_REQUIRED=1: nothing in it may skip for want of a library).
# then call the device tool with carry [".gpu-data", ".whl", ".cuda-launches.jsonl"] and the command
#   PYTHONUNBUFFERED=1 bash bench/gpu_session.sh
# (results come back under the reply's files_at; at most 8 files, so this writes 8).

set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || PY=python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -z "${FLOWATLAS_DATA:-}" ] && [ -d .gpu-data ]; then
    export FLOWATLAS_DATA="$PWD/.gpu-data"
fi
RESULTS="$OUT/RESULTS-gpu.md"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
FAILED=0
STEPS=0

# step NAME LOG CAP_SECONDS COMMAND...: run, log, time; never stop the script
step() {
    local name=$1 log=$2 cap=$3
    shift 3
    local t0 t1 rc
    t0=$(date +%s%N)
    echo "=== $name: $*" | tee -a "$log"
    timeout --kill-after=3 "$cap" "$@" >>"$log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    STEPS=$((STEPS + 1))
    [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
    printf '%-22s exit %3d  %6d.%d s  (log %s)\n' "$name" "$rc" $(((t1 - t0) / 1000000000)) \
        $(((t1 - t0) / 100000000 % 10)) "$(basename "$log")" | tee -a "$SUMMARY"
}

step "CUDA compile check" "$OUT/compile-check.log" 40 \
    env FLOWATLAS_CUDA_CHECK_REQUIRED=1 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_compile.py
ENV_LOG="$OUT/env.txt"
step "nvidia-smi -L" "$ENV_LOG" 20 nvidia-smi -L
step "nvidia-smi query" "$ENV_LOG" 20 \
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
step "python and packages" "$ENV_LOG" 30 "$PY" -c "
import sys, numba, numpy, pyarrow
from numba import cuda
print(sys.version); print('numba', numba.__version__, 'numpy', numpy.__version__,
      'pyarrow', pyarrow.__version__)
print('FLOWATLAS_DATA', __import__('os').environ.get('FLOWATLAS_DATA'))
cuda.detect()
"

# the modules holding GPU tests (naming them keeps an unrelated module's missing import
# from stopping collection under -x)
mapfile -t GPU_TESTS < <(grep -l "mark.gpu" tests/*.py)
step "pytest --gpu -m gpu" "$OUT/pytest-gpu.log" 115 \
    "$PY" -m pytest --gpu -m gpu -q -x -p no:cacheprovider "${GPU_TESTS[@]}"
step "bench_gpu.py" "$OUT/bench-gpu.log" 150 \
    "$PY" bench/bench_gpu.py --results "$RESULTS"
step "bench_lpm.py --gpu" "$OUT/bench-lpm.log" 110 \
    "$PY" bench/bench_lpm.py --gpu --pytricia-n 100000 --results "$RESULTS"
step "bench_hll.py --gpu" "$OUT/bench-hll.log" 75 \
    "$PY" bench/bench_hll.py --gpu --results "$RESULTS"

echo
echo "$FAILED of $STEPS steps failed (exit 124: hit its cap)" >>"$SUMMARY"
echo "=== summary (also $SUMMARY)"
cat "$SUMMARY"
echo
cat "$ENV_LOG"
echo
echo "=== bench_gpu.py, last lines"
tail -n 16 "$OUT/bench-gpu.log"
[ "$FAILED" -eq 0 ]
