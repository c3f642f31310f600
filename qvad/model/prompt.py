"""The A/B question put to the model, in Qwen2-Audio's chat format.

Training, scoring and the tiny tokenizer all build the prompt here, so a prompt
change reaches every stage at once and the answer tokens are checked in one place.
"""

from __future__ import annotations

from typing import Any, Mapping

DEFAULT_USER_TEXT = (
    "Choose one: A) SPEECH (human voice) B) NONSPEECH (music/noise/silence/animals). "
    "Answer with A or B ONLY."
)
"""The question; 'A' means speech, 'B' non-speech."""

DEFAULT_SYSTEM_TEXT = "You are a helpful assistant."
"""Qwen2-Audio's own default system turn (its chat template inserts it when none is given)."""

AUDIO_POSITIONS = ("before_question", "after_question")
"""Where the clip sits in the user turn: before the question (Qwen2-Audio's own examples, the
default) or after it. After it, every token up to the audio is the same for all clips, so the
scorer's shared-prefix cache covers the whole question (see qvad.model.scoring)."""

ANSWER_SPEECH = "A"
ANSWER_NONSPEECH = "B"


PROMPT_KEYS = ("system", "user", "audio_position")


def prompt_texts(prompt_cfg: Mapping[str, Any] | None) -> tuple[str, str]:
    """Return ``(system, user)`` text from ``prompt.*`` params; missing or null keys take the defaults."""
    cfg = dict(prompt_cfg or {})
    unknown = set(cfg) - set(PROMPT_KEYS)
    if unknown:
        raise KeyError(f"unknown prompt params {sorted(unknown)}; expected some of {list(PROMPT_KEYS)}")
    system = cfg.get("system") or DEFAULT_SYSTEM_TEXT
    user = cfg.get("user") or DEFAULT_USER_TEXT
    return system, user


def audio_position(prompt_cfg: Mapping[str, Any] | None) -> str:
    """``prompt.audio_position`` (null or missing: 'before_question', today's layout)."""
    position = dict(prompt_cfg or {}).get("audio_position") or AUDIO_POSITIONS[0]
    if position not in AUDIO_POSITIONS:
        raise ValueError(f"prompt.audio_position must be one of {list(AUDIO_POSITIONS)}, got {position!r}")
    return position


def build_chat_text(processor: Any, prompt_cfg: Mapping[str, Any] | None = None) -> str:
    """Render one clip's prompt with the checkpoint's own chat template, ending at the answer slot.

    The template (not a hand-written string) decides the layout, so the real checkpoint and
    the tiny one get exactly what their chat template defines; the result holds one
    ``<|audio_bos|><|AUDIO|><|audio_eos|>`` which the processor expands to the clip's audio tokens.
    ``prompt.audio_position`` orders the user turn's two parts: the audio before the question
    (default) or after it; the template renders each part as it always does.
    """
    system, user = prompt_texts(prompt_cfg)
    parts = [{"type": "audio", "audio_url": "clip"}, {"type": "text", "text": user}]
    if audio_position(prompt_cfg) == "after_question":
        parts.reverse()
    conversation = [
        {"role": "system", "content": system},
        {"role": "user", "content": parts},
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    audio_token = processor.audio_token
    if text.count(audio_token) != 1:
        raise ValueError(f"chat template produced {text.count(audio_token)} {audio_token} placeholders, expected 1")
    return text


def answer_token_ids(tokenizer: Any) -> tuple[int, int]:
    """Return the token ids of 'A' and 'B' exactly as the model would emit them after the prompt.

    The generation prompt ends with a newline, so the answer is the bare letter 'A', not ' A';
    scoring the wrong variant silently gives chance-level probabilities, hence the checks.
    """
    ids = []
    for letter in (ANSWER_SPEECH, ANSWER_NONSPEECH):
        encoded = tokenizer.encode(letter, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"answer {letter!r} is {len(encoded)} tokens {encoded}; it must be a single token")
        if tokenizer.convert_ids_to_tokens(encoded[0]) != letter:
            raise ValueError(
                f"answer {letter!r} encodes to token {tokenizer.convert_ids_to_tokens(encoded[0])!r}, not {letter!r}"
            )
        ids.append(encoded[0])
    if ids[0] == ids[1]:
        raise ValueError(f"'A' and 'B' map to the same token id {ids[0]}")
    return ids[0], ids[1]
