"""Reading source files with errors a user can act on."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BundleError

if TYPE_CHECKING:
    from hashlib import _Hash


def sha256(data: bytes = b"") -> _Hash:
    """`hashlib.sha256`, imported when first used: hashlib loads OpenSSL (~4 ms of start-up),
    and a build answered from its warm record hashes nothing."""
    import hashlib

    return hashlib.sha256(data)


def read_bytes(path: str | Path, display: str) -> bytes:
    """The file's bytes; an unreadable file is one clear BundleError naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BundleError(
            f"cannot read {display}: {exc.strerror or exc}. "
            "Fix its permissions, or leave it out with an exclude pattern."
        ) from exc


def archive_mode(st_mode: int) -> int:
    """0o755 for files with any execute bit, else 0o644: the only two modes a bundle holds."""
    return 0o755 if st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else 0o644
