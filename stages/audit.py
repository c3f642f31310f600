"""Stage audit: fail the pipeline, with a readable report, on any leakage between splits."""

import sys

from qvad.common.params import load_params
from qvad.data.audit import audit

if __name__ == "__main__":
    sys.exit(audit(load_params()))
