"""The public source (qvad.data.sources.public) and its downloader (qvad.data.sources.fetch), without the internet.

A local HTTP server on 127.0.0.1 (ephemeral port, Range support, scripted faults) serves small
archives built here in the real layouts; the pinned URLs and checksums are overridden through
``data.public.sources`` exactly as a user would point them at a mirror.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from qvad.data.sources.fetch import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    UnverifiedError,
    extract_archive,
    fetch,
)
from qvad.data.manifest import RAW_COLUMNS, RawItem, decode_items
from qvad.common.params import ParamsError
from qvad.data.sources.public import (
    MUSAN_NOISE_PACKAGE,
    collect_noise_musan,
    collect_public,
    merge_turns,
)

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- local server


@dataclass
class Served:
    """What the server offers and what it saw; faults are scripted per file name."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)  # next response stops after N bytes
    ignore_range: set[str] = field(default_factory=set)       # answer 200 to Range requests

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class _RangeHandler(BaseHTTPRequestHandler):
    """GET with single open-ended ``bytes=N-`` ranges (all the downloader sends)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state: Served = self.server.state  # type: ignore[attr-defined]
        name, rng = self.path.lstrip("/"), self.headers.get("Range")
        state.requests.append((name, rng))
        data = state.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and name not in state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = state.cut_after.pop(name, None)
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.state = Served(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


# ----------------------------------------------------------------------------- test archives

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wav_bytes(seconds: float, sr: int, seed: int) -> bytes:
    """Non-silent PCM16 noise: decode_items rejects silence."""
    x = 0.3 * np.random.default_rng(seed).standard_normal(int(seconds * sr))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def tar_bytes(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    """A tar.gz of regular files (name, data) and hand-made members (links) in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


ESC50_ROWS = [  # filename, target, category, src_file
    ("1-100032-A-0.wav", "0", "dog", "100032"),
    ("1-100032-B-0.wav", "0", "dog", "100032"),
    ("1-115545-A-24.wav", "24", "coughing", "115545"),
    ("2-109505-A-21.wav", "21", "sneezing", "109505"),
    ("3-1000-A-40.wav", "40", "helicopter", "1000"),
]

# abjxc: overlapping turns and a 0.2 s gap merge into 0.5-4.0; a 0.5 s turn is dropped.
RTTM = {
    "abjxc": [(0.5, 1.5, "spk00"), (1.8, 1.2, "spk01"), (3.2, 0.8, "spk00"),
              (6.0, 0.5, "spk01"), (8.0, 2.5, "spk00")],
    "bkwns": [(1.0, 2.5, "spk00")],
}
EXPECTED_REGIONS = {"abjxc": [(0.5, 4.0), (8.0, 10.5)], "bkwns": [(1.0, 3.5)]}


def esc50_zip() -> bytes:
    csv = "filename,fold,target,category,esc10,src_file,take\n" + "".join(
        f"{fn},{fn[0]},{t},{cat},False,{src},{fn.split('-')[2]}\n" for fn, t, cat, src in ESC50_ROWS)
    entries = {"ESC-50-master/meta/esc50.csv": csv.encode()}
    for i, (fn, *_rest) in enumerate(ESC50_ROWS):
        entries[f"ESC-50-master/audio/{fn}"] = wav_bytes(0.5, 44100, seed=i)
    return zip_bytes(entries)


def rttm_text(rec: str) -> str:
    return "".join(f"SPEAKER {rec} 1 {s:.3f} {d:.3f} <NA> <NA> {spk} <NA> <NA>\n"
                   for s, d, spk in RTTM[rec])


@pytest.fixture
def public_cfg(server: Served) -> dict:
    """Serve ESC-50 and VoxConverse-dev test archives; a ``data`` params section pointing at them."""
    archives = {
        "esc50.zip": esc50_zip(),
        "vc_dev.zip": zip_bytes({f"audio/{rec}.wav": wav_bytes(12.0, 16000, seed=10 + i)
                                 for i, rec in enumerate(RTTM)}),
        "vc_rttm.tar.gz": tar_bytes([(f"voxconverse-master/{split}/{rec}.rttm",
                                      rttm_text(rec).encode())
                                     for split in ("dev", "test") for rec in RTTM]),
    }
    server.files.update(archives)
    sources = {name: {"url": server.url(fn), "sha256": sha256(archives[fn])}
               for name, fn in (("esc50", "esc50.zip"), ("voxconverse_dev", "vc_dev.zip"),
                                ("voxconverse_rttm", "vc_rttm.tar.gz"))}
    return {"source": "public", "public": {"voxconverse_splits": ["dev"], "sources": sources}}


