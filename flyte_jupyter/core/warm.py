"""Rebuilds of a tree that did not change, or changed in a few files, without walking it.

A `copy_style all` bundle with no entry point is a function of the files under root_dir alone.
Selection records what it looked at: each folder it listed (a folder's mtime and ctime change
whenever an entry is added, removed or renamed, or its permissions change), each ignore file
and symlink target it followed, and each file's lstat. The next build with the same options
stats those paths again:

- all match: the recorded selection, manifest and archive are the answer;
- only some files' stats differ (edited in place): those files are selected, hashed and
  compressed again and spliced into the recorded archive (each gap between them copied in one
  range), every other file keeps its recorded hash, and a small delta beside the record says
  what changed;
- a folder, ignore file or symlink target differs (a secret's too: it decides which hard
  links stay out), a changed file draws a warning or takes the bundle over its size limit, or
  the recorded archive is gone or not its recorded length: the ordinary build runs and
  records afresh.

Each stat is taken before the walk acts on what it describes (a folder before it is listed,
an ignore file before it is read, `src` before python_path is decided): a change in between
then differs from the record next time, instead of being recorded as what was used.

A record is written only when no stat in it is younger than two seconds: a file modified within
the same mtime tick as the stat could otherwise change unseen (the hash cache's rule too).
"""

from __future__ import annotations

import contextlib
import importlib
import marshal
import os
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..runtime.blobs import write_local_atomic
from ..runtime.locations import cache_dir, private_dir
from ..runtime.manifest import ManifestEntry
from .bundle import (
    DEFAULT_LEVEL,
    Bundle,
    archive_path,
    build_bundle,
    copy_archive,
    splice_bundle,
)
from .errors import BundleError
from .selection import (
    DEFAULT_MAX_BYTES,
    SelectedFile,
    Selection,
    resolve_root,
    restat,
    select_files,
)

_FORMAT = 4
_RACY_NS = 2_000_000_000
_KEEP = 64
"""Records kept (one per root_dir and options); the least recently used go first."""
_PARALLEL_FILES = 4096
"""Recorded files from which their stat pass is split between two processes."""
_DELTA_FILES = 1000
"""Files edited since the record beyond which a rebuild writes a whole new record."""

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
    token: str
    """Names this record: a delta applies only to the record it was written against."""
    key: str
    """What it is the record of (root_dir, options, code): one found under another key's name
    (copied there, or two keys whose names collide) is not used."""
    dirs: list[_DirStat]
    files: list[_FileStat]
    followed: list[_Followed]
    noisy: list[str]
    selection: tuple
    """root_dir, copy_style, version, excluded_secrets, warnings, python_path, third_party"""
    entries: list[tuple[str, int, int, str]]
    digest: str
    size: int | None
    """The archive's length in bytes (None: not written): one cut short is not reused."""
    body_crc: int
    """CRC-32 of the stored body, checked on load: decoded later, it must not fail then."""
    body: memoryview | tuple[memoryview, dict] | _Body
    """The rest, read only when needed (an unchanged tree's text summary does not need it):
    stored marshalled after the record; with a delta's `shipped` entries to apply; decoded."""


class _Body(NamedTuple):
    selected: list[tuple]
    """SelectedFile fields of each file that ships."""
    lengths: list[int] | None
    """The length of each file's gzip member: the archive is those members back to back
    (then the end-of-archive member). None when the build did not write the archive."""


def _body(found: _Record) -> _Body:
    if isinstance(found.body, _Body):
        return found.body
    raw, shipped = found.body if isinstance(found.body, tuple) else (found.body, {})
    selected, lengths = marshal.loads(raw)
    for j, (shipped_file, _, length) in shipped.items():  # indexes checked by _applied
        selected[j] = shipped_file
        if lengths is not None:
            lengths[j] = length
    return _Body(selected, lengths)


