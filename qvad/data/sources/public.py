"""The `public` data source: ESC-50 and VoxConverse as RawItems, and MUSAN noise for the noise pool.

Every archive is pinned here, in :data:`PINS` (URL + checksum, and where the checksum comes
from), downloaded through :func:`qvad.data.sources.fetch.fetch` (resumable, verified, atomic) into the
cache folder, extracted safely once per archive digest, and turned into
:class:`~qvad.data.manifest.RawItem` lists that :func:`~qvad.data.manifest.decode_items` decodes exactly
like the builtin source's, so the manifest columns and every later stage stay unchanged.

Group ids (the unit of splitting) are prefixed with the dataset so they cannot collide with
another source's groups: ``esc50:<src_file>`` (takes cut from one Freesound recording are one
group) and ``voxconverse:<recording>``. VoxConverse groups by recording, not speaker: the
speakers of a recording share its room, channel and topic, and the RTTM speaker labels
(spk00, spk01...) are only local to one recording, so a per-speaker group would put the same
recording in train and test.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import pandas as pd

from qvad.data.sources.fetch import Download, UnverifiedError, extract_archive, fetch
from qvad.data.categories import category_for
from qvad.data.manifest import RawItem
from qvad.common.params import ParamsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pin:
    """One archive: where it lives, the checksum its bytes must have, and where that came from."""

    url: str
    filename: str          # name in the cache, the same whatever mirror serves it
    sha256: str | None     # None: nobody published one; needs data.public.allow_unverified
    version: str           # dataset version written to the manifest (plus the archive digest)
    licence: str
    checksum_source: str   # audit trail for the pinned digest
    md5: str | None = None  # only where upstream publishes md5 but no sha256 (OpenSLR)


VOXCONVERSE_RTTM_COMMIT = "24bf60be297701cd7e4ef18550c6d390c1b87365"  # master = v0.3 labels

PINS: dict[str, Pin] = {
    "esc50": Pin(
        url="https://github.com/karolpiczak/ESC-50/archive/refs/heads/master.zip",
        filename="ESC-50-master.zip", sha256=None, version="2.0.0", licence="CC-BY-NC-3.0",
        checksum_source="none published; master.zip is a branch archive that can change"),
    "voxconverse_dev": Pin(
        url="https://www.robots.ox.ac.uk/~vgg/data/voxconverse/data/voxconverse_dev_wav.zip",
        filename="voxconverse_dev_wav.zip",
        sha256="e83a68b5df3bc945a3cf4544102038792ae79972753c585769e58ea677c523a8",
        version="0.3", licence="CC-BY-4.0",
        checksum_source="one third-party pin in public code; the authors publish none"),
    "voxconverse_test": Pin(
        url="https://www.robots.ox.ac.uk/~vgg/data/voxconverse/data/voxconverse_test_wav.zip",
        filename="voxconverse_test_wav.zip",
        sha256="472ebf1eaeb1dcb5c311b07a8b5c31bcedcccbf98f386d90a88cde2452da8c68",
        version="0.3", licence="CC-BY-4.0",
        checksum_source="one third-party pin in public code; the authors publish none"),
    "voxconverse_rttm": Pin(
        url=f"https://github.com/joonson/voxconverse/archive/{VOXCONVERSE_RTTM_COMMIT}.tar.gz",
        filename=f"voxconverse-rttm-{VOXCONVERSE_RTTM_COMMIT[:7]}.tar.gz",
        sha256="e8c25c91b014657d7e4ad86f9bef4a7eb399929d8d4fab910d8e6c6ab63d1197",
        version=f"0.3@{VOXCONVERSE_RTTM_COMMIT[:7]}", licence="CC-BY-4.0",
        checksum_source="two independent third-party pins in public code agree"),
    "musan": Pin(
        url="https://www.openslr.org/resources/17/musan.tar.gz",
        filename="musan.tar.gz", sha256=None, md5="0c472d4fc0c5141eca47ad1ffeb2a7df",
        version="openslr-17", licence="CC-BY-4.0",
        checksum_source="md5 published by OpenSLR, repeated by many recipes; no sha256 published"),
}

DATASETS = ("esc50", "voxconverse")
VOXCONVERSE_SPLITS = ("dev", "test")
MUSAN_NOISE_PACKAGE = "musan-noise"
"""Package name of MUSAN noise items: list it in mix.noise_packages so they feed the noise pool."""

ESC50_HUMAN_NONSPEECH = frozenset({
    "crying_baby", "sneezing", "clapping", "breathing", "coughing",
    "footsteps", "laughing", "brushing_teeth", "snoring", "drinking_sipping",
})
"""ESC-50's 'Human, non-speech sounds' category: hard negatives, NONSPEECH unless excluded."""

