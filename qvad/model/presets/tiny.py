"""A tiny, offline Qwen2-Audio checkpoint with the real model's architecture and I/O contract.

The 7B checkpoint cannot be downloaded here, yet tests and the offline pipeline need a model
that loads, pads, expands audio tokens, scores and trains exactly like it. This builds the same
classes (Qwen2AudioForConditionalGeneration, Qwen2Tokenizer, WhisperFeatureExtractor,
Qwen2AudioProcessor) at toy width, keeping every shape rule that matters: 128 mel bins,
1500 encoder positions (so the 30 s / 3000-frame contract is real), the special tokens and
the chat template. Everything is written with ``save_pretrained`` so it loads like a hub
checkpoint, and the same seed gives byte-identical files (it is a DVC output).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen2Tokenizer,
    WhisperFeatureExtractor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from qvad import SAMPLE_RATE
from qvad.model.prompt import DEFAULT_SYSTEM_TEXT, DEFAULT_USER_TEXT

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
"""In the real tokenizer's order (151643..151648), appended after the BPE vocabulary."""

_CORPUS = (
    DEFAULT_SYSTEM_TEXT,
    DEFAULT_USER_TEXT,
    "system\nuser\nassistant\nAudio 1: ",
    "Is there human speech in this clip? Answer A for speech or B for non-speech.",
    "Listen to the audio and decide whether a person is talking, singing or reading aloud.",
    "Music, noise, silence, birds, dogs, engines, rain and wind are not speech.",
    "A) SPEECH B) NONSPEECH. The answer is A. The answer is B.",
)
"""Fixed training text for the tiny BPE: deterministic and covering the prompt words."""


def _train_bpe(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen2's pre-tokenizer; return ``(vocab, merges)``.

    The pre-tokenizer matches Qwen2Tokenizer's, so the merges apply the same way once wrapped;
    the full 256-byte alphabet is seeded so every string is encodable and 'A'/'B' are single tokens.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    model_state = json.loads(bpe.to_str())["model"]
    # Qwen2Tokenizer wants merges as tuples; the JSON gives lists.
    merges = [tuple(pair) for pair in model_state["merges"]]
    return dict(model_state["vocab"]), merges


def build_tokenizer(bpe_vocab_size: int = 384) -> Qwen2Tokenizer:
    """Build the offline Qwen2Tokenizer: trained BPE plus Qwen2-Audio's special tokens.

    Left padding is set at construction because a later ``padding_side`` change is not saved;
    batched scoring needs left padding, and training passes ``padding_side`` per call anyway.
    """
    vocab, merges = _train_bpe(bpe_vocab_size)
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        padding_side="left",
        model_max_length=32768,
    )
    for letter in ("A", "B"):
        if len(tokenizer.encode(letter, add_special_tokens=False)) != 1:
            raise AssertionError(f"tiny tokenizer: {letter!r} is not a single token")
    return tokenizer


def build_feature_extractor() -> WhisperFeatureExtractor:
    """Qwen2-Audio's feature extractor settings: 128 mels, 16 kHz, 25 ms window, 10 ms hop, 30 s."""
    return WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=SAMPLE_RATE,
        hop_length=160,
        n_fft=400,
        chunk_length=30,
        padding_value=0.0,
        return_attention_mask=True,
    )


def small_text_config(tokenizer: Qwen2Tokenizer, hidden: int, layers: int, heads: int, kv_heads: int) -> dict:
    """The text config of a small seeded Qwen2 LM over ``tokenizer`` (both offline presets use it)."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "model_type": "qwen2",
        "vocab_size": max(tokenizer.get_vocab().values()) + 1,  # embedding rows must cover the largest id
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
        # Xavier-like scale for a small width: with the hub default (0.02) a frozen random
        # lm_head over a 64-d RMS-normed state bounds every logit to about +-1.3, so LoRA
        # cannot make the answer token win (measured: loss stuck at 5.08, dev BA 0.50).
        "initializer_range": hidden**-0.5,
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }


def tiny_config(
    tokenizer: Qwen2Tokenizer,
    audio_d_model: int = 64,
    audio_layers: int = 2,
    audio_heads: int = 4,
    text_hidden: int = 64,
    text_layers: int = 2,
    text_heads: int = 4,
    text_kv_heads: int = 2,
) -> Qwen2AudioConfig:
    """Qwen2AudioConfig at toy width; the encoder keeps 128 mel bins and 1500 positions."""
    return Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": 128,
            "max_source_positions": 1500,
            "d_model": audio_d_model,
            "encoder_layers": audio_layers,
            "encoder_attention_heads": audio_heads,
            "encoder_ffn_dim": 2 * audio_d_model,
        },
        text_config=small_text_config(tokenizer, text_hidden, text_layers, text_heads, text_kv_heads),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )


def save_checkpoint(out_dir: str | Path, seed: int, bpe_vocab_size: int, feature_extractor: WhisperFeatureExtractor,
                    make_config: Callable[[Qwen2Tokenizer], Qwen2AudioConfig],
                    init: Callable[[Qwen2AudioForConditionalGeneration], None] | None = None) -> Path:
    """Build an offline checkpoint and save it in ``out_dir`` (model, tokenizer, feature extractor, processor).

    Weights come from the model's own initialisation under ``torch.manual_seed(seed)``, then
    ``init`` (pretrained parts), so the safetensors bytes depend on the seed and those parts only.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(bpe_vocab_size)
    processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    # Hub Qwen2-Audio-Instruct ships the template with the tokenizer too; keep both in step.
    tokenizer.chat_template = processor.chat_template
    config = make_config(tokenizer)

    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    if init is not None:
        init(model)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        bos_token_id=config.text_config.bos_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_checkpoint(out_dir: str | Path, seed: int, bpe_vocab_size: int = 384, **width: int) -> Path:
    """Build and save the tiny checkpoint in ``out_dir``; ``width`` overrides :func:`tiny_config`'s sizes."""
    return save_checkpoint(out_dir, seed, bpe_vocab_size, build_feature_extractor(),
                           lambda tokenizer: tiny_config(tokenizer, **width))
