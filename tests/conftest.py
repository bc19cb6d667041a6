"""Shared fixtures: real file trees in temporary directories and an isolated cache."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own cache dir, so archives and hashes never leak between tests."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(cache))
    return cache


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create `files` (relative path -> text or bytes) under `root`; text is dedented."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"))
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Callable[..., Path]:
    """`tree({"app.py": "...", ...}, name="project")` builds a real file tree."""

    def make(files: dict[str, str | bytes], name: str = "project") -> Path:
        return write_tree(tmp_path / name, files)

    return make
