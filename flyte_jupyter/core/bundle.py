"""Deterministic, content-addressed code bundles.

A bundle is a gzip'd tar of the selected files. Its identity is a manifest (path, mode,
size and sha256 of every file); the digest is the sha256 of the manifest's canonical JSON,
so it does not depend on the compressor. The archive bytes are deterministic too: sorted
entries, fixed metadata, and a gzip stream made of one member per tar entry, each with a
fixed header. One member per entry is what lets two cores compress at once and lets a
rebuild after a one-file change copy every other member from the previous archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import tarfile
import tempfile
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from ..runtime.locations import cache_dir, private_dir
from ..runtime.manifest import ManifestEntry, compute_digest
from .errors import BundleError
from .files import read_bytes
from .hashcache import HashCache
from .selection import SelectedFile, Selection

ARCHIVE_MTIME = 347155200
"""1981-01-01T00:00:00Z, the fixed mtime Flyte's own bundles use."""
DEFAULT_LEVEL = 1
ARCHIVE_CACHE_BYTES = 2 * 1024**3
"""Built archives kept locally for reuse, oldest dropped first beyond this size."""

KEEP_BYTES = 32 * 1024**2
"""File contents read while hashing that are kept for compressing, at most: a cold build of
a small tree reads each file once, a big tree's peak memory stays bounded."""
IN_FLIGHT_BYTES = 16 * 1024**2
"""File bytes handed to the compressing threads ahead of the writer, at most."""
STREAM_BYTES = 4 * 1024**2
"""Files larger than this are hashed and compressed in chunks, never held whole."""
_CHUNK = 1024**2

T = TypeVar("T")
R = TypeVar("R")

