"""Fetch a bundle, verify it against its digest and extract it safely, once per digest.

Nothing from an archive is trusted: every member is checked before a byte is written, files
are written only inside a fresh temporary directory, and the manifest digest is recomputed
from what was written. Only a verified tree is renamed into the cache, so a bundle that was
tampered with in storage never runs.
"""

from __future__ import annotations

import compileall
import contextlib
import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from . import blobs
from .locations import bundle_cache_dir
from .manifest import ManifestEntry, compute_digest

COMPLETE_MARKER = ".flyte-jupyter-complete"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20


class BundleVerificationError(Exception):
    """The archive is not the bundle it claims to be, or is unsafe to extract."""


def fetch_bundle(url: str, digest: str, cache: Path | None = None) -> Path:
    """The verified extraction of the bundle at `url` with `digest`, downloading and
    extracting it only if no earlier run (or a concurrent one) already did."""
    if not _DIGEST_RE.match(digest):
        raise BundleVerificationError(f"malformed digest {digest!r}: expected sha256:<64 hex>")
    cache = cache or bundle_cache_dir()
    hex_digest = digest.split(":", 1)[1]
    target = cache / hex_digest
    if (target / COMPLETE_MARKER).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / f"{hex_digest}.lock"):
        if (target / COMPLETE_MARKER).is_file():
            return target
        _clean_leftovers(cache, hex_digest)
        fd, download = tempfile.mkstemp(dir=cache, prefix=f".{hex_digest}.download-")
        os.close(fd)
        staging = tempfile.mkdtemp(dir=cache, prefix=f".{hex_digest}.tmp-")
        try:
            if os.environ.get("FLYTE_JUPYTER_VERBOSE"):
                print(f"flyte-jupyter: fetching bundle {digest[:19]}…", file=sys.stderr, flush=True)
            blobs.get_file(url, download)
            actual = extract_verified(Path(download), Path(staging))
            if actual != digest:
                raise BundleVerificationError(
                    f"bundle {url} has digest {actual}, expected {digest}: it was modified or "
                    "corrupted in storage, so nothing was run. Build and upload it again."
                )
            with contextlib.redirect_stdout(sys.stderr):
                compileall.compile_dir(staging, quiet=2, workers=1)
            Path(staging, COMPLETE_MARKER).write_text(digest)
            os.rename(staging, target)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(download)
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _clean_leftovers(cache: Path, hex_digest: str) -> None:
    """Remove what a crashed extraction of this digest left behind (we hold its lock)."""
    for stale in cache.glob(f".{hex_digest}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    incomplete = cache / hex_digest
    if incomplete.exists():
        shutil.rmtree(incomplete, ignore_errors=True)


def extract_verified(archive: Path, dest: Path) -> str:
    """Extract regular files of `archive` into the empty directory `dest`; return the manifest
    digest of what was written. Raises BundleVerificationError for any unsafe member."""
    entries: list[ManifestEntry] = []
    dest = dest.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isdir():
                    continue
                target = _checked_target(member, dest)
                entries.append(_write_member(tar, member, target))
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, FileExistsError):
            raise BundleVerificationError(f"archive {archive} repeats an entry") from exc
        raise BundleVerificationError(f"archive {archive} is not a readable bundle: {exc}") from exc
    return compute_digest(entries)


def _checked_target(member: tarfile.TarInfo, dest: Path) -> Path:
    name = member.name
    if not (member.isreg()):
        kind = "link" if member.issym() or member.islnk() else "special file"
        raise BundleVerificationError(f"refusing bundle: {name!r} is a {kind}")
    posix = PurePosixPath(name)
    if posix.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BundleVerificationError(f"refusing bundle: {name!r} is an absolute path")
    if ".." in posix.parts or "\\" in name or "\0" in name:
        raise BundleVerificationError(f"refusing bundle: {name!r} leaves the bundle directory")
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is not None:
        try:
            data_filter(member, str(dest))
        except tarfile.FilterError as exc:
            raise BundleVerificationError(f"refusing bundle: {exc}") from exc
    target = dest.joinpath(*posix.parts)
    if not str(target.resolve()).startswith(str(dest) + os.sep):
        raise BundleVerificationError(f"refusing bundle: {name!r} leaves the bundle directory")
    return target


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> ManifestEntry:
    mode = 0o755 if member.mode & 0o111 else 0o644
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    digest = hashlib.sha256()
    size = 0
    source = tar.extractfile(member)
    assert source is not None  # regular file
    with os.fdopen(os.open(target, flags, mode), "wb") as out:
        for chunk in _chunks(source):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    os.chmod(target, mode)
    return ManifestEntry(member.name, mode, size, digest.hexdigest())


def _chunks(f) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock held for the duration of the block."""
    with open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
