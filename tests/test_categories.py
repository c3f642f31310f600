"""Tests for qvad.data.categories: the category of every builtin, public and local source file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qvad.data import categories as cat
from qvad.data.categories import UNKNOWN, category_for

EXTRACTED = Path(os.environ.get("QVAD_EXTRACTED", "~/.cache/qvad/extracted")).expanduser()


BUILTIN_CASES = [  # package, path inside the package (as in the extracted corpus), label, category
    ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/en_US_f_Allison/activated.wav",
     "speech", "speech:asterisk:en"),
    ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/en_US_f_Allison/digits/10.wav",
     "speech", "speech:asterisk:en"),
    ("asterisk-core-sounds-fr-wav", "usr/share/asterisk/sounds/fr_CA_f_June/conf-onlyone.wav",
     "speech", "speech:asterisk:fr"),
    ("asterisk-core-sounds-it-wav", "usr/share/asterisk/sounds/it_IT_m_Carlo/letters/a.wav",
     "speech", "speech:asterisk:it"),
    ("asterisk-core-sounds-ru-wav", "usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU/confbridge-pin-bad.wav",
     "speech", "speech:asterisk:ru"),
    ("klettres-data", "usr/share/klettres/en_GB/alpha/a.ogg", "speech", "speech:klettres:en"),
    ("klettres-data", "usr/share/klettres/pt_BR/syllab/ba.ogg", "speech", "speech:klettres:pt"),
    ("klettres-data", "usr/share/klettres/fr/alpha/b.ogg", "speech", "speech:klettres:fr"),
    ("ktuberling-data", "usr/share/ktuberling/sounds/sr@latin/brkovi.ogg", "speech", "speech:ktuberling:sr"),
    ("ktuberling-data", "usr/share/ktuberling/sounds/fr/bouche.wav", "speech", "speech:ktuberling:fr"),
    ("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/airplane/cs/let-m-divna.ogg",
     "speech", "speech:fillets:cs"),
    ("warzone2100-music", "usr/share/games/warzone2100/music/albums/legacy_soundtrack/track12.opus",
     "nonspeech", "music"),
    ("warzone2100-music", "usr/share/games/warzone2100/music/menu.opus", "nonspeech", "music"),
    ("asterisk-moh-opsound-wav", "usr/share/asterisk/moh/macroform-cold_day.wav", "nonspeech", "music"),
    ("colobot-common-sounds", "usr/share/games/colobot/music/Proton.ogg", "nonspeech", "music"),
    ("colobot-common-sounds", "usr/share/games/colobot/sounds/sound079.wav", "nonspeech", "sound effect"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/music/default/01 - pronobozo - lincity.ogg",
     "nonspeech", "music"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/sounds/Farm1.wav", "nonspeech", "ambience"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/sounds/WindMill1.wav", "nonspeech", "ambience"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/sounds/WindowOpen.wav", "nonspeech", "sound effect"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/sounds/Raze2.wav", "nonspeech", "sound effect"),
    ("frozen-bubble-data", "usr/share/games/frozen-bubble/snd/frozen-mainzik-1p.ogg", "nonspeech", "music"),
    ("frozen-bubble-data", "usr/share/games/frozen-bubble/snd/introzik.ogg", "nonspeech", "music"),
    ("frozen-bubble-data", "usr/share/games/frozen-bubble/snd/applause.ogg", "nonspeech", "sound effect"),
    ("pingus-data", "usr/share/games/pingus/data/sounds/splash.wav", "nonspeech", "sound effect"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/bell.oga", "nonspeech", "sound effect"),
]


@pytest.mark.parametrize("package,path,label,expected", BUILTIN_CASES)
def test_builtin_category_of_real_paths(package, path, label, expected):
    assert category_for("builtin", package, path, label) == expected


@pytest.mark.parametrize("source,package,path,label", [
    ("builtin", "espeak-ng-data", "usr/share/espeak-ng-data/voices/en.wav", "speech"),  # no rule
    ("builtin", "asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/README.wav", "speech"),  # no voice dir
    ("builtin", "klettres-data", "usr/share/klettres/a.ogg", "speech"),  # no language folder
    ("builtin", "colobot-common-sounds", "usr/share/games/colobot/textures/x.wav", "nonspeech"),
    # the rule says "sound effect", but an item labelled speech contradicts it: not guessed
    ("builtin", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/audio-channel-front-left.oga",
     "speech"),
    ("builtin", "asterisk-core-sounds-fr-wav", "usr/share/asterisk/sounds/fr_CA_f_June/beep.wav", "nonspeech"),
    ("public", "some-dataset", "audio/x.wav", "speech"),
    ("public", "esc50", "audio/not-an-esc50-name.wav", "nonspeech"),
    ("local", "local", "speech/alice/1.wav", "speech"),
])
def test_unmapped_items_are_unknown(source, package, path, label):
    assert category_for(source, package, path, label) == UNKNOWN


def test_bad_source_is_an_error():
    with pytest.raises(ValueError, match="source"):
        category_for("elsewhere", "x", "y.wav", "speech")


def test_package_table_is_extensible(monkeypatch):
    """A new package is one row: its licence, label rule and category rule (built from the constructors)."""
    from qvad.data import category_rules as rules
    from qvad.data.sources import builtin_packages as bp

    def speech(parts: tuple[str, ...]) -> bp.Rule:
        return bp.Rule("speech", "acme:one")

    table = dict(bp.PACKAGES)
    table["acme-voices"] = bp.BuiltinPackage("CC0", speech, rules.speech_lang_after("acme", "voices"))
    table["acme-voices-de"] = bp.BuiltinPackage("CC0", speech, rules.speech_fixed_lang("acme", "de_AT"))
    table["acme-ivr"] = bp.BuiltinPackage("CC0", speech, rules.speech_lang_matching("acme-ivr", rules.VOICE_DIR))
    monkeypatch.setattr(bp, "PACKAGES", table)
    assert category_for("builtin", "acme-voices", "usr/share/acme/voices/nl_BE/hi.ogg", "speech") \
        == "speech:acme:nl"
    assert category_for("builtin", "acme-voices-de", "usr/share/acme/voices/xx/hi.ogg", "speech") \
        == "speech:acme:de"
    assert category_for("builtin", "acme-ivr", "usr/share/acme/en_GB_m_Bob/menu.wav", "speech") \
        == "speech:acme-ivr:en"
    assert bp.classify("acme-ivr", "usr/share/acme/en_GB_m_Bob/menu.wav") == bp.Rule("speech", "acme:one")


def test_public_categories():
    assert category_for("public", "esc50", "audio/1-100032-A-0.wav", "nonspeech") == "animal"
    assert category_for("public", "esc50", "audio/1-115545-A-24.wav", "nonspeech") == "human non-speech"
    assert category_for("public", "esc50", "audio/3-1000-A-40.wav", "nonspeech",
                        {"esc50_class": "helicopter"}) == "urban noise"
    assert category_for("public", "esc50", "audio/x.wav", "nonspeech", {"esc50_class": "rain"}) \
        == "natural soundscape"
    assert category_for("public", "esc50", "audio/x.wav", "nonspeech", {"esc50_class": "ufo"}) == UNKNOWN
    with pytest.raises(ValueError, match="target"):
        cat.esc50_category("audio/1-100032-A-0.wav", "helicopter")
    assert set(cat.ESC50_CLASSES.values()) == set(cat.ESC50_MAJOR) and len(cat.ESC50_CLASSES) == 50
    from qvad.data.sources.public import ESC50_HUMAN_NONSPEECH
    assert {c for c, m in cat.ESC50_CLASSES.items() if m == "human non-speech"} == ESC50_HUMAN_NONSPEECH
    assert category_for("public", "voxconverse", "dev/abjxc.wav#t=0.500,4.000", "speech") \
        == "speech:voxconverse:und"
    assert category_for("builtin", "musan-noise", "musan/noise/free-sound/noise-1.wav", "nonspeech") == "noise"


def test_local_categories_from_groups_csv(tmp_path):
    (tmp_path / "groups.csv").write_text(
        "path,group,category\nspeech/a.wav,alice,podcast\nnonspeech/b.wav,dog,\n"
        "nonspeech/c.wav,tv,  tv   ads \n", encoding="utf-8")
    table = cat.local_categories(tmp_path)
    assert table == {"speech/a.wav": "podcast", "nonspeech/c.wav": "tv ads"}
    assert category_for("local", "local", "speech/a.wav", "speech", {"category": table["speech/a.wav"]}) \
        == "podcast"
    assert category_for("local", "local", "nonspeech/b.wav", "nonspeech", {"category": ""}) == UNKNOWN
    (tmp_path / "groups.csv").write_text("path,group\nspeech/a.wav,alice\n", encoding="utf-8")
    assert cat.local_categories(tmp_path) == {}
    assert cat.local_categories(tmp_path / "missing") == {}


@pytest.mark.skipif(not EXTRACTED.is_dir(), reason=f"extracted builtin corpus not at {EXTRACTED}")
def test_every_builtin_file_has_a_category_matching_its_label():
    from qvad.data.category_rules import category_kind
    from qvad.data.sources.builtin import AUDIO_SUFFIXES
    from qvad.data.sources.builtin_packages import PACKAGES, classify
    seen = set()
    for tree in sorted(EXTRACTED.iterdir()):
        package = tree.name.split("_")[0]
        if package not in PACKAGES:
            continue
        for path in tree.rglob("*"):
            if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
                continue
            rel = path.relative_to(tree).as_posix()
            rule = classify(package, rel)
            if rule.excluded:
                continue
            category = category_for("builtin", package, rel, rule.label)
            assert category != UNKNOWN, (package, rel)
            assert category_kind(category) == rule.label, (package, rel, category)
            seen.add(package)
    assert seen, "no builtin package found"