class _Delta(NamedTuple):
    """Files edited in place since a record was written, so that a rebuild after an edit
    stores a few entries instead of the whole tree."""

    format: int
    token: str
    files: dict[int, _FileStat]
    """Index in the record's files -> its lstat now."""
    shipped: dict[int, tuple[tuple, tuple[str, int, int, str], int]]
    """Index in the record's selected -> (SelectedFile fields, manifest entry, member length)."""
    digest: str
    size: int | None


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
        bundle = _rebuild(key, *found, root, keep_notebook_outputs, max_bytes, dry_run)
    if bundle is None:
        record = TreeRecord()
        with contextlib.suppress(OSError):  # a src layout changes python_path; stat it before
            record.add_dir("src", os.stat(root / "src"))  # selection looks, as for any folder
            # its __init__.py decides too, and may be a symlink out of an ignored src
            record.follow("src/__init__.py", str(root / "src" / "__init__.py"))
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
        bundle = build_bundle(selection, dry_run=dry_run)
        _save(key, bundle, record)
    if output is not None:
        copy_archive(bundle, output)
    return bundle


def _rebuild(
    key: str,
    found: _Record,
    delta: _Delta | None,
    root: Path,
    keep_notebook_outputs: bool,
    max_bytes: int,
    dry_run: bool,
) -> Bundle | None:
    """The bundle from the record, rebuilt for the files that changed; None when more than
    file contents changed, when the edits take the bundle over `max_bytes` (the full build
    says so) or when building from the record fails: a stripped notebook's copy or an archive
    may have been removed from the cache since, and the full build makes them again."""
    changed = _changed_files(root, found)
    if changed is None:
        return None
    _, style, version, secrets, warnings, python_path, third_party = found.selection

    def selection_of(files: Callable[[], list[tuple]]) -> Selection:
        return _RecordedSelection(
            root, style, files, version, secrets, warnings, python_path, third_party
        )

    selection = selection_of(lambda: _body(found).selected)
    base = Bundle(selection, list(map(ManifestEntry._make, found.entries)), found.digest, None)
    if not dry_run and base.entries:
        archive = archive_path(base.hex)
        try:
            whole = os.stat(archive).st_size == found.size
            os.utime(archive)  # recently used: pruned last
        except OSError:
            return None  # pruned since: build it again
        if not whole:
            return None  # cut short, or never written by this record's build
        base.archive = archive
    if not changed:
        return base
    body = _body(found)
    base.member_lengths = body.lengths
    paths = {found.files[i][0] for i in changed}
    if paths & set(found.noisy) or (body.lengths is None and not dry_run):
        return None
    at = {j: f for j, f in enumerate(body.selected) if f[0] in paths}  # index -> shipped
    if len(at) != len(paths):
        return None  # an edited file that did not ship: only a full selection says why
    restatted = TreeRecord()
    fresh = restat(
        root,
        {f[0]: f[6] for f in at.values()},
        copy_style=style,
        version=version,
        keep_notebook_outputs=keep_notebook_outputs,
        record=restatted,
    )
    if fresh is None or restatted.followed:
        return None
    edits = {j: fresh[f[0]] for j, f in at.items()}
    grown = sum(f.size - body.selected[j][2] for j, f in edits.items())
    if sum(e[2] for e in found.entries) + grown > max_bytes:
        return None
    files = list(body.selected)
    for j, f in edits.items():
        files[j] = f
    try:
        bundle = splice_bundle(selection_of(lambda: files), base, edits, dry_run=dry_run)
    except BundleError:
        return None
    if not dry_run:
        _save_edits(key, found, body, delta, changed, restatted, bundle, edits)
    return bundle


class _RecordedSelection(Selection):
    """A Selection whose files are made from the record's tuples when first asked for: the
    text summary of a big tree reads only the manifest, and 20,000 named tuples made for
    nothing cost more than the rest of its answer."""

    def __init__(self, root: Path, style: str, files: Callable[[], list[tuple]], *rest: object):
        super().__init__(root, style, [], *rest)  # type: ignore[arg-type]
        self._raw = files
        self._files: list[SelectedFile] | None = None

    @property  # type: ignore[override]
    def files(self) -> list[SelectedFile]:
        if self._files is None:
            self._files = list(map(SelectedFile._make, self._raw()))
        return self._files

    @files.setter
    def files(self, value: list[SelectedFile]) -> None:
        self._files = value


def _changed_files(root: Path, found: _Record) -> list[int] | None:
    """Indexes of the recorded files whose lstat differs; None when a folder listing, an
    ignore file or a symlink target differs (or a file is gone)."""
    prefix = str(root) + os.sep
    stat = os.stat
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
    changed = _changed_among(prefix, found.files)
    if changed is None or any(_followed(f[0], prefix + f[0]) != tuple(f) for f in found.followed):
        return None
    return changed


