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
A builtin package's category rule is one column of its row in the package table
(:data:`qvad.data.sources.builtin_packages.PACKAGES`), built from the constructors of
:mod:`qvad.data.category_rules`; a rule returning None gives ``unknown``. Public datasets
are mapped in :data:`PUBLIC_RULES`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

import pandas as pd

from qvad.data.category_rules import NOISE, UNKNOWN, category_kind, speech_category
from qvad.data.sources.builtin_packages import builtin_category

log = logging.getLogger(__name__)

SOURCES = ("builtin", "public", "local")


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
