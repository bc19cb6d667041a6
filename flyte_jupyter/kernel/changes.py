""" "changed since the last run of this cell": one line in a `%%flyte_run` cell's status display
saying why its version changed, from what this kernel sent (nothing is read back from the store)."""

from __future__ import annotations

import hashlib
from typing import Any

from ..core.cells import PreparedCell
from ..core.rundiff import Snapshot, compare
from ..core.submit import Run

_CELLS_KEPT = 200
"""Snapshots hold a bundle's file list: bounded, so a long session does not grow forever."""


class CellChanges:
    """The last run of each cell this kernel ran, by JupyterLab's cell id (the cell's code
    where the front end sends none), to compare the next run of that cell with."""

    def __init__(self) -> None:
        self.last: dict[str, Snapshot] = {}

    def note(self, cell_key: str, run: Run, prepared: PreparedCell) -> str | None:
        """The line to show, or None for a cell's first run or a run where nothing changed."""
        now = _snapshot(run, prepared)
        before = self.last.pop(cell_key, None)
        self.last[cell_key] = now  # most recent last: the oldest cells are dropped first
        while len(self.last) > _CELLS_KEPT:
            del self.last[next(iter(self.last))]
        if before is None:
            return None
        diff = compare(before, now)
        if diff.same_code and not diff.inputs:
            return None
        return (
            f"changed since the last run of this cell ({before.run_id}): {diff.short()}; "
            f"flyte-jupyter runs diff {before.run_id} {run.id} shows more"
        )


def cell_id(shell: Any) -> str | None:
    """JupyterLab and Notebook 7 send the cell's id with each execution; a terminal does not."""
    header = getattr(shell, "parent_header", None) or {}
    found = (header.get("metadata") or {}).get("cellId")
    return found if isinstance(found, str) and found else None


def cell_key(shell: Any, code: str) -> str:
    """The cell's id where the front end sends one, else its code."""
    found = cell_id(shell)
    return f"id:{found}" if found else "code:" + hashlib.sha256(code.encode()).hexdigest()


def _snapshot(run: Run, prepared: PreparedCell) -> Snapshot:
    bundle = prepared.bundle
    return Snapshot(
        run.id,
        run.spec.digest,
        run.spec.version,
        {e.path: (e.size, e.sha256) for e in bundle.entries},
        prepared.slice.module_text,
        dict(prepared.inputs),
        run.spec.to_json(),
    )
