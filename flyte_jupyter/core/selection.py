"""Which files go into a bundle, and why each one does.

Copy styles follow Flyte: `auto` (Flyte's `loaded_modules`) ships the local modules the
code uses, `all` ships every file under `root_dir` that ignore files allow, `none` ships
nothing (the code is baked into the image). On top of Flyte's behaviour, `auto` follows a
static import graph, so imports inside functions ship too, and every file carries a reason.
"""

from __future__ import annotations

import contextlib
import errno
import operator
import os
import re
import stat
import time
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..runtime.blobs import write_local_atomic
from ..runtime.locations import cache_dir, private_dir
from . import ignore as ig
from .errors import BundleError, UsageError
from .files import archive_mode, read_bytes, sha256
from .notebook_outputs import strip_outputs
from .sizes import human_size

if TYPE_CHECKING:
    import pathspec

    from .import_graph import ImportGraph
    from .warm import TreeRecord

COPY_STYLES = ("auto", "all", "none")
_STYLE_ALIASES = {"loaded_modules": "auto"}
ROOT_MARKERS = ("pyproject.toml", "setup.cfg", ".git", ".flyte")
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
LARGE_FILE_BYTES = 10 * 1024 * 1024


class SelectedFile(NamedTuple):
    """A file that will ship: where it goes in the bundle and where its bytes come from.
    Immutable; a named tuple because a big tree makes tens of thousands of them."""

    path: str
    """POSIX path relative to root_dir: its name inside the bundle."""
    source: str
    """Absolute path to read (a symlink's target)."""
    size: int
    mode: int
    mtime_ns: int
    inode: int
    reason: str


class Selection:
    """The outcome of selection: files plus everything a user should be told about it.
    (A plain class: `dataclasses` costs every command 5 ms of imports.)"""

    def __init__(
        self,
        root_dir: Path,
        copy_style: str,
        files: list[SelectedFile],
        version: str | None = None,
        excluded_secrets: list[str] | None = None,
        warnings: list[str] | None = None,
        python_path: list[str] | None = None,
        third_party: list[str] | None = None,
    ):
        self.root_dir = root_dir
        self.copy_style = copy_style
        self.files = files
        self.version = version
        self.excluded_secrets = excluded_secrets if excluded_secrets is not None else []
        self.warnings = warnings if warnings is not None else []
        self.python_path = python_path if python_path is not None else ["."]
        """Bundle-relative directories to put on sys.path (`src` for src-layout projects)."""
        self.third_party = third_party if third_party is not None else []
        """Top-level names of installed (non-local, non-stdlib) modules the code imports."""

    def __repr__(self) -> str:
        return (
            f"Selection(root_dir={self.root_dir!r}, copy_style={self.copy_style!r}, "
            f"{len(self.files)} files)"
        )

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def normalize_copy_style(copy_style: str) -> str:
    style = _STYLE_ALIASES.get(copy_style, copy_style)
    if style not in COPY_STYLES:
        raise UsageError(f"unknown copy_style {copy_style!r}: use one of auto, all, none")
    return style


def detect_root_dir(start: Path, boundary: Path | None = None) -> Path:
    """The nearest directory at or above `start` holding a project marker
    (pyproject.toml, setup.cfg, .git, .flyte/); `start` itself when none is found.
    With `boundary` (e.g. the Jupyter server root) the walk never goes above it."""
    start = start.resolve()
    candidates = [start, *start.parents]
    if boundary is not None:
        candidates = [c for c in candidates if c.is_relative_to(boundary.resolve())]
    for candidate in candidates:
        if any((candidate / marker).exists() for marker in ROOT_MARKERS):
            if candidate == Path.home() or candidate == Path(candidate.anchor):
                break
            return candidate
    return start


