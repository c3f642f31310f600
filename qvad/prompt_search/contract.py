"""The A/B answer contract every candidate prompt must keep.

Training taught the model to answer with the single token 'A' for speech and 'B' for
non-speech, and scoring reads exactly those two logits. A proposed prompt that drops an
option, swaps the letters' meaning or smuggles in an audio placeholder would make its score
meaningless (or silently invert it), so it is rejected before it costs a scoring pass.
The rules are deliberately strict: a false rejection only costs one candidate, a false
acceptance can win the search with a prompt the model was never trained to answer.
"""

from __future__ import annotations

import re
import unicodedata

from qvad.model.prompt import ANSWER_NONSPEECH as NONSPEECH_LETTER
from qvad.model.prompt import ANSWER_SPEECH as SPEECH_LETTER

MIN_CHARS = 20
MAX_CHARS = 400
"""A prompt shorter than this cannot state both options; longer ones dilute the question
(the default prompt is 110 characters) and make scoring slower."""

OK = "ok"
EMPTY = "empty"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
PLACEHOLDER = "placeholder_token"
UNPRINTABLE = "unprintable_characters"
MISSING_A = "missing_option_A"
MISSING_B = "missing_option_B"
A_NOT_SPEECH = "A_not_speech"
B_NOT_NONSPEECH = "B_not_nonspeech"
NO_INSTRUCTION = "no_answer_instruction"
"""Reason codes: stable strings, so rejection counts can be compared across runs."""

_PLACEHOLDER = re.compile(r"<\|[^|<>]*\|>|</?audio[^>]*>", re.IGNORECASE)
"""Chat-template tokens such as <|AUDIO|>, <|im_start|>: a second audio slot breaks the processor."""


def _marker(letter: str) -> re.Pattern[str]:
    """An option marker for ``letter``: 'A)', '(A)', 'A:', 'A =', 'A -', "'A'", 'A for', 'A if'.

    Letters are matched case-sensitively so the article 'a' never counts; a bare 'A' (as in
    'Answer A or B') is not a marker because it defines nothing.
    """
    quoted = rf"[\"'\u2018\u201c]{letter}[\"'\u2019\u201d]"
    return re.compile(
        rf"(?<![A-Za-z0-9])(?:\(\s*{letter}\s*\)|{quoted}|{letter}\s*[):=\-\u2013]|{letter}\s+(?i:for|if|when|means)\b)"
    )


_MARKERS = {letter: _marker(letter) for letter in (SPEECH_LETTER, NONSPEECH_LETTER)}

_INSTRUCTION = re.compile(
    r"(?i:\b(?:answer|respond|reply|output|say|write|choose|pick|select|return|give)\w*)\b[^.?!]{0,40}?"
    rf"(?<![A-Za-z0-9])[\"'(]?{SPEECH_LETTER}[\"')]?\s*(?:or|/|,)\s*[\"'(]?{NONSPEECH_LETTER}(?![A-Za-z0-9])"
    r"|(?i:\b(?:answer|respond|reply|output|say|write|return)\w*)\s+(?i:with\s+)?(?i:only\s+)?"
    rf"[\"'(\u2018\u201c]?{SPEECH_LETTER}[\"')\u2019\u201d]?\s+(?i:if|when|for)\b"
)
"""An instruction to answer with a letter: 'Answer with A or B ONLY.', 'reply A/B', "Reply 'A' if ..."."""

_NEGATED_SPEECH = re.compile(
    r"(?i)\bnon[\s-]?speech|\bno\s+(?:human\s+)?(?:speech|voice|talking|speaking)|\bnot\s+(?:speech|human|a\s+voice)"
    r"|\bwithout\s+(?:any\s+)?(?:speech|voice)|\bnobody\b|\bno[\s-]one\b|\babsen[tc]"
)
_SPEECH_WORDS = re.compile(r"(?i)speech|voice|talk|spoken|speak|human|person|vocal")
_OTHER_SOUNDS = re.compile(r"(?i)music|noise|silen|animal|environment|ambient")


def _meaning(segment: str) -> str:
    """Classify the words after an option marker as 'speech', 'nonspeech' or 'unclear'.

    Negations win first ('NONSPEECH' contains 'speech'); then any speech word, so
    'speech, even over music' still means speech; then other sound classes.
    """
    if _NEGATED_SPEECH.search(segment):
        return "nonspeech"
    if _SPEECH_WORDS.search(segment):
        return "speech"
    if _OTHER_SOUNDS.search(segment):
        return "nonspeech"
    return "unclear"


def _option_meanings(text: str) -> dict[str, list[str]]:
    """Meaning of each option marker's text, which runs to the next marker or the sentence's end."""
    found = sorted(
        (match.start(), match.end(), letter) for letter, pattern in _MARKERS.items() for match in pattern.finditer(text)
    )
    meanings: dict[str, list[str]] = {letter: [] for letter in _MARKERS}
    for index, (_, end, letter) in enumerate(found):
        stop = found[index + 1][0] if index + 1 < len(found) else len(text)
        segment = re.split(r"[.?!;]\s", text[end:stop], maxsplit=1)[0]
        meanings[letter].append(_meaning(segment))
    return meanings


def _unprintable(text: str) -> bool:
    """Control, surrogate, private or unassigned code points, or U+FFFD (bytes that did not decode).

    A language model's broken byte-level output looks like this; such text would reach the
    audio model's tokenizer as noise, and cannot be stored or reviewed reliably.
    """
    return any(
        ch == "\ufffd" or (ch not in "\n\t" and unicodedata.category(ch) in {"Cc", "Cs", "Co", "Cn"}) for ch in text
    )


def check_prompt(text: str, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> tuple[bool, str]:
    """Return ``(ok, reason)``: whether ``text`` keeps the A = speech / B = non-speech contract.

    ``reason`` is :data:`OK` or the first rule broken, one of this module's reason codes.
    """
    stripped = text.strip()
    if not stripped:
        return False, EMPTY
    if len(stripped) < min_chars:
        return False, TOO_SHORT
    if len(stripped) > max_chars:
        return False, TOO_LONG
    if _PLACEHOLDER.search(stripped):
        return False, PLACEHOLDER
    if _unprintable(stripped):
        return False, UNPRINTABLE
    meanings = _option_meanings(stripped)
    if not meanings[SPEECH_LETTER]:
        return False, MISSING_A
    if not meanings[NONSPEECH_LETTER]:
        return False, MISSING_B
    if "speech" not in meanings[SPEECH_LETTER] or "nonspeech" in meanings[SPEECH_LETTER]:
        return False, A_NOT_SPEECH
    if "nonspeech" not in meanings[NONSPEECH_LETTER] or "speech" in meanings[NONSPEECH_LETTER]:
        return False, B_NOT_NONSPEECH
    if not _INSTRUCTION.search(stripped):
        return False, NO_INSTRUCTION
    return True, OK
