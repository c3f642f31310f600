#!/usr/bin/env bash
# Set up a fresh machine for this project: apt lists (the builtin corpus comes from
# Debian's archive), and a .venv with requirements.txt. Safe to run again: it skips
# what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # apt-get download needs package lists; a fresh image has none.
  if ! apt-cache show --no-all-versions klettres-data >/dev/null 2>&1; then
    $SUDO apt-get update -qq
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned resolver run would fetch a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "$(grep '^torch==' requirements.txt)"
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
