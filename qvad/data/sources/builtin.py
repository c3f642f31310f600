"""The builtin corpus: real recordings that Debian packages ship.

Fetched with ``apt-get download`` (no install, no root, no Depends) into a cache
outside the repo, verified against the archive's SHA256, extracted, and mapped to
licence, label, group and category by the package table
(:mod:`qvad.data.sources.builtin_packages`), which also excludes known traps by rule,
with the reason recorded, so hygiene never has to guess about them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from qvad.data.categories import category_for
from qvad.data.manifest import RawItem
from qvad.data.sources.builtin_packages import PACKAGES, PackageError, classify

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".ogg", ".oga", ".opus", ".flac", ".au"}


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
                             version=version, licence=PACKAGES[package].licence,
                             category=category_for("builtin", package, rel, rule.label)))
    return items, excluded


def collect_builtin(packages: list[str], cache_dir: Path) -> tuple[list[RawItem], list[dict]]:
    """Fetch every package (failing loudly, never shrinking the corpus) and collect items."""
    unknown = [p for p in packages if p not in PACKAGES]
    if unknown:
        raise PackageError(f"unknown builtin packages {unknown}: known are {sorted(PACKAGES)}")
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
