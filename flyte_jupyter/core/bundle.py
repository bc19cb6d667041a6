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
import os
import shutil
import struct
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, TypeVar

from ..runtime.locations import cache_dir, private_dir
from ..runtime.manifest import ManifestEntry, compute_digest
from .errors import BundleError
from .files import read_bytes, sha256
from .hashcache import HashCache
from .selection import SelectedFile, Selection

if TYPE_CHECKING:  # concurrent.futures imports logging: 5 ms a warm build never needs
    import tarfile
    from concurrent.futures import Executor, Future, ThreadPoolExecutor

ARCHIVE_MTIME = 347155200
"""1981-01-01T00:00:00Z, the fixed mtime Flyte's own bundles use."""
DEFAULT_LEVEL = 1
ARCHIVE_CACHE_BYTES = 2 * 1024**3
"""Built archives kept locally for reuse, oldest dropped first beyond this size."""

IN_FLIGHT_BYTES = 16 * 1024**2
"""File bytes handed to the compressing threads ahead of the writer, at most."""
STREAM_BYTES = 4 * 1024**2
"""Files larger than this are hashed and compressed in chunks, never held whole."""
PROCESS_BYTES = 96 * 1024**2
"""File bytes to compress from which worker processes beat threads despite their start-up."""
BATCH_BYTES = 1024**2
BATCH_FILES = 256
_CHUNK = 1024**2

T = TypeVar("T")
R = TypeVar("R")

_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""Magic, deflate, no flags, mtime 0, no extra flags, OS 'unknown': the same on every machine."""
_BLOCK = 512
"""tarfile.BLOCKSIZE (tarfile, tempfile and threading load where used: a warm build needs none
of them)."""
_RECORD = 20 * _BLOCK
"""tarfile.RECORDSIZE"""
_LENGTH_NAME = 100
"""tarfile.LENGTH_NAME: longer names take a GNU long-name entry."""


class Bundle:
    """A built (or, for dry runs, only hashed) bundle. (A plain class: `dataclasses` costs
    every command 5 ms of imports.)"""

    def __init__(
        self,
        selection: Selection,
        entries: list[ManifestEntry],
        digest: str,
        archive: Path | None,
        member_lengths: list[int] | None = None,
    ):
        self.selection = selection
        self.entries = entries
        self.digest = digest
        self.archive = archive
        """The .tar.gz on disk; None for a dry run or an empty (copy_style 'none') bundle."""
        self.member_lengths = member_lengths
        """The length of each file's gzip member in `archive`, in order, when this build wrote
        it: the archive is those members back to back, then the end-of-archive member."""

    def __repr__(self) -> str:
        return f"Bundle({self.digest}, {len(self.entries)} files, archive={self.archive})"

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


def archive_path(digest_hex: str) -> Path:
    """Where the archive of a bundle is kept in the local cache."""
    return cache_dir() / "archives" / f"{digest_hex}.tar.gz"


def copy_archive(bundle: Bundle, output: str | os.PathLike[str]) -> None:
    """Copy a built bundle's archive to `output`, which it then names (dry runs have none)."""
    if bundle.archive is None:
        return
    out_path = Path(output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle.archive, out_path)
    bundle.archive = out_path