def _changed_among(prefix: str, files: list[_FileStat]) -> list[int] | None:
    """`_changed_range` over all of `files`; past _PARALLEL_FILES, the second half in a forked
    child at the same time. Each lstat holds the GIL around a short syscall, so threads cannot
    overlap them, but a second core halves the pass. Only a single-threaded process forks (the
    CLI), and only on Linux, as for the compressing pool: forking a kernel or a server, which
    run threads, is not safe, nor is forking on macOS once system frameworks are loaded."""
    threading = sys.modules.get("threading")
    if (
        len(files) < _PARALLEL_FILES
        or sys.platform != "linux"
        or (os.cpu_count() or 1) < 2
        or (threading is not None and threading.active_count() > 1)
    ):
        return _changed_range(prefix, files, 0, len(files))
    half = len(files) // 2
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its answer on the pipe, then out without exit handlers
        try:
            os.close(read)
            with os.fdopen(write, "wb") as pipe:
                pipe.write(marshal.dumps(_changed_range(prefix, files, half, len(files))))
        finally:
            os._exit(0)
    os.close(write)
    pipe = os.fdopen(read, "rb")
    try:
        mine = _changed_range(prefix, files, 0, half)
        data = pipe.read()
    finally:
        pipe.close()  # first: a child still writing then stops instead of waiting for us
        os.waitpid(pid, 0)
    try:
        theirs = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None  # the child failed: build from the tree
    if mine is None or theirs is None:
        return None
    return mine + theirs


def _changed_range(prefix: str, files: list[_FileStat], start: int, end: int) -> list[int] | None:
    """Indexes in [start, end) of the files whose lstat differs; None when one is gone."""
    changed = []
    lstat = os.lstat
    for i in range(start, end):
        rel, mode, size, mtime, ino = files[i]
        try:
            st = lstat(prefix + rel)
        except OSError:
            return None
        if st.st_mtime_ns != mtime or st.st_size != size or st.st_ino != ino or st.st_mode != mode:
            changed.append(i)
    return changed


def _followed(rel: str, path: str) -> _Followed:
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return (rel, real)
    return (rel, real, st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns)


def _record_key(root: Path, options: dict) -> str:
    """What the record of one root_dir built with one set of options by this code is for: the
    stats of the modules that decide the outcome stand for their version (an upgrade or an
    edit of a checkout starts afresh; reading the package metadata would cost more than the
    whole warm build). The record holds it whole and is used only where it is equal."""
    code = [(st.st_size, st.st_mtime_ns) for st in map(os.stat, _code_files())]
    return repr((_FORMAT, code, str(root), sorted(options.items())))


_DECIDING = (
    "core/bundle",
    "core/files",  # the modes a bundle holds
    "core/ignore",
    "core/import_graph",
    "core/notebook_outputs",
    "core/selection",
    "core/sizes",  # the words of its warnings
    "core/warm",
    "runtime/manifest",
)
"""The package's modules whose code decides what a build of a tree gives."""


def _code_files() -> list[str]:
    """Their files, found without importing them (a build answered from its record imports
    neither the import graph nor its scanners); the compiled module where no source ships."""
    package = os.path.dirname(os.path.dirname(__file__))
    out = []
    for name in _DECIDING:
        path = os.path.join(package, name + ".py")
        if not os.path.exists(path):
            module = importlib.import_module("flyte_jupyter." + name.replace("/", "."))
            path = module.__file__ or ""
        out.append(path)
    return out


def _paths(key: str) -> tuple[Path, Path]:
    """The record of `key` and its delta. Two checksums of the key name them: keys that
    collide share a file, and each then finds the other's record and builds afresh (hashlib
    would load OpenSSL, ~4 ms, in a build that otherwise hashes nothing)."""
    data = key.encode("utf-8", "surrogateescape")
    name = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"
    folder = cache_dir() / "warm"
    return folder / f"{name}.marshal", folder / f"{name}.delta"


