"""Stage vad_hygiene: keep densely voiced speech regions, reject non-speech files with voice."""

from qvad.common.params import load_params
from qvad.data.hygiene import vad_hygiene

if __name__ == "__main__":
    vad_hygiene(load_params())