def splice_bundle(
    selection: Selection,
    base: Bundle,
    edits: Mapping[int, SelectedFile],
    *,
    dry_run: bool = False,
    level: int = DEFAULT_LEVEL,
) -> Bundle:
    """The bundle of `selection`, whose files are `base`'s edited in place: the same paths in
    the same order, the file at each index of `edits` with new content or mode. Only those are
    read; their members are compressed afresh and the rest of the archive is copied from
    `base`'s, one range per gap, so a rebuild costs the edited files and one copy of the
    archive, whatever the number of files. `base.archive` and `base.member_lengths` must
    describe base's archive: BundleError when it is gone or does not hold members where they
    say. The hash cache is not consulted: the caller knows every other file's hash."""
    entries = list(base.entries)
    changed = sorted(edits)
    if dry_run:
        hashes = _hash_files(list(edits.values()), 1)
        for i, f in edits.items():
            entries[i] = ManifestEntry(f.path, f.mode, f.size, hashes[f.path])
        return Bundle(selection, entries, compute_digest(entries), None)
    if base.archive is None or base.member_lengths is None:
        raise BundleError("the earlier bundle has no archive to splice into: build it afresh")
    lengths = list(base.member_lengths)
    offsets = list(accumulate(lengths, initial=0))
    archives = cache_dir() / "archives"
    private_dir(archives)
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=archives, prefix=".partial-", suffix=".tar.gz")
    try:
        with os.fdopen(fd, "wb") as out, _open_archive(base.archive) as src:
            _check_runs(src, base.archive, offsets, changed)
            copied = 0  # base's bytes before this offset are in `out`
            for i in changed:
                _copy_from(src, str(base.archive), copied, offsets[i] - copied, out)
                f, start = edits[i], out.tell()
                if f.size > STREAM_BYTES:
                    sha = _stream_member(f, level, out)
                else:
                    ((sha, member),) = _compress_batch([(f, None)], level)
                    out.write(member)
                lengths[i] = out.tell() - start
                entries[i] = ManifestEntry(f.path, f.mode, f.size, sha)
                copied = offsets[i + 1]
            _copy_from(src, str(base.archive), copied, offsets[-1] - copied, out)
            out.write(_archive_tail(entries, level))
        bundle = Bundle(selection, entries, compute_digest(entries), None, lengths)
        final = archive_path(bundle.hex)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _touch(str(base.archive))  # its members were reused: pruned after the new one
    _prune_archives(archives, keep=final)
    bundle.archive = final
    return bundle


def _open_archive(path: Path) -> BinaryIO:
    """An earlier archive, held open while it is copied from (another build may prune it)."""
    try:
        return open(path, "rb")
    except OSError as exc:  # pruned by another build since its members were checked
        raise BundleError(f"cached archive {path} went away while being read: run again") from exc


def _check_runs(src: BinaryIO, path: Path, offsets: list[int], changed: list[int]) -> None:
    """base's archive holds its members where its lengths say: it is long enough, and each run
    of members to copy starts with a gzip member header and ends where another starts."""
    if os.fstat(src.fileno()).st_size < offsets[-1]:
        raise BundleError(f"cached archive {path} is cut short: build it afresh")
    starts = [0, *(offsets[i + 1] for i in changed)]
    ends = [*(offsets[i] for i in changed), offsets[-1]]
    for start, end in zip(starts, ends, strict=True):
        if start < end and not (_header_at(src.fileno(), start) and _header_at(src.fileno(), end)):
            raise BundleError(f"cached archive {path} is not the one recorded: build it afresh")


def _header_at(fd: int, offset: int) -> bool:
    """Whether a gzip member starts at `offset`: every member does, and is followed by another
    (the end-of-archive member last), so a run of members read from an archive of another
    layout (one renamed over this name) is caught at one end or the other."""
    return os.pread(fd, len(_GZIP_HEADER), offset) == _GZIP_HEADER


