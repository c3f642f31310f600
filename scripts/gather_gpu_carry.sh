#!/usr/bin/env bash
# Gather what a CUDA machine without network needs for the GPU pipeline check
# (benchmarks/gpu_pipeline/run.sh), run here from the repository root:
#   1. the cp312 manylinux wheels listed in benchmarks/gpu_pipeline/wheels.txt, into WHEELS
#      (bitsandbytes, silero-vad and ten-vad slimmed to the files a Linux CUDA 13 machine loads);
#   2. the Debian packages behind libc++1 / libc++abi1 (TEN VAD's C++ runtime, with libunwind), into WHEELS;
#   3. a stratified data subset of a finished CPU run's data stages (`dvc repro audit` in FROM),
#      into DATA (benchmarks/gpu_pipeline/subset.py).
# Then copy the repository with WHEELS and DATA to the GPU machine and run
#   bash benchmarks/gpu_pipeline/run.sh OUT_DIR
#
# usage: scripts/gather_gpu_carry.sh [--dry-run] [--wheels DIR | --no-wheels] [--data DIR] [--from CHECKOUT]
#                                    [--python PY] [SUBSET OPTIONS...]
#   --dry-run      print every step and write nothing (no network)
#   --wheels DIR   default .whl
#   --no-wheels    the data subset only (e.g. a second part: --no-wheels --data .gpu_full --splits dev,test
#                  --dev-per-cell 1000 --test-per-cell 1000 --psy-bases 40: the full-depth run's whole dev and test splits)
#   --data DIR     default .gpu_data
#   --from DIR     checkout whose data/ the subset is cut from (default .)
#   --python PY    python with this project's requirements (default .venv/bin/python)
#   SUBSET OPTIONS passed to subset.py: --train-per-cell N --dev-per-cell N --test-per-cell N --psy-bases N
#                  --splits LIST
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0 GET_WHEELS=1 WHEELS=.whl DATA=.gpu_data FROM=. PY=.venv/bin/python SUBSET_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --wheels) WHEELS=$2; shift ;;
    --no-wheels) GET_WHEELS=0 ;;
    --data) DATA=$2; shift ;;
    --from) FROM=$2; shift ;;
    --python) PY=$2; shift ;;
    --train-per-cell|--dev-per-cell|--test-per-cell|--psy-bases|--splits) SUBSET_ARGS+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "gather_gpu_carry.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

LIST=benchmarks/gpu_pipeline/wheels.txt
mapfile -t PINS < <(grep -v '^#' "$LIST" | grep .)
# Requirements pinned in requirements.txt must be carried at that pin.
for pin in "${PINS[@]}"; do
  name=${pin%%==*}
  want=$(grep -i "^${name}==" requirements.txt | sed 's/[[:space:]].*//' || true)
  if [ -n "$want" ] && [ "$want" != "$pin" ]; then
    echo "gather_gpu_carry.sh: $LIST pins $pin but requirements.txt pins $want" >&2; exit 1
  fi
done
PLATFORMS=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64; do
  PLATFORMS+=(--platform "$p")
done
# bitsandbytes: every libbitsandbytes_*.so but these is for another CUDA, ROCm or XPU (43 MB -> 7 MB).
KEEP_BNB='libbitsandbytes_(cpu|cuda130|cuda132)\.so'
# silero-vad: the project loads the TorchScript model only (qvad.audio.vad: onnx=False).
KEEP_SILERO='silero_vad/data/silero_vad\.jit'
# ten-vad: the Linux x86-64 library only.
KEEP_TEN='ten_vad/lib/Linux/x64/'

run() {  # print, and run unless --dry-run
  echo "+ $*"
  [ "$DRY" = 1 ] || "$@"
}

slim() {  # slim WHEEL PATTERN_OF_FILES_TO_DROP PATTERN_TO_KEEP
  local wheel=$1 drop=$2 keep=$3
  echo "+ slim $wheel: drop files matching '$drop' except '$keep'"
  [ "$DRY" = 1 ] && return
  local tmp abs; tmp=$(mktemp -d); abs=$(realpath "$wheel")
  (cd "$tmp" && unzip -q "$abs")
  find "$tmp" -type f | sed "s|^$tmp/||" | grep -E "$drop" | grep -Ev "$keep" | (cd "$tmp" && xargs -r rm -f)
  rm -f "$abs"
  (cd "$tmp" && zip -qr -X "$abs" .)
  rm -rf "$tmp"
}

if [ "$GET_WHEELS" = 1 ]; then
  run mkdir -p "$WHEELS"
  run "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$WHEELS" "${PINS[@]}"
  slim "$WHEELS/bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl" 'libbitsandbytes_.*\.so$' "$KEEP_BNB"
  slim "$WHEELS/silero_vad-6.2.3-py3-none-any.whl" '^silero_vad/data/' "$KEEP_SILERO"
  slim "$WHEELS/ten_vad-1.0.6.9-py3-none-any.whl" '^ten_vad/lib/' "$KEEP_TEN"
  run bash -c "cd '$WHEELS' && apt-get download libc++1-14 libc++abi1-14 libunwind-14"
fi
run env PYTHONPATH=. "$PY" -m benchmarks.gpu_pipeline.subset --from "$FROM" --out "$DATA" "${SUBSET_ARGS[@]}"
if [ "$DRY" = 0 ]; then
  du -sh "$DATA"
  [ "$GET_WHEELS" = 0 ] || du -sh "$WHEELS"
fi
