"""Fetch a bundle, verify it against its digest and extract it safely, once per digest.

Nothing from an archive is trusted: every member is checked before a byte is written (kind,
path, declared size against the remaining budget), files are written only inside a fresh
temporary directory, and the manifest digest is recomputed from what was written. Only a
verified tree is renamed into the cache.

The extraction is shared by every run of the digest and is what runs (`__file__`, sys.path),
so a stat snapshot of it is kept beside it (`<hex>.files`: mode, size, mtime, ctime, inode of
every entry, per folder). Before and after each run the tree is compared with its snapshot; a
tree that changed is discarded and fetched again, so no run changes what a later run executes.
The check costs one stat per entry, which no check that catches a file rewritten in place can
skip, and little else: see `_matches`.
"""

from __future__ import annotations

import compileall
import contextlib
import hashlib
import json
import marshal
import operator
import os
import re
import shutil
import stat
import struct
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath

from . import blobs
from .locations import bundle_cache_dir
from .manifest import ManifestEntry, compute_digest

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20

MAX_BYTES_ENV = "FLYTE_JUPYTER_MAX_EXTRACT_BYTES"
MAX_MEMBERS_ENV = "FLYTE_JUPYTER_MAX_EXTRACT_MEMBERS"
DEFAULT_MAX_BYTES = 10 * 100 * 1024 * 1024
"""10x the client's default bundle size limit (100 MB): far above real bundles, far below a
disk. The runtime does not import the client, so the number is repeated here."""
DEFAULT_MAX_MEMBERS = 1_000_000
_MAX_HEADER_BYTES = 1 << 20
"""Long-name and pax header members are read into memory whole: cap them."""
STALE_SECONDS = 600
"""Leftovers of a crashed extraction older than this, whose digest is not locked, are removed."""
SNAPSHOT_SUFFIX = ".files"
_SNAPSHOT_MAGIC = b"flyte-jupyter snapshot 3\n"
"""Then marshal (version 4: Python 3.4 and later read it) of Snapshot.folders. A snapshot
starting with "{" is the JSON {path: entry} of earlier versions, still read."""
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_BY_FD = os.listdir in os.supports_fd and {os.stat, os.open} <= os.supports_dir_fd
_LEFTOVER_RE = re.compile(r"^\.([0-9a-f]{64})\.(tmp|download|discarded|snapshot)-")


class BundleVerificationError(Exception):
    """The archive is not the bundle it claims to be, or is unsafe to extract."""


