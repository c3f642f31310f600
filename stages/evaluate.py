"""Stage evaluate: the model and both VAD baselines on the same held-out test clips."""

from qvad.common.params import load_params
from qvad.analysis.evaluate import evaluate

if __name__ == "__main__":
    evaluate(load_params())