PUBLIC_DEFAULTS: dict[str, Any] = {
    "datasets": list(DATASETS),
    "exclude_human_nonspeech": False,
    "voxconverse_splits": list(VOXCONVERSE_SPLITS),
    "voxconverse_min_turn_s": 1.0,
    "voxconverse_merge_gap_s": 0.3,
    "voxconverse_max_turns_per_recording": 10,
    "allow_unverified": False,
    "sources": {},
}


# ----------------------------------------------------------------------------- entry points

def collect_public(cfg: dict, cache_dir: Path) -> list[RawItem]:
    """RawItems of the public source; ``cfg`` is the ``data`` section of params.yaml.

    Downloads (or reuses, after re-verifying) the archives of ``data.public.datasets`` under
    ``cache_dir/public``; ``data.max_files_per_package`` is applied by the download stage, as
    for every source.
    """
    pub = public_params(cfg)
    unknown = sorted(set(pub["datasets"]) - set(DATASETS))
    if unknown:
        raise ParamsError(f"params.yaml: data.public.datasets: unknown {unknown}; "
                          f"choose from {list(DATASETS)}")
    root = _public_dir(cache_dir)
    items: list[RawItem] = []
    if "esc50" in pub["datasets"]:
        items += _collect_esc50(pub, root)
    if "voxconverse" in pub["datasets"]:
        items += _collect_voxconverse(pub, root)
    log.info("public source: %d items (%s)", len(items), ", ".join(pub["datasets"]))
    return items


def collect_noise_musan(cfg: dict, cache_dir: Path) -> list[RawItem]:
    """MUSAN noise items when ``data.noise`` is ``musan``; none for the default synthetic pool.

    Works with any ``data.source``. Only ``musan/noise/`` is extracted from the 11 GB archive.
    Items have package :data:`MUSAN_NOISE_PACKAGE` so the mix stage can route them to the pool.
    """
    noise = cfg.get("noise", "synthetic")
    if noise not in ("synthetic", "musan"):
        raise ParamsError(f"params.yaml: data.noise: {noise!r} is not 'synthetic' or 'musan'")
    if noise != "musan":
        return []
    pub = public_params(cfg)
    root = _public_dir(cache_dir)
    folder, version = _fetch_extracted(
        "musan", pub, root, keep=lambda p: p.parts[:2] == ("musan", "noise"))
    return musan_noise_items(folder, version, PINS["musan"].licence)


def public_params(cfg: dict) -> dict[str, Any]:
    """``data.public`` merged over :data:`PUBLIC_DEFAULTS`; an unknown key is a typo, so an error."""
    given = cfg.get("public") or {}
    unknown = sorted(set(given) - set(PUBLIC_DEFAULTS))
    if unknown:
        raise ParamsError(f"params.yaml: data.public: unknown key(s) {unknown}; "
                          f"known: {sorted(PUBLIC_DEFAULTS)}")
    pub = {**PUBLIC_DEFAULTS, **given}
    pub["sources"] = pub["sources"] or {}
    unknown = sorted(set(pub["sources"]) - set(PINS))
    if unknown:
        raise ParamsError(f"params.yaml: data.public.sources: unknown archive(s) {unknown}; "
                          f"known: {sorted(PINS)}")
    return pub


def resolve_pin(name: str, overrides: dict[str, dict]) -> Pin:
    """The pinned archive ``name`` with ``data.public.sources.<name>`` fields laid over it.

    A mirror changes only ``url`` and keeps the pinned checksum; tests point every URL at a
    local server together with the checksums of their small archives.
    """
    fields = overrides.get(name) or {}
    unknown = sorted(set(fields) - {"url", "sha256", "md5"})
    if unknown:
        raise ParamsError(f"params.yaml: data.public.sources.{name}: unknown key(s) {unknown}; "
                          "use url, sha256, md5")
    return replace(PINS[name], **fields)


# ----------------------------------------------------------------------------- download + extract

def _public_dir(cache_dir: Path) -> Path:
    return Path(os.path.expanduser(str(cache_dir))) / "public"


