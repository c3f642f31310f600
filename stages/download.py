"""Stage download: decode the chosen data source into data/raw/ (16 kHz mono WAV + manifest)."""

from qvad.common.params import load_params
from qvad.data.download import download

if __name__ == "__main__":
    download(load_params())
