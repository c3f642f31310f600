"""Every Debian package of the builtin corpus in one table: licence, label/group rule, category rule.

Adding a package is one row of :data:`PACKAGES`: the licence its ``debian/copyright`` states for
the audio, a label rule and a category rule, both functions of the path's parts inside the
extracted package. The label rule gives the label (speech / nonspeech) and the group (speaker or
sound source: the unit of splitting), or excludes the file with the reason recorded, so known
traps never reach hygiene. The category rule is built from the constructors of
:mod:`qvad.data.category_rules` (e.g. ``speech_fixed_lang("foo", "de")`` for a package of German
voice acting); it returning None gives ``unknown``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from qvad.data.category_rules import (AMBIENCE, MUSIC, SOUND_EFFECT, UNKNOWN, VOICE_DIR, CategoryRule, by_folder,
                                      fixed, speech_category, speech_fixed_lang, speech_lang_after,
                                      speech_lang_matching)


class PackageError(RuntimeError):
    """A package that could not be fetched or verified; the message names it."""


@dataclass(frozen=True)
class Rule:
    """What a label rule decided: a label and group, or an exclusion with its reason."""

    label: str | None
    group: str | None
    excluded: str | None = None


LabelRule = Callable[[tuple[str, ...]], Rule]
"""``rule(parts)`` -> the label and group of the file at ``parts``, or its exclusion."""


@dataclass(frozen=True)
class BuiltinPackage:
    """One row of the table."""

    licence: str            # for the audio, as the package's debian/copyright states it
    label: LabelRule
    category: CategoryRule


# ----------------------------------------------------------------------------- label rules

def _stem_group(prefix: str, name: str) -> str:
    """Group by file stem without trailing digits: Farm1/Farm2 are takes of one source."""
    stem = re.sub(r"[\d_\-]+$", "", PurePosixPath(name).stem) or PurePosixPath(name).stem
    return f"{prefix}:{stem.lower()}"


def _language(code: str) -> str:
    """klettres and ktuberling may share a volunteer per language: group both by language."""
    return re.split(r"[_@]", code)[0].lower()


def _asterisk(parts: tuple[str, ...]) -> Rule:
    """One group per voice (``en_US_f_Allison`` -> ``asterisk:Allison``); tones and silence excluded."""
    low = parts[-1].lower()
    voice = next((p for p in parts if re.fullmatch(r"[a-z]{2}_[A-Z]{2}_[fm]_\w+", p)), None)
    if voice is None:
        return Rule(None, None, "asterisk file outside a voice folder")
    if "silence" in parts or low.startswith("beep") or "2tone" in low or "tt-monkeys" in low:
        return Rule(None, None, "asterisk tone/silence/monkeys: not speech (corpus.md)")
    return Rule("speech", f"asterisk:{voice.split('_', 3)[3]}")


def _language_after(folder: str) -> LabelRule:
    """Speech grouped by the language folder right after ``folder``."""
    return lambda parts: Rule("speech", f"lang:{_language(parts[parts.index(folder) + 1])}")


def _fillets_cs(parts: tuple[str, ...]) -> Rule:
    low = parts[-1].lower()
    role = low.split("-")[1] if low.count("-") >= 2 else ""
    return Rule("speech", f"fillets:{role if role in ('m', 'v') else 'other'}")


def _fillets_nl(parts: tuple[str, ...]) -> Rule:
    """The Dutch dub: another cast than the Czech one."""
    fields = re.split(r"[-_]", PurePosixPath(parts[-1].lower()).stem)
    role = fields[1] if len(fields) > 2 else ""
    return Rule("speech", f"fillets-nl:{role if role in ('m', 'v') else 'other'}")


def _gcin(parts: tuple[str, ...]) -> Rule:
    """ogg/<syllable>/3.ogg: Edward Liu; 5.ogg: Chu Lo (its README)."""
    return Rule("speech", f"gcin:{PurePosixPath(parts[-1]).stem}")


def _kajongg(parts: tuple[str, ...]) -> Rule:
    """voices/[de/]<voice>/: one speaker per voice folder; en and de merged."""
    return Rule("speech", f"kajongg:{parts[-2]}") if "voices" in parts else \
        Rule(None, None, "kajongg file outside voices/")


def _alsa(parts: tuple[str, ...]) -> Rule:
    if "alsa" not in parts or parts[-1].lower() == "noise.wav":
        return Rule(None, None, "alsa-utils: only the spoken channel names are speech")
    return Rule("speech", "alsa:channel-names")


def _lincity(parts: tuple[str, ...]) -> Rule:
    name = parts[-1]
    low = name.lower()
    if low.startswith(("click", "substation")):
        return Rule(None, None, "lincity Click/Substation: speech-like to a VAD (corpus.md)")
    if "music" in parts:
        return Rule("nonspeech", f"lincity:music/{PurePosixPath(name).stem.lower()}")
    return Rule("nonspeech", _stem_group("lincity", name))


def _freedesktop(parts: tuple[str, ...]) -> Rule:
    if parts[-1].lower().startswith("audio-channel-"):
        return Rule(None, None, "freedesktop audio-channel-*: spoken words (corpus.md)")
    return Rule("nonspeech", _stem_group("freedesktop", parts[-1]))


def _pingus(parts: tuple[str, ...]) -> Rule:
    if PurePosixPath(parts[-1].lower()).stem in ("goodidea", "letsgo", "ohno", "yipee"):
        return Rule(None, None, "pingus voice lines (spoken words, not effects)")
    return Rule("nonspeech", _stem_group("pingus", parts[-1]))


def _fixed_group(label: str, group: str) -> LabelRule:
    """Every file has ``label`` and one ``group`` (one speaker for the whole package)."""
    return lambda parts: Rule(label, group)


def _group_by(prefix: str, group: Callable[[tuple[str, ...]], str]) -> LabelRule:
    """Non-speech grouped as ``prefix:group(parts)``."""
    return lambda parts: Rule("nonspeech", f"{prefix}:{group(parts)}")


def _stem_lower(parts: tuple[str, ...]) -> str:
    return PurePosixPath(parts[-1]).stem.lower()


# ----------------------------------------------------------------------------- category rules

_ASTERISK_LANGUAGE = speech_lang_matching("asterisk", VOICE_DIR)


def _fillets_language(parts: tuple[str, ...]) -> str | None:
    """sound/<level>/<lang>/<lvl>-<role>-*.ogg: the language folder is the one before the file."""
    return speech_category("fillets", parts[-2]) if "sound" in parts[:-3] else None


_LINCITY_EFFECTS = {s: SOUND_EFFECT for s in ("click", "windowopen", "windowclose", "build", "raze")}
"""lincity's interface and event sounds; its other sounds are building ambience loops (~4 s)."""


