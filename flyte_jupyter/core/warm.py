"""Rebuilds of a tree that did not change, or changed in a few files, without walking it.

A `copy_style all` bundle with no entry point is a function of the files under root_dir alone.
Selection records what it looked at: each folder it listed (a folder's mtime and ctime change
whenever an entry is added, removed or renamed, or its permissions change), each ignore file
and symlink target it followed, and each file's lstat. The next build with the same options
stats those paths again:

- all match: the recorded selection, manifest and archive are the answer;
- only some files' stats differ (edited in place): those files are selected, hashed and
  compressed again, every other file keeps its recorded hash and its member is copied from the
  recorded archive;
- a folder, ignore file or symlink target differs, or a changed file draws a warning: the
  ordinary build runs and records afresh.

A record is written only when no stat in it is younger than two seconds: a file modified within
the same mtime tick as the stat could otherwise change unseen (the hash cache's rule too).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import time
from pathlib import Path
from typing import NamedTuple

from ..runtime.blobs import write_local_atomic
from ..runtime.locations import cache_dir, private_dir
from ..runtime.manifest import ManifestEntry
from .bundle import DEFAULT_LEVEL, Bundle, Prior, archive_path, build_bundle, copy_archive
from .selection import (
    DEFAULT_MAX_BYTES,
    SelectedFile,
    Selection,
    resolve_root,
    restat,
    select_files,
)

_FORMAT = 1
_RACY_NS = 2_000_000_000
_KEEP = 64
"""Records kept (one per root_dir and options); the least recently used go first."""

_DirStat = tuple[str, int, int, int, int, int]
"""(relative folder, dev, inode, mode, mtime_ns, ctime_ns)"""
_FileStat = tuple[str, int, int, int, int]
"""(relative path, mode, size, mtime_ns, inode): an lstat, as selection takes it."""
_Followed = tuple[str, str, int, int, int, int, int] | tuple[str, str]
"""(relative path, real path, dev, inode, mode, size, mtime_ns) of what a path leads to;
(relative path, real path) when it leads nowhere."""


class TreeRecord:
    """The stats a selection depended on, gathered while it walks."""

    __slots__ = ("dirs", "files", "followed", "noisy", "usable")

    def __init__(self) -> None:
        self.dirs: list[_DirStat] = []
        self.files: list[_FileStat] = []
        self.followed: list[_Followed] = []
        """Ignore files and symlinks."""
        self.noisy: list[str] = []
        """Files that drew a warning: a change to one needs the full selection to report it."""
        self.usable = True
        """False once the walk left out a folder for a reason stats cannot vouch for later."""

    def add_dir(self, rel: str, st: os.stat_result) -> None:
        self.dirs.append((rel, st.st_dev, st.st_ino, st.st_mode, st.st_mtime_ns, st.st_ctime_ns))

    def follow(self, rel: str, path: str) -> None:
        self.followed.append(_followed(rel, path))

    def newest_mtime_ns(self) -> int:
        """Any later change to a path sets its mtime to the time of that change: it differs
        from a recorded mtime unless the recorded one is as recent as the change."""
        stamps = [d[4] for d in self.dirs] + [f[3] for f in self.files]
        stamps += [f[6] for f in self.followed if len(f) > 2]
        return max(stamps, default=0)


class _Record(NamedTuple):
    """A TreeRecord with the bundle it led to, as stored."""

    format: int
    dirs: list[_DirStat]
    files: list[_FileStat]
    followed: list[_Followed]
    noisy: list[str]
    selection: tuple
    """root_dir, copy_style, version, excluded_secrets, warnings, python_path, third_party"""
    selected: list[tuple]
    """SelectedFile fields of each file that ships."""
    entries: list[tuple[str, int, int, str]]
    members: list[tuple[int, int]] | None
    """Where each file's gzip member sits in the archive, when the build wrote it."""
    digest: str


def bundle_tree(
    root_dir: str | os.PathLike[str] | None,
    *,
    include: list[str] | tuple[str, ...] = (),
    exclude: list[str] | tuple[str, ...] = (),
    version: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    force_root: bool = False,
    keep_notebook_outputs: bool = False,
    output: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
) -> Bundle:
    """`build_bundle(select_files(root_dir, copy_style="all", ...))`, answered from the last
    build's record as far as nothing under root_dir changed since."""
    root = resolve_root(root_dir, [], force_root)
    options = {
        "include": list(include),
        "exclude": list(exclude),
        "version": version,
        "max_bytes": max_bytes,
        "keep_notebook_outputs": keep_notebook_outputs,
        "level": DEFAULT_LEVEL,
    }
    key = _record_key(root, options)
    found = _load(key, root)
    bundle = None
    if found is not None:
        bundle = _rebuild(key, found, root, keep_notebook_outputs, dry_run)
    if bundle is None:
        record = TreeRecord()
        selection = select_files(
            root,
            copy_style="all",
            include=include,
            exclude=exclude,
            version=version,
            max_bytes=max_bytes,
            force_root=force_root,
            keep_notebook_outputs=keep_notebook_outputs,
            record=record,
        )
        with contextlib.suppress(OSError):  # a src layout changes python_path
            record.add_dir("src", os.stat(root / "src"))
        bundle = build_bundle(selection, dry_run=dry_run)
        _save(key, bundle, record)
    if output is not None:
        copy_archive(bundle, output)
    return bundle