def _load(key: str, root: Path) -> tuple[_Record, _Delta | None] | None:
    """The stored record with its delta applied, and the delta; None when there is none, it
    is of another format or damaged: a record only ever saves work, so anything odd about it
    means building afresh."""
    path, delta_path = _paths(key)
    try:
        data = path.read_bytes()
        (head_length,) = struct.unpack_from("<Q", data)
        rest = memoryview(data)[8:]
        found = _Record._make((*marshal.loads(rest[:head_length]), rest[head_length:]))
        if found.format != _FORMAT or found.key != key or found.selection[0] != str(root):
            return None
        if zlib.crc32(rest[head_length:]) != found.body_crc:
            return None
        delta = _load_delta(delta_path, found.token)
        if delta is not None:
            found = _applied(found, delta)
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, struct.error):
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: pruned last
    return found, delta


def _load_delta(path: Path, token: str) -> _Delta | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    delta = _Delta._make(marshal.loads(data))
    if delta.format != _FORMAT or delta.token != token:
        return None  # written against a record since replaced
    return delta


def _applied(found: _Record, delta: _Delta) -> _Record:
    """The record with the delta's edits; those to the body are applied when it is decoded."""
    files, entries = list(found.files), list(found.entries)
    for i, stat_now in delta.files.items():
        files[_index(i, files)] = stat_now
    for j, (_, entry, _) in delta.shipped.items():
        entries[_index(j, entries)] = entry  # one entry per shipped file, as in the body
    return found._replace(
        files=files,
        entries=entries,
        digest=delta.digest,
        size=delta.size,
        body=(found.body, delta.shipped),
    )


def _index(i: int, items: list) -> int:
    """`i` if it indexes `items` from the start (a negative one would patch the wrong file)."""
    if not 0 <= i < len(items):
        raise IndexError(i)
    return i


def _save(key: str, bundle: Bundle, record: TreeRecord) -> None:
    """Keep what `bundle` depended on for the next build; skipped when the walk met something
    stats cannot vouch for or saw a change too recent to trust."""
    if not record.usable or record.newest_mtime_ns() >= time.time_ns() - _RACY_NS:
        return
    sel = bundle.selection
    body = marshal.dumps(([tuple(f) for f in sel.files], bundle.member_lengths))
    head = marshal.dumps(
        (
            _FORMAT,
            os.urandom(8).hex(),
            key,
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
            [tuple(e) for e in bundle.entries],
            bundle.digest,
            _archive_size(bundle),
            zlib.crc32(body),
        )
    )
    path, delta_path = _paths(key)
    with contextlib.suppress(OSError):
        private_dir(path.parent)
        write_local_atomic(str(path), struct.pack("<Q", len(head)) + head + body)
        delta_path.unlink(missing_ok=True)
        _prune(path.parent)


def _save_edits(
    key: str,
    found: _Record,
    body: _Body,
    delta: _Delta | None,
    changed: list[int],
    restatted: TreeRecord,
    bundle: Bundle,
    edits: dict[int, SelectedFile],
) -> None:
    """Record a rebuild after edits in place (`changed`: indexes in the record's files;
    `edits`: index in its selected -> the new entry): as a delta on the record while the edits
    are few and the archive's layout is known, else as a whole new record."""
    stats = {f[0]: f for f in restatted.files}  # the stats the new hashes belong to
    if max(f[3] for f in stats.values()) >= time.time_ns() - _RACY_NS:
        return  # edited too recently to trust: the next build compares with the record again
    files = dict(delta.files) if delta else {}
    files.update((i, stats[found.files[i][0]]) for i in changed)
    lengths = bundle.member_lengths
    if body.lengths is None or lengths is None or len(files) > _DELTA_FILES:
        record = TreeRecord()
        record.dirs, record.followed, record.noisy = found.dirs, found.followed, found.noisy
        record.files = list(found.files)
        for i, stat_now in files.items():
            record.files[i] = stat_now
        _save(key, bundle, record)
        return
    shipped = dict(delta.shipped) if delta else {}
    for j, f in edits.items():
        shipped[j] = (tuple(f), tuple(bundle.entries[j]), lengths[j])
    token = found.token
    with contextlib.suppress(OSError):
        write_local_atomic(
            str(_paths(key)[1]),
            marshal.dumps(
                tuple(_Delta(_FORMAT, token, files, shipped, bundle.digest, _archive_size(bundle)))
            ),
        )


def _archive_size(bundle: Bundle) -> int | None:
    try:
        return None if bundle.archive is None else bundle.archive.stat().st_size
    except OSError:
        return None


def _prune(directory: Path) -> None:
    records = sorted(directory.glob("*.marshal"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in records[_KEEP:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".delta").unlink(missing_ok=True)