# ----------------------------------------------------------------------------- the table

PACKAGES: dict[str, BuiltinPackage] = {
    # speech
    "asterisk-core-sounds-en-wav": BuiltinPackage("CC-BY-SA-3.0", _asterisk, _ASTERISK_LANGUAGE),
    "asterisk-core-sounds-fr-wav": BuiltinPackage("CC-BY-SA-3.0", _asterisk, _ASTERISK_LANGUAGE),
    "asterisk-core-sounds-it-wav": BuiltinPackage("CC-BY-SA-3.0", _asterisk, _ASTERISK_LANGUAGE),
    "asterisk-core-sounds-ru-wav": BuiltinPackage("CC-BY-3.0", _asterisk, _ASTERISK_LANGUAGE),
    "asterisk-prompt-it-menardi-wav": BuiltinPackage(
        "CC-BY-SA-3.0 (attribution: Marco Menardi, voice Paola Dal Zot)", _asterisk,
        speech_fixed_lang("asterisk", "it")),
    "fillets-ng-data-nl": BuiltinPackage("GPL-2", _fillets_nl, _fillets_language),
    "gcin-voice": BuiltinPackage("GPL-3 or LGPL-3 (3.ogg); CC-BY-3.0 (5.ogg)", _gcin,
                                 speech_fixed_lang("gcin", "zh")),
    "kajongg": BuiltinPackage("GPL-2+", _kajongg,
                              lambda parts: speech_category("kajongg", "de" if "de" in parts else "en")),
    "saytime": BuiltinPackage("GPL", _fixed_group("speech", "saytime:dawson"), speech_fixed_lang("saytime", "en")),
    "alsa-utils": BuiltinPackage("GPL-2", _alsa, speech_fixed_lang("alsa", "en")),
    "klettres-data": BuiltinPackage("GPL-2+", _language_after("klettres"), speech_lang_after("klettres", "klettres")),
    "ktuberling-data": BuiltinPackage("GPL-2+", _language_after("sounds"), speech_lang_after("ktuberling", "sounds")),
    "fillets-ng-data-cs": BuiltinPackage("GPL-2", _fillets_cs, _fillets_language),
    # non-speech
    "warzone2100-music": BuiltinPackage(
        "GPL-2+", _group_by("warzone", lambda parts: f"{parts[-2]}/{PurePosixPath(parts[-1]).stem}"), fixed(MUSIC)),
    "colobot-common-sounds": BuiltinPackage("GPL-3+", _group_by("colobot", _stem_lower),
                                            by_folder({"music": MUSIC, "sounds": SOUND_EFFECT})),
    "lincity-ng-data": BuiltinPackage("GPL-2+", _lincity,
                                      by_folder({"music": MUSIC, "sounds": AMBIENCE}, _LINCITY_EFFECTS)),
    "asterisk-moh-opsound-wav": BuiltinPackage("CC-BY-SA-3.0", _group_by("moh", _stem_lower), fixed(MUSIC)),
    "frozen-bubble-data": BuiltinPackage(
        "GPL-2+", lambda parts: Rule("nonspeech", _stem_group("frozen", parts[-1])),
        by_folder({"snd": SOUND_EFFECT}, {"frozen-mainzik-1p": MUSIC, "frozen-mainzik-2p": MUSIC, "introzik": MUSIC})),
    "pingus-data": BuiltinPackage("GPL-2+", _pingus, by_folder({"sounds": SOUND_EFFECT})),
    "sound-theme-freedesktop": BuiltinPackage("CC-BY-SA-3.0", _freedesktop, by_folder({"stereo": SOUND_EFFECT})),
}


def package(name: str) -> BuiltinPackage:
    """The table's row for ``name``; an unknown package is an error naming it and the known ones."""
    if name not in PACKAGES:
        raise PackageError(f"unknown builtin package {name!r}: known are {sorted(PACKAGES)} "
                           "(add a row to qvad/data/sources/builtin_packages.py)")
    return PACKAGES[name]


def classify(name: str, rel: str) -> Rule:
    """Label and group for ``rel`` (path inside the extracted package ``name``), or its exclusion."""
    return package(name).label(PurePosixPath(rel).parts)


def builtin_category(name: str, source_path: str) -> str:
    """Category of a builtin-corpus file from its package and path inside the package."""
    parts = PurePosixPath(source_path).parts
    if name not in PACKAGES or not parts:
        return UNKNOWN
    return PACKAGES[name].category(parts) or UNKNOWN
