"""Running a notebook cell remotely: the entry point `%%flyte_run` submits.

The generated module (`_flyte_notebook.cell_<hash>`) holds the notebook definitions the cell
needs plus the cell's own source. The cell runs as module-level code in that module's
namespace, as it would in the kernel: data inputs become globals, the last expression is the
cell's value, and the names it assigns come back.
"""

from __future__ import annotations

import ast
import importlib
import linecache
import pickle
from typing import Any

from .values import dumps, summarize

ENTRY = "flyte_jupyter.runtime.cells:run_cell"
"""The entry point a notebook cell run calls."""

CELL_FILE = "<notebook cell>"
"""The cell body's file name in remote tracebacks. The shipped module holds no cell label
(that would change the bundle on every re-run); the client maps this name to `In[n]`."""


def import_attribute(module: str, name: str) -> Any:
    """Unpickling helper: notebook classes travel by reference to the generated module."""
    return getattr(importlib.import_module(module), name)


def run_cell(module: str, values: dict[str, bytes]) -> dict[str, Any]:
    """Execute the cell of generated `module` with `values` (each pickled on its own by the
    client) as globals.

    Returns `{"values": {name: pickled bytes}, "out": pickled bytes or None (no last
    expression), "skipped": {name: reason}, "summary": text for outputs.json}`. Each value is
    pickled on its own, so one that cannot travel back (an open file, a generator) is reported
    instead of failing the run.
    """
    namespace = importlib.import_module(module).__dict__
    namespace.update({name: pickle.loads(blob) for name, blob in values.items()})
    source: str = namespace["CELL_SOURCE"]
    linecache.cache[CELL_FILE] = (len(source), None, source.splitlines(keepends=True), CELL_FILE)
    tree = ast.parse(source, CELL_FILE)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, CELL_FILE, "exec"), namespace)
    out = eval(compile(last, CELL_FILE, "eval"), namespace) if last is not None else None
    skipped: dict[str, str] = {}
    summaries: dict[str, dict[str, Any]] = {}

    def pack(name: str, value: Any) -> bytes | None:
        try:
            blob = dumps(value)
        except Exception as exc:  # anything pickling raises means "cannot travel back"
            skipped[name] = f"{type(value).__name__}: {exc}"
            return None
        summaries[name] = summarize(value, len(blob))
        return blob

    assigned = {n: pack(n, namespace[n]) for n in namespace["ASSIGNED"] if n in namespace}
    values = {n: blob for n, blob in assigned.items() if blob is not None}
    out = pack(_OUT, out) if last is not None else None
    summary = {
        "value": summaries.pop(_OUT, None),
        "values": {n: summaries[n] for n in values},
        "assigned": sorted(values),
        "skipped": skipped,
    }
    return {"values": values, "out": out, "skipped": skipped, "summary": summary}


_OUT = "the cell's value"


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """outputs.json of a cell run: the cell's value and each assigned name, as text."""
    return result["summary"]


run_cell.summarize = _summary  # type: ignore[attr-defined]  # read by execute.summarize_result
