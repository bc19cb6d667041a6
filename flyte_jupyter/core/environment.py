"""Probes of this Python environment: which directories hold installed code, whether a module
is installed (rather than project code), and which distributions and versions the shipped code
needs. The selection, the missing-module advice, run specs and exports all ask here."""

from __future__ import annotations

import site
import sys
from collections.abc import Sequence
from functools import lru_cache
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def foreign_dirs(root: Path) -> list[Path]:
    """Directories whose modules are installed code, never project code: site-packages, the
    interpreter's own trees, this package. A directory that contains root_dir itself (a project
    kept under /usr, say) is not counted."""
    import sysconfig  # here, as `platform` below: a copy-style-all bundle needs neither

    candidates = [*site.getsitepackages(), site.getusersitepackages(), _PACKAGE_DIR]
    paths = sysconfig.get_paths()
    candidates += [paths["stdlib"], paths["platstdlib"], sys.prefix, sys.base_prefix]
    out = []
    for candidate in candidates:
        path = Path(candidate).resolve()
        if not root.is_relative_to(path):
            out.append(path)
    return out


def is_stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name in sys.builtin_module_names


def is_installed(name: str, root: Path, foreign_dirs: list[Path]) -> bool:
    """Importable in this interpreter from installed code (site-packages, the standard
    library). A module found only through some other sys.path entry (the notebook's working
    directory, a path hack) is not installed anywhere else: it is local code outside
    root_dir, and will be missing remotely."""
    if is_stdlib(name):
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


@lru_cache(maxsize=1)
def _module_distributions() -> dict[str, list[str]]:
    import importlib.metadata  # ~15 ms: only runs and exports need it, not every bundle

    return importlib.metadata.packages_distributions()


def distributions(third_party: Sequence[str]) -> dict[str, str]:
    """Installed distribution -> version, for the distributions providing these top-level
    modules."""
    import importlib.metadata

    found: dict[str, str] = {}
    for module in third_party:
        for dist in _module_distributions().get(module, []):
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def client_environment(third_party: Sequence[str]) -> dict[str, Any]:
    """What the runtime checks before unpickling inputs: the Python version and the installed
    distributions providing the third-party modules the shipped code imports."""
    import platform

    return {"python": platform.python_version(), "distributions": distributions(third_party)}


def pinned(third_party: Sequence[str]) -> list[str]:
    """Requirements pinned to the versions installed here, for these top-level modules."""
    return [f"{name}=={version}" for name, version in sorted(distributions(third_party).items())]
