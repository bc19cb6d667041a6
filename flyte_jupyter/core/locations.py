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