def select_files(
    root_dir: str | os.PathLike[str] | None = None,
    *,
    entries: Iterable[str | os.PathLike[str]] = (),
    copy_style: str = "auto",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    lazy_imports: bool = True,
    loaded_modules: Iterable[str | os.PathLike[str]] = (),
    version: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    force_root: bool = False,
    generated: Mapping[str, tuple[str, str]] | None = None,
    keep_notebook_outputs: bool = False,
    record: TreeRecord | None = None,
) -> Selection:
    """Decide which files ship.

    `entries` are the files whose code runs (their imports decide what `auto` ships);
    `loaded_modules` are module files already imported by a live interpreter (a kernel's
    `sys.modules`). `include` and `exclude` are gitignore-style globs relative to root_dir.
    `generated` adds files that exist only in memory (bundle path -> (text, reason)), such as
    the module a notebook cell becomes; they ship with every copy style and their imports are
    followed like an entry's.
    Notebooks that ship as files (`all`, include) ship without outputs and execution counts
    unless `keep_notebook_outputs`.
    `record` collects the stats the outcome depends on (see `warm`).
    Raises UsageError for bad arguments and BundleError when the result cannot ship.
    """
    style = normalize_copy_style(copy_style)
    if style == "none" and not version:
        raise UsageError(
            "copy_style 'none' ships no code, so the image must already contain it: "
            "pass an explicit version (e.g. version='v1.0.0') naming that code"
        )
    entry_paths = [Path(e).expanduser().resolve() for e in entries]
    for entry in entry_paths:
        if not entry.is_file():
            raise UsageError(f"entry file {entry} does not exist")
    root = resolve_root(root_dir, entry_paths, force_root)
    for entry in entry_paths:
        if not entry.is_relative_to(root):
            raise UsageError(
                f"entry {entry} is outside root_dir {root}: "
                "set root_dir to a directory that contains it"
            )
    if style == "auto" and not entry_paths and not loaded_modules and not generated:
        raise UsageError(
            "copy_style 'auto' ships what the entry code imports: name at least one entry "
            "file, or use copy_style 'all'"
        )
    selector = _Selector(root, style, list(include), list(exclude), version)
    selector.keep_notebook_outputs = keep_notebook_outputs
    selector.record = record
    for rel, (text, reason) in (generated or {}).items():
        selector.add_generated(rel, text, reason)
    return selector.run(entry_paths, [Path(m) for m in loaded_modules], lazy_imports, max_bytes)


def restat(
    root: Path,
    reasons: Mapping[str, str],
    *,
    copy_style: str = "all",
    version: str | None = None,
    keep_notebook_outputs: bool = False,
    record: TreeRecord | None = None,
) -> dict[str, SelectedFile] | None:
    """Fresh entries for shipped files whose content changed in place (bundle path -> the
    reason they shipped for), when nothing else under root_dir did (folder listings and ignore
    files as they were). None when one of them now draws a warning or no longer ships: only a
    full selection reports that. `record` receives the stats the new entries were made from."""
    selector = _Selector(root, copy_style, [], [], version)
    selector.keep_notebook_outputs = keep_notebook_outputs
    selector.record = record
    out = {}
    for rel in sorted(reasons):
        selector.reasons[rel] = reasons[rel].removesuffix(_STRIPPED_NOTE)
        selected = selector._consider(rel, [])
        if selected is None or selector.warnings:
            return None
        out[rel] = selected
    return out


def resolve_root(root_dir: str | os.PathLike[str] | None, entries: list[Path], force: bool) -> Path:
    if root_dir is not None:
        root = Path(root_dir).expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"root_dir {root} is not a directory")
    elif entries:
        root = detect_root_dir(entries[0].parent)
    else:
        root = Path.cwd().resolve()
    if not force and (root == Path.home().resolve() or root == Path(root.anchor)):
        raise BundleError(
            f"root_dir {root} is "
            f"{'the filesystem root' if root == Path(root.anchor) else 'your home directory'}"
            ": everything in it would ship. Point root_dir at your project, "
            "or pass force_root=True (--force-root) if you really mean it."
        )
    return root


