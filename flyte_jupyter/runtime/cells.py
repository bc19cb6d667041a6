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

from .values import pickled_size, summarize

ENTRY = "flyte_jupyter.runtime.cells:run_cell"
"""The entry point a notebook cell run calls."""

CELL_FILE = "<notebook cell>"
"""The cell body's file name in remote tracebacks. The shipped module holds no cell label
(that would change the bundle on every re-run); the client maps this name to `In[n]`."""

CELL_SOURCE = "__flyte_cell_source__"
"""The generated module's name for the cell's own code, which the runtime compiles as
CELL_FILE; dunder names, so no notebook variable shadows it (or ASSIGNED)."""
ASSIGNED = "__flyte_assigned__"
"""The generated module's name for the names the cell assigns: what comes back."""


def import_attribute(module: str, name: str) -> Any:
    """Unpickling helper: notebook classes travel by reference to the generated module."""
    return getattr(importlib.import_module(module), name)


def run_cell(
    module: str, objects: dict[str, Any] | None = None, values: dict[str, bytes] | None = None
) -> dict[str, Any]:
    """Execute the cell of generated `module` with its data inputs as globals: `objects`, the
    values themselves (unpickled from the inputs file as it was read, so a big one is held
    once), or `values`, each pickled on its own (runs submitted by older clients).

    Returns `{"objects": {name: value}, "out": the last expression's value, "has_out": bool,
    "skipped": {name: reason}, "summary": text for outputs.json}`, pickled by the runtime
    straight into the outputs file. Each value is first pickled on its own into a sink that
    keeps no bytes, so one that cannot travel back (an open file, a generator) is reported
    instead of failing the run, and its size is known without a second copy.
    """
    namespace = importlib.import_module(module).__dict__
    source: str = namespace[CELL_SOURCE]
    names: list[str] = namespace[ASSIGNED]
    namespace.update(objects or {})
    namespace.update({name: pickle.loads(blob) for name, blob in (values or {}).items()})
    linecache.cache[CELL_FILE] = (len(source), None, source.splitlines(keepends=True), CELL_FILE)
    tree = ast.parse(source, CELL_FILE)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, CELL_FILE, "exec"), namespace)
    out = eval(compile(last, CELL_FILE, "eval"), namespace) if last is not None else None
    skipped: dict[str, str] = {}
    summaries: dict[str, dict[str, Any]] = {}

    def travels(name: str, value: Any) -> bool:
        try:
            size = pickled_size(value)
        except Exception as exc:  # anything pickling raises means "cannot travel back"
            skipped[name] = f"{type(value).__name__}: {exc}"
            return False
        summaries[name] = summarize(value, size)
        return True

    assigned = [n for n in names if n in namespace]
    back = {n: namespace[n] for n in assigned if travels(n, namespace[n])}
    has_out = last is not None and travels(_OUT, out)
    summary = {
        "value": summaries.pop(_OUT, None),
        "values": {n: summaries[n] for n in back},
        "assigned": sorted(back),
        "skipped": skipped,
    }
    return {
        "objects": back,
        "out": out if has_out else None,
        "has_out": has_out,
        "skipped": skipped,
        "summary": summary,
    }


_OUT = "the cell's value"


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """outputs.json of a cell run: the cell's value and each assigned name, as text."""
    return result["summary"]


run_cell.summarize = _summary  # type: ignore[attr-defined]  # read by execute.summarize_result