class _Builder:
    """Reads each file at most once: hashing and compressing happen in the same pass, so a
    cold build costs one read, one sha256 and one deflate per file; a file whose stat matches
    the hash cache is not read at all unless its member must be compressed afresh."""

    def __init__(self, selection: Selection, level: int, cache: HashCache):
        self.selection = selection
        self.files = selection.files
        self.level = level
        self.cache = cache
        self.workers = min(8, os.cpu_count() or 1)

    def build(self, output: str | os.PathLike[str] | None, dry_run: bool) -> Bundle:
        stat_keys = {f.path: _stat_key(f) for f in self.files}
        cached = self.cache.file_hashes(stat_keys.values())
        known = {path: cached[key[0]] for path, key in stat_keys.items() if key[0] in cached}
        archives = cache_dir() / "archives"
        partial: _Partial | None = None
        if dry_run or len(known) == len(self.files):
            hashes = {**known, **self._hash([f for f in self.files if f.path not in known])}
        else:  # something must be read: hash it while writing the archive, in one pass
            hashes, partial = self._write_partial(archives, known)
        self.cache.store_file_hashes(
            (stat_keys[p], sha) for p, sha in hashes.items() if p not in known
        )
        entries = [ManifestEntry(f.path, f.mode, f.size, hashes[f.path]) for f in self.files]
        bundle = Bundle(self.selection, entries, compute_digest(entries), None)
        final = archive_path(bundle.hex)
        if dry_run or not entries:
            if partial:
                partial.path.unlink()
            return bundle
        if partial is None and _is_whole(final, self.files, self.level):
            _touch(str(final))  # recently used: pruned last
        else:
            if partial is None:  # every hash was cached but the archive is gone or cut: write it
                _, partial = self._write_partial(archives, hashes)
            os.replace(partial.path, final)
            self.cache.store_members(final, partial.written)
            _prune_archives(archives, keep=final, cache=self.cache)
            bundle.member_lengths = partial.lengths
        bundle.archive = final
        if output is not None:
            copy_archive(bundle, output)
        return bundle

    def _write_partial(
        self, archives: Path, known: dict[str, str]
    ) -> tuple[dict[str, str], _Partial]:
        """Write the archive to a temporary file in `archives`, renamed once its digest is
        known: every file's sha256, and the temporary file with the members in it."""
        private_dir(archives)
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=archives, prefix=".partial-", suffix=".tar.gz")
        try:
            with os.fdopen(fd, "wb") as out:
                hashes, written, lengths = self._write_archive(known, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return hashes, _Partial(Path(tmp), written, lengths)

    def _reusable(self, known: dict[str, str]) -> dict[str, tuple[str, int, int]]:
        """Path -> where an earlier archive holds the member of that file, for files of known
        content whose member is still there."""
        keys = {
            f.path: self._member_key(f.path, f.mode, known[f.path])
            for f in self.files
            if f.path in known
        }
        found = _valid_members(self.cache.members(keys.values()))
        return {path: found[key] for path, key in keys.items() if key in found}

    def _hash(self, files: list[SelectedFile]) -> dict[str, str]:
        """sha256 of each file, read on all cores (dry runs and fully cached trees only)."""
        return _hash_files(files, self.workers)

    def _member_key(self, path: str, mode: int, file_sha256: str) -> str:
        ident = f"{self.level}\0{path}\0{mode}\0{file_sha256}"
        return sha256(ident.encode()).hexdigest()

    def _write_archive(
        self, known: dict[str, str], out: BinaryIO
    ) -> tuple[dict[str, str], list[tuple[str, int, int]], list[int]]:
        """Write the archive to `out` and return every file's sha256, the members written
        (member key, offset, length) and the length of each file's member.

        Members of files with a known hash that already sit in an earlier archive are copied
        from it (in contiguous runs, by the kernel where it can); every other file is read
        once, hashed and compressed on all cores, fed at most IN_FLIGHT_BYTES ahead of the
        writer; big files are streamed by the writer."""
        reusable = self._reusable(known)
        level = self.level
        todo = [f for f in self.files if f.size <= STREAM_BYTES and f.path not in reusable]
        pooled = _batches(todo)
        hashes: dict[str, str] = {}
        written: list[tuple[str, int, int]] = []
        lengths: list[int] = []
        with _compressing_pool(self.workers, sum(f.size for f in todo)) as pool:
            ahead: deque[tuple[int, Future[list[tuple[str, bytes]]] | _InlinePool._Done]] = deque()
            ready: deque[tuple[str, bytes]] = deque()
            in_flight = 0

            def feed() -> None:
                nonlocal in_flight
                while in_flight < IN_FLIGHT_BYTES or not ahead:
                    batch = next(pooled, None)
                    if batch is None:
                        return
                    size = sum(f.size for f in batch)
                    work = [(f, known.get(f.path)) for f in batch]
                    ahead.append((size, pool.submit(_compress_batch, work, level)))
                    in_flight += size

            def next_member() -> tuple[str, bytes]:
                nonlocal in_flight
                if not ready:
                    feed()
                    size, future = ahead.popleft()
                    in_flight -= size
                    ready.extend(future.result())
                    feed()
                return ready.popleft()

            copier = _RangeCopier(out)
            raw = 0
            for f in self.files:
                found = reusable.get(f.path)
                if found is not None:
                    copier.add(*found)
                    hashes[f.path] = known[f.path]
                    lengths.append(found[2])
                else:
                    copier.flush()
                    start = out.tell()
                    if f.size > STREAM_BYTES:
                        sha = _stream_member(f, level, out)
                        if known.get(f.path, sha) != sha:
                            raise BundleError(
                                f"{f.path} changed while it was being bundled: run again"
                            )
                    else:
                        sha, member = next_member()
                        out.write(member)
                    hashes[f.path] = sha
                    key = self._member_key(f.path, f.mode, sha)
                    length = out.tell() - start
                    written.append((key, start, length))
                    lengths.append(length)
                raw += _entry_length(f.path, f.size)
            copier.flush()
            out.write(gzip_member(end_of_archive(raw), level))
        # Reused members stay recorded in the archive they came from; keep those fresh.
        for source in {path for path, _, _ in reusable.values()}:
            _touch(source)
        return hashes, written, lengths


class _Partial(NamedTuple):
    """An archive written under a temporary name."""

    path: Path
    written: list[tuple[str, int, int]]
    """(member key, offset, length) of each member compressed afresh."""
    lengths: list[int]
    """The length of every file's member, in order."""


def _hash_files(files: list[SelectedFile], workers: int) -> dict[str, str]:
    """sha256 of each file, read on `workers` threads (none for what fits in one batch)."""

    def read_and_hash(f: SelectedFile) -> tuple[str, str]:
        if f.size > STREAM_BYTES:
            return f.path, _stream(f.source, f.path, f.size, lambda chunk: None)
        return f.path, sha256(_read(f)).hexdigest()

    def hash_batch(batch: list[SelectedFile]) -> list[tuple[str, str]]:
        return [read_and_hash(f) for f in batch]

    batches = list(_batches(files))
    if len(batches) <= 1:  # a fully cached tree or an edit: no pool, no concurrent.futures
        return dict(hash_batch(batches[0])) if batches else {}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        done = _ordered_map(pool, hash_batch, batches, workers * 4)
        return {path: sha for batch in done for path, sha in batch}


def _compressing_pool(workers: int, todo_bytes: int) -> Executor | _InlinePool:
    """No pool for what fits in one batch (an edit or two: starting threads would cost more);
    threads for small jobs; for big ones, forked processes: each file costs several GIL
    hand-offs (open, read, hash, deflate), which stop two threads from using two cores.
    Forking is only safe while this process runs one thread (the CLI, a script): a kernel or
    a server, which run several, keep to threads, as does macOS, where forking is unsafe once
    system frameworks are loaded. Fork, unlike spawn, re-imports nothing."""
    if todo_bytes <= BATCH_BYTES:
        return _InlinePool()
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if (
        workers > 1
        and todo_bytes >= PROCESS_BYTES
        and sys.platform == "linux"
        and threading.active_count() == 1
    ):
        import multiprocessing  # imported here: costs 40 ms, and most builds are small
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


class _InlinePool:
    """The part of an executor `_write_archive` uses, doing each task when it is submitted."""

    class _Done(NamedTuple):
        value: list[tuple[str, bytes]]

        def result(self) -> list[tuple[str, bytes]]:
            return self.value

    def submit(self, fn: Callable[..., list[tuple[str, bytes]]], *args: object) -> _Done:
        return self._Done(fn(*args))

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _compress_batch(
    batch: list[tuple[SelectedFile, str | None]], level: int
) -> list[tuple[str, bytes]]:
    """(sha256, gzip member) of each (file, expected sha256 or None)."""
    members = []
    for f, expected in batch:
        data = _read(f)
        sha = sha256(data).hexdigest()
        if expected not in (None, sha):
            raise BundleError(f"{f.path} changed while it was being bundled: run again")
        members.append((sha, gzip_member(tar_entry(f.path, f.mode, data), level)))
    return members


def _batches(files: list[SelectedFile]) -> Iterator[list[SelectedFile]]:
    """Consecutive files of about BATCH_BYTES (or BATCH_FILES) each: one task per batch keeps
    thread hand-offs, which cost more than hashing a small file, to a few hundred."""
    batch: list[SelectedFile] = []
    size = 0
    for f in files:
        batch.append(f)
        size += f.size
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _read(f: SelectedFile) -> bytes:
    data = read_bytes(f.source, f.path)
    if len(data) != f.size:
        raise BundleError(f"{f.path} changed while it was being bundled: run again")
    return data


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
        pending = self.pending
        if pending is not None and pending[0] == path and pending[1] + pending[2] == offset:
            self.pending = (path, pending[1], pending[2] + length)
            return
        self.flush()
        self.pending = (path, offset, length)

    def flush(self) -> None:
        if self.pending is not None:
            _copy_range(*self.pending, self.out)
            self.pending = None


def _copy_range(path: str, offset: int, length: int, out: BinaryIO) -> None:
    """Append `length` bytes at `offset` of file `path` to `out`, in the kernel if possible."""
    with _open_archive(Path(path)) as src:
        _copy_from(src, path, offset, length, out)


def _copy_from(src: BinaryIO, path: str, offset: int, length: int, out: BinaryIO) -> None:
    """Append `length` bytes at `offset` of the open archive `src` (at `path`) to `out`."""
    if length <= 0:
        return
    out.flush()
    done = 0
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
    """The recorded members whose archive still exists and holds them: each run of
    back-to-back members must start with a gzip member header and be followed by one (two
    reads per run, not per member: a one-file change reuses 20,000 members in two runs)."""
    out = {}
    by_archive: dict[str, list[tuple[int, int, str]]] = {}
    for key, (path, offset, length) in locations.items():
        by_archive.setdefault(path, []).append((offset, length, key))
    for path, members in by_archive.items():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            runs: list[list[tuple[int, int, str]]] = []
            end = -1
            for member in sorted(members):
                if member[0] != end:
                    runs.append([])
                runs[-1].append(member)
                end = member[0] + member[1]
            for run in runs:
                if _header_at(fd, run[0][0]) and _header_at(fd, run[-1][0] + run[-1][1]):
                    out.update((key, (path, offset, length)) for offset, length, key in run)
        finally:
            os.close(fd)
    return out


def _is_whole(archive: Path, files: list[SelectedFile], level: int) -> bool:
    """Whether `archive` ends with the end-of-archive member this build would write: an
    archive cut short (a full disk, an interrupted copy) is written again, never reused."""
    tail = _archive_tail(files, level)
    try:
        with open(archive, "rb") as f:
            f.seek(-len(tail), os.SEEK_END)
            return f.read() == tail
    except OSError:  # missing, or shorter than the tail
        return False


def _archive_tail(files: Iterable[SelectedFile | ManifestEntry], level: int) -> bytes:
    """The end-of-archive member of an archive of these files, which their tar length sets."""
    return gzip_member(end_of_archive(sum(_entry_length(f.path, f.size) for f in files)), level)


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
    import tarfile

    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = mode
    info.mtime = ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def _entry_length(path: str, size: int) -> int:
    """Bytes `tar_entry` produces for this entry, without building it: a GNU long-name
    block pair for names over 100 bytes, the header, then the data padded to a block."""
    name = len(path) if path.isascii() else len(path.encode("utf-8", "surrogateescape"))
    long_name = _BLOCK + _BLOCK * -(-(name + 1) // _BLOCK) if name > _LENGTH_NAME else 0
    return long_name + _BLOCK + size + (-size % _BLOCK)


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
    digest, seen = sha256(), 0
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


def _stream_member(f: SelectedFile, level: int, out: BinaryIO) -> str:
    """Write the gzip member of a big file's tar entry, chunk by chunk: the same bytes as
    `gzip_member(tar_entry(...))` without holding the file. Returns the file's sha256."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc, length = 0, 0

    def put(data: bytes) -> None:
        nonlocal crc, length
        crc, length = zlib.crc32(data, crc), length + len(data)
        out.write(compressor.compress(data))

    out.write(_GZIP_HEADER)
    put(_tar_header(f.path, f.mode, f.size))
    sha = _stream(f.source, f.path, f.size, put)
    put(b"\0" * (-f.size % _BLOCK))
    out.write(compressor.flush() + struct.pack("<II", crc, length & 0xFFFFFFFF))
    return sha


def iter_archive(archive: Path) -> Iterator[tarfile.TarInfo]:
    """Members of an archive, for listings and checks."""
    import tarfile

    with tarfile.open(archive, "r:gz") as tar:
        yield from tar


def _prune_archives(directory: Path, keep: Path, cache: HashCache | None = None) -> None:
    """Drop the least recently used archives beyond ARCHIVE_CACHE_BYTES (and their member
    rows: the hash cache is opened for that when the caller has not)."""
    opened = None
    try:
        archives = sorted(directory.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for path in archives:
            total += path.stat().st_size
            if total > ARCHIVE_CACHE_BYTES and path != keep:
                path.unlink(missing_ok=True)
                if cache is None:
                    cache = opened = HashCache(cache_dir() / "index.sqlite3")
                cache.forget_archive(path)
    except OSError:
        pass  # pruning is housekeeping; a race with another process is harmless
    finally:
        if opened is not None:
            opened.close()