# ----------------------------------------------------------------------------- end to end

def test_clean_download_to_manifest_rows(public_cfg: dict, server: Served, tmp_path: Path) -> None:
    items = collect_public(public_cfg, tmp_path / "cache")
    manifest, failures = decode_items(items, tmp_path / "raw", max_seconds=60, workers=2)

    assert failures.empty
    assert list(manifest.columns) == RAW_COLUMNS
    esc = manifest[manifest.package == "esc50"].set_index("id")
    assert len(esc) == len(ESC50_ROWS) and set(esc.label) == {"nonspeech"}
    # the two takes of one Freesound recording are one group; groups are namespaced
    assert esc.loc["esc50-1-100032-A-0", "group"] == esc.loc["esc50-1-100032-B-0", "group"] == "esc50:100032"
    assert (esc.orig_sr == 44100).all() and np.allclose(esc.duration_s, 0.5, atol=1e-3)
    assert esc.version.str.match(r"2\.0\.0\+sha256\.[0-9a-f]{12}$").all()

    vc = manifest[manifest.package == "voxconverse"]
    assert set(vc.label) == {"speech"} and set(vc.licence) == {"CC-BY-4.0"}
    regions = {rec: sorted(zip(g.source_path.str.extract(r"#t=([\d.]+),")[0].astype(float),
                               g.duration_s))
               for rec, g in vc.groupby(vc.group.str.removeprefix("voxconverse:"))}
    assert {rec: [(round(s, 3), round(s + d, 3)) for s, d in r] for rec, r in regions.items()} \
        == EXPECTED_REGIONS
    assert all((tmp_path / "raw" / f"{i}.wav").is_file() for i in manifest.id)

    # a second run re-verifies the cached archives and downloads nothing; the knobs apply
    seen = len(server.requests)
    again = collect_public({**public_cfg, "public": {
        **public_cfg["public"], "exclude_human_nonspeech": True,
        "voxconverse_max_turns_per_recording": 1}}, tmp_path / "cache")
    assert len(server.requests) == seen
    assert sorted(it.id for it in again) == [
        "esc50-1-100032-A-0", "esc50-1-100032-B-0", "esc50-3-1000-A-40",
        "voxconverse-abjxc-00000500", "voxconverse-bkwns-00001000"]