def fetch_bundle(url: str, digest: str, cache: Path | None = None) -> Path:
    """The verified extraction of the bundle at `url` with `digest`, downloading and
    extracting it only if no earlier run (or a concurrent one) already did and nothing
    changed it since."""
    if not _DIGEST_RE.match(digest):
        raise BundleVerificationError(f"malformed digest {digest!r}: expected sha256:<64 hex>")
    cache = cache or bundle_cache_dir()
    hex_digest = digest.split(":", 1)[1]
    target = cache / hex_digest
    if not changes(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    clean_stale(cache)
    with _file_lock(_lock_path(target)):
        changed = changes(target)
        if not changed:
            return target  # a concurrent run fetched it
        if _snapshot_path(target).exists():
            print(
                f"flyte-jupyter: note: the extracted bundle {hex_digest[:12]} changed since it "
                f"was verified ({describe_changes(changed)}); fetching it again",
                file=sys.stderr,
                flush=True,
            )
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
            _write_snapshot(target, Path(staging))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(download)
            shutil.rmtree(staging, ignore_errors=True)
    return target


def discard_if_changed(target: Path) -> list[str]:
    """After a run: the paths under the extraction `target` that differ from its snapshot
    (empty if none). A changed extraction is discarded, so the next run fetches it again."""
    changed = changes(target)
    if not changed or not target.exists():
        return []
    with _file_lock(_lock_path(target)):
        changed = changes(target)
        if changed:
            _discard(target)
    return changed


Entry = tuple[int, int, int, int, int]
"""mode, size, mtime_ns, ctime_ns and inode of one entry. ctime cannot be set back by a
process, so a file rewritten in place shows even if its size and mtime are restored."""

stat_entry: Callable[[os.stat_result], Entry] = operator.attrgetter(
    "st_mode", "st_size", "st_mtime_ns", "st_ctime_ns", "st_ino"
)
"""One snapshot entry from a stat result (links not followed)."""


_PACKED = struct.Struct("=qqqqQ")
"""An entry as the snapshot stores it: 40 bytes. Unpacking a folder's entries at once is what
makes reading a snapshot of 100,000 files take milliseconds, not a tenth of a second."""


class Snapshot(Mapping[str, Entry]):
    """The entries of an extraction, per folder: `folders` maps a folder ("" for the top) to
    (listed, names, packed entries). Read as a mapping, path ("pkg/mod.py") -> entry."""

    def __init__(self, folders: dict[str, tuple[bool, tuple[str, ...], bytes]]):
        self.folders = folders
        self._unpacked: dict[str, dict[str, Entry]] = {}

    @classmethod
    def of(cls, dirs: dict[str, dict[str, Entry]], taken_ns: int) -> Snapshot:
        """The snapshot of a scan (`dirs`: folder -> name -> entry) that began at the file
        system's time `taken_ns` (0: unknown). Checks list a folder only if it was not settled
        then: adding, removing or renaming an entry sets a folder's mtime and ctime to the
        present, so a settled folder whose own entry (checked in its parent) is unchanged still
        holds the names it held when scanned. The top has no entry and is always listed."""
        folders = {}
        for folder, entries in dirs.items():
            parent, _, name = folder.rpartition("/")
            own = dirs.get(parent, {}).get(name) if folder else None
            settled = own is not None and own[3] < taken_ns
            packed = b"".join([_PACKED.pack(*entry) for entry in entries.values()])
            folders[folder] = (not settled, tuple(entries), packed)
        return cls(folders)

    def settled(self, folder: str) -> bool:
        return not self.folders[folder][0]

    def entries(self, folder: str) -> dict[str, Entry]:
        """name -> entry of one folder, unpacked once."""
        unpacked = self._unpacked.get(folder)
        if unpacked is None:
            _, names, packed = self.folders[folder]
            unpacked = dict(zip(names, _PACKED.iter_unpack(packed), strict=True))
            self._unpacked[folder] = unpacked
        return unpacked

    def __getitem__(self, path: str) -> Entry:
        folder, _, name = path.rpartition("/")
        return self.entries(folder)[name]

    def __iter__(self) -> Iterator[str]:
        for folder, (_, names, _) in self.folders.items():
            prefix = folder + "/" if folder else ""
            yield from (prefix + name for name in names)

    def __len__(self) -> int:
        return sum(len(names) for _, names, _ in self.folders.values())


def changes(target: Path) -> list[str]:
    """What differs between the extraction `target` and its snapshot: changed, added or
    removed paths, ["(no snapshot)"] when it was never completed, [] when unchanged."""
    recorded = recorded_snapshot(target)
    if recorded is None:
        return ["(no snapshot)"]
    try:
        if _matches(target, recorded):
            return []
        current = scan(target)
    except FileNotFoundError:
        return ["(tree removed)"]
    except OSError:
        return ["(tree replaced)"]  # by a link or a file
    before = dict(recorded)
    after = {f"{f}/{n}" if f else n: entry for f, ns in current.items() for n, entry in ns.items()}
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    return changed or ["(changed while it was checked)"]


def _matches(tree: Path, recorded: Snapshot) -> bool:
    """Whether `tree` holds exactly the entries `recorded`, each with the same stat. Each
    recorded folder is opened by descriptor, without following links, and each of its
    entries is stat-ed by name (one short lookup) and packed, so a folder is compared in one
    bytes comparison. Only folders the snapshot marks as listed (see Snapshot.of) are listed."""
    if not _BY_FD:  # pragma: no cover - Windows
        current = scan(tree)
        return current.keys() == recorded.folders.keys() and all(
            entries == recorded.entries(folder) for folder, entries in current.items()
        )
    lstat, pack = os.stat, _PACKED.pack
    top = os.open(tree, _DIR_FLAGS)
    try:
        for folder, (listed, names, packed) in recorded.folders.items():
            try:
                fd = os.open(folder or ".", _DIR_FLAGS, dir_fd=top)
            except OSError:  # removed, or replaced by a link or a file
                return False
            try:
                if listed and len(os.listdir(fd)) != len(names):
                    return False  # the names are then the recorded ones, or a stat fails
                current = b"".join(
                    [pack(*stat_entry(lstat(n, dir_fd=fd, follow_symlinks=False))) for n in names]
                )
            except (OSError, struct.error):  # an entry removed, or a time beyond 64 bits
                return False
            finally:
                os.close(fd)
            if current != packed:
                return False
    finally:
        os.close(top)
    return True


def scan(tree: Path) -> dict[str, dict[str, Entry]]:
    """folder -> name -> entry of everything under `tree`, links not followed. A folder that
    cannot be listed is left out (its own entry, in its parent, shows what changed)."""
    found: dict[str, dict[str, Entry]] = {}
    pending = [""]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(os.path.join(tree, folder)) as listing:
                entries = {e.name: stat_entry(e.stat(follow_symlinks=False)) for e in listing}
        except OSError:
            if not folder:
                raise
            continue
        found[folder] = entries
        prefix = folder + "/" if folder else ""
        pending.extend(prefix + n for n, e in entries.items() if stat.S_ISDIR(e[0]))
    return found


_loaded: dict[str, tuple[Entry, Snapshot]] = {}
"""Snapshots read by this process, by file, with the stat of the file they were read from:
a run's pre-run check, its import checks and its post-run check read the file once."""


def recorded_snapshot(target: Path) -> Snapshot | None:
    """The snapshot taken when the extraction `target` was verified (None: there is none, or
    it cannot be read, which counts as an unfinished extraction)."""
    path = os.fspath(_snapshot_path(target))
    try:
        key = stat_entry(os.stat(path))
        cached = _loaded.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        with open(path, "rb") as f:  # replaced meanwhile: the next call reads it again
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        if data.startswith(_SNAPSHOT_MAGIC):
            snapshot = Snapshot(marshal.loads(memoryview(data)[len(_SNAPSHOT_MAGIC) :]))
            if not _well_formed(snapshot.folders):
                return None
        else:
            snapshot = Snapshot.of(_from_paths(json.loads(data)), 0)
    except (ValueError, TypeError, EOFError, AttributeError, IndexError, struct.error):
        return None
    _loaded[path] = key, snapshot
    return snapshot


def _well_formed(folders: object) -> bool:
    return isinstance(folders, dict) and all(
        isinstance(folder, str)
        and isinstance(value, tuple)
        and len(value) == 3
        and isinstance(value[1], tuple)
        and isinstance(value[2], bytes)
        and len(value[2]) == _PACKED.size * len(value[1])
        for folder, value in folders.items()
    )


def _from_paths(paths: dict[str, list[int]]) -> dict[str, dict[str, Entry]]:
    """The per-folder form of an earlier version's {path: entry} snapshot."""
    dirs: dict[str, dict[str, Entry]] = {"": {}}
    for path, entry in paths.items():
        folder, _, name = path.rpartition("/")
        dirs.setdefault(folder, {})[name] = tuple(entry)  # type: ignore[assignment]
        if stat.S_ISDIR(entry[0]):
            dirs.setdefault(path, {})
    return dirs


def _snapshot_path(target: Path) -> Path:
    return target.with_name(target.name + SNAPSHOT_SUFFIX)


def _lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


def _write_snapshot(target: Path, staging: Path | None = None) -> None:
    """Written last, atomically: a tree without a snapshot is an unfinished extraction. Given
    `staging`, the tree is scanned there and only then renamed to `target`: what a process
    writes under the digest's name (one an earlier run left behind) shows as a change instead
    of being recorded as verified."""
    snapshot = _snapshot_path(target)
    partial = snapshot.with_name(f".{target.name}.snapshot-{os.getpid()}")
    with open(partial, "wb") as f:
        taken_ns = os.fstat(f.fileno()).st_ctime_ns  # the file system's clock, before the scan
        data = marshal.dumps(Snapshot.of(scan(staging or target), taken_ns).folders, 4)
        if staging is not None:
            os.rename(staging, target)
        f.write(_SNAPSHOT_MAGIC + data)
    os.replace(partial, snapshot)


def _discard(target: Path) -> None:
    """Remove an extraction (we hold its lock): snapshot first, so no run trusts it meanwhile."""
    _snapshot_path(target).unlink(missing_ok=True)
    if target.exists():
        away = target.with_name(f".{target.name}.discarded-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(target, away)
        shutil.rmtree(away, ignore_errors=True)


def describe_changes(paths: list[str]) -> str:
    """The first few changed paths, for a one-line note."""
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _clean_leftovers(cache: Path, hex_digest: str) -> None:
    """Remove what a crashed extraction of this digest left behind (we hold its lock)."""
    for stale in cache.glob(f".{hex_digest}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    _discard(cache / hex_digest)


def clean_stale(cache: Path, older_than: float = STALE_SECONDS) -> list[str]:
    """Remove staging, download and discarded leftovers of any digest that are older than
    `older_than` seconds and whose digest lock nobody holds (its extraction was killed)."""
    removed = []
    cutoff = time.time() - older_than
    for stale in cache.glob(".*.*-*"):
        match = _LEFTOVER_RE.match(stale.name)
        if match is None:
            continue
        hex_digest = match.group(1)
        try:
            if stale.lstat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        with _try_lock(cache / f"{hex_digest}.lock") as locked:
            if not locked:
                continue  # an extraction of that digest is going on right now
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale.name)
    return removed


def _limit(env: str, default: int) -> int:
    raw = os.environ.get(env)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BundleVerificationError(f"{env}={raw!r} is not a whole number") from None
    if value <= 0:
        raise BundleVerificationError(f"{env}={raw!r} must be positive")
    return value


_METADATA_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses long-name and pax headers larger than _MAX_HEADER_BYTES before tarfile reads
    them into memory."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _METADATA_TYPES and self.size > _MAX_HEADER_BYTES:
            raise BundleVerificationError(
                f"refusing bundle: a header entry declares {self.size} bytes"
            )
        return super()._proc_member(tarfile_)


def extract_verified(
    archive: Path, dest: Path, max_bytes: int | None = None, max_members: int | None = None
) -> str:
    """Extract regular files of `archive` into the empty directory `dest`; return the manifest
    digest of what was written. Raises BundleVerificationError for any unsafe member, or once
    the archive holds more than `max_bytes` (default $FLYTE_JUPYTER_MAX_EXTRACT_BYTES, 1 GiB)
    or `max_members` ($FLYTE_JUPYTER_MAX_EXTRACT_MEMBERS, 1,000,000)."""
    budget = max_bytes or _limit(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)
    max_members = max_members or _limit(MAX_MEMBERS_ENV, DEFAULT_MAX_MEMBERS)
    entries: list[ManifestEntry] = []
    dest = dest.resolve()
    count = 0
    try:
        with tarfile.open(archive, "r:gz", tarinfo=_BoundedTarInfo) as tar:
            for member in tar:
                count += 1
                if count > max_members:
                    raise BundleVerificationError(
                        f"refusing bundle: more than {max_members} entries (the limit is "
                        f"{MAX_MEMBERS_ENV})"
                    )
                if member.isdir():
                    continue
                target = _checked_target(member, dest)
                if member.size > budget:
                    raise BundleVerificationError(
                        f"refusing bundle: {member.name!r} declares {member.size} bytes, more "
                        f"than the {budget} left of the extraction limit ({MAX_BYTES_ENV})"
                    )
                entry = _write_member(tar, member, target, budget)
                budget -= entry.size
                entries.append(entry)
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


def _write_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, budget: int
) -> ManifestEntry:
    mode = 0o755 if member.mode & 0o111 else 0o644
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    digest = hashlib.sha256()
    size = 0
    source = tar.extractfile(member)
    assert source is not None  # regular file
    with os.fdopen(os.open(target, flags, mode), "wb") as out:
        for chunk in _chunks(source):
            size += len(chunk)
            if size > budget:  # a sparse or lying member: never write past the limit
                raise BundleVerificationError(
                    f"refusing bundle: {member.name!r} is larger than it declares"
                )
            digest.update(chunk)
            out.write(chunk)
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


@contextlib.contextmanager
def _try_lock(path: Path) -> Iterator[bool]:
    """The lock at `path` if nobody holds it (True), without waiting."""
    with open(path, "a+b") as handle:
        try:
            if os.name == "nt":  # pragma: no cover - exercised on Windows only
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
