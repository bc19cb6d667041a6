"""Advice for the packaging traps in Flyte's troubleshooting guide, worked out on the client,
where the local file tree can be looked at."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .environment import foreign_dirs, is_installed
from .imports import ModuleLocation, find_module, suggest_root

if TYPE_CHECKING:
    from .submit import RunSpec


def missing_module_hint(module: str, spec: RunSpec) -> str:
    """Why `module` was missing remotely and what would ship it."""
    root = Path(spec.root_dir) if spec.root_dir else None
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
                f"imported in a way the import scan cannot follow. Add include=['{where}'] "
                "(--include) or use copy_style 'all'."
            )
        top = module.split(".")[0]
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
