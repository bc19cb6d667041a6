"""Advice for the packaging traps in Flyte's troubleshooting guide, worked out on the client,
where the local file tree can be looked at."""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .environment import foreign_dirs, is_installed
from .imports import ModuleLocation, find_module, suggest_root

if TYPE_CHECKING:
    from .submit import RunSpec


def missing_module_hint(module: str, spec: RunSpec) -> str:
    """Why `module` was missing remotely and what would ship it."""
    root = Path(spec.root_dir) if spec.root_dir else None
    if spec.copy_style == "none" and spec.executor == "local":
        return (
            f"Hint: copy_style 'none' ships no code, so {module!r} must be importable by the "
            "run's interpreter: install it there (pip install -e PROJECT), or use copy_style "
            "'auto'."
        )
    if spec.copy_style == "none":
        return (
            f"Hint: copy_style 'none' ships no code, so {module!r} must be in the image: "
            "copy it in with with_source_folder/with_source_file, or use copy_style 'auto'."
        )
    if root is not None:
        roots = [root / p for p in spec.python_path] or [root]
        local = find_module(module, roots)
        if local is not None:
            where = _package_glob(local, module, root)
            return (
                f"Hint: {module!r} exists under root_dir ({where}) but was not shipped: it is "
                "imported in a way the import scan cannot follow (a computed name, or inside a "
                f"function while lazy_imports is off). Add include=['{where}'] "
                "(--include) or use copy_style 'all'."
            )
        top = module.split(".")[0]
        below = imported_below(top, root)
        if below is not None:
            return (
                f"Hint: {top!r} is imported here from {below}, below root_dir {root}: remotely "
                f"imports start at root_dir, so set root_dir to {below}."
            )
        if is_installed(top, root, foreign_dirs(root)):
            # before looking above root_dir: a folder there named like an installed package
            # (an example called `fastapi`) would shadow it, not fix anything
            return (
                f"Hint: {top!r} is installed here but not in the execution environment: add it "
                f"to the image, e.g. .with_pip_packages('{top}')."
            )
        above = suggest_root(module, [root.parent]) if root.parent != root else None
        if above is not None:
            return (
                f"Hint: {module!r} is under {above}, outside root_dir {root}: "
                f"set root_dir to {above} so it ships."
            )
    return f"Hint: {module!r} is not found locally either: check the name, or install it."


def imported_below(top: str, root: Path) -> Path | None:
    """The folder below root_dir (not an installed packages folder) that this process imported
    the top-level module `top` from, if any: the root_dir the same import needs remotely."""
    file = getattr(sys.modules.get(top), "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    folder = path.parent.parent if path.name == "__init__.py" else path.parent
    if folder == root or not folder.is_relative_to(root):
        return None
    return None if any(folder.is_relative_to(d) for d in foreign_dirs(root)) else folder


_NO_SUCH_FILE = re.compile(r"\[Errno 2\] No such file or directory: ('[^\n]*'|\"[^\n]*\")$")


def missing_file_hint(error_type: str, message: str, spec: RunSpec) -> str:
    """What would ship a file the remote code opened by a relative path that exists here: only
    Python modules ship by themselves. The run started in the client's folder of the shipped
    tree (spec.workdir), so the path is looked up from the same folder here, and the include
    is named from root_dir. Empty when the file is not here either, or not under root_dir."""
    match = _NO_SUCH_FILE.match(message) if error_type == "FileNotFoundError" else None
    if match is None or not spec.root_dir:
        return ""
    try:  # the message is the remote code's: any text, of any size or nesting
        name = Path(ast.literal_eval(match.group(1)))
        root = Path(spec.root_dir)
        local = Path(os.path.normpath(root / spec.workdir / name))
        if not name.parts or name.is_absolute() or not local.is_relative_to(root):
            return ""
        if not local.exists():
            return ""
        rel = local.relative_to(root).as_posix() + ("/**" if local.is_dir() else "")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OSError):
        return ""
    shown = name.as_posix()
    if spec.copy_style == "none":
        where = "the run's working directory" if spec.executor == "local" else "the image"
        return (
            f"Hint: copy_style 'none' ships no files, so {shown!r} is not in {where}: "
            f"use copy_style 'auto' with include=['{rel}']."
        )
    if spec.copy_style == "all":
        return (
            f"Hint: {shown!r} exists under root_dir but copy_style 'all' left it out: "
            f"an exclude pattern, .flyteignore or .gitignore matches it. Add include=['{rel}'] "
            f"(--include '{rel}') to ship it anyway."
        )
    return (
        f"Hint: {shown!r} exists under root_dir but was not shipped: only Python "
        f"modules ship by themselves. Add include=['{rel}'] (--include '{rel}') or use "
        "copy_style 'all'."
    )


def _package_glob(local: ModuleLocation, module: str, root: Path) -> str:
    """What to include for a module the scan missed. A module of a package (or the package
    itself) is usually one of several imported by computed names
    (`import_module(f"plugins.p{n}")`), so the whole innermost package ships at once: one
    hint, not one per failed run. A top-level plain module ships alone."""
    if local.files and not local.is_package and len(local.files) == 1:
        return local.files[0].relative_to(root).as_posix()
    package = local.root / module.replace(".", "/")
    if not local.is_package:
        package = package.parent
    return f"{package.relative_to(root).as_posix()}/**"