class _Selector:
    def __init__(
        self, root: Path, style: str, include: list[str], exclude: list[str], version: str | None
    ):
        self.root = root
        self.root_prefix = str(root) + os.sep
        self.style = style
        self.include = include
        self.include_spec = ig.glob_spec(include, "--include") if include else None
        self.excluded = ig.matcher(ig.glob_spec(exclude, "--exclude") if exclude else None)
        self.version = version
        self.warnings: list[str] = []
        self.reasons: dict[str, str] = {}
        self.generated: dict[Path, str] = {}
        self.sources: dict[str, str] = {}
        """Bundle path -> the content-addressed file on disk holding its bytes."""
        self.lstats: dict[str, _Stat] = {}
        """Bundle path -> its lstat, taken by the `all` walk (others are taken by `_stat`)."""
        self.keep_notebook_outputs = False
        self.record: TreeRecord | None = None

    @cached_property
    def graph(self) -> ImportGraph:
        """Made when first needed: restating edited files (`restat`) needs none."""
        from .import_graph import ImportGraph

        return ImportGraph(self.root, self.generated, self.reasons, self.warnings)

    def add_generated(self, rel: str, text: str, reason: str) -> None:
        path = _content_file(text.encode(), Path(rel).suffix)
        self.generated[path] = rel
        self.sources[rel] = str(path)
        self.reasons[rel] = reason

    def run(
        self, entries: list[Path], loaded: list[Path], lazy_imports: bool, max_bytes: int
    ) -> Selection:
        if self.style == "all":
            walked = self._walk(honour_ignore_files=True)
            for rel in walked:
                self.reasons[rel] = "all"
        if self.style != "none":
            for entry in entries:
                self.reasons.setdefault(self._rel(entry), "entry")
            self.graph.follow([*entries, *self.generated], loaded, lazy_imports)
        if self.include_spec is not None:
            self._add_includes(self.include_spec)
        secrets: list[str] = []
        files: list[SelectedFile] = []
        excluded = self.excluded
        record = self.record
        for rel in sorted(self.reasons):
            if excluded is not None and excluded(rel):
                continue
            said = len(self.warnings)
            selected = self._consider(rel, secrets)
            if selected is not None:
                files.append(selected)
            if record is not None and len(self.warnings) != said:
                record.noisy.append(rel)
        files = self._without_hard_links_to(secrets, files)
        selection = Selection(
            root_dir=self.root,
            copy_style=self.style,
            files=files,
            version=self.version,
            excluded_secrets=secrets,
            warnings=self.warnings,
            python_path=self.graph.python_path(everything=self.style == "all"),
            third_party=sorted(self.graph.third_party),
        )
        _check_size(selection, max_bytes)
        return selection

    # --- helpers -----------------------------------------------------------------------

    def _consider(self, rel: str, secrets: list[str]) -> SelectedFile | None:
        """The file `rel` as it ships, or None (a secret is added to `secrets`)."""
        pattern = ig.secret_pattern(rel)
        selected = None if pattern else self._stat(rel)
        if selected is not None and selected.source != self.root_prefix + rel:
            pattern = self._link_target_secret(selected)
        if pattern and not self._named_in_include(rel):
            secrets.append(rel)
            self.warnings.append(
                f"left out {rel}: it looks like a secret ({pattern!r}); "
                "name it exactly in include to ship it anyway"
            )
            return None
        if pattern:
            self.warnings.append(
                f"SHIPPING A SECRET: {rel} looks like a secret ({pattern!r}) and ships only "
                "because include names it; anyone who can read the store can read it"
            )
            selected = selected or self._stat(rel)
        return selected

    def _rel(self, path: Path) -> str:
        return self.graph.rel(path)

    def _walk(self, honour_ignore_files: bool) -> list[str]:
        """Files under root, pruning the standard list (and ignore files, when honoured).

        Iterative (any depth). Skipped with a warning instead of failing or vanishing: folders
        that cannot be read, paths longer than the OS allows, kernel filesystems (/proc, /sys)
        and names that are not valid UTF-8. Those are skipped rather than shipped because the
        manifest and archive name files in UTF-8, and no module can be imported by such a name.
        The `all` walk keeps each file's lstat for `_stat`: taken relative to the open folder,
        it costs less than a second lstat by full path, and most walked files ship.
        """
        tree = ig.IgnoreTree(self.root) if honour_ignore_files else None
        special = _special_mounts()
        out: list[str] = []
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            dir_path = self.root_prefix + rel_dir if rel_dir else str(self.root)
            try:
                fd = os.open(dir_path, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                self._skip_dir(rel_dir, f"cannot read it ({exc.strerror})")
                continue
            if self.record is not None:
                self.record.add_dir(rel_dir, os.fstat(fd))
            try:
                stack.extend(reversed(self._walk_dir(fd, rel_dir, dir_path, tree, special, out)))
            finally:
                os.close(fd)
        for line in tree.skipped if tree else []:
            self.warnings.append(f"ignored a line that is not a valid pattern in {line}")
        return out

    def _walk_dir(
        self,
        fd: int,
        rel_dir: str,
        dir_path: str,
        tree: ig.IgnoreTree | None,
        special: dict[str, str],
        out: list[str],
    ) -> list[str]:
        """Add the shippable files of one open folder to `out`; its subfolders to walk."""
        try:
            with os.scandir(fd) as it:
                entries = sorted(it, key=_BY_NAME)
        except OSError as exc:
            self._skip_dir(rel_dir, f"cannot read it ({exc.strerror})")
            return []
        prefix = f"{rel_dir}/" if rel_dir else ""
        dir_sep = dir_path if dir_path.endswith("/") else dir_path + "/"
        if tree is not None and self.record is not None:
            # Stat before reading: an edit in between then shows as a stat that differs next
            # time, instead of being recorded as the version whose rules were applied.
            for entry in entries:
                if entry.name in ig.IGNORE_FILES:
                    self.record.follow(prefix + entry.name, dir_sep + entry.name)
        if tree is not None:
            try:
                tree.load_dir(rel_dir)
            except OSError as exc:
                self._skip_dir(rel_dir, f"cannot read its ignore files ({exc.strerror})")
                return []
        room = _PATH_MAX - len(os.fsencode(dir_sep))  # bytes left for a name in this folder
        ignored = tree.is_ignored if tree is not None and tree.active else None
        standard_file, standard_dir = ig.is_standard_file_name, ig.is_standard_dir_name
        lstats = self.lstats if tree is not None else None
        record = self.record
        subdirs = []
        for entry in entries:
            name = entry.name
            rel = prefix + name
            if record is not None and entry.is_symlink():
                # Whether it is ignored, skipped or shipped depends on what it leads to, which
                # may be in a folder never walked (build/): a target turning folder <-> file
                # must show in the record although no walked folder changes.
                record.follow(rel, dir_sep + name)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if (standard_dir if is_dir else standard_file)(name) or (
                ignored is not None and ignored(rel, is_dir)
            ):
                continue
            try:
                name_bytes = len(name.encode("utf-8"))
            except UnicodeEncodeError:
                self._warn_once(
                    f"skipped {_shown(rel)}{'/' if is_dir else ''}: its name is not valid "
                    "UTF-8; rename it to ship it"
                )
                continue
            if name_bytes + (_NAME_MAX + 1 if is_dir else 0) >= room:
                where = "the paths inside it are" if is_dir else "its path is"
                self._warn_once(
                    f"skipped {_shown(rel)}{'/' if is_dir else ''}: {where} longer than "
                    f"the OS allows ({_PATH_MAX} bytes)"
                )
            elif not is_dir:
                out.append(rel)
                if lstats is not None:
                    try:
                        st = os.lstat(name, dir_fd=fd)
                    except OSError:
                        continue  # _stat tries again by path, and reports what it finds
                    lstats[rel] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
            elif entry.is_symlink():
                self._warn_once(f"skipped {rel}/: symlinked directories are not followed")
            elif dir_sep + name in special:
                self._skip_dir(rel, f"{special[dir_sep + name]} is a kernel filesystem, not files")
            else:
                subdirs.append(rel)
        return subdirs

    def _skip_dir(self, rel: str, why: str) -> None:
        """A folder left out for a reason stats cannot vouch for later: no warm reuse."""
        self._warn_once(f"left out {_shown(rel) or '.'}/: {why}")
        if self.record is not None:
            self.record.usable = False

    def _warn_once(self, message: str) -> None:
        """The `all` walk and the include walk meet the same trouble: say it once."""
        if message not in self.warnings:
            self.warnings.append(message)

    def _add_includes(self, spec: pathspec.GitIgnoreSpec) -> None:
        matched: set[str] = set()
        may_match = ig.may_match(spec)
        for rel in self._walk(honour_ignore_files=False):
            if not may_match(rel):
                continue
            result = spec.check_file(rel)
            if result.include:
                pattern = self.include[result.index]
                matched.add(pattern)
                self.reasons.setdefault(rel, f"include pattern {pattern!r}")
        for pattern in self.include:
            if pattern not in matched:
                self.warnings.append(
                    f"include pattern {pattern!r} matched no files under {self.root}"
                )

    def _without_hard_links_to(
        self, secrets: list[str], files: list[SelectedFile]
    ) -> list[SelectedFile]:
        """`files` minus hard links to a left-out secret: the same bytes under another name."""
        held = set()
        for rel in secrets:
            if self.record is not None:  # `.env -> build/hop -> x`: hop may move unseen
                self.record.follow(rel, self.root_prefix + rel)
            with contextlib.suppress(OSError):
                st = os.stat(self.root_prefix + rel)
                held.add((st.st_dev, st.st_ino))
        if not held:
            return files
        inodes = {ino for _, ino in held}
        kept = []
        for f in files:
            if f.inode in inodes and _file_id(f.source) in held:
                secrets.append(f.path)
                self.warnings.append(
                    f"left out {f.path}: it is a hard link to a file left out as a secret"
                )
                continue
            kept.append(f)
        return kept

    def _named_in_include(self, rel: str) -> bool:
        """Only an include pattern naming exactly this path opts a secret back in."""
        return any(
            ig.is_literal(p) and p.removeprefix("./").lstrip("/") == rel for p in self.include
        )

    def _link_target_secret(self, selected: SelectedFile) -> str | None:
        """The secret pattern matched by a symlink's target (`_stat` keeps only targets under
        root_dir): `notes.txt -> .env` must not ship the `.env` bytes under another name."""
        if selected.source.startswith(self.root_prefix) and selected.path not in self.sources:
            target = selected.source[len(self.root_prefix) :]
            if target != selected.path:
                return ig.secret_pattern_anywhere(target)
        return None

    def _stat(self, rel: str) -> SelectedFile | None:
        generated = self.sources.get(rel)
        path = generated or self.root_prefix + rel
        found = None if generated else self.lstats.pop(rel, None)
        if found is None:
            try:
                found = _stat_of(os.lstat(path))
            except FileNotFoundError:
                return None  # removed while we were looking
        mode, size, mtime_ns, inode = found
        if self.record is not None and not generated:
            self.record.files.append((rel, *found))
        source = path
        if stat.S_ISLNK(mode):
            if self.record is not None:
                self.record.follow(rel, path)
            source = os.path.realpath(path)
            if not os.path.exists(source):
                self.warnings.append(f"skipped {rel}: {_broken_link(path)}")
                return None
            if not Path(source).is_relative_to(self.root):
                self.warnings.append(f"skipped {rel}: symlink points outside root_dir ({source})")
                return None
            mode, size, mtime_ns, inode = _stat_of(os.stat(source))
        if not stat.S_ISREG(mode):
            self.warnings.append(f"skipped {rel}: not a regular file")
            return None
        reason = self.reasons[rel]
        notebook = rel.lower().endswith(".ipynb") and not generated
        if notebook and not self.keep_notebook_outputs:
            stripped = self._without_outputs(rel, source, size, mtime_ns, inode)
            if stripped is not None:
                source = stripped
                mode, size, mtime_ns, inode = _stat_of(os.stat(stripped))
                reason += _STRIPPED_NOTE
        if size > LARGE_FILE_BYTES:
            self.warnings.append(
                f"{rel} is {human_size(size)}: large files slow every upload; "
                "consider remote storage or an exclude pattern"
            )
        return SelectedFile(rel, source, size, archive_mode(mode), mtime_ns, inode, reason)

    def _without_outputs(
        self, rel: str, source: str, size: int, mtime_ns: int, inode: int
    ) -> str | None:
        """A content-addressed copy of notebook `rel` without outputs (None: not a notebook,
        it ships as it is, with a warning)."""
        key = (source, size, mtime_ns, inode)
        path = _STRIPPED.get(key, "")
        if path == "" or (path is not None and not os.path.isfile(path)):
            stripped = strip_outputs(read_bytes(source, rel))
            path = None if stripped is None else str(_content_file(stripped, ".ipynb"))
            if mtime_ns < time.time_ns() - _RACY_NS:  # else it may change unseen
                _STRIPPED[key] = path
        if path is None:
            self.warnings.append(
                f"{rel} is not a notebook nbformat can read: it ships as it is, with any "
                "outputs it holds; exclude it if it should not ship"
            )
        return path


_Stat = tuple[int, int, int, int]
"""What selection keeps of a stat: mode, size, mtime_ns, inode."""


def _stat_of(st: os.stat_result) -> _Stat:
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)


