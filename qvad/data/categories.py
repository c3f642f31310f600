"""A category for every source file, decided at download time from what the source knows.

The download stage records one category per manifest row; evaluate breaks accuracy down by
it and lists the worst errors with it. A category describes the *source* audio (the
foreground of a mixed clip), never the noise mixed into it.

Scheme
------
``speech:<corpus>:<lang>``
    Speech. ``corpus`` is the package family (``asterisk``, ``klettres``, ``ktuberling``,
    ``fillets``, ``voxconverse``); ``lang`` is the language the package's path or metadata
    states, as a lower-case ISO 639 code with region and script dropped (``en_US`` -> ``en``,
    ``pt_BR`` -> ``pt``, ``sr@latin`` -> ``sr``), the same normalisation the builtin source
    groups by. ``und`` (ISO 639-2 "undetermined") where the corpus states no per-file
    language (VoxConverse).
``music``
    A music track (warzone2100, asterisk music on hold, colobot/lincity music folders,
    frozen-bubble's in-game and intro music).
``sound effect``
    A short event or interface sound (colobot, frozen-bubble, pingus, freedesktop sound theme,
    lincity's window and build/raze sounds).
``ambience``
    A background loop of a place or activity (lincity's building sounds: farm, harbour,
    rail, fire...).
``noise``
    MUSAN noise recordings (the noise pool; never a foreground source).
``animal``, ``natural soundscape``, ``human non-speech``, ``domestic sound``, ``urban noise``
    ESC-50 clips, by the dataset's own five major categories, looked up from the clip's
    class (:data:`ESC50_CLASSES`).
local source
    The value of the optional ``category`` column of the folder's ``groups.csv``, as the
    user wrote it (surrounding whitespace stripped, inner runs of whitespace collapsed).
``unknown``
    Anything no rule covers: an unlisted package, a path outside the folders a rule knows,
    a local file without a category, or a rule whose kind contradicts the item's label.
    Never guessed.

Extending
---------
Builtin rules live in :data:`BUILTIN_RULES`, one entry per package (or fnmatch pattern of
packages), each a function ``(parts of the path) -> category or None`` built from the small
constructors below: :func:`fixed`, :func:`speech_lang_after`, :func:`speech_lang_matching`,
:func:`speech_fixed_lang` and :func:`by_folder`. A package with voice acting or IVR prompts
is one line, e.g. ``"asterisk-prompt-*": speech_lang_matching("asterisk", VOICE_DIR)`` or
``"foo-voices-de": speech_fixed_lang("foo", "de")``. Exact package names win over patterns;
a rule returning None gives ``unknown``.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

import pandas as pd

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
MUSIC = "music"
SOUND_EFFECT = "sound effect"
AMBIENCE = "ambience"
NOISE = "noise"
UNDETERMINED_LANGUAGE = "und"
SPEECH_PREFIX = "speech:"
SOURCES = ("builtin", "public", "local")

Rule = Callable[[tuple[str, ...]], "str | None"]
"""``rule(parts)`` -> category, or None when the path is outside what the rule knows."""


# ----------------------------------------------------------------------------- helpers

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


def fixed(category: str) -> Rule:
    """Every file of the package has ``category``."""
    return lambda parts: category


def speech_fixed_lang(corpus: str, lang: str) -> Rule:
    """Speech in one language for the whole package."""
    category = speech_category(corpus, lang)
    return lambda parts: category


def speech_lang_after(corpus: str, folder: str) -> Rule:
    """Speech whose language is the path component right after ``folder``
    (``usr/share/klettres/<lang>/...``); None when ``folder`` is absent or last."""
    def rule(parts: tuple[str, ...]) -> str | None:
        if folder not in parts[:-2]:
            return None
        return speech_category(corpus, parts[parts.index(folder) + 1])
    return rule


def speech_lang_matching(corpus: str, pattern: str) -> Rule:
    """Speech whose language is group ``lang`` of the first folder matching ``pattern``."""
    regex = re.compile(pattern)

    def rule(parts: tuple[str, ...]) -> str | None:
        for part in parts[:-1]:
            m = regex.fullmatch(part)
            if m:
                return speech_category(corpus, m.group("lang"))
        return None
    return rule


def by_folder(folders: Mapping[str, str], stems: Mapping[str, str] | None = None) -> Rule:
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


# ----------------------------------------------------------------------------- builtin

VOICE_DIR = r"(?P<lang>[a-z]{2})_[A-Z]{2}_[fm]_\w+"
"""An asterisk voice folder: ``en_US_f_Allison``, ``it_IT_m_Carlo``, ``ru_RU_f_IvrvoiceRU``."""

_LINCITY_EFFECTS = {s: SOUND_EFFECT for s in ("click", "windowopen", "windowclose", "build", "raze")}
"""lincity's interface and event sounds; its other sounds are building ambience loops (~4 s)."""

