"""The runtime as it travels: the files of `flyte_jupyter.runtime` (stdlib-only) that every
executor puts beside an interpreter without flyte_jupyter installed (a local copy, a container
mount, an image layer, a Flyte pod's archive), and the one boot line that imports it from there
and takes itself off sys.path again, so the user's code never sees it."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from ..runtime.locations import cache_dir

PACKAGE_DIR = Path(__file__).resolve().parents[1]

_ENTRIES = {
    "run": ("execute", "main", "main(sys.argv[1:])"),
    "worker": ("worker", "serve", "serve()"),
}


def runtime_files() -> dict[str, str]:
    """Path relative to the folder that goes on sys.path -> local source file, in a fixed
    order: the package's `__init__.py`, then the runtime's modules."""
    files = {"flyte_jupyter/__init__.py": str(PACKAGE_DIR / "__init__.py")}
    for path in sorted((PACKAGE_DIR / "runtime").glob("*.py")):
        files[f"flyte_jupyter/runtime/{path.name}"] = str(path)
    return files


def runtime_copy() -> Path:
    """A private copy of the runtime under the cache, named by its content (made once)."""
    files = runtime_files()
    digest = hashlib.sha256(b"".join(Path(f).read_bytes() for f in files.values())).hexdigest()
    target = cache_dir() / "runtime" / digest[:16]
    if not (target / "flyte_jupyter" / "runtime" / "execute.py").exists():
        staging = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".runtime-"))
        for rel, source in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, staging / rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process won the race
    return target


def boot_line(entry: Literal["run", "worker"], path: str | None = None) -> str:
    """`python -c` code starting the runtime: "run" runs one run (its arguments follow),
    "worker" serves a warm worker. With `path` (a folder holding `runtime_files()`), the
    runtime is imported from there and `path` leaves sys.path before any user code runs."""
    module, name, call = _ENTRIES[entry]
    load = f"from flyte_jupyter.runtime.{module} import {name}"
    if path is None:
        return f"import sys; {load}; sys.exit({call})"
    return f"import sys; sys.path.insert(0, {path!r}); {load}; del sys.path[0]; sys.exit({call})"
