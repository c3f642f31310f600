#!/usr/bin/env bash
# The project's test command: sets itself up, then runs the whole suite, including an
# end-to-end `dvc repro` of the pipeline on tiny params in a temporary copy of the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# espeak-ng is for the tests only: real synthetic speech for the Silero sanity test.
if ! command -v espeak-ng >/dev/null && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi
exec .venv/bin/python -m pytest -q "$@"