BUILTIN_RULES: dict[str, Rule] = {
    # speech
    "asterisk-core-sounds-*-wav": speech_lang_matching("asterisk", VOICE_DIR),
    "klettres-data": speech_lang_after("klettres", "klettres"),
    "ktuberling-data": speech_lang_after("ktuberling", "sounds"),
    # sound/<level>/<lang>/<lvl>-<role>-*.ogg: the language folder is the one before the file
    "fillets-ng-data-cs": lambda parts: (speech_category("fillets", parts[-2])
                                         if "sound" in parts[:-3] else None),
    "fillets-ng-data-nl": lambda parts: (speech_category("fillets", parts[-2])
                                         if "sound" in parts[:-3] else None),
    "asterisk-prompt-it-menardi-wav": speech_fixed_lang("asterisk", "it"),
    "gcin-voice": speech_fixed_lang("gcin", "zh"),
    "kajongg": lambda parts: speech_category("kajongg", "de" if "de" in parts else "en"),
    "saytime": speech_fixed_lang("saytime", "en"),
    "alsa-utils": speech_fixed_lang("alsa", "en"),
    # non-speech
    "warzone2100-music": fixed(MUSIC),
    "asterisk-moh-opsound-wav": fixed(MUSIC),
    "colobot-common-sounds": by_folder({"music": MUSIC, "sounds": SOUND_EFFECT}),
    "lincity-ng-data": by_folder({"music": MUSIC, "sounds": AMBIENCE}, _LINCITY_EFFECTS),
    "frozen-bubble-data": by_folder({"snd": SOUND_EFFECT},
                                    {"frozen-mainzik-1p": MUSIC, "frozen-mainzik-2p": MUSIC,
                                     "introzik": MUSIC}),
    "pingus-data": by_folder({"sounds": SOUND_EFFECT}),
    "sound-theme-freedesktop": by_folder({"stereo": SOUND_EFFECT}),
}


def builtin_rule(package: str) -> Rule | None:
    """The rule for ``package``: an exact entry first, then the first matching pattern."""
    if package in BUILTIN_RULES:
        return BUILTIN_RULES[package]
    for pattern, rule in BUILTIN_RULES.items():
        if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(package, pattern):
            return rule
    return None


def builtin_category(package: str, source_path: str) -> str:
    """Category of a builtin-corpus file from its package and path inside the package."""
    rule = builtin_rule(package)
    if rule is None:
        return UNKNOWN
    parts = PurePosixPath(source_path).parts
    if not parts:
        return UNKNOWN
    return rule(parts) or UNKNOWN


# ----------------------------------------------------------------------------- public

ANIMAL = "animal"
NATURAL_SOUNDSCAPE = "natural soundscape"
HUMAN_NONSPEECH = "human non-speech"
DOMESTIC_SOUND = "domestic sound"
URBAN_NOISE = "urban noise"
ESC50_MAJOR = (ANIMAL, NATURAL_SOUNDSCAPE, HUMAN_NONSPEECH, DOMESTIC_SOUND, URBAN_NOISE)
"""ESC-50's major categories (Animals; Natural soundscapes & water sounds; Human, non-speech
sounds; Interior/domestic sounds; Exterior/urban noises), in the order of its class targets."""