def _rebuild(
    key: str, found: _Record, root: Path, keep_notebook_outputs: bool, dry_run: bool
) -> Bundle | None:
    """The bundle from the record, rebuilt for the files that changed; None when more than
    file contents changed."""
    changed = _changed_files(root, found)
    if changed is None:
        return None
    _, style, version, secrets, warnings, python_path, third_party = found.selection
    selection = Selection(
        root_dir=root,
        copy_style=style,
        files=list(map(SelectedFile._make, found.selected)),
        version=version,
        excluded_secrets=secrets,
        warnings=warnings,
        python_path=python_path,
        third_party=third_party,
    )
    if not changed:
        bundle = Bundle(
            selection, list(map(ManifestEntry._make, found.entries)), found.digest, None
        )
        archive = archive_path(bundle.hex)
        if not dry_run and bundle.entries:
            try:
                os.utime(archive)  # recently used: pruned last
            except OSError:
                return None  # pruned since: build it again
            bundle.archive = archive
        return bundle
    paths = {found.files[i][0] for i in changed}
    if paths & set(found.noisy):
        return None
    record = TreeRecord()
    fresh = restat(selection, sorted(paths), keep_notebook_outputs, record)
    if fresh is None or record.followed:
        return None
    selection.files = [fresh.get(f.path, f) for f in selection.files]
    hashes = {e[0]: e[3] for e in found.entries if e[0] not in paths}
    members = None
    if found.members is not None:
        archive = str(archive_path(found.digest.split(":", 1)[1]))
        members = {
            f[0]: (archive, *at)
            for f, at in zip(found.selected, found.members, strict=True)
            if f[0] not in paths
        }
    bundle = build_bundle(selection, dry_run=dry_run, prior=Prior(hashes, members))
    restatted = {f[0]: f for f in record.files}  # the stats the new hashes belong to
    record.dirs, record.followed, record.noisy = found.dirs, found.followed, found.noisy
    record.files = [restatted.get(f[0], f) for f in found.files]
    _save(key, bundle, record)
    return bundle


def _changed_files(root: Path, found: _Record) -> list[int] | None:
    """Indexes of the recorded files whose lstat differs; None when a folder listing, an
    ignore file or a symlink target differs (or a file is gone)."""
    prefix = str(root) + os.sep
    stat, lstat = os.stat, os.lstat
    for rel, dev, ino, mode, mtime, ctime in found.dirs:
        try:
            st = stat(prefix + rel if rel else str(root))
        except OSError:
            return None
        if (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, st.st_mode) != (
            mtime,
            ctime,
            ino,
            dev,
            mode,
        ):
            return None
    changed = []
    for i, (rel, mode, size, mtime, ino) in enumerate(found.files):
        try:
            st = lstat(prefix + rel)
        except OSError:
            return None
        if st.st_mtime_ns != mtime or st.st_size != size or st.st_ino != ino or st.st_mode != mode:
            changed.append(i)
    if any(_followed(f[0], prefix + f[0]) != tuple(f) for f in found.followed):
        return None
    return changed


def _followed(rel: str, path: str) -> _Followed:
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return (rel, real)
    return (rel, real, st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns)


def _record_key(root: Path, options: dict) -> str:
    """Names the record of one root_dir built with one set of options by this code: the stats
    of the modules that decide the outcome stand for their version (an upgrade or an edit of
    a checkout starts afresh; reading the package metadata would cost more than the whole
    warm build)."""
    code = [(st.st_size, st.st_mtime_ns) for st in map(os.stat, _code_files())]
    material = repr((_FORMAT, code, str(root), sorted(options.items())))
    return hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()


def _code_files() -> list[str]:
    from ..runtime import manifest
    from . import bundle, ignore, import_graph, notebook_outputs, selection

    modules = (bundle, ignore, import_graph, notebook_outputs, selection, manifest)
    return [m.__file__ or "" for m in modules] + [__file__]


def _record_path(key: str) -> Path:
    return cache_dir() / "warm" / f"{key}.marshal"


def _load(key: str, root: Path) -> _Record | None:
    """The stored record, or None (none yet, another format, or damaged: a record only
    ever saves work, so anything odd about it means building afresh)."""
    path = _record_path(key)
    try:
        found = _Record._make(marshal.loads(path.read_bytes()))
        if found.format != _FORMAT or found.selection[0] != str(root):
            return None
    except (OSError, EOFError, ValueError, TypeError, IndexError):
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: pruned last
    return found


def _save(key: str, bundle: Bundle, record: TreeRecord) -> None:
    """Keep what `bundle` depended on for the next build; skipped when the walk met something
    stats cannot vouch for or saw a change too recent to trust."""
    if not record.usable or record.newest_mtime_ns() >= time.time_ns() - _RACY_NS:
        return
    sel = bundle.selection
    found = _Record(
        _FORMAT,
        record.dirs,
        record.files,
        record.followed,
        record.noisy,
        (
            str(sel.root_dir),
            sel.copy_style,
            sel.version,
            sel.excluded_secrets,
            sel.warnings,
            sel.python_path,
            sel.third_party,
        ),
        [tuple(f) for f in sel.files],
        [tuple(e) for e in bundle.entries],
        bundle.members,
        bundle.digest,
    )
    path = _record_path(key)
    with contextlib.suppress(OSError):
        private_dir(path.parent)
        write_local_atomic(str(path), marshal.dumps(tuple(found)))
        _prune(path.parent)


def _prune(directory: Path) -> None:
    records = sorted(directory.glob("*.marshal"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in records[_KEEP:]:
        old.unlink(missing_ok=True)
