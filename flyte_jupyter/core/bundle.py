"""Deterministic, content-addressed code bundles.

A bundle is a gzip'd tar of the selected files. Its identity is a manifest (path, mode,
size and sha256 of every file); the digest is the sha256 of the manifest's canonical JSON,
so it does not depend on the compressor. The archive bytes are deterministic too: sorted
entries, fixed metadata, and a gzip stream made of one member per tar entry, each with a
fixed header. One member per entry is what lets two cores compress at once and lets a
rebuild after a one-file change copy every other member from the previous archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError
from .files import read_bytes
from .hashcache import HashCache
from .locations import cache_dir
from .select import Selection, SelectedFile

ARCHIVE_MTIME = 347155200
"""1981-01-01T00:00:00Z, the fixed mtime Flyte's own bundles use."""
MANIFEST_FORMAT = 1
DEFAULT_LEVEL = 6
ARCHIVE_CACHE_BYTES = 2 * 1024**3
"""Built archives kept locally for reuse, oldest dropped first beyond this size."""

_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""Magic, deflate, no flags, mtime 0, no extra flags, OS 'unknown': the same on every machine."""
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    mode: int
    size: int
    sha256: str

    def as_json(self) -> dict:
        return {"path": self.path, "mode": f"{self.mode:04o}", "size": self.size, "sha256": self.sha256}


def manifest_bytes(entries: list[ManifestEntry]) -> bytes:
    """Canonical JSON of a manifest: sorted entries, sorted keys, no whitespace."""
    doc = {"format": MANIFEST_FORMAT, "files": [e.as_json() for e in sorted(entries, key=_key)]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_digest(entries: list[ManifestEntry]) -> str:
    return "sha256:" + hashlib.sha256(manifest_bytes(entries)).hexdigest()


def _key(entry: ManifestEntry) -> str:
    return entry.path


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
            os.utime(archive)  # recently used: pruned last
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
        hashes = {f.path: cached[str(f.source)] for f in self.files if str(f.source) in cached}
        missing = [f for f in self.files if f.path not in hashes]

        def read_and_hash(f: SelectedFile) -> tuple[str, str]:
            data = read_bytes(f.source, f.path)
            if len(data) != f.size:
                raise BundleError(f"{f.path} changed while it was being bundled: run again")
            if keep_contents:
                self.contents[f.path] = data
            return f.path, hashlib.sha256(data).hexdigest()

        with ThreadPoolExecutor(self.workers) as pool:
            fresh = dict(pool.map(read_and_hash, missing))
        self.cache.store_file_hashes((stat_keys[p], sha) for p, sha in fresh.items())
        return {**hashes, **fresh}

    def _member_key(self, entry: ManifestEntry) -> str:
        ident = f"{self.level}\0{entry.path}\0{entry.mode}\0{entry.sha256}"
        return hashlib.sha256(ident.encode()).hexdigest()

    def _write_archive(self, entries: list[ManifestEntry], archive: Path) -> None:
        keys = [self._member_key(e) for e in entries]
        known = self.cache.members(keys)
        sources = {f.path: f.source for f in self.files}

        def member(item: tuple[ManifestEntry, str]) -> bytes:
            entry, key = item
            reused = _read_member(known.get(key))
            if reused is not None:
                return reused
            data = self.contents.pop(entry.path, None)
            if data is None:
                data = read_bytes(sources[entry.path], entry.path)
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise BundleError(f"{entry.path} changed while it was being bundled: run again")
            return gzip_member(tar_entry(entry.path, entry.mode, data), self.level)

        archive.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=".partial-", suffix=".tar.gz")
        offsets: list[tuple[str, int, int]] = []
        try:
            with os.fdopen(fd, "wb") as out, ThreadPoolExecutor(self.workers) as pool:
                position = raw = 0
                for (entry, key), blob in zip(
                    zip(entries, keys), pool.map(member, zip(entries, keys))
                ):
                    out.write(blob)
                    offsets.append((key, position, len(blob)))
                    position += len(blob)
                    raw += _entry_length(entry)
                out.write(gzip_member(end_of_archive(raw), self.level))
            os.replace(tmp, archive)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.cache.store_members(archive, offsets)


def _stat_key(f: SelectedFile) -> tuple[str, int, int, int]:
    return (str(f.source), f.size, f.mtime_ns, f.inode)


def _read_member(location: tuple[Path, int, int] | None) -> bytes | None:
    """Bytes of a member in a previously built archive, if that archive is still intact."""
    if location is None:
        return None
    path, offset, length = location
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            blob = f.read(length)
    except OSError:
        return None
    return blob if len(blob) == length and blob.startswith(_GZIP_HEADER) else None


def tar_entry(path: str, mode: int, data: bytes) -> bytes:
    """One regular-file tar entry with fixed metadata, padded to the block size."""
    info = tarfile.TarInfo(path)
    info.size = len(data)
    info.mode = mode
    info.mtime = ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    return header + data + b"\0" * (-len(data) % _BLOCK)


def _entry_length(entry: ManifestEntry) -> int:
    info = tarfile.TarInfo(entry.path)
    info.mtime = ARCHIVE_MTIME
    header = len(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    return header + entry.size + (-entry.size % _BLOCK)


def end_of_archive(length: int) -> bytes:
    """Two zero blocks, then zeros up to a whole record, as tarfile writes them."""
    end = length + 2 * _BLOCK
    return b"\0" * (2 * _BLOCK + (-end % _RECORD))


def gzip_member(data: bytes, level: int) -> bytes:
    """A complete gzip member with a header that is identical on every machine."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(data) + compressor.flush()
    return _GZIP_HEADER + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


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
