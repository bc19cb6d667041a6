"""Local state only its owner can read: files 0600 in directories 0700 (`private_dir`).

The run history, logs, caches and the default store hold code, inputs, outputs and error
messages; on a shared machine other users must not read them, whatever the umask says.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

from ..runtime.locations import private_dir

__all__ = ["open_private", "private_dir", "private_sqlite"]


def private_sqlite(path: Path) -> Path:
    """Create the SQLite file `path` as 0600 before SQLite opens it (its -wal and -shm files
    then get the same mode), and tighten an existing one and its companions."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
    return path


def open_private(path: Path) -> BinaryIO:
    """`path` opened for writing (truncated) as a 0600 file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")
