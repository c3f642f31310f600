"""Label and group rules of the builtin corpus, and the local source's grouping."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from qvad.data.sources.builtin import _safe_id, collect_builtin, is_music
from qvad.data.sources.builtin_packages import PackageError, classify
from qvad.data.sources.local import collect_local


@pytest.mark.parametrize("package, path, label, group", [
    ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/en_US_f_Allison/vm-goodbye.wav", "speech", "asterisk:Allison"),
    ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/en_US_f_Allison/digits/5.wav", "speech", "asterisk:Allison"),
    ("klettres-data", "usr/share/klettres/pt_BR/alpha/a.ogg", "speech", "lang:pt"),
    ("ktuberling-data", "usr/share/ktuberling/sounds/pt/olho.ogg", "speech", "lang:pt"),
    ("ktuberling-data", "usr/share/ktuberling/sounds/sr@latin/oko.ogg", "speech", "lang:sr"),
    ("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/city/cs/vit-m-proc.ogg", "speech", "fillets:m"),
    ("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/city/cs/vit-hs-klid1.ogg", "speech", "fillets:other"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/sounds/Farm2.wav", "nonspeech", "lincity:farm"),
    ("warzone2100-music", "usr/share/games/warzone2100/music/albums/legacy_soundtrack/track9.opus", "nonspeech",
     "warzone:legacy_soundtrack/track9"),
    ("colobot-common-sounds", "usr/share/games/colobot/sounds/sound038.wav", "nonspeech", "colobot:sound038"),
    ("asterisk-prompt-it-menardi-wav", "usr/share/asterisk/sounds/it_IT_f_Menardi/vm-goodbye.wav", "speech",
     "asterisk:Menardi"),
    ("fillets-ng-data-nl", "usr/share/games/fillets-ng/sound/city/nl/vit-m-proc.ogg", "speech", "fillets-nl:m"),
    ("fillets-ng-data-nl", "usr/share/games/fillets-ng/sound/city/nl/vit-hs-klid1.ogg", "speech", "fillets-nl:other"),
    ("gcin-voice", "usr/share/gcin-voice/ogg/\u3105\u311a/5.ogg", "speech", "gcin:5"),
    ("kajongg", "usr/share/kajongg/voices/de/female1/pung.ogg", "speech", "kajongg:female1"),
    ("kajongg", "usr/share/kajongg/voices/female1/pung.ogg", "speech", "kajongg:female1"),
    ("saytime", "usr/share/saytime/the_time_is.au", "speech", "saytime:dawson"),
    ("alsa-utils", "usr/share/sounds/alsa/Front_Left.wav", "speech", "alsa:channel-names"),
])
def test_rules_give_label_and_group(package, path, label, group):
    rule = classify(package, path)
    assert (rule.label, rule.group, rule.excluded) == (label, group, None)


@pytest.mark.parametrize("package, path", [
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/audio-channel-front-left.oga"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/sounds/Click.wav"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/sounds/SubstationOn.wav"),
    ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/en_US_f_Allison/silence/1.wav"),
    ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/en_US_f_Allison/beep.wav"),
    ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/en_US_f_Allison/tt-monkeys.wav"),
])
def test_known_traps_are_excluded_with_a_reason(package, path):
    rule = classify(package, path)
    assert rule.label is None and rule.excluded


def test_music_is_recognised():
    assert is_music("warzone2100-music", "usr/share/games/warzone2100/music/menu.opus")
    assert is_music("lincity-ng-data", "usr/share/games/lincity-ng/music/default/01.ogg")
    assert not is_music("lincity-ng-data", "usr/share/games/lincity-ng/sounds/Farm1.wav")


def test_unknown_package_is_a_clear_error(tmp_path):
    with pytest.raises(PackageError, match="no-such-package"):
        collect_builtin(["no-such-package"], tmp_path)
    with pytest.raises(PackageError, match="no-such-package.*builtin_packages.py"):
        classify("no-such-package", "usr/share/x.wav")


def test_local_source_groups(tmp_path):
    tone = np.sin(np.arange(1600) / 3).astype(np.float32) * 0.3
    for rel in ["speech/alice/1.wav", "speech/alice/2.wav", "speech/bob.wav", "nonspeech/rain/a.wav"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, tone, 16_000)
    (tmp_path / "groups.csv").write_text("path,group\nspeech/bob.wav,robert\n")
    items = {it.source_path: it for it in collect_local(tmp_path)}
    assert items["speech/alice/1.wav"].group == items["speech/alice/2.wav"].group == "local:speech:alice"
    assert items["speech/bob.wav"].group == "local:speech:robert"
    assert items["nonspeech/rain/a.wav"].label == "nonspeech"


def test_local_source_needs_both_class_folders(tmp_path):
    (tmp_path / "speech").mkdir()
    with pytest.raises(FileNotFoundError, match="nonspeech"):
        collect_local(tmp_path)


def test_non_ascii_folder_names_give_distinct_ids():
    """gcin-voice names its folders in Zhuyin: sanitising them to '_' made 2,358 files share ids."""
    a = _safe_id("gcin-voice", "usr/share/gcin-voice/ogg/\u3105\u311a/3.ogg")
    b = _safe_id("gcin-voice", "usr/share/gcin-voice/ogg/\u3106\u311a/3.ogg")
    assert a != b and a.isascii() and b.isascii()
    assert _safe_id("klettres-data", "usr/share/klettres/fr/alpha/a.ogg") == "klettres-data__klettres__fr__alpha__a"


def test_alsa_noise_file_is_not_speech():
    assert classify("alsa-utils", "usr/share/sounds/alsa/Noise.wav").excluded


def test_apt_entries_reads_every_package_from_one_apt_cache_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """One ``apt-cache show`` for all packages; each stanza gives its package's version and SHA256,
    and a package apt does not know is an error naming it."""
    import subprocess

    from qvad.data.sources import builtin

    calls: list[list[str]] = []
    stdout = ("Package: alpha\nVersion: 1.0-1\nSHA256: aa11\nDescription: a\n continued line\n\n"
              "Package: beta\nVersion: 2:3.4-5\nSize: 10\nSHA256: bb22\n\n")

    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout, "")

    monkeypatch.setattr(builtin.subprocess, "run", fake_run)
    entries = builtin.apt_entries(["alpha", "beta"])
    assert entries == {"alpha": builtin.AptEntry("1.0-1", "aa11"), "beta": builtin.AptEntry("2:3.4-5", "bb22")}
    assert len(calls) == 1 and calls[0][-2:] == ["alpha", "beta"]
    with pytest.raises(builtin.PackageError, match="gamma"):
        builtin.apt_entries(["alpha", "gamma"])
