"""Frame-level voice activity from WebRTC VAD and Silero VAD, on 16 kHz float audio.

One module for both because hygiene (label cleaning), SNR mixing (active frames) and
the evaluation baselines must all see the same VAD behaviour.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import webrtcvad

from qvad import SAMPLE_RATE

SILERO_WINDOW = 512  # samples at 16 kHz (32 ms), fixed by the Silero model


def _pcm16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def webrtc_frames(x: np.ndarray, mode: int = 3, frame_ms: int = 30) -> np.ndarray:
    """Boolean voiced decision per full frame (a trailing partial frame is dropped)."""
    if frame_ms not in (10, 20, 30):
        raise ValueError(f"webrtc frame_ms must be 10, 20 or 30, got {frame_ms}")
    if mode not in (0, 1, 2, 3):
        raise ValueError(f"webrtc mode must be 0..3, got {mode}")
    vad = webrtcvad.Vad(mode)
    n = SAMPLE_RATE * frame_ms // 1000
    pcm = _pcm16(x)
    count = pcm.size // n
    return np.fromiter(
        (vad.is_speech(pcm[i * n:(i + 1) * n].tobytes(), SAMPLE_RATE) for i in range(count)),
        dtype=bool, count=count,
    )


@lru_cache(maxsize=1)
def _silero_model():
    """The JIT model that the silero-vad wheel ships (offline), loaded once per process."""
    import torch
    from silero_vad import load_silero_vad

    torch.set_num_threads(1)
    return load_silero_vad(onnx=False)


def silero_probs(x: np.ndarray) -> np.ndarray:
    """Speech probability per 32 ms window (the model's streaming state is reset per clip)."""
    import torch

    model = _silero_model()
    model.reset_states()
    count = x.size // SILERO_WINDOW
    if count == 0:
        return np.zeros(0, dtype=np.float32)
    chunks = torch.from_numpy(np.ascontiguousarray(x[: count * SILERO_WINDOW], dtype=np.float32))
    out = np.empty(count, dtype=np.float32)
    with torch.inference_mode():
        for i in range(count):
            out[i] = float(model(chunks[i * SILERO_WINDOW:(i + 1) * SILERO_WINDOW], SAMPLE_RATE))
    return out


def voiced_frames(x: np.ndarray, vad: str, *, mode: int = 3, frame_ms: int = 30,
                  threshold: float = 0.5) -> tuple[np.ndarray, float]:
    """Voiced decision per frame and the frame length in seconds, for either VAD."""
    if vad == "webrtc":
        return webrtc_frames(x, mode, frame_ms), frame_ms / 1000.0
    if vad == "silero":
        return silero_probs(x) >= threshold, SILERO_WINDOW / SAMPLE_RATE
    raise ValueError(f"unknown VAD {vad!r}: expected 'webrtc' or 'silero'")
