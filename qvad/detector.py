"""The trained detector on your own audio: ``Detector.from_dir("models")``.

```python
from qvad.detector import Detector

det = Detector.from_dir("models")                 # models/base + models/adapter + models/detector.json
det = Detector.from_dir("exported")               # or a merged `qvad export` folder (no peft needed)
det.predict("clip.wav")                           # calibrated P(speech), a float
det.predict(samples, sr=44100)                    # arrays too: any rate, (n,) or (n, channels)
det.predict_files(["a.wav", "folder/"])           # DataFrame, one row per file (errors as rows)
det.segments("meeting.flac")                      # [(start_s, end_s, p_speech), ...]
```

Everything that shapes the model's input at training time is read from ``models/detector.json``
(written by the evaluate stage), never from params.yaml, so a model folder copied elsewhere
scores exactly as it was evaluated:

* ``prompt`` (``system``, ``user``, ``audio_position``) and ``answer_tokens`` (``["A", "B"]``: A = speech);
* ``container_ms`` and ``container_noise_rel_db``: a clip shorter than the container is centred
  in white noise that many dB below the clip's RMS (qvad.data.signal.in_container), as every
  training clip was; Qwen2-Audio turns under ~40 ms of audio into zero audio tokens otherwise;
* ``normalize``: the finished container clip gets one gain (qvad.data.level.normalize), as the
  normalize stage applied it after mixing and containing;
* ``temperature`` (fitted on dev): calibrated P = sigmoid((logit_A - logit_B) / T);
* ``threshold``: the decision ``P >= threshold`` means speech;
* ``window_ms`` / ``hop_ms``: how audio longer than the container is cut into clips;
* ``model``: the ``model.*`` params (preset, quantization, dtype, encoder truncation...).

Input handling: any sample rate and channel count become 16 kHz mono (channels averaged, soxr
HQ, as the pipeline decodes its sources). Digital silence (peak <= one 16-bit LSB) is
non-speech with P = 0 without running the model: it has no level to normalise and the model
never saw it. The container noise is seeded per clip (from the window's position), so the same
audio always gets the same score, whatever else is in the batch. Audio no longer than the
container is one clip; longer audio is scored in windows and its P is the maximum over windows
("is there speech anywhere in it?"); its speech segments come from qvad.segments.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from qvad import SAMPLE_RATE
from qvad.audio.decode import Decoded, as_mono_16k, decode_file, find_audio, is_silent
from qvad.audio.io import AudioError
from qvad.detector_config import DetectorConfig, DetectorConfigError, check_model_dir
from qvad.segments import SegmentOptions, frame_probs, speech_segments, window_starts

DEFAULT_MAX_DURATION_S = 4 * 3600.0
"""Files longer than this (from their header) are refused instead of decoded: 4 h is ~0.9 GB at 16 kHz."""

SEED = 0
"""Base seed of the container noise; each clip's generator is seeded with (SEED, start, length)."""

MIN_UNCONTAINED = 640
"""Without a container, clips under 40 ms give Qwen2-Audio no audio token at all."""

@dataclass
class FileResult:
    """One file's outcome; ``error`` is empty when it was scored."""

    path: str
    duration_s: float | None = None
    orig_sr: int | None = None
    channels: int | None = None
    p_speech: float | None = None
    decision: str = ""
    windows: int = 0
    error: str = ""
    segments: list[tuple[float, float, float]] | None = None

    def row(self, with_segments: bool = False) -> dict:
        out = {"path": self.path, "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
               "orig_sr": self.orig_sr, "channels": self.channels,
               "p_speech": None if self.p_speech is None else round(self.p_speech, 6),
               "decision": self.decision, "windows": self.windows, "error": self.error}
        if with_segments:
            segs = self.segments or []
            out["n_segments"] = len(segs) if not self.error else None
            out["speech_s"] = round(sum(e - s for s, e, _ in segs), 3) if not self.error else None
            out["segments"] = [list(s) for s in segs] if not self.error else None
        return out


