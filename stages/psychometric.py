"""Stage psychometric: duration and SNR thresholds (DT75, SNR-75, ...) for the model and the VADs."""

from qvad.common.params import load_params
from qvad.analysis.psychometric import psychometric

if __name__ == "__main__":
    psychometric(load_params())
