"""A notebook cell as a run: slice it, bundle it with the project code it needs, submit it,
and turn its result back into namespace values. Front-door agnostic: the magics and the
sidebar call this with a namespace dict and settings; nothing here imports IPython."""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import cloudpickle

from ..runtime import cells as remote_cells
from ..runtime.values import Sink
from .bundle import Bundle, build_bundle
from .config import Setting, resolve_image
from .environment import foreign_dirs
from .errors import RemoteError
from .executors.registry import executor_options
from .notebook import (
    GENERATED_PACKAGE,
    CellSlice,
    LineMap,
    NotebookError,
    NotebookState,
    slice_cell,
)
from .selection import select_files
from .storage import Progress, Store
from .submit import Run, submit

ENTRY = remote_cells.ENTRY


@dataclass
class PreparedCell:
    slice: CellSlice
    bundle: Bundle
    inputs: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Each data input's pickled size and sha256, from checking here that it can travel; no
    pickle is kept (submit pickles the values straight into the store)."""

    @property
    def payload_sizes(self) -> dict[str, int]:
        return {name: size for name, (size, _) in self.inputs.items()}


@cache
def resolved_file(file: str) -> Path:
    """A module file's real path, resolved once per process (a kernel asks on every run)."""
    return Path(file).resolve()


def local_module_files(root: Path, names: Iterable[str]) -> list[str]:
    """Files under root_dir of the loaded modules `names` (and their parent packages): the
    local modules that unpickling a cell's inputs imports. Flyte ships every loaded local
    module; here the rest reach the bundle through the import graph only, so a cell that
    merely imports another local module does not change other cells' bundles."""
    foreign = foreign_dirs(root)
    parts = [name.split(".") for name in names]
    wanted = {".".join(p[:i]) for p in parts for i in range(1, len(p) + 1)}
    out = []
    for name in sorted(wanted):
        file = getattr(sys.modules.get(name), "__file__", None)
        if not file or not file.endswith(".py"):
            continue
        path = resolved_file(file)
        if path.is_relative_to(root) and not any(path.is_relative_to(d) for d in foreign):
            out.append(str(path))
    return sorted(out)


def prepare_cell(
    state: NotebookState,
    source: str,
    label: str,
    namespace: Mapping[str, Any],
    settings: Mapping[str, Setting],
    root: Path,
    *,
    hidden: Iterable[str] = (),
    dry_run: bool = False,
) -> PreparedCell:
    """Slice the cell, check its inputs can travel, and build its bundle."""
    cell = slice_cell(state, source, label, namespace, hidden)
    referenced: set[str] = set()
    inputs = {}
    for name, value in list(cell.values.items()):
        try:
            inputs[name] = check_value(cell, value, name, referenced)
        except NotebookError:
            if name not in cell.optional:
                raise
            del cell.values[name]  # the cell rebinds it before any read, or fails as locally
    value = {k: s.value for k, s in settings.items()}
    cells = ", ".join(dict.fromkeys(d.cell for d in cell.definitions)) or "none"
    generated = {
        f"{GENERATED_PACKAGE}/__init__.py": ("", "notebook package"),
        cell.module_path: (cell.module_text, f"{label}; definitions from {cells}"),
    }
    style = value["copy_style"]
    selection = select_files(
        root,
        copy_style=style,
        include=value["include"],
        exclude=value["exclude"],
        lazy_imports=value["lazy_imports"],
        loaded_modules=local_module_files(root, referenced) if style == "auto" else (),
        version=value["version"],
        max_bytes=int(value["max_size_mb"] * 1024 * 1024),
        generated=generated,
    )
    return PreparedCell(cell, build_bundle(selection, dry_run=dry_run), inputs)