class _Job:
    """A file on its way through the batcher: window layout, probabilities filled in as batches finish."""

    def __init__(self, result: FileResult, audio: np.ndarray | None, starts: np.ndarray, window: int) -> None:
        self.result, self.audio, self.starts, self.window = result, audio, starts, window
        self.probs = np.full(len(starts), np.nan)
        self.waiting = 0
        self.open = audio is not None  # still queueing windows: not finished even if nothing is waiting


class Detector:
    """Qwen2-Audio + LoRA answering "is there speech?" on arbitrary audio. See the module docstring."""

    def __init__(self, model: Any, processor: Any, config: DetectorConfig, *, device: str = "cpu",
                 batch_size: int = 32, seed: int = SEED) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.processor, self.config = model, processor, config
        self.device, self.batch_size, self.seed = device, int(batch_size), int(seed)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | os.PathLike = "models", *, device: str | None = None,
                 batch_size: int | None = None, seed: int = SEED) -> "Detector":
        """Load ``path``/base + ``path``/adapter as the evaluate stage does, with ``path``/detector.json.

        A merged export (``qvad export``) loads as the checkpoint in ``path`` itself, without peft.

        ``device``: 'cpu', 'cuda' (or 'cuda:N'); None takes the GPU when there is one.
        ``batch_size``: clips per forward pass; None gives 64 on a GPU and 16 on the CPU.
        """
        base, adapter, cfg_path = check_model_dir(path)
        config = DetectorConfig.load(cfg_path)
        import torch

        from qvad.model.store import load_trained

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise DetectorConfigError(f"--device {dev}: no CUDA GPU is visible to torch {torch.__version__}")
        if dev != "cpu" and not dev.startswith("cuda"):
            raise DetectorConfigError(f"device must be 'cpu' or 'cuda[:N]', got {dev!r}")
        model, processor = load_trained(config.model, adapter=adapter, base=base, dev=dev)
        size = batch_size or (64 if dev.startswith("cuda") else 16)
        return cls(model, processor, config, device=dev, batch_size=size, seed=seed)

    # -- input preparation -------------------------------------------------------------------
    @property
    def container_len(self) -> int:
        return int(round(self.config.container_ms * SAMPLE_RATE / 1000))

    def prepare(self, clip: np.ndarray, key: int = 0) -> np.ndarray:
        """The model input for one 16 kHz mono clip: centred in the container, then normalised.

        ``key`` (e.g. the clip's start sample in its file) seeds the container noise.
        """
        from qvad.data.level import normalize_as
        from qvad.data.signal import in_container

        x = np.asarray(clip, dtype=np.float32)
        if self.container_len > x.size:
            rng = np.random.default_rng([self.seed, int(key), int(x.size)])
            x = in_container(x, self.container_len, self.config.container_noise_rel_db, rng)
        return normalize_as(x, self.config.normalize)[0]

    def layout(self, n_samples: int, window_ms: int | None = None, hop_ms: int | None = None) -> tuple[np.ndarray, int]:
        """``(start samples, window samples)``: one clip when the audio fits the container, else windows."""
        window = int(round((window_ms or self.config.window_ms) * SAMPLE_RATE / 1000))
        hop = int(round((hop_ms or self.config.hop_ms) * SAMPLE_RATE / 1000))
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be at least one sample, got {window_ms} ms / {hop_ms} ms")
        if self.container_len == 0 and n_samples < MIN_UNCONTAINED:
            raise ValueError(f"{n_samples / SAMPLE_RATE * 1000:.0f} ms of audio is too short for a model without a "
                             f"container (container_ms 0): Qwen2-Audio needs at least "
                             f"{MIN_UNCONTAINED * 1000 // SAMPLE_RATE} ms")
        single = max(self.container_len, window)
        if n_samples <= single:
            return np.zeros(1, dtype=np.int64), int(n_samples)
        return window_starts(n_samples, window, hop), window

    # -- scoring -----------------------------------------------------------------------------
    def logits(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Answer logits ``[n, 2]`` (A = speech, B = non-speech) of prepared model inputs."""
        from qvad.model.scoring import score_ab_logits

        if len(inputs) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        # The shared-prefix KV cache saves work across rows; for one clip it is an extra forward pass.
        return score_ab_logits(self.model, self.processor, list(inputs), self.config.prompt, self.batch_size,
                               prefix_cache=len(inputs) > 1)

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated P(speech) = sigmoid((logit_A - logit_B) / temperature)."""
        from scipy.special import expit

        logits = np.asarray(logits, dtype=np.float64).reshape(-1, 2)
        return expit((logits[:, 0] - logits[:, 1]) / self.config.temperature)

    def score_prepared(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated P(speech) of prepared inputs (silent ones get 0 without the model)."""
        silent = np.array([is_silent(x) for x in inputs], dtype=bool)
        out = np.zeros(len(inputs), dtype=np.float64)
        live = [x for x, s in zip(inputs, silent) if not s]
        if live:
            out[~silent] = self.calibrate(self.logits(live))
        return out

    def decide(self, p: float) -> str:
        return "speech" if p >= self.config.threshold else "nonspeech"

    # -- one signal --------------------------------------------------------------------------
    def _audio(self, audio: np.ndarray | str | os.PathLike, sr: int, max_duration_s: float | None) -> np.ndarray:
        if isinstance(audio, (str, os.PathLike)):
            return decode_file(audio, max_duration_s).audio
        return as_mono_16k(audio, sr)

    def window_probs(self, audio: np.ndarray | str | os.PathLike, sr: int = SAMPLE_RATE, *,
                     window_ms: int | None = None, hop_ms: int | None = None,
                     max_duration_s: float | None = DEFAULT_MAX_DURATION_S) -> tuple[np.ndarray, int, np.ndarray, int]:
        """``(start samples, window samples, calibrated P per window, total samples)`` of one signal."""
        x = self._audio(audio, sr, max_duration_s)
        starts, window = self.layout(x.size, window_ms, hop_ms)
        probs = np.zeros(len(starts), dtype=np.float64)
        step = max(self.batch_size * 8, 64)
        live = [k for k, s in enumerate(starts) if not is_silent(x[s:s + window])]  # silence: P = 0
        for lo in range(0, len(live), step):
            ks = live[lo:lo + step]
            probs[ks] = self.score_prepared([self.prepare(x[starts[k]:starts[k] + window], int(starts[k])) for k in ks])
        return starts, window, probs, int(x.size)

    def predict(self, audio: np.ndarray | str | os.PathLike, sr: int = SAMPLE_RATE, *,
                max_duration_s: float | None = DEFAULT_MAX_DURATION_S) -> float:
        """Calibrated P(speech) of a file or array (long audio: the maximum over its windows).

        Raises :class:`~qvad.audio.io.AudioError` for audio that cannot be used.
        """
        _, _, probs, _ = self.window_probs(audio, sr, max_duration_s=max_duration_s)
        return float(probs.max())

    def segments(self, audio: np.ndarray | str | os.PathLike, sr: int = SAMPLE_RATE,
                 options: SegmentOptions | None = None, *,
                 max_duration_s: float | None = DEFAULT_MAX_DURATION_S) -> list[tuple[float, float, float]]:
        """Speech segments ``[(start_s, end_s, p_speech)]`` of a file or array (see qvad.segments)."""
        opts = options or SegmentOptions()
        opts.check()
        starts, window, probs, n = self.window_probs(audio, sr, window_ms=opts.window_ms, hop_ms=opts.hop_ms,
                                                     max_duration_s=max_duration_s)
        return self._segments(starts, window, probs, n, opts)

    def _segments(self, starts: np.ndarray, window: int, probs: np.ndarray, n: int,
                  opts: SegmentOptions) -> list[tuple[float, float, float]]:
        threshold = self.config.threshold if opts.threshold is None else opts.threshold
        frames = frame_probs(starts, probs, window, n, opts.pool)
        return speech_segments(frames, n, threshold, neg_threshold=opts.neg_threshold,
                               min_speech_ms=opts.min_speech_ms, min_silence_ms=opts.min_silence_ms,
                               speech_pad_ms=opts.speech_pad_ms, max_speech_s=opts.max_speech_s)

    # -- many files --------------------------------------------------------------------------
    def iter_files(self, paths: Iterable[str | os.PathLike], *, segments: bool = False,
                   options: SegmentOptions | None = None, max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
                   on_result: Callable[[FileResult], None] | None = None) -> Iterator[FileResult]:
        """One :class:`FileResult` per file, in order; a bad file gives an error result, never an exception.

        Folders are searched recursively (qvad.audio.decode.find_audio). Clips of many files share
        batches; a long file's windows are prepared a few batches at a time, so memory holds the
        decoded audio of the files in flight and a bounded number of prepared clips.
        """
        opts = options or SegmentOptions()
        opts.check()
        flush_at = max(self.batch_size * 4, 64)
        pending: deque[_Job] = deque()
        queue: list[tuple[_Job, int, np.ndarray]] = []

        def flush() -> None:
            if not queue:
                return
            try:
                probs = self.score_prepared([x for _, _, x in queue])
            except Exception:  # a model failure (e.g. out of memory): retry file by file, fail only those
                by_job: dict[int, list[tuple[_Job, int, np.ndarray]]] = {}
                for item in queue:
                    by_job.setdefault(id(item[0]), []).append(item)
                for items in by_job.values():
                    job = items[0][0]
                    try:
                        job.probs[[k for _, k, _ in items]] = self.score_prepared([x for _, _, x in items])
                    except Exception as exc:
                        job.result.error = job.result.error or f"scoring failed ({type(exc).__name__}: {exc})"
                    job.waiting -= len(items)
            else:
                for (job, k, _), p in zip(queue, probs):
                    job.probs[k] = p
                    job.waiting -= 1
            queue.clear()

        def finish(job: _Job) -> FileResult:
            res = job.result
            if not res.error and job.audio is not None:
                res.p_speech = float(np.max(job.probs))
                res.decision = self.decide(res.p_speech)
                if segments:
                    res.segments = self._segments(job.starts, job.window, job.probs, job.audio.size, opts)
            if res.error:
                res.p_speech, res.decision, res.segments = None, "", None
            job.audio = None
            if on_result is not None:
                on_result(res)
            return res

        def ready() -> Iterator[FileResult]:
            while pending and pending[0].waiting == 0 and not pending[0].open:
                yield finish(pending.popleft())

        def failed(result: FileResult, reason: str) -> Iterator[FileResult]:
            """Queue a file that gets no scores (in order, behind files still scoring) with its error."""
            result.error = reason
            pending.append(_Job(result, None, np.zeros(0, dtype=np.int64), 0))
            yield from ready()

        for path in find_audio(paths):
            result = FileResult(path=str(path))
            try:
                decoded: Decoded = decode_file(path, max_duration_s)
            except AudioError as exc:
                yield from failed(result, exc.reason)
                continue
            except Exception as exc:  # anything else libsndfile or the OS throws: this file only
                yield from failed(result, f"could not decode ({type(exc).__name__}: {exc})")
                continue
            x = decoded.audio
            result.duration_s, result.orig_sr, result.channels = decoded.duration_s, decoded.orig_sr, decoded.channels
            try:
                starts, window = self.layout(x.size, opts.window_ms, opts.hop_ms)
            except ValueError as exc:
                yield from failed(result, str(exc))
                continue
            job = _Job(result, x, starts, window)
            result.windows = len(starts)
            pending.append(job)
            for k, s in enumerate(starts):
                clip = x[s:s + window]
                if is_silent(clip):
                    job.probs[k] = 0.0
                    continue
                job.waiting += 1
                queue.append((job, k, self.prepare(clip, int(s))))
                if len(queue) >= flush_at:
                    flush()
                    yield from ready()
            job.open = False
            yield from ready()
        flush()
        yield from ready()

    def predict_files(self, paths: Iterable[str | os.PathLike], *, segments: bool = False,
                      options: SegmentOptions | None = None,
                      max_duration_s: float | None = DEFAULT_MAX_DURATION_S) -> "Any":
        """A pandas DataFrame, one row per file: path, duration_s, orig_sr, channels, p_speech,
        decision, windows, error (and n_segments, speech_s, segments with ``segments=True``)."""
        import pandas as pd

        rows = [r.row(segments) for r in self.iter_files(paths, segments=segments, options=options,
                                                         max_duration_s=max_duration_s)]
        columns = list(FileResult(path="").row(segments))
        return pd.DataFrame(rows, columns=columns)