_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""Magic, deflate, no flags, mtime 0, no extra flags, OS 'unknown': the same on every machine."""
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


@dataclass
class Bundle:
    """A built (or, for dry runs, only hashed) bundle."""

    selection: Selection
    entries: list[ManifestEntry]
    digest: str
    archive: Path | None
    """The .tar.gz on disk; None for a dry run or an empty (copy_style 'none') bundle."""

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    @property
    def version(self) -> str:
        """The explicit version when one was given, else one derived from the content hash."""
        return self.selection.version or self.hex[:16]

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def to_json(self) -> dict:
        reasons = {f.path: f.reason for f in self.selection.files}
        return {
            "digest": self.digest,
            "version": self.version,
            "root_dir": str(self.selection.root_dir),
            "copy_style": self.selection.copy_style,
            "python_path": self.selection.python_path,
            "files": [{**e.as_json(), "reason": reasons[e.path]} for e in self.entries],
            "total_bytes": self.total_bytes,
            "archive": str(self.archive) if self.archive else None,
            "excluded_secrets": self.selection.excluded_secrets,
            "warnings": self.selection.warnings,
            "third_party": self.selection.third_party,
        }


def build_bundle(
    selection: Selection,
    *,
    output: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    level: int = DEFAULT_LEVEL,
    cache: HashCache | None = None,
) -> Bundle:
    """Hash the selected files and, unless `dry_run`, write the archive.

    Archives are kept under the cache dir by digest, so an unchanged tree is not re-read or
    re-compressed; `output` receives a copy.
    """
    own_cache = cache is None
    cache = cache or HashCache(cache_dir() / "index.sqlite3")
    try:
        return _Builder(selection, level, cache).build(output, dry_run)
    finally:
        if own_cache:
            cache.close()


class _Builder:
    def __init__(self, selection: Selection, level: int, cache: HashCache):
        self.selection = selection
        self.files = selection.files
        self.level = level
        self.cache = cache
        self.contents: dict[str, bytes] = {}
        """Contents read while hashing, kept for compressing up to KEEP_BYTES in all."""
        self.kept = 0
        self.lock = threading.Lock()
        self.workers = min(8, os.cpu_count() or 1)

    def build(self, output: str | os.PathLike[str] | None, dry_run: bool) -> Bundle:
        hashes = self._hash_files(keep_contents=not dry_run)
        entries = [ManifestEntry(f.path, f.mode, f.size, hashes[f.path]) for f in self.files]
        digest = compute_digest(entries)
        bundle = Bundle(self.selection, entries, digest, None)
        if dry_run or not entries:
            return bundle
        archives = cache_dir() / "archives"
        archive = archives / f"{bundle.hex}.tar.gz"
        if archive.is_file():
            _touch(str(archive))  # recently used: pruned last
        else:
            self._write_archive(entries, archive)
            _prune_archives(archives, keep=archive, cache=self.cache)
        if output is not None:
            out = Path(output)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive, out)
            archive = out
        bundle.archive = archive
        return bundle

    def _hash_files(self, keep_contents: bool) -> dict[str, str]:
        stat_keys = {f.path: _stat_key(f) for f in self.files}
        cached = self.cache.file_hashes(stat_keys.values())
        hashes = {path: cached[key[0]] for path, key in stat_keys.items() if key[0] in cached}
        missing = [f for f in self.files if f.path not in hashes]

        def read_and_hash(f: SelectedFile) -> tuple[str, str]:
            if f.size > STREAM_BYTES:
                return f.path, _stream(f.source, f.path, f.size, lambda chunk: None)
            data = read_bytes(f.source, f.path)
            if len(data) != f.size:
                raise BundleError(f"{f.path} changed while it was being bundled: run again")
            if keep_contents:
                with self.lock:
                    if self.kept + len(data) <= KEEP_BYTES:
                        self.contents[f.path] = data
                        self.kept += len(data)
            return f.path, hashlib.sha256(data).hexdigest()

        with ThreadPoolExecutor(self.workers) as pool:
            fresh = dict(_ordered_map(pool, read_and_hash, missing, self.workers * 32))
        self.cache.store_file_hashes((stat_keys[p], sha) for p, sha in fresh.items())
        return {**hashes, **fresh}

    def _member_key(self, entry: ManifestEntry) -> str:
        ident = f"{self.level}\0{entry.path}\0{entry.mode}\0{entry.sha256}"
        return hashlib.sha256(ident.encode()).hexdigest()

    def _write_archive(self, entries: list[ManifestEntry], archive: Path) -> None:
        """Write the archive: members already in an earlier archive are copied from it (in
        contiguous runs, by the kernel where it can), the rest compressed on all cores, fed
        at most IN_FLIGHT_BYTES ahead of the writer; big files are streamed by the writer."""
        keys = [self._member_key(e) for e in entries]
        known = _valid_members(self.cache.members(keys))
        sources = {f.path: f.source for f in self.files}

        def compress(entry: ManifestEntry) -> bytes:
            data = self.contents.pop(entry.path, None)
            if data is None:
                data = read_bytes(sources[entry.path], entry.path)
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise BundleError(f"{entry.path} changed while it was being bundled: run again")
            return gzip_member(tar_entry(entry.path, entry.mode, data), self.level)

        todo = [e for e, k in zip(entries, keys, strict=True) if k not in known]
        pooled = iter([e for e in todo if e.size <= STREAM_BYTES])
        private_dir(archive.parent)
        fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=".partial-", suffix=".tar.gz")
        written: list[tuple[str, int, int]] = []
        try:
            with ThreadPoolExecutor(self.workers) as pool, os.fdopen(fd, "wb") as out:
                ahead: deque[tuple[ManifestEntry, Future[bytes]]] = deque()
                in_flight = 0

                def feed() -> None:
                    nonlocal in_flight
                    while in_flight < IN_FLIGHT_BYTES or not ahead:
                        entry = next(pooled, None)
                        if entry is None:
                            return
                        ahead.append((entry, pool.submit(compress, entry)))
                        in_flight += entry.size

                copier = _RangeCopier(out)
                raw = 0
                for entry, key in zip(entries, keys, strict=True):
                    if key in known:
                        copier.add(*known[key])
                    else:
                        copier.flush()
                        start = out.tell()
                        if entry.size > STREAM_BYTES:
                            _stream_member(entry, sources[entry.path], self.level, out)
                        else:
                            feed()
                            done, future = ahead.popleft()
                            in_flight -= done.size
                            out.write(future.result())
                            feed()
                        written.append((key, start, out.tell() - start))
                    raw += _entry_length(entry)
                copier.flush()
                out.write(gzip_member(end_of_archive(raw), self.level))
            os.replace(tmp, archive)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # Reused members stay recorded in the archive they came from; keep those fresh.
        for source in {path for path, _, _ in known.values()}:
            _touch(source)
        self.cache.store_members(archive, written)


def _ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: list[T], window: int
) -> Iterator[R]:
    """`pool.map`, but with at most `window` tasks submitted ahead: millions of files do not
    become millions of pending futures at once."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class _RangeCopier:
    """Copies byte ranges of earlier archives into `out`, merging adjacent ranges."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.pending: tuple[str, int, int] | None = None

    def add(self, path: str, offset: int, length: int) -> None:
        if self.pending and self.pending[0] == path and sum(self.pending[1:]) == offset:
            self.pending = (path, self.pending[1], self.pending[2] + length)
            return
        self.flush()
        self.pending = (path, offset, length)

    def flush(self) -> None:
        if self.pending is not None:
            _copy_range(*self.pending, self.out)
            self.pending = None


def _copy_range(path: str, offset: int, length: int, out: BinaryIO) -> None:
    """Append `length` bytes at `offset` of file `path` to `out`, in the kernel if possible."""
    out.flush()
    done = 0
    with open(path, "rb") as src:
        try:
            while done < length:
                n = os.copy_file_range(src.fileno(), out.fileno(), length - done, offset + done)
                if n == 0:
                    break
                done += n
        except (AttributeError, OSError):
            pass  # not supported on this platform or filesystem: copy the rest in user space
        out.seek(0, os.SEEK_END)
        src.seek(offset + done)
        rest = src.read(length - done)
    if len(rest) != length - done:
        raise BundleError(f"cached archive {path} changed while being read: run again")
    out.write(rest)


def _valid_members(locations: dict[str, tuple[str, int, int]]) -> dict[str, tuple[str, int, int]]:
    """The recorded members whose archive still exists and holds a gzip member there."""
    out = {}
    by_archive: dict[str, list[tuple[str, int, int]]] = {}
    for key, (path, offset, length) in locations.items():
        by_archive.setdefault(path, []).append((key, offset, length))
    for path, members in by_archive.items():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            for key, offset, length in members:
                if offset + length <= size and os.pread(fd, 10, offset) == _GZIP_HEADER:
                    out[key] = (path, offset, length)
        finally:
            os.close(fd)
    return out


def _touch(path: str) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _stat_key(f: SelectedFile) -> tuple[str, int, int, int]:
    """The hash cache's key. SQLite text must be UTF-8: undecodable bytes in a folder name
    above the project (`/home/caf\\xe9/...`) are written as escapes."""
    return (os.fsencode(f.source).decode("utf-8", "backslashreplace"), f.size, f.mtime_ns, f.inode)


def tar_entry(path: str, mode: int, data: bytes) -> bytes:
    """One regular-file tar entry with fixed metadata, padded to the block size."""
    return _tar_header(path, mode, len(data)) + data + b"\0" * (-len(data) % _BLOCK)


def _tar_header(path: str, mode: int, size: int) -> bytes:
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = mode
    info.mtime = ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def _entry_length(entry: ManifestEntry) -> int:
    """Bytes `tar_entry` produces for this entry, without building it: a GNU long-name
    block pair for names over 100 bytes, the header, then the data padded to a block."""
    name = len(entry.path.encode("utf-8", "surrogateescape"))
    long_name = _BLOCK + _BLOCK * -(-(name + 1) // _BLOCK) if name > tarfile.LENGTH_NAME else 0
    return long_name + _BLOCK + entry.size + (-entry.size % _BLOCK)


def end_of_archive(length: int) -> bytes:
    """Two zero blocks, then zeros up to a whole record, as tarfile writes them."""
    end = length + 2 * _BLOCK
    return b"\0" * (2 * _BLOCK + (-end % _RECORD))


def gzip_member(data: bytes, level: int) -> bytes:
    """A complete gzip member with a header that is identical on every machine."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(data) + compressor.flush()
    return _GZIP_HEADER + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def _stream(source: str, display: str, size: int, consume: Callable[[bytes], None]) -> str:
    """sha256 hex of a file read in chunks, each also handed to `consume`; the file must
    still be `size` bytes long."""
    digest, seen = hashlib.sha256(), 0
    try:
        with open(source, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                consume(chunk)
                seen += len(chunk)
    except OSError as exc:
        raise BundleError(
            f"cannot read {display}: {exc.strerror or exc}. "
            "Fix its permissions, or leave it out with an exclude pattern."
        ) from exc
    if seen != size:
        raise BundleError(f"{display} changed while it was being bundled: run again")
    return digest.hexdigest()


def _stream_member(entry: ManifestEntry, source: str, level: int, out: BinaryIO) -> None:
    """Write the gzip member of a big file's tar entry, chunk by chunk: the same bytes as
    `gzip_member(tar_entry(...))` without holding the file."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc, length = 0, 0

    def put(data: bytes) -> None:
        nonlocal crc, length
        crc, length = zlib.crc32(data, crc), length + len(data)
        out.write(compressor.compress(data))

    out.write(_GZIP_HEADER)
    put(_tar_header(entry.path, entry.mode, entry.size))
    if _stream(source, entry.path, entry.size, put) != entry.sha256:
        raise BundleError(f"{entry.path} changed while it was being bundled: run again")
    put(b"\0" * (-entry.size % _BLOCK))
    out.write(compressor.flush() + struct.pack("<II", crc, length & 0xFFFFFFFF))


def iter_archive(archive: Path) -> Iterator[tarfile.TarInfo]:
    """Members of an archive, for listings and checks."""
    with tarfile.open(archive, "r:gz") as tar:
        yield from tar


def _prune_archives(directory: Path, keep: Path, cache: HashCache) -> None:
    """Drop the least recently used archives beyond ARCHIVE_CACHE_BYTES."""
    try:
        archives = sorted(directory.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for path in archives:
            total += path.stat().st_size
            if total > ARCHIVE_CACHE_BYTES and path != keep:
                path.unlink(missing_ok=True)
                cache.forget_archive(path)
    except OSError:
        pass  # pruning is housekeeping; a race with another process is harmless