def submit_cell(
    prepared: PreparedCell,
    settings: Mapping[str, Setting],
    name: str | None,
    progress: Progress | None = None,
    cell_id: str | None = None,
) -> Run:
    """Submit a prepared cell; the history records its label and JupyterLab's `cell_id`. The
    values are pickled (as `check_value` did) straight into the inputs file."""
    value = {k: s.value for k, s in settings.items()}
    cell = prepared.slice

    def dump(inputs: Any, file: BinaryIO) -> None:
        _NotebookPickler(file, cell, set()).dump(inputs)

    return submit(
        prepared.bundle,
        ENTRY,
        kwargs={"module": cell.module_name, "objects": cell.values},
        dump=dump,
        input_digests=prepared.inputs,
        store=Store(value["store"], value["storage_options"]),
        executor=value["executor"],
        executor_options=executor_options(value["executor"], value),
        image=resolve_image(value["image"], value["images"]),
        env=value["env"],
        name=name,
        version=value["version"],
        progress=progress,
        cell=cell.label,
        cell_id=cell_id,
    )


class _NotebookPickler(cloudpickle.Pickler):
    """cloudpickle, except that the notebook's own functions and classes travel by reference
    to the generated module, so remote code sees one class, not a by-value copy."""

    def __init__(self, file: BinaryIO, cell: CellSlice, modules: set[str]):
        super().__init__(file, protocol=pickle.DEFAULT_PROTOCOL)
        self.cell = cell
        self.names = {n for d in cell.definitions for n in d.names}
        self.modules = modules
        """Filled with the modules of every class and function met: what unpickling imports."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            self.modules.add(obj.__name__)
        else:
            owner = obj if isinstance(obj, type | types.FunctionType) else type(obj)
            module = getattr(owner, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module)
        if (
            getattr(obj, "__module__", None) == "__main__"
            and isinstance(obj, type | type(lambda: 0))
            and getattr(obj, "__qualname__", "") in self.names
        ):
            return remote_cells.import_attribute, (self.cell.module_name, obj.__qualname__)
        return super().reducer_override(obj)


def check_value(cell: CellSlice, value: Any, name: str, modules: set[str]) -> tuple[int, str]:
    """The size and sha256 of `value` pickled for the run, into a sink that keeps no bytes (a
    big value is not copied); adds the modules unpickling it imports to `modules`."""
    sink = Sink(hashlib.sha256())
    try:
        _NotebookPickler(sink, cell, modules).dump(value)
    except Exception as exc:  # any pickling failure means the same thing to the user
        raise NotebookError(
            f"{name!r} ({type(value).__name__}) cannot be sent to the run: {exc}. "
            "Recreate it inside the cell instead (open files, sockets, generators and locks "
            "cannot travel)."
        ) from exc
    return sink.size, sink.digest.hexdigest()


class _NotebookUnpickler(pickle.Unpickler):
    """Objects of notebook-defined classes come back as instances of the notebook's class."""

    def __init__(self, file: BinaryIO, namespace: Mapping[str, Any]):
        super().__init__(file)
        self.namespace = namespace

    def find_class(self, module: str, name: str) -> Any:
        generated = module == GENERATED_PACKAGE or module.startswith(GENERATED_PACKAGE + ".")
        if generated and name in self.namespace:
            return self.namespace[name]
        return super().find_class(module, name)


@dataclass
class CellResult:
    values: dict[str, Any]
    out: Any
    has_out: bool
    skipped: dict[str, str]


def cell_result(
    run: Run,
    namespace: Mapping[str, Any],
    line_map: LineMap | None,
    timeout: float | None = None,
) -> CellResult:
    """Wait for the run; unpickle its values straight from the outputs (RemoteError, mapped to
    the notebook's current cell lines by the client-side `line_map`, if the cell raised)."""
    try:
        raw = run.result(timeout=timeout, load=lambda f: _NotebookUnpickler(f, namespace).load())
    except RemoteError as exc:
        if line_map is not None:
            exc.remote_traceback = line_map.apply(exc.remote_traceback)
        raise
    if "objects" in raw:
        return CellResult(raw["objects"], raw["out"], raw["has_out"], raw["skipped"])

    def load(blob: bytes) -> Any:  # a run from an older runtime: each value pickled on its own
        return _NotebookUnpickler(io.BytesIO(blob), namespace).load()

    values = {name: load(blob) for name, blob in raw["values"].items()}
    has_out = raw["out"] is not None
    return CellResult(values, load(raw["out"]) if has_out else None, has_out, raw["skipped"])
