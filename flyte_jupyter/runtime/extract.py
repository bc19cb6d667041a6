"""Fetch a bundle, verify it against its digest and extract it safely, once per digest.

Nothing from an archive is trusted: every member is checked before a byte is written (kind,
path, declared size against the remaining budget), files are written only inside a fresh
temporary directory, and the manifest digest is recomputed from what was written. Only a
verified tree is renamed into the cache.

The extraction is shared by every run of the digest and is what runs (`__file__`, sys.path),
so a stat snapshot of it is kept beside it (`<hex>.files`: path, mode, size, mtime, ctime,
inode of every entry). Before and after each run the tree is compared with its snapshot; a
tree that changed is discarded and fetched again, so no run changes what a later run executes.
"""

from __future__ import annotations

import compileall
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
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
            os.rename(staging, target)
            _write_snapshot(target)
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


def changes(target: Path) -> list[str]:
    """What differs between the extraction `target` and its snapshot: changed, added or
    removed paths, ["(no snapshot)"] when it was never completed, [] when unchanged."""
    try:
        recorded = _snapshot_path(target).read_text()
    except FileNotFoundError:
        return ["(no snapshot)"]
    try:
        current = scan(target)
    except FileNotFoundError:
        return ["(tree removed)"]
    if _dumps(current) == recorded:
        return []
    before = json.loads(recorded)
    return sorted(p for p in before.keys() | current.keys() if before.get(p) != current.get(p))


def scan(tree: Path) -> dict[str, list[int]]:
    """path -> [mode, size, mtime_ns, ctime_ns, inode] of every entry under `tree`, links not
    followed. ctime cannot be set back by a process, so a rewrite shows even if mtime is."""
    found: dict[str, list[int]] = {}
    pending = [("", os.fspath(tree))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = prefix + entry.name
                found[rel] = stat_entry(entry.stat(follow_symlinks=False))
                if entry.is_dir(follow_symlinks=False):
                    pending.append((rel + "/", entry.path))
    return found


def stat_entry(st: os.stat_result) -> list[int]:
    """One snapshot entry: mode, size, mtime, ctime and inode."""
    return [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def recorded_snapshot(target: Path) -> dict[str, list[int]] | None:
    """The snapshot taken when the extraction `target` was verified (None: there is none)."""
    try:
        return json.loads(_snapshot_path(target).read_text())
    except FileNotFoundError:
        return None


def _dumps(snapshot: dict[str, list[int]]) -> str:
    return json.dumps(snapshot, sort_keys=True, separators=(",", ":"))


def _snapshot_path(target: Path) -> Path:
    return target.with_name(target.name + SNAPSHOT_SUFFIX)


def _lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


def _write_snapshot(target: Path) -> None:
    """Written last, atomically: a tree without a snapshot is an unfinished extraction."""
    snapshot = _snapshot_path(target)
    partial = snapshot.with_name(f".{target.name}.snapshot-{os.getpid()}")
    partial.write_text(_dumps(scan(target)))
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