_ESC50_BY_TARGET = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
)
ESC50_CLASSES: dict[str, str] = {c: ESC50_MAJOR[t // 10] for t, c in enumerate(_ESC50_BY_TARGET)}
"""ESC-50 class (``meta/esc50.csv``'s ``category``) -> major category; target t is in block t // 10."""

_ESC50_NAME = re.compile(r"\d+-\w+-[A-Z]-(?P<target>\d+)\.wav")
"""ESC-50's documented file name ``{FOLD}-{CLIP_ID}-{TAKE}-{TARGET}.wav``."""


def esc50_category(source_path: str, esc50_class: str | None = None) -> str:
    """Major category of an ESC-50 clip from its class, or else from the target in its name.

    A class name that contradicts the name's target is an error (the metadata and the file
    disagree); a class not in ESC-50 gives ``unknown``.
    """
    m = _ESC50_NAME.fullmatch(PurePosixPath(source_path).name)
    by_target = (_ESC50_BY_TARGET[int(m["target"])]
                 if m and int(m["target"]) < len(_ESC50_BY_TARGET) else None)
    if esc50_class:
        if by_target is not None and esc50_class != by_target:
            raise ValueError(f"ESC-50 {source_path}: class {esc50_class!r} but the file name's "
                             f"target is {by_target!r}")
        return ESC50_CLASSES.get(esc50_class, UNKNOWN)
    return ESC50_CLASSES[by_target] if by_target else UNKNOWN


PUBLIC_RULES: dict[str, Callable[[str, Mapping], str]] = {
    "esc50": lambda path, extra: esc50_category(path, extra.get("esc50_class")),
    "voxconverse": lambda path, extra: speech_category("voxconverse", extra.get("language")),
    "musan-noise": lambda path, extra: NOISE,
}
"""Public datasets by manifest package. ``extra``: ``esc50_class`` (ESC-50's ``category``
column), ``language`` (VoxConverse: none published per recording, so ``und``)."""


def public_category(package: str, source_path: str, extra: Mapping | None = None) -> str:
    rule = PUBLIC_RULES.get(package)
    return rule(source_path, dict(extra or {})) if rule else UNKNOWN


# ----------------------------------------------------------------------------- local

LOCAL_CATEGORY_COLUMN = "category"


def local_category(extra: Mapping | None = None) -> str:
    """The user's category (groups.csv column ``category``), tidied; ``unknown`` if absent."""
    value = (extra or {}).get(LOCAL_CATEGORY_COLUMN)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    value = " ".join(str(value).split())
    return value or UNKNOWN


def local_categories(root: str | Path) -> dict[str, str]:
    """``path -> category`` from ``root/groups.csv`` (paths relative to ``root``), for the files
    whose row has a non-empty ``category``; {} without the file or the column."""
    path = Path(root).expanduser() / "groups.csv"
    if not path.exists():
        return {}
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "path" not in df.columns:
        raise ValueError(f"{path}: needs a 'path' column, found {list(df.columns)}")
    if LOCAL_CATEGORY_COLUMN not in df.columns:
        return {}
    out = {}
    for rel, value in zip(df["path"], df[LOCAL_CATEGORY_COLUMN]):
        category = local_category({LOCAL_CATEGORY_COLUMN: value})
        if category != UNKNOWN:
            out[rel] = category
    return out


# ----------------------------------------------------------------------------- entry point

def category_for(source: str, package: str, source_path: str, label: str,
                 extra: Mapping | None = None) -> str:
    """The category of one manifest item (see the module docstring for the scheme).

    ``source`` is ``data.source`` (``builtin``, ``public``, ``local``); MUSAN noise items come
    with any source and are recognised by package. For the builtin and public sources a rule
    whose kind contradicts ``label`` (a speech category for a non-speech item, or the reverse)
    gives ``unknown`` with a warning: the rule tables no longer agree with the labelling.
    """
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    if package in PUBLIC_RULES:
        category = public_category(package, source_path, extra)
    elif source == "local":
        return local_category(extra)
    elif source == "builtin":
        category = builtin_category(package, source_path)
    else:
        category = UNKNOWN
    kind = category_kind(category)
    if kind != UNKNOWN and kind != label:
        log.warning("%s %s: category %r contradicts label %r; recorded as unknown",
                    package, source_path, category, label)
        return UNKNOWN
    return category
