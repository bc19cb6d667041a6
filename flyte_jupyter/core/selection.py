"""Which files go into a bundle, and why each one does.

Copy styles follow Flyte: `auto` (Flyte's `loaded_modules`) ships the local modules the
code uses, `all` ships every file under `root_dir` that ignore files allow, `none` ships
nothing (the code is baked into the image). On top of Flyte's behaviour, `auto` follows a
static import graph, so imports inside functions ship too, and every file carries a reason.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import site
import stat
import sys
import sysconfig
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.machinery import PathFinder
from pathlib import Path

from ..runtime.blobs import write_local_atomic
from ..runtime.locations import cache_dir, private_dir
from . import ignore as ig
from .errors import BundleError, UsageError
from .files import archive_mode, read_bytes
from .imports import (
    ImportRef,
    IncludeDecl,
    absolute_targets,
    declared_files,
    find_module,
    module_name_for,
    scan,
    suggest_root,
)
from .notebook_outputs import strip_outputs
from .sizes import human_size

COPY_STYLES = ("auto", "all", "none")
_STYLE_ALIASES = {"loaded_modules": "auto"}
ROOT_MARKERS = ("pyproject.toml", "setup.cfg", ".git", ".flyte")
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
LARGE_FILE_BYTES = 10 * 1024 * 1024
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SelectedFile:
    """A file that will ship: where it goes in the bundle and where its bytes come from."""

    path: str
    """POSIX path relative to root_dir: its name inside the bundle."""
    source: str
    """Absolute path to read (a symlink's target)."""
    size: int
    mode: int
    mtime_ns: int
    inode: int
    reason: str


@dataclass
class Selection:
    """The outcome of selection: files plus everything a user should be told about it."""

    root_dir: Path
    copy_style: str
    files: list[SelectedFile]
    version: str | None = None
    excluded_secrets: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    python_path: list[str] = field(default_factory=lambda: ["."])
    """Bundle-relative directories to put on sys.path (`src` for src-layout projects)."""
    third_party: list[str] = field(default_factory=list)
    """Top-level names of installed (non-local, non-stdlib) modules the code imports."""

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
    root = _resolve_root(root_dir, entry_paths, force_root)
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
    for rel, (text, reason) in (generated or {}).items():
        selector.add_generated(rel, text, reason)
    return selector.run(entry_paths, [Path(m) for m in loaded_modules], lazy_imports, max_bytes)


def _resolve_root(
    root_dir: str | os.PathLike[str] | None, entries: list[Path], force: bool
) -> Path:
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
        self.include_spec = ig.glob_spec(include)
        self.exclude = exclude
        self.exclude_spec = ig.glob_spec(exclude)
        self.version = version
        self.warnings: list[str] = []
        self.reasons: dict[str, str] = {}
        self.search_roots = [root]
        src = root / "src"
        if src.is_dir() and not (src / "__init__.py").exists():
            self.search_roots.append(src)
        self.used_roots: set[Path] = {root}
        self.third_party: set[str] = set()
        self.foreign_dirs = foreign_dirs(root)
        self._installed: dict[str, bool] = {}
        self.generated: dict[Path, str] = {}
        self.sources: dict[str, str] = {}
        """Bundle path -> the content-addressed file on disk holding its bytes."""
        self.keep_notebook_outputs = False

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
            self._follow_imports([*entries, *self.generated], loaded, lazy_imports)
        if self.include:
            self._add_includes()
        secrets: list[str] = []
        files: list[SelectedFile] = []
        for rel in sorted(self.reasons):
            if self.exclude and self.exclude_spec.match_file(rel):
                continue
            pattern = ig.secret_pattern(rel)
            selected = None if pattern else self._stat(rel)
            if selected is not None:
                pattern = self._link_target_secret(selected)
            if pattern and not self._named_in_include(rel):
                secrets.append(rel)
                self.warnings.append(
                    f"left out {rel}: it looks like a secret ({pattern!r}); "
                    "name it exactly in include to ship it anyway"
                )
                continue
            if pattern:
                self.warnings.append(
                    f"SHIPPING A SECRET: {rel} looks like a secret ({pattern!r}) and ships only "
                    "because include names it; anyone who can read the store can read it"
                )
                selected = selected or self._stat(rel)
            if selected is not None:
                files.append(selected)
        files = self._without_hard_links_to(secrets, files)
        selection = Selection(
            root_dir=self.root,
            copy_style=self.style,
            files=files,
            version=self.version,
            excluded_secrets=secrets,
            warnings=self.warnings,
            python_path=self._python_path(),
            third_party=sorted(self.third_party),
        )
        _check_size(selection, max_bytes)
        return selection

    # --- helpers -----------------------------------------------------------------------

    def _rel(self, path: Path) -> str:
        if path in self.generated:
            return self.generated[path]
        return path.relative_to(self.root).as_posix()

    def _python_path(self) -> list[str]:
        src = self.root / "src"
        if src in self.search_roots and (self.style == "all" or src in self.used_roots):
            return [".", "src"]
        return ["."]

    def _walk(self, honour_ignore_files: bool) -> list[str]:
        """Files under root, pruning the standard list (and ignore files, when honoured).

        Iterative (any depth). Skipped with a warning instead of failing or vanishing: folders
        that cannot be read, paths longer than the OS allows, kernel filesystems (/proc, /sys)
        and names that are not valid UTF-8. Those are skipped rather than shipped because the
        manifest and archive name files in UTF-8, and no module can be imported by such a name.
        """
        tree = ig.IgnoreTree(self.root)
        special = _special_mounts()
        out: list[str] = []
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            prefix = f"{rel_dir}/" if rel_dir else ""
            entries = self._list_dir(rel_dir)
            if entries is None:
                continue
            if honour_ignore_files:
                try:
                    tree.load_dir(rel_dir)
                except OSError as exc:
                    self._skip_dir(rel_dir, f"cannot read its ignore files ({exc.strerror})")
                    continue
            subdirs = []
            for entry in entries:
                rel = prefix + entry.name
                is_dir = _is_dir(entry)
                if ig.is_standard_name(entry.name, is_dir=is_dir) or (
                    honour_ignore_files and tree.is_ignored(rel, is_dir=is_dir)
                ):
                    continue
                if not _utf8(entry.name):
                    self._warn_once(
                        f"skipped {_shown(rel)}{'/' if is_dir else ''}: its name is not valid "
                        "UTF-8; rename it to ship it"
                    )
                elif len(os.fsencode(entry.path)) + (_NAME_MAX + 1 if is_dir else 0) >= _PATH_MAX:
                    where = "the paths inside it are" if is_dir else "its path is"
                    self._warn_once(
                        f"skipped {_shown(rel)}{'/' if is_dir else ''}: {where} longer than "
                        f"the OS allows ({_PATH_MAX} bytes)"
                    )
                elif not is_dir:
                    out.append(rel)
                elif entry.is_symlink():
                    self._warn_once(f"skipped {rel}/: symlinked directories are not followed")
                elif entry.path in special:
                    self._skip_dir(rel, f"{special[entry.path]} is a kernel filesystem, not files")
                else:
                    subdirs.append(rel)
            stack.extend(reversed(subdirs))
        return out

    def _list_dir(self, rel_dir: str) -> list[os.DirEntry[str]] | None:
        """A folder's entries sorted by name; None (and a warning) when it cannot be read."""
        try:
            with os.scandir(self.root_prefix + rel_dir if rel_dir else self.root) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self._skip_dir(rel_dir, f"cannot read it ({exc.strerror})")
            return None

    def _skip_dir(self, rel: str, why: str) -> None:
        self._warn_once(f"left out {_shown(rel) or '.'}/: {why}")

    def _warn_once(self, message: str) -> None:
        """The `all` walk and the include walk meet the same trouble: say it once."""
        if message not in self.warnings:
            self.warnings.append(message)

    def _add_includes(self) -> None:
        matched: set[str] = set()
        for rel in self._walk(honour_ignore_files=False):
            result = self.include_spec.check_file(rel)
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
            with contextlib.suppress(OSError):
                st = os.stat(self.root_prefix + rel)
                held.add((st.st_dev, st.st_ino))
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
        path = self.sources.get(rel) or self.root_prefix + rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None  # removed while we were looking
        source = path
        if stat.S_ISLNK(st.st_mode):
            source = os.path.realpath(path)
            if not os.path.exists(source):
                self.warnings.append(f"skipped {rel}: {_broken_link(path)}")
                return None
            if not Path(source).is_relative_to(self.root):
                self.warnings.append(f"skipped {rel}: symlink points outside root_dir ({source})")
                return None
            st = os.stat(source)
        if not stat.S_ISREG(st.st_mode):
            self.warnings.append(f"skipped {rel}: not a regular file")
            return None
        reason = self.reasons[rel]
        notebook = rel.lower().endswith(".ipynb") and rel not in self.sources
        if notebook and not self.keep_notebook_outputs:
            stripped = self._without_outputs(rel, source, st)
            if stripped is not None:
                source, st = stripped, os.stat(stripped)
                reason += " (outputs stripped)"
        if st.st_size > LARGE_FILE_BYTES:
            self.warnings.append(
                f"{rel} is {human_size(st.st_size)}: large files slow every upload; "
                "consider remote storage or an exclude pattern"
            )
        return SelectedFile(
            rel,
            source,
            st.st_size,
            archive_mode(st.st_mode),
            st.st_mtime_ns,
            st.st_ino,
            reason,
        )

    def _without_outputs(self, rel: str, source: str, st: os.stat_result) -> str | None:
        """A content-addressed copy of notebook `rel` without outputs (None: not a notebook,
        it ships as it is, with a warning)."""
        key = (source, st.st_size, st.st_mtime_ns, st.st_ino)
        path = _STRIPPED.get(key, "")
        if path == "" or (path is not None and not os.path.isfile(path)):
            stripped = strip_outputs(read_bytes(source, rel))
            path = None if stripped is None else str(_content_file(stripped, ".ipynb"))
            if st.st_mtime_ns < time.time_ns() - _RACY_NS:  # else it may change unseen
                _STRIPPED[key] = path
        if path is None:
            self.warnings.append(
                f"{rel} is not a notebook nbformat can read: it ships as it is, with any "
                "outputs it holds; exclude it if it should not ship"
            )
        return path

    def _is_foreign(self, path: Path) -> bool:
        return any(path.is_relative_to(d) for d in self.foreign_dirs)

    # --- the import graph --------------------------------------------------------------

    def _follow_imports(self, entries: list[Path], loaded: list[Path], lazy: bool) -> None:
        """Breadth-first over the import graph from the entries, then from the modules a live
        interpreter loaded (so a file's reason is the shortest import chain when there is one)."""
        seen: set[Path] = set(entries)
        self._walk_graph(deque(entries), seen, lazy)
        more: deque[Path] = deque()
        for module_file in loaded:
            path = Path(module_file).resolve()
            if path in seen or not path.is_file() or not path.is_relative_to(self.root):
                continue
            rel = self._rel(path)
            if self._is_foreign(path) or ig.is_standard_ignored(rel):
                continue
            self.reasons.setdefault(rel, "loaded module")
            seen.add(path)
            more.append(path)
        self._walk_graph(more, seen, lazy)

    def _walk_graph(self, queue: deque[Path], seen: set[Path], lazy: bool) -> None:
        while queue:
            path = queue.popleft()
            if path.suffix != ".py":
                continue
            for ref, found in self._imports_of(path, lazy):
                for module_file in found:
                    if module_file in seen:
                        continue
                    seen.add(module_file)
                    kind = "lazy import" if ref.lazy else "import"
                    self.reasons.setdefault(
                        self._rel(module_file), f"{kind} in {self._rel(path)}:{ref.lineno}"
                    )
                    queue.append(module_file)

    def _declared(self, rel: str, decl: IncludeDecl) -> tuple[ImportRef, tuple[Path, ...]]:
        """The files a Flyte environment in `rel` declares with `include=` (flyte bundles them
        beside the code): they ship like imported modules, their own imports followed."""
        where = f"include= in {rel}:{decl.lineno}"
        found: list[Path] = []
        if decl.paths is None:
            self.warnings.append(
                f"{where} is not a literal list of strings, so its files cannot be found before "
                "the run: name them with the include setting"
            )
        anchor = (self.root / rel).parent
        if rel in self.generated.values():  # a notebook cell: the notebook's folder (cwd)
            anchor = Path.cwd() if Path.cwd().is_relative_to(self.root) else self.root
        for pattern in decl.paths or ():
            files = [Path(os.path.normpath(f)) for f in declared_files(pattern, anchor)]
            if not files:
                self.warnings.append(
                    f"{where} declares {pattern!r}, which matches no file in {anchor}: "
                    "it will be missing remotely"
                )
            for file in files:
                if not file.is_relative_to(self.root):
                    self.warnings.append(
                        f"{where} declares {file}, outside root_dir {self.root}: set root_dir "
                        "to a folder that contains it"
                    )
                elif not self._is_foreign(file):
                    self.reasons.setdefault(self._rel(file), where)
                    found.append(file)
        return ImportRef(decl.lineno, None), tuple(found)

    def _imports_of(self, path: Path, lazy: bool) -> list[tuple[ImportRef, tuple[Path, ...]]]:
        rel = self._rel(path)
        source = read_bytes(path, rel)
        try:
            refs, declared = scan(source, rel)
        except SyntaxError as exc:
            self.warnings.append(
                f"could not parse {rel} (line {exc.lineno}: {exc.msg}); "
                "its imports were not followed"
            )
            return []
        if path in self.generated:
            importer = (rel.removesuffix(".py").replace("/", "."), False)
        else:
            importer = module_name_for(path, self.search_roots)
        out = [self._declared(rel, decl) for decl in declared]
        for ref in refs:
            if ref.lazy and not lazy:
                continue
            if ref.module is None:
                self.warnings.append(
                    f"{rel}:{ref.lineno}: dynamic import with a computed name cannot be followed; "
                    "ship its target with an include pattern or copy_style 'all'"
                )
                continue
            name, is_pkg = importer if importer else (None, False)
            targets = list(absolute_targets(ref, name, is_pkg))
            if not targets and not ref.optional:
                self.warnings.append(
                    f"{rel}:{ref.lineno}: relative import {ref.module!r} reaches above the "
                    f"top-level package under root_dir {self.root}"
                )
            for module, required in targets:
                found = self._resolve(module, required and not ref.optional, path, ref)
                if found:
                    out.append((ref, found))
        return out

    def _resolve(
        self, module: str, required: bool, importer: Path, ref: ImportRef
    ) -> tuple[Path, ...]:
        top = module.split(".")[0]
        location = find_module(module, self.search_roots)
        installed = self._installed.get(top)
        if installed is None:
            installed = self._installed[top] = is_installed(top, self.root, self.foreign_dirs)
        if location is not None and location.namespace_only and installed:
            location = None  # an installed regular package beats a bare local directory
        if location is not None:
            files = tuple(f for f in location.files if not self._is_foreign(f))
            if not files and not location.namespace_only:
                self.third_party.add(top)
                return ()
            self.used_roots.add(location.root)
            if installed and "." not in module and files:
                what = "the standard-library" if _is_stdlib(top) else "the installed"
                self.warnings.append(
                    f"local {self._rel(files[-1])} shadows {what} module {top!r}; "
                    "the local file ships and wins remotely"
                )
            return files
        if installed:
            if not _is_stdlib(top):
                self.third_party.add(top)
            return ()
        if required:
            self.warnings.append(self._unresolved_message(module, importer, ref))
        return ()

    def _unresolved_message(self, module: str, importer: Path, ref: ImportRef) -> str:
        where = f"{self._rel(importer)}:{ref.lineno}"
        # a generated cell module lives in the cache: look upwards from root_dir instead
        starts = [importer.parent] if importer.is_relative_to(self.root) else [self.root]
        candidate = suggest_root(module, starts)
        if candidate is None:
            hint = "it is neither under root_dir nor installed in this environment"
        elif self.root.is_relative_to(candidate):
            hint = f"it resolves with root_dir {candidate}"
        else:
            hint = (
                f"it resolves from {candidate}: set root_dir to {candidate} "
                "or import it by its full package path"
            )
        return f"cannot resolve import {module!r} ({where}) under root_dir {self.root}: {hint}"


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
    digest = hashlib.sha256(data).hexdigest()
    path = cache_dir() / "generated" / digest[:2] / f"{digest}{suffix}"
    if not path.is_file():
        private_dir(path.parent)
        write_local_atomic(str(path), data)
    return path


def foreign_dirs(root: Path) -> list[Path]:
    """Directories whose modules are installed code, never project code: site-packages, the
    interpreter's own trees, this package. A directory that contains root_dir itself (a project
    kept under /usr, say) is not counted."""
    candidates = [*site.getsitepackages(), site.getusersitepackages(), _PACKAGE_DIR]
    paths = sysconfig.get_paths()
    candidates += [paths["stdlib"], paths["platstdlib"], sys.prefix, sys.base_prefix]
    out = []
    for candidate in candidates:
        path = Path(candidate).resolve()
        if not root.is_relative_to(path):
            out.append(path)
    return out


def _is_stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name in sys.builtin_module_names


def is_installed(name: str, root: Path, foreign_dirs: list[Path]) -> bool:
    """Importable in this interpreter from installed code (site-packages, the standard
    library). A module found only through some other sys.path entry (the notebook's working
    directory, a path hack) is not installed anywhere else: it is local code outside
    root_dir, and will be missing remotely."""
    if _is_stdlib(name):
        return True
    path = [p for p in sys.path if p and not Path(p).resolve().is_relative_to(root)]
    try:
        spec = PathFinder.find_spec(name, path)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    places = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
    return any(Path(p).resolve().is_relative_to(d) for p in places for d in foreign_dirs)


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


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
