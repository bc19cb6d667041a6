"""Remote tracebacks shown the way IPython shows local ones.

The runtime sends a traceback as text (error.json). Here each of its frames becomes a real,
empty frame compiled under the file name IPython would use locally (the notebook cell's
code name, the project file's local path), so IPython's own formatter draws it: colours,
context lines, `Cell In[n], line L`. Nothing from the remote is imported, unpickled or run.
"""

from __future__ import annotations

import linecache
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import RemoteError

_TRACEBACK_HEAD = "Traceback (most recent call last):\n"
_FRAME = re.compile(r'^  File "(?P<file>[^"\n]+)", line (?P<line>\d+), in (?P<name>[^\n]+)$', re.M)
_CELL_LABEL = re.compile(r"In\[(\d+)\]")


@dataclass(frozen=True)
class RunCell:
    """Where a run's own cell is shown: its label, the code name registered for its raw
    text, how many cell lines come before the remote code, and the project root."""

    label: str
    filename: str
    offset: int
    root: str | None


def register_run_cell(
    shell: Any, run_id: str, label: str, raw: str, body: str, root: str | None
) -> RunCell:
    """Make the run cell's raw text (magic line included) available to IPython's traceback
    formatter under a code name that IPython labels `Cell In[n]`."""
    filename = f"<flyte-run {run_id}>"
    lines = raw.splitlines(keepends=True)
    linecache.cache[filename] = (len(raw), None, lines, filename)
    count = _CELL_LABEL.fullmatch(label)
    if count:
        shell.compile._filename_map[filename] = int(count.group(1))
    return RunCell(label, filename, _body_offset(raw, body), root)


def _body_offset(raw: str, body: str) -> int:
    """Cell lines before the run's first line: the `%%flyte_run` line of a cell magic, or
    the lines above a `%flyte_run EXPR` line."""
    lines = raw.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        return 1
    first = body.strip().splitlines()[0] if body.strip() else ""
    for i, line in enumerate(lines):
        if line.lstrip().startswith("%flyte_run") and first and first in line:
            return i
    return 0


def structured(shell: Any, value: RemoteError, cell: RunCell | None) -> list[str] | None:
    """IPython's structured traceback (a list of strings, one error output) for `value`, or
    None when its traceback has no frames to show (the runtime died without one)."""
    text = value.remote_traceback
    head = text.rfind(_TRACEBACK_HEAD)
    if head < 0:
        return None
    frames = [
        (*_local(shell, m["file"], int(m["line"]), cell), m["name"])
        for m in _FRAME.finditer(text, head)
    ]
    if not frames:
        return None
    tb = None
    for filename, line, name in reversed(frames):
        made = _frame(filename, line, name)
        tb = types.TracebackType(tb, made.tb_frame, made.tb_lasti, made.tb_lineno)
    value.brief = True
    try:
        stb = shell.InteractiveTB.structured_traceback(type(value), value, tb, tb_offset=0)
    finally:
        value.brief = False
    chained = text[:head].strip()
    if chained:  # earlier exceptions of the chain ("During handling of ...") as the remote said
        stb = [chained, *stb]
    if value.hint:
        stb.append(value.hint)
    return stb


def _local(shell: Any, file: str, line: int, cell: RunCell | None) -> tuple[str, int]:
    """The file name and line IPython should show for a remote frame."""
    if cell is not None and file == cell.label:
        return cell.filename, line + cell.offset
    label = _CELL_LABEL.fullmatch(file)
    if label:
        count = int(label.group(1))
        names = [n for n, c in shell.compile._filename_map.items() if c == count]
        if names:
            return names[-1], line
        shell.compile._filename_map[file] = count  # shown as `Cell In[n]`, without its text
        return file, line
    if cell is not None and cell.root and not Path(file).is_absolute():
        local = Path(cell.root) / file
        if local.is_file():
            return str(local), line
    return file, line


class _Marker(Exception):
    pass


def _frame(filename: str, line: int, name: str) -> types.TracebackType:
    """A traceback entry whose frame runs `name` at `filename`:`line` (it only raises)."""
    code = compile("raise _Marker", filename, "exec")
    code = code.replace(co_firstlineno=max(line, 1), co_name=name, co_qualname=name)
    try:
        exec(code, {"_Marker": _Marker, "__name__": "__remote__"})
    except _Marker as exc:
        made = exc.__traceback__
    return made.tb_next  # type: ignore[union-attr,return-value]