def _fetch_extracted(name: str, pub: dict, root: Path,
                     keep: Callable[[PurePosixPath], bool] | None = None) -> tuple[Path, str]:
    """Download and verify archive ``name``, extract it once per digest; return (folder, version).

    The folder name carries the archive's sha256, so a re-pinned archive never reuses a tree
    extracted from older bytes. The version is the pin's label plus the digest prefix, which
    ties every manifest row to the exact bytes it came from.
    """
    dl = _fetch_pinned(name, pub, root)
    folder = root / f"{name}-{dl.sha256[:16]}"
    if not folder.is_dir():
        log.info("extracting %s -> %s", dl.path, folder)
        extract_archive(dl.path, folder, keep)
    return folder, f"{PINS[name].version}+sha256.{dl.sha256[:12]}"


def _fetch_pinned(name: str, pub: dict, root: Path) -> Download:
    """Fetch one pinned archive; turn the generic refusal into one that names the params key."""
    pin = resolve_pin(name, pub["sources"])
    log.info("%s: %s (checksum: %s)", name, pin.url,
             pin.checksum_source if pin == PINS[name] else "overridden in data.public.sources")
    try:
        return fetch(pin.url, root / pin.filename, pin.sha256, md5=pin.md5,
                     allow_unverified=bool(pub["allow_unverified"]))
    except UnverifiedError as exc:
        raise UnverifiedError(
            f"{exc}. Pin data.public.sources.{name}.sha256 (or PINS in qvad/public_sources.py), "
            "or set data.public.allow_unverified: true to download it once and log its sha256"
        ) from exc


def _find_one(root: Path, pattern: str) -> Path:
    """The single path under ``root`` matching ``pattern``; archives wrap files in a top folder."""
    found = sorted(root.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"{root}: expected one {pattern!r}, found {len(found)}")
    return found[0]


# ----------------------------------------------------------------------------- ESC-50

def _collect_esc50(pub: dict, root: Path) -> list[RawItem]:
    folder, version = _fetch_extracted("esc50", pub, root)
    return esc50_items(folder, version, bool(pub["exclude_human_nonspeech"]))


def esc50_items(root: Path, version: str, exclude_human_nonspeech: bool = False) -> list[RawItem]:
    """One NONSPEECH item per ESC-50 clip listed in meta/esc50.csv, grouped by ``src_file``.

    Human non-speech classes (coughing, laughing, crying baby...) stay as hard negatives unless
    ``exclude_human_nonspeech``: they teach the model that a human sound is not speech.
    """
    meta = _find_one(root, "*/meta/esc50.csv")
    base = meta.parent.parent
    df = pd.read_csv(meta, dtype=str, keep_default_na=False)
    missing = {"filename", "category", "src_file"} - set(df.columns)
    if missing:
        raise ValueError(f"{meta}: missing columns {sorted(missing)}")
    if exclude_human_nonspeech:
        df = df[~df["category"].isin(ESC50_HUMAN_NONSPEECH)]
    return [
        RawItem(id=f"esc50-{Path(row.filename).stem}", src=str(base / "audio" / row.filename),
                source_path=f"audio/{row.filename}", label="nonspeech",
                group=f"esc50:{row.src_file}", package="esc50", version=version,
                licence=PINS["esc50"].licence,
                category=category_for("public", "esc50", f"audio/{row.filename}", "nonspeech",
                                      {"esc50_class": row.category}))
        for row in df.sort_values("filename").itertuples(index=False)
    ]


# ----------------------------------------------------------------------------- VoxConverse

def _collect_voxconverse(pub: dict, root: Path) -> list[RawItem]:
    unknown = sorted(set(pub["voxconverse_splits"]) - set(VOXCONVERSE_SPLITS))
    if unknown:
        raise ParamsError(f"params.yaml: data.public.voxconverse_splits: unknown {unknown}; "
                          f"choose from {list(VOXCONVERSE_SPLITS)}")
    rttm_root, _ = _fetch_extracted("voxconverse_rttm", pub, root)
    items: list[RawItem] = []
    for split in pub["voxconverse_splits"]:
        audio_root, version = _fetch_extracted(f"voxconverse_{split}", pub, root)
        items += voxconverse_items(
            audio_root, _find_one(rttm_root, f"*/{split}"), version,
            min_turn_s=float(pub["voxconverse_min_turn_s"]),
            merge_gap_s=float(pub["voxconverse_merge_gap_s"]),
            max_turns_per_recording=pub["voxconverse_max_turns_per_recording"])
    return items


