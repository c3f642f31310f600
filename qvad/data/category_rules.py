"""The category names and the small rule constructors that map a path inside a source to one.

A rule is a function ``(parts of the path) -> category or None``; None means the path is outside
what the rule knows (recorded as ``unknown``, never guessed). The builtin package table
(:mod:`qvad.data.sources.builtin_packages`) builds one rule per package from these constructors,
and :mod:`qvad.data.categories` applies them; the scheme itself is described there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath

UNKNOWN = "unknown"
MUSIC = "music"
SOUND_EFFECT = "sound effect"
AMBIENCE = "ambience"
NOISE = "noise"
UNDETERMINED_LANGUAGE = "und"
SPEECH_PREFIX = "speech:"

CategoryRule = Callable[[tuple[str, ...]], "str | None"]
"""``rule(parts)`` -> category, or None when the path is outside what the rule knows."""

VOICE_DIR = r"(?P<lang>[a-z]{2})_[A-Z]{2}_[fm]_\w+"
"""An asterisk voice folder: ``en_US_f_Allison``, ``it_IT_m_Carlo``, ``ru_RU_f_IvrvoiceRU``."""


def language_code(code: str) -> str:
    """``en_US`` -> ``en``, ``pt_BR`` -> ``pt``, ``sr@latin`` -> ``sr`` (as builtin groups)."""
    return re.split(r"[_@\-]", code.strip())[0].lower()


def speech_category(corpus: str, lang: str | None) -> str:
    """``speech:<corpus>:<lang>``; ``lang`` None or empty gives ``und`` (undetermined)."""
    lang = language_code(lang) if lang else UNDETERMINED_LANGUAGE
    if not re.fullmatch(r"[a-z]{2,3}", lang):
        raise ValueError(f"language code {lang!r} is not 2-3 lower-case letters")
    return f"{SPEECH_PREFIX}{corpus}:{lang}"


def is_speech_category(category: str) -> bool:
    return category.startswith(SPEECH_PREFIX)


def category_kind(category: str) -> str:
    """``speech``, ``nonspeech`` or ``unknown``: what label a category implies."""
    if category == UNKNOWN:
        return UNKNOWN
    return "speech" if is_speech_category(category) else "nonspeech"


def fixed(category: str) -> CategoryRule:
    """Every file of the package has ``category``."""
    return lambda parts: category


def speech_fixed_lang(corpus: str, lang: str) -> CategoryRule:
    """Speech in one language for the whole package."""
    category = speech_category(corpus, lang)
    return lambda parts: category


def speech_lang_after(corpus: str, folder: str) -> CategoryRule:
    """Speech whose language is the path component right after ``folder``
    (``usr/share/klettres/<lang>/...``); None when ``folder`` is absent or last."""
    def rule(parts: tuple[str, ...]) -> str | None:
        if folder not in parts[:-2]:
            return None
        return speech_category(corpus, parts[parts.index(folder) + 1])
    return rule


def speech_lang_matching(corpus: str, pattern: str) -> CategoryRule:
    """Speech whose language is group ``lang`` of the first folder matching ``pattern``."""
    regex = re.compile(pattern)

    def rule(parts: tuple[str, ...]) -> str | None:
        for part in parts[:-1]:
            m = regex.fullmatch(part)
            if m:
                return speech_category(corpus, m.group("lang"))
        return None
    return rule


def by_folder(folders: Mapping[str, str], stems: Mapping[str, str] | None = None) -> CategoryRule:
    """Category by file stem (``stems``, lower case, trailing digits ignored) first, then by
    the nearest parent folder named in ``folders``; None when neither matches."""
    stems = dict(stems or {})

    def rule(parts: tuple[str, ...]) -> str | None:
        stem = PurePosixPath(parts[-1]).stem.lower()
        bare = re.sub(r"[\d_\-]+$", "", stem) or stem
        for key in (stem, bare):
            if key in stems:
                return stems[key]
        for part in reversed(parts[:-1]):
            if part in folders:
                return folders[part]
        return None
    return rule
