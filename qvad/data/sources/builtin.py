"""The builtin corpus: real recordings that Debian packages ship.

Fetched with ``apt-get download`` (no install, no root, no Depends) into a cache
outside the repo, verified against the archive's SHA256, extracted, and mapped to
labels and groups by path rules. Known traps are excluded by rule here, with the
reason recorded, so hygiene never has to guess about them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from qvad.data.categories import category_for
from qvad.data.manifest import RawItem

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".ogg", ".oga", ".opus", ".flac", ".au"}

# Licence per package, as its debian/copyright states for the audio (summarised in corpus.md).
LICENCES = {
    "asterisk-core-sounds-en-wav": "CC-BY-SA-3.0",
    "asterisk-core-sounds-fr-wav": "CC-BY-SA-3.0",
    "asterisk-core-sounds-it-wav": "CC-BY-SA-3.0",
    "asterisk-core-sounds-ru-wav": "CC-BY-3.0",
    "asterisk-prompt-it-menardi-wav": "CC-BY-SA-3.0 (attribution: Marco Menardi, voice Paola Dal Zot)",
    "fillets-ng-data-nl": "GPL-2",
    "gcin-voice": "GPL-3 or LGPL-3 (3.ogg); CC-BY-3.0 (5.ogg)",
    "kajongg": "GPL-2+",
    "saytime": "GPL",
    "alsa-utils": "GPL-2",
    "klettres-data": "GPL-2+",
    "ktuberling-data": "GPL-2+",
    "fillets-ng-data-cs": "GPL-2",
    "warzone2100-music": "GPL-2+",
    "colobot-common-sounds": "GPL-3+",
    "lincity-ng-data": "GPL-2+",
    "asterisk-moh-opsound-wav": "CC-BY-SA-3.0",
    "frozen-bubble-data": "GPL-2+",
    "pingus-data": "GPL-2+",
    "sound-theme-freedesktop": "CC-BY-SA-3.0",
}


class PackageError(RuntimeError):
    """A package that could not be fetched or verified; the message names it."""


@dataclass(frozen=True)
class Rule:
    """What a path rule decided: a label and group, or an exclusion with its reason."""

    label: str | None
    group: str | None
    excluded: str | None = None


def _stem_group(prefix: str, name: str) -> str:
    """Group by file stem without trailing digits: Farm1/Farm2 are takes of one source."""
    stem = re.sub(r"[\d_\-]+$", "", PurePosixPath(name).stem) or PurePosixPath(name).stem
    return f"{prefix}:{stem.lower()}"


def _language(code: str) -> str:
    """klettres and ktuberling may share a volunteer per language: group both by language."""
    return re.split(r"[_@]", code)[0].lower()


def classify(package: str, rel: str) -> Rule:
    """Label and group for ``rel`` (path inside the extracted package), by corpus.md's rules."""
    parts = PurePosixPath(rel).parts
    name = parts[-1]
    low = name.lower()
    if package.startswith("asterisk-core-sounds-") or package == "asterisk-prompt-it-menardi-wav":
        voice = next((p for p in parts if re.fullmatch(r"[a-z]{2}_[A-Z]{2}_[fm]_\w+", p)), None)
        if voice is None:
            return Rule(None, None, "asterisk file outside a voice folder")
        if "silence" in parts or low.startswith("beep") or "2tone" in low or "tt-monkeys" in low:
            return Rule(None, None, "asterisk tone/silence/monkeys: not speech (corpus.md)")
        return Rule("speech", f"asterisk:{voice.split('_', 3)[3]}")
    if package == "klettres-data":
        return Rule("speech", f"lang:{_language(parts[parts.index('klettres') + 1])}")
    if package == "ktuberling-data":
        return Rule("speech", f"lang:{_language(parts[parts.index('sounds') + 1])}")
    if package == "fillets-ng-data-cs":
        role = low.split("-")[1] if low.count("-") >= 2 else ""
        return Rule("speech", f"fillets:{role if role in ('m', 'v') else 'other'}")
    if package == "fillets-ng-data-nl":  # the Dutch dub: another cast than the Czech one
        fields = re.split(r"[-_]", PurePosixPath(low).stem)
        role = fields[1] if len(fields) > 2 else ""
        return Rule("speech", f"fillets-nl:{role if role in ('m', 'v') else 'other'}")
    if package == "gcin-voice":  # ogg/<syllable>/3.ogg: Edward Liu; 5.ogg: Chu Lo (its README)
        return Rule("speech", f"gcin:{PurePosixPath(name).stem}")
    if package == "kajongg":  # voices/[de/]<voice>/: one speaker per voice folder; en and de merged
        return Rule("speech", f"kajongg:{parts[-2]}") if "voices" in parts else \
            Rule(None, None, "kajongg file outside voices/")
    if package == "saytime":
        return Rule("speech", "saytime:dawson")
    if package == "alsa-utils":
        if "alsa" not in parts or low == "noise.wav":
            return Rule(None, None, "alsa-utils: only the spoken channel names are speech")
        return Rule("speech", "alsa:channel-names")
    if package == "warzone2100-music":
        return Rule("nonspeech", f"warzone:{parts[-2]}/{PurePosixPath(name).stem}")
    if package == "colobot-common-sounds":
        return Rule("nonspeech", f"colobot:{PurePosixPath(name).stem.lower()}")
    if package == "lincity-ng-data":
        if low.startswith(("click", "substation")):
            return Rule(None, None, "lincity Click/Substation: speech-like to a VAD (corpus.md)")
        if "music" in parts:
            return Rule("nonspeech", f"lincity:music/{PurePosixPath(name).stem.lower()}")
        return Rule("nonspeech", _stem_group("lincity", name))
    if package == "asterisk-moh-opsound-wav":
        return Rule("nonspeech", f"moh:{PurePosixPath(name).stem.lower()}")
    if package == "sound-theme-freedesktop":
        if low.startswith("audio-channel-"):
            return Rule(None, None, "freedesktop audio-channel-*: spoken words (corpus.md)")
        return Rule("nonspeech", _stem_group("freedesktop", name))
    if package == "pingus-data" and PurePosixPath(low).stem in ("goodidea", "letsgo", "ohno", "yipee"):
        return Rule(None, None, "pingus voice lines (spoken words, not effects)")
    if package in ("frozen-bubble-data", "pingus-data"):
        return Rule("nonspeech", _stem_group(package.split("-")[0], name))
    raise PackageError(f"{package}: no path rules for this package (add them in qvad/corpus_builtin.py)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class AptEntry(NamedTuple):
    """What apt's index (the archive's signed metadata) says of a package's candidate version."""

    version: str
    sha256: str


def apt_entries(packages: list[str]) -> dict[str, AptEntry]:
    """Version and SHA256 of every package's candidate version, from one ``apt-cache show`` call.

    apt-cache loads its whole package cache each time it starts (1.5 s here), so one call for
    all the packages instead of two per package took a minute off the download stage.
    """
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", *packages],
                         capture_output=True, text=True, check=False)
    entries: dict[str, AptEntry] = {}
    for stanza in re.split(r"\n\s*\n", out.stdout):
        fields = dict(re.findall(r"^([A-Za-z0-9-]+): (.*)$", stanza, re.M))
        if {"Package", "Version", "SHA256"} <= fields.keys():
            entries.setdefault(fields["Package"].strip(), AptEntry(fields["Version"].strip(), fields["SHA256"].strip()))
    missing = [p for p in packages if p not in entries]
    if missing:
        reason = out.stderr.strip() or "apt-cache show gave no candidate version"
        raise PackageError(f"{', '.join(missing)}: not in apt's package lists ({reason}); "
                           "run `apt-get update` first")
    return entries


