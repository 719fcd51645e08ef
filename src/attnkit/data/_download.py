"""Downloads with resume and checksums, and tar extraction that cannot write outside its target.

* :func:`download_file` streams into ``NAME.part`` (resumed with an HTTP ``Range`` request when a ``.part`` is
  already there), checks the size against ``Content-Length`` and the checksum against the table, and only then
  renames the ``.part`` to ``NAME`` (atomic on one file system). A connection that ends early (or is reset)
  keeps the ``.part``, with every byte that arrived, for the next call to resume; a checksum mismatch deletes
  it. The final name therefore only ever holds a complete, verified file. A file larger than the free space
  is refused before anything is written; a full disk is reported as such (``OSError`` ENOSPC naming the file),
  never as a network or archive problem.
* :func:`safe_extract_tar` checks *every* member (absolute names, ``..`` escapes, links that resolve outside
  the target, device files) before anything is written, then extracts with ``filter="data"`` into a temporary
  folder inside the target (``.extract-PID-XXXX``) and moves the top-level entries into place: a refused or
  broken archive leaves nothing behind, and the temporary folder of a killed extraction is removed by the next.
* :func:`fetch` is what the data sets call: the file under ``root/DATASET/`` if it is there and verified, else
  a download from the mirror (argument ``mirror``, else ``$ATTNKIT_DATA_MIRROR``, else the official URL).

Progress bars (tqdm) are shown only on an interactive terminal and never when ``$CI`` is set.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import lzma
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .._files import naming, remove_stale_temporaries

__all__ = [
    "ChecksumError",
    "DownloadError",
    "MIRROR_ENV",
    "Resource",
    "UnsafeArchiveError",
    "download_file",
    "fetch",
    "resource_url",
    "safe_extract_tar",
]

MIRROR_ENV = "ATTNKIT_DATA_MIRROR"  # base URL of a mirror laid out as MIRROR/DATASET/FILENAME
_CHUNK = 1 << 20  # bytes per read: large enough to be fast, small enough for a smooth progress bar
_TIMEOUT = 60.0  # seconds without data before a connection counts as dead
# What a broken archive raises while it is read (gzip.BadGzipFile is an OSError: told apart from the disk's).
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


class DownloadError(OSError):
    """The transfer failed (network, HTTP status, or fewer bytes than announced)."""


class ChecksumError(ValueError):
    """A file's MD5/SHA256 differs from the table: corrupted, truncated or not the official file."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target folder, or is not a plain file, folder or link."""


@dataclass(frozen=True)
class Resource:
    """One file of a data set: where it comes from and what it must hash to (at least one checksum)."""

    filename: str  # name on the server and on disk
    base_url: str  # official location, without the file name
    md5: str | None = None  # hex digest published by the data set's authors
    sha256: str | None = None  # hex digest, where one is published

    def __post_init__(self) -> None:
        if not (self.md5 or self.sha256):
            raise ValueError(f"resource {self.filename!r} needs an md5 or sha256 checksum; downloads are always verified")

    def verify(self, path: Path) -> None:
        """Raise :class:`ChecksumError` unless ``path`` hashes to every digest given."""
        expected = {name: digest.lower() for name, digest in (("md5", self.md5), ("sha256", self.sha256)) if digest}
        hashes = {name: hashlib.new(name) for name in expected}
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                for h in hashes.values():
                    h.update(chunk)
        for name, digest in expected.items():
            actual = hashes[name].hexdigest()
            if actual != digest:
                raise ChecksumError(
                    f"{path.name}: {name} is {actual}, expected {digest}; the file is corrupted or is not the "
                    "official one (check the mirror)"
                )


def resource_url(dataset: str, resource: Resource, mirror: str | None = None) -> str:
    """The URL to fetch ``resource`` from: ``MIRROR/DATASET/FILENAME`` for a mirror, else the official URL.

    >>> resource_url("mnist", Resource("a.gz", "https://example.org/mnist/", md5="0" * 32), mirror="http://m/data/")
    'http://m/data/mnist/a.gz'
    """
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{dataset}/{resource.filename}"
    return f"{resource.base_url.rstrip('/')}/{resource.filename}"


