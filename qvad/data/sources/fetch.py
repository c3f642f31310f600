"""Resumable, checksum-verified downloads and safe archive extraction.

The public datasets are large (ESC-50 about 600 MB, VoxConverse about 4 GB, MUSAN 11 GB) and
come from servers we do not control. So a download must survive an interruption (it resumes
with an HTTP Range request from a ``.part`` file), must never be used before its checksum
matches the pinned one (a stale or tampered file would silently change the training data),
and must appear under its final name only once verified, so a file that looks complete is
complete. Archives are untrusted input too: extraction refuses any member that would write
outside the target folder (``..``, absolute paths, links pointing out), and the extracted
tree appears atomically.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable

from tqdm import tqdm

log = logging.getLogger(__name__)

CHUNK = 1 << 20
HEX_LENGTHS = {"sha256": 64, "md5": 32}


class DownloadError(RuntimeError):
    """A transfer that failed; the message names the URL and the local file."""


class UnverifiedError(DownloadError):
    """No checksum is pinned and the caller did not opt in to an unverified file."""


class ChecksumError(DownloadError):
    """A file whose digest differs from the pinned one; the message names the file and both digests."""

    def __init__(self, path: Path, url: str, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: {algorithm} mismatch for {url}: expected {expected}, got {actual}; "
            f"the file was deleted so it cannot be used")
        self.path, self.expected, self.actual = path, expected, actual


class UnsafeArchiveError(ValueError):
    """An archive member that would escape the target folder; the message names archive and member."""

    def __init__(self, archive: Path, member: str, reason: str) -> None:
        super().__init__(f"{archive}: refusing to extract member {member!r}: {reason}")


class _Interrupted(DownloadError):
    """A transfer that stopped early; worth retrying from where it stopped."""


@dataclass(frozen=True)
class Download:
    """A verified file and its sha256 (recorded as the data version, and to pin unpinned sources)."""

    path: Path
    sha256: str


def file_digests(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, in one read of the file."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            for h in hashers.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashers.items()}


def fetch(url: str, dest: Path, sha256: str | None, *, md5: str | None = None,
          allow_unverified: bool = False, attempts: int = 5, timeout_s: float = 60.0,
          backoff_s: float = 2.0) -> Download:
    """Download ``url`` to ``dest`` unless a verified copy is there; return it with its sha256.

    ``dest`` only ever holds a verified file: bytes go to ``dest.part`` (resumed with a Range
    request after an interruption, up to ``attempts`` transfers per call), are checked against
    ``sha256`` (and ``md5`` where upstream publishes only that), then renamed atomically. A file
    that fails the check is deleted and :class:`ChecksumError` names it with both digests.
    With no checksum pinned the call is refused (:class:`UnverifiedError`) unless
    ``allow_unverified``; the computed sha256 is then logged so it can be pinned.
    """
    expected = _expected_digests(sha256, md5)
    if not expected and not allow_unverified:
        raise UnverifiedError(f"{dest}: no checksum pinned for {url}; refusing an unverified file")
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        _download_part(url, part, resume=bool(expected), attempts=attempts, timeout_s=timeout_s,
                       backoff_s=backoff_s)
        digest = _verify(part, url, expected)
        os.replace(part, dest)
    else:
        digest = _verify(dest, url, expected)
    if not expected:
        log.warning("UNVERIFIED %s from %s: sha256 %s (pin it to verify future downloads)",
                    dest, url, digest)
    return Download(dest, digest)


def _expected_digests(sha256: str | None, md5: str | None) -> dict[str, str]:
    """The pinned digests, lower-cased; a malformed pin is a typo worth stopping for."""
    expected = {k: v.lower() for k, v in (("sha256", sha256), ("md5", md5)) if v is not None}
    for name, value in expected.items():
        if not re.fullmatch(f"[0-9a-f]{{{HEX_LENGTHS[name]}}}", value):
            raise ValueError(f"pinned {name} {value!r} is not {HEX_LENGTHS[name]} hex digits")
    return expected


def _verify(path: Path, url: str, expected: dict[str, str]) -> str:
    """Return the sha256 of ``path``; delete it and raise if any pinned digest differs."""
    actual = file_digests(path, tuple({"sha256", *expected}))
    for name, want in expected.items():
        if actual[name] != want:
            path.unlink()
            raise ChecksumError(path, url, name, want, actual[name])
    return actual["sha256"]


def _download_part(url: str, part: Path, *, resume: bool, attempts: int, timeout_s: float,
                   backoff_s: float) -> None:
    """Fill ``part`` with the whole resource, retrying interrupted transfers from where they stopped.

    A ``.part`` left by an earlier run is resumed only when a pinned checksum will catch one
    that came from an older version of the resource; without a pin the call starts from zero.
    """
    if not resume:
        part.unlink(missing_ok=True)
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, timeout_s)
            return
        except _Interrupted as exc:
            if attempt == attempts:
                hint = " (run again to resume from the .part file)" if resume else ""
                raise DownloadError(f"{part}: gave up on {url} after {attempts} attempt(s): "
                                    f"{exc}{hint}") from exc
            log.warning("%s (attempt %d/%d); resuming", exc, attempt, attempts)
            time.sleep(backoff_s * attempt)


def _transfer(url: str, part: Path, timeout_s: float) -> None:
    """One HTTP transfer into ``part``, continuing from its current size when it has one."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "qvad-fetch"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout_s) as resp:
            offset, total = _resume_point(resp, part, offset, url)
            _copy_body(resp, part, offset, total, url)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # nothing left to send: the .part is whole (the checksum decides)
        if exc.code < 500:
            raise DownloadError(f"{part}: HTTP {exc.code} {exc.reason} for {url}") from exc
        raise _Interrupted(f"{part}: HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _Interrupted(f"{part}: transfer of {url} stopped at {_size(part)} bytes: "
                           f"{type(exc).__name__}: {exc}") from exc