_STRIPPED_NOTE = " (outputs stripped)"
_STRIPPED: dict[tuple[str, int, int, int], str | None] = {}
"""Notebook stat key -> its stripped copy, so an unchanged notebook is parsed once."""
_RACY_NS = 2_000_000_000
"""A file modified this recently may change again within the same mtime tick."""


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _content_file(data: bytes, suffix: str) -> Path:
    """`data` in a file under the cache named by its hash: the stable source of bytes that
    exist only in memory (generated modules, stripped notebooks)."""
    digest = sha256(data).hexdigest()
    path = cache_dir() / "generated" / digest[:2] / f"{digest}{suffix}"
    if not path.is_file():
        private_dir(path.parent)
        write_local_atomic(str(path), data)
    return path


_BY_NAME = operator.attrgetter("name")
_PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
_NAME_MAX = 255
_KERNEL_FILESYSTEMS = frozenset(
    [
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "debugfs",
        "tracefs",
        "securityfs",
        "pstore",
        "bpf",
        "mqueue",
        "configfs",
        "fusectl",
        "binfmt_misc",
        "autofs",
        "hugetlbfs",
        "efivarfs",
        "nsfs",
        "rpc_pipefs",
        "selinuxfs",
    ]
)


def _special_mounts() -> dict[str, str]:
    """Mount point -> type of the kernel filesystems mounted here (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) > 2 and parts[2] in _KERNEL_FILESYSTEMS:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
            out[point] = parts[2]
    return out


def _shown(rel: str) -> str:
    """A path for a warning: undecodable bytes escaped (\\xff), very long paths elided."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return text if len(text) <= 120 else f"{text[:60]}...{text[-50:]}"


def _broken_link(path: str) -> str:
    """Why a symlink leads nowhere: a loop (a -> b -> a) is not a missing target."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
    return "dangling symlink"


def _check_size(selection: Selection, max_bytes: int) -> None:
    total = selection.total_bytes
    if total <= max_bytes:
        return
    biggest = sorted(selection.files, key=lambda f: f.size, reverse=True)[:5]
    dirs: dict[str, int] = {}
    for f in selection.files:
        top = f.path.split("/")[0] + ("/" if "/" in f.path else "")
        dirs[top] = dirs.get(top, 0) + f.size
    big_dirs = sorted(dirs.items(), key=lambda kv: kv[1], reverse=True)[:5]
    raise BundleError(
        f"the bundle would be {human_size(total)}, over the {human_size(max_bytes)} limit. "
        "Largest files: "
        + ", ".join(f"{f.path} ({human_size(f.size)})" for f in biggest)
        + "; largest top-level entries: "
        + ", ".join(f"{d} ({human_size(n)})" for d, n in big_dirs)
        + ". Leave them out with exclude patterns or a .flyteignore file, "
        "or raise the limit (`max_size_mb`)."
    )