@pytest.mark.slow
def test_download_stage_runs_the_public_source(public_cfg: dict, server: Served, tmp_path: Path) -> None:
    """`python -m stages.download` with data.source=public: the stage DVC runs, against the local server."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(public_cfg, cache_dir=str(tmp_path / "cache"))
    params["data"]["public"] = {**params["data"]["public"], **public_cfg["public"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "metrics").mkdir()
    res = subprocess.run([sys.executable, "-m", "stages.download"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]

    manifest = pd.read_csv(tmp_path / "data/raw/manifest.csv")
    assert list(manifest.columns) == RAW_COLUMNS
    assert set(manifest.package) == {"esc50", "voxconverse"}
    assert all((tmp_path / "data/raw/audio" / f"{i}.wav").is_file() for i in manifest.id)
    metrics = json.loads((tmp_path / "metrics/download.json").read_text())
    assert metrics["source"] == "public" and metrics["files"] == len(manifest) and metrics["decode_failed"] == 0
    assert metrics["per_class"]["nonspeech"]["files"] == len(ESC50_ROWS)
    assert metrics["per_class"]["speech"]["groups"] == len(RTTM)


def test_musan_noise_pool_only_when_asked(server: Served, tmp_path: Path) -> None:
    archive = tar_bytes([
        ("musan/noise/free-sound/noise-free-sound-0000.wav", wav_bytes(1.0, 16000, 1)),
        ("musan/noise/sound-bible/noise-sound-bible-0003.wav", wav_bytes(1.0, 16000, 2)),
        ("musan/speech/librivox/speech-librivox-0000.wav", wav_bytes(1.0, 16000, 3)),
        ("musan/music/jamendo/music-jamendo-0000.wav", wav_bytes(1.0, 16000, 4)),
    ])
    server.files["musan.tar.gz"] = archive
    cfg = {"public": {"sources": {"musan": {"url": server.url("musan.tar.gz"),
                                            "sha256": sha256(archive), "md5": None}}}}

    assert collect_noise_musan({**cfg, "noise": "synthetic"}, tmp_path) == []
    assert server.requests == []
    items = collect_noise_musan({**cfg, "noise": "musan"}, tmp_path)

    assert [(it.id, it.label, it.group, it.package) for it in items] == [
        ("musan-noise-free-sound-0000", "nonspeech", "musan:noise-free-sound-0000", MUSAN_NOISE_PACKAGE),
        ("musan-noise-sound-bible-0003", "nonspeech", "musan:noise-sound-bible-0003", MUSAN_NOISE_PACKAGE),
    ]
    extracted = {p.relative_to(tmp_path / "public").parts[2]
                 for p in (tmp_path / "public").rglob("*.wav")}
    assert extracted == {"noise"}  # speech/ and music/ were never written


@pytest.mark.parametrize("public, typo", [
    ({"exclude_human_nonspeach": True}, "exclude_human_nonspeach"),
    ({"sources": {"esc-50": {"url": "http://127.0.0.1:9/x.zip"}}}, "esc-50"),
    ({"sources": {"esc50": {"sha": "0" * 64}}}, "sha"),
])
def test_params_typos_are_errors_naming_the_key(public: dict, typo: str, tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=f"data.public.*{typo}"):
        collect_public({"public": public}, tmp_path)


def test_turns_merge_across_speakers_and_gaps() -> None:
    turns = [(8.0, 9.0), (0.0, 1.0), (0.5, 2.0), (2.3, 3.0), (3.5, 4.0)]
    assert merge_turns(turns, max_gap_s=0.3) == [(0.0, 3.0), (3.5, 4.0), (8.0, 9.0)]
    assert merge_turns(turns, max_gap_s=0.0) == [(0.0, 2.0), (2.3, 3.0), (3.5, 4.0), (8.0, 9.0)]


def test_region_later_than_max_seconds_is_decoded(tmp_path: Path) -> None:
    src = tmp_path / "long.wav"
    src.write_bytes(wav_bytes(10.0, 16000, 5))
    item = RawItem(id="r", src=str(src), source_path="long.wav#t=6,8", label="speech", group="g",
                   package="p", version="", licence="", start_s=6.0, end_s=8.0)
    manifest, _ = decode_items([item], tmp_path / "raw", max_seconds=4, workers=1)
    assert manifest.duration_s.tolist() == [2.0]


# ----------------------------------------------------------------------------- downloads

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def test_interrupted_transfer_resumes_with_range(server: Served, tmp_path: Path) -> None:
    server.files["big.bin"] = PAYLOAD
    server.cut_after["big.bin"] = 300_000
    dest = tmp_path / "big.bin"

    with pytest.raises(DownloadError, match="run again to resume"):
        fetch(server.url("big.bin"), dest, sha256(PAYLOAD), attempts=1, backoff_s=0)
    assert not dest.exists()
    assert dest.with_name("big.bin.part").stat().st_size == 300_000

    got = fetch(server.url("big.bin"), dest, sha256(PAYLOAD), attempts=1, backoff_s=0)

    assert server.requests == [("big.bin", None), ("big.bin", "bytes=300000-")]
    assert got.sha256 == sha256(PAYLOAD) and dest.read_bytes() == PAYLOAD
    assert not dest.with_name("big.bin.part").exists()


def test_retry_within_one_call_and_server_without_range(server: Served, tmp_path: Path) -> None:
    server.files.update({"a.bin": PAYLOAD, "b.bin": PAYLOAD})
    server.cut_after.update({"a.bin": 123_456, "b.bin": 123_456})
    server.ignore_range.add("b.bin")  # answers 200 with the whole body: restart from zero

    for name in ("a.bin", "b.bin"):
        fetch(server.url(name), tmp_path / name, sha256(PAYLOAD), attempts=2, backoff_s=0)
        assert (tmp_path / name).read_bytes() == PAYLOAD

    assert [r for n, r in server.requests] == [None, "bytes=123456-", None, "bytes=123456-"]


def test_wrong_hash_names_file_and_both_hashes(server: Served, tmp_path: Path) -> None:
    corrupted = bytearray(PAYLOAD)
    corrupted[1000] ^= 0xFF
    server.files["data.zip"] = bytes(corrupted)
    dest = tmp_path / "data.zip"

    with pytest.raises(ChecksumError) as err:
        fetch(server.url("data.zip"), dest, sha256(PAYLOAD), backoff_s=0)
    message = str(err.value)
    assert "data.zip" in message
    assert sha256(PAYLOAD) in message and sha256(bytes(corrupted)) in message
    assert list(tmp_path.iterdir()) == []  # neither data.zip nor data.zip.part

    # a cached file damaged on disk is rejected and deleted too, then fetched again
    server.files["data.zip"] = PAYLOAD
    fetch(server.url("data.zip"), dest, sha256(PAYLOAD))
    dest.write_bytes(bytes(corrupted))
    with pytest.raises(ChecksumError):
        fetch(server.url("data.zip"), dest, sha256(PAYLOAD))
    assert not dest.exists()
    assert fetch(server.url("data.zip"), dest, sha256(PAYLOAD)).path.read_bytes() == PAYLOAD


def test_unpinned_archive_needs_explicit_opt_in(public_cfg: dict, server: Served, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    public_cfg["public"]["datasets"] = ["esc50"]
    public_cfg["public"]["sources"]["esc50"]["sha256"] = None

    with pytest.raises(UnverifiedError, match="data.public.allow_unverified"):
        collect_public(public_cfg, tmp_path)
    assert server.requests == []

    public_cfg["public"]["allow_unverified"] = True
    with caplog.at_level(logging.WARNING, logger="qvad.data.sources.fetch"):
        assert len(collect_public(public_cfg, tmp_path)) == len(ESC50_ROWS)
    assert sha256(server.files["esc50.zip"]) in caplog.text


# ----------------------------------------------------------------------------- extraction

def _snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


OK = ("pkg/readme.txt", b"fine")


@pytest.mark.parametrize("kind, members", [
    ("zip", {"pkg/readme.txt": b"fine", "../evil.txt": b"x"}),
    ("zip", {"pkg/readme.txt": b"fine", "/ABS/evil.txt": b"x"}),
    ("tar", [OK, ("../evil.txt", b"x")]),
    ("tar", [OK, ("/ABS/evil.txt", b"x")]),
    ("tar", [OK, link("pkg/etc", "/etc")]),
    ("tar", [OK, link("pkg/up", "../../out")]),
    ("tar", [OK, link("pkg/passwd", "/etc/passwd", tarfile.LNKTYPE)]),
    ("tar", [OK, link("pkg/d", "/ABS"), ("pkg/d/evil.txt", b"x")]),
], ids=["zip-dotdot", "zip-absolute", "tar-dotdot", "tar-absolute", "tar-symlink-etc",
        "tar-symlink-up", "tar-hardlink-etc", "tar-write-through-symlink"])
def test_unsafe_archive_is_refused_and_writes_nothing(kind: str, members, tmp_path: Path) -> None:
    abs_dir = (tmp_path / "abs").as_posix()

    def absolute(name: str) -> str:
        return name.replace("/ABS", abs_dir)

    if kind == "zip":
        data = zip_bytes({absolute(k): v for k, v in members.items()})
    else:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                m.linkname = absolute(m.linkname)
        data = tar_bytes([m if isinstance(m, tarfile.TarInfo) else (absolute(m[0]), m[1])
                          for m in members])
    archive = tmp_path / f"evil.{kind}"
    archive.write_bytes(data)
    before = _snapshot(tmp_path)

    with pytest.raises(UnsafeArchiveError, match=r"evil\.(zip|tar): refusing to extract member"):
        extract_archive(archive, tmp_path / "out" / "target")

    assert _snapshot(tmp_path) - before <= {"out"}  # at most the empty parent folder
    assert not any((tmp_path / "out").iterdir())


def test_safe_tar_with_internal_link_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(tar_bytes([OK, link("pkg/alias.txt", "readme.txt")]))
    target = extract_archive(archive, tmp_path / "target")
    assert (target / "pkg" / "alias.txt").read_bytes() == b"fine"
    assert _snapshot(target) == {"pkg", "pkg/readme.txt", "pkg/alias.txt"}