def _resume_point(resp: http.client.HTTPResponse, part: Path, offset: int,
                  url: str) -> tuple[int, int | None]:
    """Where the response body starts in the file, and the full size when the server says.

    A server that ignores Range answers 200 with the whole body: start again from zero. One
    that answers another range than asked cannot be appended: drop the .part and retry.
    """
    length = resp.headers.get("Content-Length")
    if resp.status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            part.unlink()
            raise _Interrupted(f"{part}: unexpected Content-Range "
                               f"{resp.headers.get('Content-Range')!r} for a resume at byte "
                               f"{offset} of {url}; starting again")
        return offset, None if match.group(2) == "*" else int(match.group(2))
    return 0, int(length) if length is not None else None


def _copy_body(resp: http.client.HTTPResponse, part: Path, offset: int, total: int | None,
               url: str) -> None:
    """Append the body to ``part`` from ``offset``; a body shorter than announced is an interruption."""
    with open(part, "r+b" if offset else "wb") as out, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name,
                 disable=None) as bar:
        out.seek(offset)
        out.truncate()
        while block := resp.read(CHUNK):
            out.write(block)
            bar.update(len(block))
        size = out.tell()
    if total is not None and size < total:
        raise _Interrupted(f"{part}: connection closed at byte {size} of {total} from {url}")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# ----------------------------------------------------------------------------- extraction

def extract_archive(archive: Path, target: Path,
                    keep: Callable[[PurePosixPath], bool] | None = None) -> Path:
    """Extract a zip or tar ``archive`` into ``target`` (which must not exist yet); return it.

    Every member is checked before anything of it is written: ``..``, absolute or drive paths,
    and symlinks/hardlinks resolving outside the archive root raise :class:`UnsafeArchiveError`
    (for tar, Python's ``data`` filter checks again). Members go to a temporary folder beside
    ``target`` that is renamed into place only when all succeeded, so a failure leaves nothing
    behind and an existing ``target`` is always complete. ``keep`` selects members to write
    (all are still checked): MUSAN is 11 GB, of which only noise/ is needed.
    """
    if target.exists():
        raise FileExistsError(f"{target}: extraction target already exists")
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, keep)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp, keep)
        else:
            raise ValueError(f"{archive}: neither a zip nor a tar archive")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _safe_member_path(archive: Path, name: str) -> PurePosixPath:
    """The member's path relative to the target; raise for anything that could escape it."""
    if "\\" in name or PureWindowsPath(name).drive:
        raise UnsafeArchiveError(archive, name, "Windows separator or drive in the path")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise UnsafeArchiveError(archive, name, "absolute path")
    if ".." in path.parts:
        raise UnsafeArchiveError(archive, name, "path traversal ('..')")
    return path


def _check_link(archive: Path, name: str, link_target: str, symbolic: bool) -> None:
    """Refuse a link whose target resolves outside the archive root.

    A symlink's target is relative to the link's folder; a hardlink's is an archive path.
    """
    if PurePosixPath(link_target).is_absolute():
        raise UnsafeArchiveError(archive, name, f"link to absolute path {link_target!r}")
    base = os.path.dirname(name) if symbolic else ""
    resolved = os.path.normpath(os.path.join(base, link_target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(archive, name, f"link to {link_target!r} points outside the target")


def _extract_zip(archive: Path, dest: Path, keep: Callable[[PurePosixPath], bool] | None) -> None:
    """Check every member, then extract the kept ones (zip links become no files at all)."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        links = set()
        for info in infos:
            _safe_member_path(archive, info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                _check_link(archive, info.filename, zf.read(info).decode("utf-8", "replace"), True)
                links.add(info.filename)
        for info in infos:
            if info.filename not in links and (keep is None or keep(PurePosixPath(info.filename))):
                zf.extract(info, dest)


def _extract_tar(archive: Path, dest: Path, keep: Callable[[PurePosixPath], bool] | None) -> None:
    """Check and extract member by member in one pass (a second pass over 11 GB of gzip is slow).

    An unsafe member aborts the whole extraction; the caller then deletes the temporary folder,
    and nothing was ever written outside it because each member is checked before it is written.
    """
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            path = _safe_member_path(archive, member.name)
            if member.issym() or member.islnk():
                _check_link(archive, member.name, member.linkname, member.issym())
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(archive, member.name, "device, FIFO or other special file")
            if keep is None or keep(path):
                try:
                    tf.extract(member, dest, set_attrs=False, filter="data")
                except tarfile.FilterError as exc:
                    raise UnsafeArchiveError(archive, member.name, str(exc)) from exc
