"""Edit a project's `.flyte-jupyter.toml` key by key, line by line: the sidebar's Apply changes
only the keys the user changed and keeps every other line (comments, order, other keys)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib

from . import config
from .errors import UsageError

FILE = ".flyte-jupyter.toml"
_HEADER = "# flyte-jupyter settings for this project (written by the JupyterLab sidebar)"
_EMPTY = (None, "", [], {})


def _key_of(line: str) -> str | None:
    """The top-level key a `key = value` line sets, else None."""
    match = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line)
    return match.group(1).replace("-", "_") if match else None


def _value_end(lines: list[str], start: int) -> int:
    """One past the last line of the value that starts at `start` (arrays and inline tables
    may span lines): the shortest run of lines that parses as TOML."""
    for end in range(start + 1, len(lines) + 1):
        try:
            tomllib.loads("".join(lines[start:end]))
            return end
        except tomllib.TOMLDecodeError:
            continue
    return start + 1


def update_project(folder: Path, changes: Mapping[str, Any]) -> Path:
    """Set (or, for an empty value, remove) each key in `changes` in folder/.flyte-jupyter.toml;
    every other line stays as it was. Keys under a [table] are not the project's settings, so
    new keys go above the first table."""
    path = folder / FILE
    try:
        lines = (
            path.read_text(encoding="utf-8").splitlines(keepends=True)
            if path.exists()
            else [_HEADER + "\n"]
        )
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for key, raw in changes.items():
        if key not in config.FIELDS:
            raise UsageError(f"unknown setting {key!r}: use one of {', '.join(config.FIELDS)}")
        value = config.coerce(key, raw)
        new = [] if value in _EMPTY else [f"{key} = {config._toml(value)}\n"]
        top = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), None)
        limit = len(lines) if top is None else top
        at = next((i for i in range(limit) if _key_of(lines[i]) == key), None)
        if at is not None:
            lines[at : _value_end(lines, at)] = new
        elif new:
            lines[limit:limit] = new
    text = "".join(lines)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML ({exc}): fix it, then apply again") from exc
    path.write_text(text, encoding="utf-8")
    return path
