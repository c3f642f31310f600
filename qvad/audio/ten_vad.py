"""Frame-level speech probability from TEN VAD (PyPI ``ten-vad==1.0.6.9``), on 16 kHz float audio.

TEN VAD is a third VAD baseline next to WebRTC and Silero (``qvad.audio.vad``). The wheel ships a
prebuilt ``libten_vad.so`` (model weights inside) and a ctypes class ``TenVad`` whose
``process(frame)`` takes exactly one hop of int16 samples and returns ``(probability, flag)``.

Licence: ten-vad is licensed under Apache-2.0 **with Agora's additional conditions** (see the
wheel's ``LICENSE``): it may not be deployed in a way that competes with Agora's offerings or
lets others do so, and may be deployed only for your own Application(s) and their direct end
users; derivative works stay under the same terms. It is not plain Apache-2.0: results that
use this baseline, and anything that redistributes it, must say so.

System libraries: ``libten_vad.so`` links against LLVM's C++ runtime, i.e. Debian's ``libc++1``
and ``libc++abi1`` (``apt-get install -y libc++1 libc++abi1``). Without them the wheel's
``TenVad()`` raises ``OSError`` from ``CDLL`` and then prints an ``AttributeError`` from its own
``__del__``, which buries the cause; :func:`ten_vad_probs` checks the library first and raises
:class:`TenVadUnavailable` naming the packages to install.

Measured with 1.0.6.9 on the 2-core CPU machine:

- No batch entry point: the C API is ``ten_vad_create / ten_vad_process / ten_vad_destroy /
  ten_vad_get_version`` and ``process`` takes one hop. So there is one foreign call per hop; this
  module converts the clip to int16 once and calls ``ten_vad_process`` directly with precomputed
  pointers (bit-identical to ``TenVad.process``). About 12 ms per 1 s clip at hop 256 (about
  0.2 ms a frame, almost all inside the library; the wheel's own ``process`` loop is 13.7 ms).
- State carries over: the model is recurrent and its state lives in the handle. Clip X scored
  after clip Y differs from X scored alone by up to 0.2 in the first frames and still by 0.03
  after 100 frames (1.6 s); 1 s of zeros between them does not clear it. There is no reset call,
  so every clip gets a fresh instance. Instances do not share state (two handles interleaved
  frame by frame give the same output as one alone).
- Creating an instance is cheap: about 0.2 ms (``dlopen`` of an already-loaded library plus
  ``ten_vad_create``), under 2% of scoring a 1 s clip.
- Output does not depend on ``threshold``; the library's flag equals ``probability >= threshold``.
- Reference levels (hop 256): espeak-ng speech max 0.99, mean 0.8; all zeros 0.25 in the first
  frame settling to 0.16; white noise (any level from 0.001 to 0.3 RMS) max about 0.5 to 0.58 in
  the first frames, mean 0.13 to 0.27. A pure 440 Hz tone reaches 0.73.
"""

from __future__ import annotations

import ctypes
import os
import platform
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16_000  # TEN VAD accepts 16 kHz only (same rate as qvad.SAMPLE_RATE)
HOP_SIZES = (160, 256)  # the hop sizes the ten-vad README documents (10 ms, 16 ms)
DEBIAN_PACKAGES = ("libc++1", "libc++abi1")


class TenVadUnavailable(RuntimeError):
    """ten-vad is not installed, or its shared library cannot be loaded."""


def _library_path() -> str | None:
    """Where the wheel keeps its Linux x86-64 library, or None on other platforms."""
    import ten_vad

    if platform.system() == "Linux" and platform.machine() == "x86_64":
        return os.path.join(os.path.dirname(os.path.abspath(ten_vad.__file__)),
                            "lib", "Linux", "x64", "libten_vad.so")
    return None


