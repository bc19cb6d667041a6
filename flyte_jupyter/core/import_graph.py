"""The project's static import graph under root_dir: from the entry files, which local files
the code reaches (each with its reason: the import that brings it, `file:line`), which
installed top-level modules it uses, and a warning for every import that cannot be followed.
Built on imports.py's scanner and resolver; nothing is imported or executed."""

from __future__ import annotations

import ast
import os
from collections import deque
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

from ..runtime.cells import ASSIGNED, CELL_SOURCE
from . import ignore as ig
from .environment import foreign_dirs, is_installed, is_stdlib
from .files import read_bytes
from .imports import (
    ImportRef,
    IncludeDecl,
    absolute_targets,
    declared_files,
    find_module,
    module_name_for,
    scan,
    scan_tokens,
    suggest_root,
)
from .troubleshoot import imported_below


class ImportGraph:
    """Follows imports from entry files, adding each local file it reaches to `reasons`
    (bundle path -> why) and each problem to `warnings`; both are shared with the caller,
    which owns the selection."""

    def __init__(
        self,
        root: Path,
        generated: Mapping[Path, str],
        reasons: dict[str, str],
        warnings: list[str],
    ):
        self.root = root
        self.generated = generated
        """Content file on disk -> its bundle path, for files that exist only in memory."""
        self.reasons = reasons
        self.warnings = warnings
        self.search_roots = [root]
        src = root / "src"
        if src.is_dir() and not (src / "__init__.py").exists():
            self.search_roots.append(src)
        self.used_roots: set[Path] = {root}
        self.third_party: set[str] = set()
        """Installed top-level modules the code imports (their distributions are pinned)."""
        self._installed: dict[str, bool] = {}

    @cached_property
    def foreign_dirs(self) -> list[Path]:
        """Installed code's folders, found only once an import needs them (copy style all
        with no entry never does)."""
        return foreign_dirs(self.root)

    def rel(self, path: Path) -> str:
        if path in self.generated:
            return self.generated[path]
        return path.relative_to(self.root).as_posix()

    def python_path(self, everything: bool) -> list[str]:
        """sys.path entries (relative to root_dir) the shipped code needs: `src` too when a
        src layout was used (or everything ships)."""
        src = self.root / "src"
        if src in self.search_roots and (everything or src in self.used_roots):
            return [".", "src"]
        return ["."]

    def is_foreign(self, path: Path) -> bool:
        return any(path.is_relative_to(d) for d in self.foreign_dirs)

    def follow(self, entries: list[Path], loaded: list[Path], lazy: bool) -> None:
        """Breadth-first over the import graph from the entries, then from the modules a live
        interpreter loaded (so a file's reason is the shortest import chain when there is one)."""
        seen: set[Path] = set(entries)
        self._walk_graph(deque(entries), seen, lazy)
        more: deque[Path] = deque()
        for module_file in loaded:
            path = Path(module_file).resolve()
            if path in seen or not path.is_file() or not path.is_relative_to(self.root):
                continue
            rel = self.rel(path)
            if self.is_foreign(path) or ig.is_standard_ignored(rel):
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
                        self.rel(module_file), f"{kind} in {self.rel(path)}:{ref.lineno}"
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
                elif not self.is_foreign(file):
                    self.reasons.setdefault(self.rel(file), where)
                    found.append(file)
        return ImportRef(decl.lineno, None), tuple(found)

    def _imports_of(self, path: Path, lazy: bool) -> list[tuple[ImportRef, tuple[Path, ...]]]:
        rel = self.rel(path)
        source = read_bytes(path, rel)
        try:
            refs, declared = scan(source, rel)
        except SyntaxError as exc:  # newer syntax than this Python: the tokenizer still reads it
            import platform

            refs, declared = scan_tokens(source), []
            self.warnings.append(
                f"could not parse {rel} (line {exc.lineno}: {exc.msg}) with Python "
                f"{platform.python_version()}: it ships, and its {len(refs)} imports "
                "were found by a token scan (include= declarations in it are not read)"
            )
        if path in self.generated:
            importer = (rel.removesuffix(".py").replace("/", "."), False)
            cell_refs, cell_declared = _cell_body_imports(source)
            refs, declared = refs + cell_refs, declared + cell_declared
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
            files = tuple(f for f in location.files if not self.is_foreign(f))
            if not files and not location.namespace_only:
                self.third_party.add(top)
                return ()
            self.used_roots.add(location.root)
            if installed and "." not in module and files:
                what = "the standard-library" if is_stdlib(top) else "the installed"
                self.warnings.append(
                    f"local {self.rel(files[-1])} shadows {what} module {top!r}; "
                    "the local file ships and wins remotely"
                )
            return files
        if installed:
            if not is_stdlib(top):
                self.third_party.add(top)
            return ()
        if required:
            self.warnings.append(self._unresolved_message(module, importer, ref))
        return ()

    def _unresolved_message(self, module: str, importer: Path, ref: ImportRef) -> str:
        where = f"{self.rel(importer)}:{ref.lineno}"
        # a generated cell module lives in the cache: look upwards from root_dir instead
        starts = [importer.parent] if importer.is_relative_to(self.root) else [self.root]
        candidate = suggest_root(module, starts)
        below = imported_below(module.split(".")[0], self.root) if candidate is None else None
        if below is not None:
            hint = f"it is imported here from {below}, below root_dir: set root_dir to {below}"
        elif candidate is None:
            hint = "it is neither under root_dir nor installed in this environment"
        elif self.root.is_relative_to(candidate):
            hint = f"it resolves with root_dir {candidate}"
        else:
            hint = (
                f"it resolves from {candidate}: set root_dir to {candidate} "
                "or import it by its full package path"
            )
        return f"cannot resolve import {module!r} ({where}) under root_dir {self.root}: {hint}"


_CELL_SOURCE = f"\n{CELL_SOURCE} = ".encode()
_ASSIGNED = f"{ASSIGNED} = [".encode()


def _cell_body_imports(source: bytes) -> tuple[list[ImportRef], list[IncludeDecl]]:
    """The imports of a generated cell module's own cell. The body is the string CELL_SOURCE
    (the runtime executes it from there, so tracebacks name the cell), which the module's scan
    reads as data; its imports are reported at that line. It is the module's last one, after
    any notebook constant of the same name, and a repr() never spans lines. Another generated
    module (an exported notebook's job) may assign anything to that name: then nothing."""
    at = source.rfind(_CELL_SOURCE)
    first = at + len(_CELL_SOURCE)
    end = source.find(b"\n", first)
    tail = source[end + 1 :]  # a cell module ends `CELL_SOURCE = ...`, `ASSIGNED = [...]`
    if at < 0 or end < 0 or not tail.startswith(_ASSIGNED) or tail.count(b"\n") != 1:
        return [], []
    try:
        body = ast.literal_eval(source[first:end].decode())
        refs, declared = scan(body, "<cell>")
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return [], []
    lineno = source.count(b"\n", 0, at) + 2
    return [r._replace(lineno=lineno) for r in refs], [d._replace(lineno=lineno) for d in declared]
