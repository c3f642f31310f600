"""Stage normalize: one gain per clip (peak by default), written to data/normalized/."""

from qvad.common.params import load_params
from qvad.data.normalize import normalize_clips

if __name__ == "__main__":
    normalize_clips(load_params())