def fetch_package(package: str, cache_dir: Path, entry: AptEntry) -> tuple[Path, str]:
    """Download (if needed), verify against apt's ``entry`` and extract ``package``; return (tree, version).

    A .deb whose SHA256 differs from apt's index (a half-finished or corrupt download)
    is deleted and fetched again once; a second mismatch is an error naming the package.
    """
    version, want = entry
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    tree = cache_dir / "extracted" / f"{package}_{version.replace(':', '%3a')}"
    if (tree / ".complete").exists():
        return tree, version
    for attempt in (1, 2):
        deb = next(iter(sorted(debs.glob(f"{package}_*.deb"))), None)
        if deb is None:
            res = subprocess.run(["apt-get", "download", package], cwd=debs,
                                 capture_output=True, text=True, check=False)
            deb = next(iter(sorted(debs.glob(f"{package}_*.deb"))), None)
            if res.returncode != 0 or deb is None:
                raise PackageError(f"{package}: apt-get download failed: {res.stderr.strip()[-400:]}")
        got = _sha256(deb)
        if got == want:
            break
        log.warning("%s: sha256 %s != apt's %s (attempt %d); fetching again", deb.name, got, want, attempt)
        deb.unlink()
    else:
        raise PackageError(f"{package}: downloaded .deb fails verification (sha256 {got}, apt says {want})")
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{package}."))
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, capture_output=True)
        (tmp / ".complete").write_text(version)
        if tree.exists():
            shutil.rmtree(tree)
        tree.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(tree)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree, version


def _safe_id(package: str, rel: str) -> str:
    """Readable, unique, filesystem-safe id from package and path."""
    body = PurePosixPath(rel).with_suffix("").as_posix().replace("usr/share/", "")
    # Non-ASCII letters (gcin-voice's Zhuyin folders) become their code points, so distinct
    # names stay distinct ids instead of collapsing into the same run of underscores.
    body = re.sub(r"[^\x00-\x7f]", lambda m: f"u{ord(m.group()):04x}", body)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{package}__{body}".replace("/", "__"))


def collect_package(package: str, tree: Path, version: str) -> tuple[list[RawItem], list[dict]]:
    """RawItems for every audio file of one extracted package, plus rule exclusions."""
    items, excluded = [], []
    for path in sorted(tree.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(tree).as_posix()
        rule = classify(package, rel)
        if rule.excluded:
            excluded.append({"package": package, "source_path": rel, "reason": rule.excluded})
            continue
        items.append(RawItem(id=_safe_id(package, rel), src=str(path), source_path=rel,
                             label=rule.label, group=rule.group, package=package,
                             version=version, licence=LICENCES.get(package, "see debian/copyright"),
                             category=category_for("builtin", package, rel, rule.label)))
    return items, excluded


def collect_builtin(packages: list[str], cache_dir: Path) -> tuple[list[RawItem], list[dict]]:
    """Fetch every package (failing loudly, never shrinking the corpus) and collect items."""
    unknown = [p for p in packages if p not in LICENCES]
    if unknown:
        raise PackageError(f"unknown builtin packages {unknown}: known are {sorted(LICENCES)}")
    items, excluded = [], []
    entries = apt_entries(packages)
    for package in packages:
        tree, version = fetch_package(package, cache_dir, entries[package])
        got, exc = collect_package(package, tree, version)
        if not got:
            raise PackageError(f"{package}: no usable audio files found in {tree}")
        items += got
        excluded += exc
    return items, excluded


def is_music(package: str, source_path: str) -> bool:
    """Music tracks of the builtin corpus: clean non-speech that hygiene must keep."""
    low = source_path.lower()
    return (package in ("warzone2100-music", "asterisk-moh-opsound-wav")
            or "/music/" in low or "mainzik" in low)
