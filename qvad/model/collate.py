"""Turn clips into Qwen2-Audio batches: right-padded with the answer for training, left-padded for scoring.

The log-mel is the processor's (WhisperFeatureExtractor, padded to 30 s), computed by
:class:`DeviceLogMel` on ``feature_device`` over the span the clips occupy only, the 30 s remainder
filled with the value the processor computes there (its docstring says why that is the same
tensor; on the CPU it is bit-identical, measured). The prompt text is expanded exactly as the
processor expands it. Other feature extractors fall back to the processor itself, called with
``audio=`` (the old ``audios=`` keyword is silently dropped and the model never hears the clip).
Both paths verify that every row carries exactly the number of <|AUDIO|> tokens its mel length
implies, so a lost or vanished clip fails loudly.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from transformers import BatchFeature, WhisperFeatureExtractor

from qvad import SAMPLE_RATE
from qvad.model.prompt import answer_token_ids, build_chat_text

IGNORE_INDEX = -100
"""Label value that cross-entropy skips: everything but the answer token."""



def audio_token_count(mel_frames: int | torch.Tensor) -> int | torch.Tensor:
    """Audio tokens the model emits for ``mel_frames`` valid frames (conv stride 2, then pool 2)."""
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


class DeviceLogMel:
    """The processor's 30 s log-mel batch, computed on ``device`` over the clips' span only.

    WhisperFeatureExtractor pads every clip to 30 s on the CPU (480k samples, ~2 MB a clip),
    runs the STFT over all of it (~50 ms of CPU a clip; with a GPU ``device`` it ships the padded
    audio there and copies the mel back): for 1-2 s clips that host work, not the model, caps
    throughput. Here the clips are padded only to
    ``L >= longest + n_fft/2`` samples, which changes nothing the processor computes:

    * every STFT frame ``t < L/hop`` reads the same samples in both layouts: the centred frame
      reads at most 40 samples past ``L`` (mirrored by the reflect padding from just below
      ``L``), and all of them are zeros in both layouts once ``L >= longest + 41``;
    * every frame ``t >= L/hop`` starts at or past ``L - n_fft/2 >= longest``: it is all zeros in
      the 30 s layout, so its log-mel is ``log10(1e-10)`` in every bin;
    * the per-clip maximum that the log-mel is clipped against is therefore the maximum over the
      computed frames, and the remaining frames equal ``(max(log10(1e-10), max - 8) + 4) / 4``,
      which is written directly.

    The arithmetic is the extractor's own (same window, filters, clamp, per-clip max, scaling),
    so values match the processor's up to the FFT/matmul rounding of a different batch shape
    (bit-identical on the CPU here; float32 rounding at most on a GPU). Only the setup the processor uses is supported: no dither,
    zero padding value.
    """

    ROUND_FRAMES = 50
    """Computed span rounded up to 0.5 s, so a run sees few distinct shapes (FFT plans, kernels)."""

    def __init__(self, feature_extractor: WhisperFeatureExtractor, device: str | torch.device) -> None:
        if not self.supports(feature_extractor):
            raise ValueError("DeviceLogMel needs a WhisperFeatureExtractor without dither and with zero padding")
        fe = feature_extractor
        self.device = torch.device(device)
        self.n_fft, self.hop = int(fe.n_fft), int(fe.hop_length)
        self.n_samples = int(fe.n_samples)
        self.full_frames = self.n_samples // self.hop
        self.window = torch.hann_window(self.n_fft, device=self.device)
        self.filters = torch.from_numpy(fe.mel_filters).to(self.device, torch.float32)
        self.floor = torch.tensor(1e-10, dtype=torch.float32, device=self.device).log10()

    @staticmethod
    def supports(feature_extractor: Any) -> bool:
        """Whether this class reproduces ``feature_extractor``'s output (Whisper, no dither, zero pad)."""
        fe = feature_extractor
        return (
            isinstance(fe, WhisperFeatureExtractor)
            and float(getattr(fe, "dither", 0.0)) == 0.0
            and float(fe.padding_value) == 0.0
            and fe.n_samples % fe.hop_length == 0
        )

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """Host array to the device without waiting for queued GPU work (pinned, non-blocking)."""
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def __call__(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``input_features`` ``[n, n_mels, 3000]`` float32 on the device and the int32
        ``feature_attention_mask`` ``[n, 3000]`` on the CPU, as the processor would."""
        lengths = [min(len(a), self.n_samples) for a in audios]
        longest = max(lengths)
        frames = -(-(longest + self.n_fft // 2) // self.hop)
        frames = min(self.full_frames, -(-frames // self.ROUND_FRAMES) * self.ROUND_FRAMES)
        span = frames * self.hop
        pinned = self.device.type == "cuda"
        host = torch.zeros((len(audios), span), dtype=torch.float32, pin_memory=pinned)
        wave = host.numpy()
        for row, (audio, n) in enumerate(zip(audios, lengths)):
            wave[row, :n] = audio[:n]
        waveform = host.to(self.device, non_blocking=True) if pinned else host.to(self.device)
        if waveform.is_meta:
            raise NotImplementedError("feature_device 'meta' holds no data: cannot compute the log-mel")
        stft = torch.stft(waveform, self.n_fft, self.hop, window=self.window, return_complex=True)
        magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
        log_spec = torch.clamp(self.filters.T @ magnitudes, min=1e-10).log10()
        max_val = log_spec.max(dim=2, keepdim=True)[0].max(dim=1, keepdim=True)[0]
        log_spec = (torch.maximum(log_spec, max_val - 8.0) + 4.0) / 4.0
        if frames == self.full_frames:
            features = log_spec
        else:
            features = torch.empty(
                (len(audios), log_spec.shape[1], self.full_frames), dtype=torch.float32, device=self.device
            )
            features[..., :frames] = log_spec
            features[..., frames:] = (torch.maximum(self.floor, max_val - 8.0) + 4.0) / 4.0
        valid = torch.tensor([-(-n // self.hop) for n in lengths])
        mask = (torch.arange(self.full_frames)[None, :] < valid[:, None]).to(torch.int32)
        return features, mask


class ABCollator:
    """Builds A/B batches for one processor and prompt.

    Examples are mappings with ``audio`` (float32 mono 16 kHz numpy array) and, for training,
    ``label`` (1 = speech -> answer 'A', 0 = non-speech -> answer 'B'). ``feature_device``
    chooses where the log-mel is computed (default: CPU). With an accelerator there,
    :meth:`prompt_batch` returns the whole scoring batch on that device, while training batches
    (``__call__``) come back on the CPU, as a DataLoader that pins memory expects, unless
    ``train_batches_on_device`` is set (then the DataLoader must not pin memory).
    ``device_mel`` (default True) computes the log-mel with :class:`DeviceLogMel` (same values,
    clip span only); False takes the processor's 30 s path, which benchmarks compare against.
    """

    train_batches_on_device: bool = False

    def __init__(
        self, processor: Any, prompt_cfg: Mapping[str, Any] | None = None, feature_device: str | None = None,
        device_mel: bool = True,
    ) -> None:
        self.processor = processor
        # On a GPU box pass its device here so the mel does not starve the model (GPU mels match
        # CPU ones to ~1e-5). audio_kwargs serve the processor fallback (non-Whisper extractors).
        self.audio_kwargs = {"device": str(feature_device)} if feature_device is not None else {}
        self.tokenizer = processor.tokenizer
        self.chat_text = build_chat_text(processor, prompt_cfg)
        self.id_speech, self.id_nonspeech = answer_token_ids(self.tokenizer)
        self.audio_token_id = processor.audio_token_id
        self.device_mel = None
        if device_mel and DeviceLogMel.supports(getattr(processor, "feature_extractor", None)):
            self.device_mel = DeviceLogMel(processor.feature_extractor, feature_device or "cpu")
        self._prompt_ids: dict[int, list[int]] = {}

    def _prompt_token_ids(self, n_audio_tokens: int) -> list[int]:
        """Token ids of the chat text with its <|AUDIO|> placeholder expanded as the processor does it.

        Every clip with the same number of audio tokens has the same prompt, so each distinct
        prompt is tokenized once per collator (tokenizing 512 prompts took ~0.1 s a batch).
        """
        ids = self._prompt_ids.get(n_audio_tokens)
        if ids is None:
            audio_token = self.processor.audio_token
            text = self.chat_text.replace(audio_token, audio_token * n_audio_tokens, 1)
            ids = list(self.tokenizer(text)["input_ids"])
            self._prompt_ids[n_audio_tokens] = ids
        return ids

    def _encode_on_device(self, audios: Sequence[np.ndarray], padding_side: str) -> BatchFeature:
        """Processor-equivalent batch with the log-mel from :class:`DeviceLogMel` (features on device).

        Rows are padded to the longest with the tokenizer's pad id on ``padding_side``, as
        ``tokenizer(texts, padding=True)`` pads them.
        """
        features, mask = self.device_mel(audios)
        rows = [self._prompt_token_ids(max(int(n), 0)) for n in audio_token_count(mask.sum(-1)).tolist()]
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.tokenizer.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            input_ids[i, span] = row
            attention_mask[i, span] = 1
        return BatchFeature(
            {
                "input_ids": torch.from_numpy(input_ids),
                "attention_mask": torch.from_numpy(attention_mask),
                "input_features": features,
                "feature_attention_mask": mask,
            }
        )

    def _encode(self, audios: Sequence[np.ndarray], padding_side: str) -> BatchFeature:
        """Run the processor on one prompt per clip and check every clip's audio tokens."""
        for i, audio in enumerate(audios):
            if audio.ndim != 1 or audio.dtype != np.float32:
                raise ValueError(f"clip {i}: expected 1-D float32 audio, got shape {audio.shape} {audio.dtype}")
        if self.device_mel is not None:
            batch = self._encode_on_device(audios, padding_side)
        else:
            batch = self.processor(
                text=[self.chat_text] * len(audios),
                audio=list(audios),
                sampling_rate=SAMPLE_RATE,
                padding=True,
                padding_side=padding_side,
                return_tensors="pt",
                **self.audio_kwargs,
            )
        if "input_features" not in batch:
            raise RuntimeError("the processor returned no input_features: the audio was dropped")
        expected = audio_token_count(batch["feature_attention_mask"].sum(-1))
        found = (batch["input_ids"] == self.audio_token_id).sum(-1)
        if bool((expected <= 0).any()):
            i = int((expected <= 0).nonzero()[0, 0])
            raise ValueError(
                f"clip {i} is too short: {audios[i].shape[0]} samples ({1000 * audios[i].shape[0] / SAMPLE_RATE:.1f} ms) "
                f"give {int(batch['feature_attention_mask'][i].sum())} mel frames and no audio token; "
                "place short clips inside a longer container"
            )
        if not torch.equal(found, expected.to(found.dtype)):
            i = int((found != expected).nonzero()[0, 0])
            raise RuntimeError(f"clip {i}: {int(found[i])} <|AUDIO|> tokens in its row, expected {int(expected[i])}")
        return batch

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> BatchFeature:
        """Training batch: prompt + answer token, right-padded; labels are -100 except the answer."""
        labels_in = [int(ex["label"]) for ex in examples]
        if set(labels_in) - {0, 1}:
            raise ValueError(f"labels must be 1 (speech) or 0 (non-speech), got {sorted(set(labels_in))}")
        batch = self._encode([ex["audio"] for ex in examples], padding_side="right")
        answers = torch.tensor([self.id_speech if y == 1 else self.id_nonspeech for y in labels_in])
        input_ids = batch["input_ids"]
        attention_mask = batch["attention_mask"]
        if not bool(attention_mask[:, 0].all()):
            raise RuntimeError("training batch is not right-padded; the answer would land inside padding")
        rows = torch.arange(input_ids.shape[0])
        ends = attention_mask.sum(-1)  # right padding: the first free slot of each row
        input_ids = torch.nn.functional.pad(input_ids, (0, 1), value=self.tokenizer.pad_token_id)
        attention_mask = torch.nn.functional.pad(attention_mask, (0, 1), value=0)
        input_ids[rows, ends] = answers
        attention_mask[rows, ends] = 1
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        labels[rows, ends] = answers
        batch["input_ids"] = input_ids
        batch["attention_mask"] = attention_mask
        batch["labels"] = labels
        if self.device_mel is not None:
            if self.train_batches_on_device:
                return batch.to(self.device_mel.device)
            batch["input_features"] = batch["input_features"].cpu()
        return batch

    def host_prompt_batch(self, audios: Sequence[np.ndarray]) -> BatchFeature:
        """:meth:`prompt_batch` with the token tensors left on the host (the log-mel stays where it
        was computed): the scorer edits them there without waiting for the GPU."""
        return self._encode(audios, padding_side="left")

    def prompt_batch(self, audios: Sequence[np.ndarray]) -> BatchFeature:
        """Scoring batch: prompt only, LEFT-padded so the last position is every row's answer slot.

        With a device log-mel the whole batch is returned on that device (copies do not wait for
        queued GPU work, so the next batch can be prepared while the model runs).
        """
        batch = self.host_prompt_batch(audios)
        if self.device_mel is None:
            return batch
        if self.device_mel.device.type == "cpu":
            return batch
        return BatchFeature({
            key: (self.device_mel._to_device(value.numpy()) if value.device.type == "cpu" else value)
            for key, value in batch.items()
        })
