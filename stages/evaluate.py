"""Stage evaluate: the model and the three VAD baselines (WebRTC, Silero, TEN VAD) on the same held-out test clips."""

from qvad.common.params import load_params
from qvad.analysis.evaluate import evaluate

if __name__ == "__main__":
    evaluate(load_params())