@lru_cache(maxsize=1)
def _check_library() -> None:
    """Fail with a clear message if ten-vad or its C++ runtime is missing (checked once)."""
    try:
        path = _library_path()
    except ImportError as exc:
        raise TenVadUnavailable(
            "TEN VAD needs the PyPI package ten-vad (pip install ten-vad==1.0.6.9)") from exc
    if path is None:
        return  # not Linux x86-64: the wheel's TenVad() does its own platform check
    if not os.path.exists(path):
        raise TenVadUnavailable(f"ten-vad is installed but its library is missing: {path}")
    try:
        ctypes.CDLL(path)
    except OSError as exc:
        raise TenVadUnavailable(
            f"TEN VAD cannot load {path}: {exc}. The library links against LLVM's C++ runtime: "
            f"install the Debian packages {' and '.join(DEBIAN_PACKAGES)} "
            f"(apt-get install -y {' '.join(DEBIAN_PACKAGES)})") from exc


def _new_vad(hop_size: int, threshold: float):
    """A fresh TenVad handle (about 0.2 ms); its recurrent state starts from zero."""
    _check_library()
    from ten_vad import TenVad

    try:
        return TenVad(hop_size, threshold)
    except (OSError, AttributeError) as exc:  # the wheel hides a failed CDLL behind AttributeError
        raise TenVadUnavailable(
            f"TEN VAD could not be created ({type(exc).__name__}: {exc}); on Debian install "
            f"{' and '.join(DEBIAN_PACKAGES)} (apt-get install -y {' '.join(DEBIAN_PACKAGES)})"
        ) from exc


def _pcm16(x: np.ndarray) -> np.ndarray:
    # same float -> int16 mapping as qvad.audio.vad._pcm16 (clip, scale by 32767, truncate)
    return np.ascontiguousarray((np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16))


def ten_vad_probs(audio: np.ndarray, hop_size: int = 256, threshold: float = 0.5) -> np.ndarray:
    """Speech probability per hop of ``hop_size`` samples of 16 kHz mono float audio.

    A fresh TEN VAD instance scores each call, so the result depends on this clip only. Frames
    are the full hops of the clip (a trailing partial hop is dropped, as in ``qvad.audio.vad``), except
    that a non-empty clip shorter than one hop is zero-padded to one hop and gives one frame. An
    empty clip gives an empty array. ``threshold`` only sets the library's own voiced flag, which
    is ``probability >= threshold``; it does not change the probabilities.
    """
    if int(hop_size) != hop_size or hop_size not in HOP_SIZES:
        raise ValueError(f"hop_size must be one of {HOP_SIZES} samples, got {hop_size!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected float audio in [-1, 1], got dtype {x.dtype}")
    if x.size == 0:
        return np.zeros(0, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite samples")
    hop = int(hop_size)
    if x.size < hop:
        x = np.pad(x, (0, hop - x.size))
    pcm = _pcm16(x)
    count = pcm.size // hop

    vad = _new_vad(hop, float(threshold))
    out = np.empty(count, dtype=np.float32)
    lib = getattr(vad, "vad_library", None)
    handle = getattr(vad, "vad_handler", None)
    if lib is None or handle is None:  # not the 1.0.6.9 layout: use the public per-frame API
        for i in range(count):
            out[i] = vad.process(pcm[i * hop:(i + 1) * hop])[0]
        return out
    process = lib.ten_vad_process  # argtypes set by TenVad: (void*, void*, size_t, float*, int32*)
    prob, flag = ctypes.c_float(), ctypes.c_int32()
    prob_ref, flag_ref = ctypes.byref(prob), ctypes.byref(flag)
    base, step = pcm.ctypes.data, hop * pcm.itemsize
    for i in range(count):
        if process(handle, base + i * step, hop, prob_ref, flag_ref) != 0:
            raise RuntimeError(f"ten_vad_process failed at frame {i}")
        out[i] = prob.value
    del vad  # destroy the handle now; pcm outlives every call above
    return out


def ten_vad_voiced(audio: np.ndarray, hop_size: int = 256, threshold: float = 0.5) -> np.ndarray:
    """Boolean voiced decision per frame: the library's flag, ``probability >= threshold``."""
    return ten_vad_probs(audio, hop_size, threshold) >= threshold