def fetch(dataset: str, resource: Resource, root: Path, download: bool, mirror: str | None = None) -> Path:
    """``root/DATASET/FILENAME``, verified; downloaded first when missing and ``download`` is true."""
    path = root / dataset / resource.filename
    if path.is_file():
        try:
            resource.verify(path)
        except ChecksumError as err:
            raise ChecksumError(f"{err}; delete {path} and load again with download=True") from None
        return path
    if not download:
        raise FileNotFoundError(
            f"{path} not found; load with download=True to fetch it from {resource_url(dataset, resource, mirror)} "
            f"(set ${MIRROR_ENV} or pass mirror= to use another server), or copy the file there yourself"
        )
    return download_file(resource_url(dataset, resource, mirror), path, resource)


def download_file(url: str, dest: Path, resource: Resource) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed if present), verify, rename; returns ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # "range not satisfiable": the .part already holds all the bytes (or junk)
            return _finish(part, dest, resource, url, restart=True)
        raise DownloadError(f"downloading {url} failed: HTTP {err.code} {err.reason}; check the URL or mirror") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"cannot reach {url}: {err}; check the network, the URL or ${MIRROR_ENV}") from err
    with response:
        if offset and not _resumes_at(response, offset):  # the server sent the whole file: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        if length is not None:
            _check_free_space(part, int(length), url)
        received = _stream(response, part, offset, total, dest.name, url)
    if total is not None and received < total:
        raise DownloadError(
            f"downloading {url} stopped after {received} of {total} bytes; the partial file {part} is kept and "
            "the next call resumes it"
        )
    return _finish(part, dest, resource, url)


def _open(url: str, offset: int):
    request = urllib.request.Request(url, headers={"User-Agent": "attnkit-data"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=_TIMEOUT)


def _resumes_at(response, offset: int) -> bool:
    """Whether the server answered the Range request with the bytes from ``offset`` on."""
    content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    return response.status == 206 and content_range.startswith(f"bytes {offset}-")


def _check_free_space(part: Path, size: int, url: str) -> None:
    """Refuse, before writing, a download of ``size`` more bytes than the disk holding ``part`` has free."""
    try:
        free = shutil.disk_usage(part.parent).free
    except OSError:  # cannot tell: let the writes find out
        return
    if size > free:
        raise OSError(errno.ENOSPC, f"not enough space to download {url}: it needs {size / 2**20:,.0f} MiB, "
                                    f"{free / 2**20:,.0f} MiB are free", str(part))


def _stream(response, part: Path, offset: int, total: int | None, label: str, url: str) -> int:
    """Append (or write, when ``offset`` is 0) the body to ``part``; returns the bytes now in ``part``.

    Reads with ``read1`` (what one network read returns), so that a connection reset loses no byte that
    arrived; those bytes are written before the error is raised, and the next call resumes after them.
    """
    read = getattr(response, "read1", response.read)
    received = offset
    with naming(part), open(part, "ab" if offset else "wb") as f, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=_quiet()
    ) as bar:
        while True:
            broken: Exception | None = None
            try:
                chunk = read(_CHUNK)
            except http.client.IncompleteRead as err:  # the bytes of the broken read still count
                chunk, broken = err.partial, err
            except OSError as err:  # connection reset, timeout
                chunk, broken = b"", err
            if chunk:
                f.write(chunk)  # a full disk raises here: OSError(ENOSPC) naming the .part, not a network error
                received += len(chunk)
                bar.update(len(chunk))
            if broken is not None:
                f.flush()
                raise DownloadError(
                    f"downloading {url} broke off after {received} bytes ({broken}); the partial file {part} is "
                    "kept and the next call resumes it"
                ) from broken
            if not chunk:
                return received


