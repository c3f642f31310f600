#!/usr/bin/env bash
# The project's test command: sets itself up, then runs the whole suite, including an
# end-to-end `dvc repro` of the pipeline on tiny params in a temporary copy of the repo.
# Arguments go to pytest: `bash scripts/test.sh -m "not slow"` runs the fast subset
# (markers: slow, e2e, cuda; see pytest.ini).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Test-only Python packages (the reference ctranslate2 for the Whisper conversion test).
.venv/bin/python -m pip install -q -r requirements-test.txt
# Test-only Debian packages: espeak-ng (real synthetic speech for the Silero sanity test) and
# chromium (the offline rendering checks of the plots and the error report).
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  for pkg in espeak-ng chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || $SUDO apt-get install -y -qq "$pkg" >/dev/null
  done
fi
exec .venv/bin/python -m pytest -q "$@"
