#!/usr/bin/env bash
# The GPU pipeline check, on a CUDA machine, from the repository root (docs/gpu_check.md):
#   bash benchmarks/gpu_pipeline/run.sh OUT_DIR                     # part 1: three configurations, 4+4 layers
#   bash benchmarks/gpu_pipeline/run.sh OUT_DIR --depth 32+32 --configs qwen-nf4,qwen-bf16 --data .gpu_full
#                                                                   # the full-depth 7B, whole dev and test
#   bash benchmarks/gpu_pipeline/run.sh OUT_DIR --memory-floor      # QLoRA memory / speed settings
# Other options go to benchmarks/gpu_pipeline/check.py (or memory_floor.py). Wheels in $QVAD_WHEELS
# (default .whl, from scripts/gather_gpu_carry.sh) are installed into a private folder first; the
# data subset is read from $QVAD_GPU_DATA (default .gpu_data).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: run.sh OUT_DIR [options]}; shift
mkdir -p "$OUT"
WHEELS=${QVAD_WHEELS:-.whl}
PY=${PYTHON:-python3}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=${QVAD_SITE:-/tmp/qvad_site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if compgen -G "$WHEELS/*.deb" >/dev/null; then  # TEN VAD's C++ runtime, unpacked aside (never into /)
  LIBS=/tmp/qvad_libs
  for deb in "$WHEELS"/*.deb; do dpkg -x "$deb" "$LIBS"; done
  export LD_LIBRARY_PATH="$LIBS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true
MODULE=check
if [ "${1:-}" = "--memory-floor" ]; then MODULE=memory_floor; shift; fi
ARGS=(--out "$OUT")
# the subset first: a --data of the options (a second part) lays its files over it
[ "$MODULE" = check ] && ARGS+=(--data "${QVAD_GPU_DATA:-.gpu_data}")
ARGS+=("$@")
exec "$PY" -m "benchmarks.gpu_pipeline.$MODULE" "${ARGS[@]}"
