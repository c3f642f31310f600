#!/usr/bin/env bash
# The project's test command: sets itself up, then runs the whole suite, including an
# end-to-end `dvc repro` of the pipeline on tiny params in a temporary copy of the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