def _finish(part: Path, dest: Path, resource: Resource, url: str, restart: bool = False) -> Path:
    """Verify ``part`` and rename it to ``dest``; on a mismatch delete it (and, if ``restart``, download afresh)."""
    try:
        resource.verify(part)
    except ChecksumError as err:
        part.unlink()
        if restart:  # after a 416 the .part may have been junk longer than the file: one fresh attempt
            return download_file(url, dest, resource)
        raise ChecksumError(f"{err}; downloaded from {url} and deleted") from None
    os.replace(part, dest)
    return dest


def _quiet() -> bool:
    """No progress bar in CI or when stderr is not a terminal (logs would fill with carriage returns)."""
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()


def safe_extract_tar(archive: Path, target: Path) -> list[str]:
    """Extract ``archive`` into ``target`` after checking every member; returns the top-level names written.

    Refused (:class:`UnsafeArchiveError`, nothing written): absolute names, names or link targets that resolve
    outside ``target``, and anything but regular files, folders, symbolic and hard links. Top-level entries
    that already exist in ``target`` are replaced, so a half-extracted earlier attempt is repaired.
    """
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError("safe tar extraction needs Python >= 3.10.12 or >= 3.11.4 (tarfile extraction filters)")
    target.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target, prefix=".extract-")  # left by an extraction that was killed
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            _check_members(members)
            staging = Path(tempfile.mkdtemp(prefix=f".extract-{os.getpid()}-", dir=target))
            try:
                tar.extractall(staging, members=members, filter="data")
                names = sorted(os.listdir(staging))
                for name in names:
                    _replace(staging / name, target / name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except _DAMAGED + (gzip.BadGzipFile,) as err:
        raise ValueError(f"cannot extract {archive}: {err}; the archive is damaged, delete it and download again") from err
    except OSError as err:  # the disk's problem (full, read-only, permission), not the archive's
        if err.errno is None:
            raise
        raise OSError(err.errno, f"{err.strerror} while extracting {archive.name}", str(err.filename or target)) from err
    return names


def _check_members(members: list[tarfile.TarInfo]) -> None:
    """Raise :class:`UnsafeArchiveError` unless every member, and every link's target, stays inside the folder.

    Paths are resolved lexically (``a/../b`` -> ``b``); so that this equals where the file system would put
    them, no path may pass *through* a symbolic link of the archive (``link/file``), which is also refused.
    """
    symlinks = {_inside(PurePosixPath(m.name), m.name) for m in members if m.issym()}
    for member in members:
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeArchiveError(f"archive member {member.name!r} is a device, FIFO or other special file; refused")
        name = PurePosixPath(member.name)
        parts = _inside(name, member.name)
        if not parts and not member.isdir():
            raise UnsafeArchiveError(f"archive member {member.name!r} would replace the target folder itself; refused")
        targets = [parts]
        if member.issym():  # a symbolic link resolves relative to the folder that holds it
            targets.append(_inside(name.parent / member.linkname, member.name, member.linkname))
        elif member.islnk():  # a hard link names another member, relative to the archive root
            targets.append(_inside(PurePosixPath(member.linkname), member.name, member.linkname))
        for path in targets:
            if any(path[:i] in symlinks for i in range(1, len(path))):
                raise UnsafeArchiveError(
                    f"archive member {member.name!r} goes through a symbolic link of the archive; refused"
                )


def _inside(path: PurePosixPath, member: str, link: str | None = None) -> tuple[str, ...]:
    """The lexically normalised parts of a relative ``path``; raises if it is absolute or climbs above its start."""
    parts: list[str] = []
    escapes = path.is_absolute()
    for part in path.parts:
        if part == "..":
            escapes = escapes or not parts
            parts = parts[:-1]
        elif part != ".":
            parts.append(part)
    if escapes:
        where = f"links to {link!r}" if link is not None else "would be written"
        raise UnsafeArchiveError(f"archive member {member!r} {where} outside the target folder; refused")
    return tuple(parts)


def _replace(source: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    os.replace(source, dest)
