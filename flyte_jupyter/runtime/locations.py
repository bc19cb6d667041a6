"""Where flyte-jupyter keeps its local state."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """`$FLYTE_JUPYTER_CACHE_DIR`, else `$XDG_CACHE_HOME/flyte-jupyter`, else
    `~/.cache/flyte-jupyter`. Holds built archives, the hash cache and the default store."""
    explicit = os.environ.get("FLYTE_JUPYTER_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "flyte-jupyter"


BUNDLE_CACHE_ENV = "FLYTE_JUPYTER_BUNDLE_CACHE"


def bundle_cache_dir() -> Path:
    """Where verified bundles are extracted, one directory per digest."""
    explicit = os.environ.get(BUNDLE_CACHE_ENV)
    return Path(explicit).expanduser() if explicit else cache_dir() / "bundles"


def data_dir() -> Path:
    """`$FLYTE_JUPYTER_DATA_DIR`, else `$XDG_DATA_HOME/flyte-jupyter`, else
    `~/.local/share/flyte-jupyter`. Holds the run history."""
    explicit = os.environ.get("FLYTE_JUPYTER_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "flyte-jupyter"


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can enter (0700), missing parents created the
    same way: the history, logs, caches and default store hold code, inputs and results.
    An existing directory is tightened; one we may not chmod (not ours) is left as it is."""
    missing = []
    for directory in (path, *path.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_mode & 0o077:
        with contextlib.suppress(OSError):
            path.chmod(0o700)
    return path