def voxconverse_items(audio_root: Path, rttm_dir: Path, version: str, *, min_turn_s: float,
                      merge_gap_s: float, max_turns_per_recording: int | None) -> list[RawItem]:
    """SPEECH region items from the RTTMs in ``rttm_dir`` over the WAVs under ``audio_root``.

    Turns of all speakers are merged where they overlap or lie at most ``merge_gap_s`` apart
    (the label is 'speech', whoever speaks), regions shorter than ``min_turn_s`` are dropped,
    and at most ``max_turns_per_recording`` regions, spread over the recording, are kept: the
    mix stage caps each group's share anyway, and each region is decoded separately.
    """
    wavs = {p.stem: p for p in audio_root.rglob("*.wav")}
    rttms = sorted(rttm_dir.glob("*.rttm"))
    if not rttms:
        raise FileNotFoundError(f"{rttm_dir}: no .rttm files")
    missing = [p.stem for p in rttms if p.stem not in wavs]
    if missing:
        raise FileNotFoundError(f"{audio_root}: no audio for {len(missing)} RTTM recording(s), "
                                f"e.g. {missing[:5]}")
    items: list[RawItem] = []
    for rttm in rttms:
        regions = [(s, e) for s, e in merge_turns(parse_rttm(rttm), merge_gap_s)
                   if e - s >= min_turn_s]
        for start, end in _spread(regions, max_turns_per_recording):
            items.append(_region_item(rttm.stem, wavs[rttm.stem], audio_root, start, end, version))
    return items


def _spread(regions: list[tuple[float, float]], limit: int | None) -> list[tuple[float, float]]:
    """At most ``limit`` regions, evenly spread over the recording (None keeps all)."""
    if limit is None or len(regions) <= limit:
        return regions
    step = len(regions) / limit
    return [regions[int(i * step)] for i in range(limit)]


def _region_item(rec: str, wav: Path, audio_root: Path, start: float, end: float,
                 version: str) -> RawItem:
    """A region item; the manifest has no time columns, so the region goes into the id and
    into ``source_path`` as a media fragment (``#t=start,end``)."""
    rel = wav.relative_to(audio_root).as_posix()
    return RawItem(id=f"voxconverse-{rec}-{round(start * 1000):08d}", src=str(wav),
                   source_path=f"{rel}#t={start:.3f},{end:.3f}", label="speech",
                   group=f"voxconverse:{rec}", package="voxconverse", version=version,
                   licence=PINS["voxconverse_dev"].licence, start_s=start, end_s=end,
                   category=category_for("public", "voxconverse", rel, "speech"))


def parse_rttm(path: Path) -> list[tuple[float, float]]:
    """(start, end) seconds of every SPEAKER line; a malformed line is an error naming file:line."""
    turns = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, dur = float(fields[3]), float(fields[4])
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{path}:{lineno}: malformed RTTM line {line!r}") from exc
        if start < 0 or dur <= 0:
            raise ValueError(f"{path}:{lineno}: negative start or non-positive duration")
        turns.append((start, start + dur))
    return turns


def merge_turns(turns: list[tuple[float, float]], max_gap_s: float) -> list[tuple[float, float]]:
    """Union of the turns, joining neighbours that overlap or are at most ``max_gap_s`` apart."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(turns):
        if merged and start - merged[-1][1] <= max_gap_s:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


# ----------------------------------------------------------------------------- MUSAN

def musan_noise_items(root: Path, version: str, licence: str) -> list[RawItem]:
    """One NONSPEECH item per WAV under musan/noise/, grouped by file stem, package musan-noise.

    Each MUSAN noise file is its own recording, so its stem is its group (``musan:<stem>``).
    """
    noise = _find_one(root, "musan/noise")
    return [
        RawItem(id=f"musan-{wav.stem}", src=str(wav),
                source_path=wav.relative_to(root).as_posix(), label="nonspeech",
                group=f"musan:{wav.stem}",
                package=MUSAN_NOISE_PACKAGE, version=version, licence=licence,
                category=category_for("public", MUSAN_NOISE_PACKAGE, wav.relative_to(root).as_posix(), "nonspeech"))
        for wav in sorted(noise.rglob("*.wav"))
    ]
