"""Imports from the shared extraction are checked against its snapshot as they happen.

The tree is compared with its snapshot when a run starts, but a process an earlier run left
behind can still rewrite a module afterwards, before this run imports it. So each module
file (and its cached bytecode) under the extraction is compared with the snapshot taken when
the tree was verified at the moment it is imported; a changed or added file is refused, and
the run fails naming it instead of running code that is not the bundle. Files the code opens
as data are not checked here (the post-run check discards a changed tree).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .extract import Snapshot, recorded_snapshot, stat_entry


class ChangedSinceVerified(ImportError):
    """A module file of the extraction is not the one that was verified."""


class VerifiedImports(importlib.abc.MetaPathFinder):
    """Finds modules as the path finder does, and refuses one under `root` whose file no
    longer matches the snapshot."""

    def __init__(self, root: Path, snapshot: Snapshot):
        self.root = str(root.resolve()) + os.sep
        self.snapshot = snapshot

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> Any:
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or not spec.has_location or not (spec.origin or "").startswith(self.root):
            return None  # not from the bundle: the finders after this one decide as usual
        for file in (spec.origin, spec.cached):
            if file and file.startswith(self.root):
                self._check(file)
        return spec

    def _check(self, file: str) -> None:
        rel = file[len(self.root) :].replace(os.sep, "/")
        try:
            current = stat_entry(os.stat(file, follow_symlinks=False))
        except FileNotFoundError:
            return  # bytecode removed: the verified source is compiled instead
        if current != self.snapshot.get(rel):
            raise ChangedSinceVerified(
                f"{rel} changed since the bundle was verified (a process an earlier run left "
                "behind may be writing to it): it was not run. Stop that process and run again; "
                "the bundle is fetched again",
                path=file,
            )


def install(root: Path) -> None:
    """Check imports from the extraction `root` (replacing the check of an earlier root in
    this process), just before the path finder so every other finder keeps its place."""
    snapshot = recorded_snapshot(root)
    if snapshot is None:
        return
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, VerifiedImports)]
    at = next(
        (i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder),
        len(sys.meta_path),
    )
    sys.meta_path.insert(at, VerifiedImports(root, snapshot))
