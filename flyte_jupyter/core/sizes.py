"""Byte counts as people read them, shared by selection messages, previews and the CLI."""

from __future__ import annotations


def human_size(n: int) -> str:
    """`512 B`, `20.0 KB`, `1.9 MB`: a 20 KB file is not "0.0 MB"."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
