"""Where flyte-jupyter keeps its local state."""

from __future__ import annotations

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
