"""Stage mix_snr: the factorial (class x duration x SNR) clips, mixed with split-disjoint noise."""

from qvad.common.params import load_params
from qvad.data.mix_snr import mix_snr

if __name__ == "__main__":
    mix_snr(load_params())
