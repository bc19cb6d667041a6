"""What never ships: the standard ignore list, secrets, and `.gitignore`/`.flyteignore` files.

Patterns use gitignore semantics (pathspec's `GitIgnoreSpec`), so a user's existing
`.gitignore` means the same thing here as it does to git, nested files included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pathspec

IGNORE_FILES = (".gitignore", ".flyteignore")

STANDARD_IGNORES = (
    ".git/",
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".venv/",
    "venv/",
    "env/",
    "*.egg-info/",
    "dist/",
    "build/",
    ".ipynb_checkpoints/",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".tox/",
    ".nox/",
    "node_modules/",
    ".DS_Store",
)

SECRET_PATTERNS = (
    ".env*",
    "*.pem",
    "*.key",
    "id_rsa*",
    ".ssh/",
    ".aws/",
    ".netrc",
    "*.p12",
    "credentials*.json",
)

_standard_spec = pathspec.GitIgnoreSpec.from_lines(STANDARD_IGNORES)
_secret_spec = pathspec.GitIgnoreSpec.from_lines(SECRET_PATTERNS)


def is_standard_ignored(rel_path: str, is_dir: bool = False) -> bool:
    """True for paths on the always-excluded list (VCS data, caches, virtualenvs, builds)."""
    return _standard_spec.match_file(rel_path + "/" if is_dir else rel_path)


def secret_pattern(rel_path: str) -> str | None:
    """The secrets-guard pattern that `rel_path` matches, if any."""
    result = _secret_spec.check_file(rel_path)
    return SECRET_PATTERNS[result.index] if result.include else None


def glob_spec(patterns: list[str] | tuple[str, ...]) -> pathspec.GitIgnoreSpec:
    """Compile user globs (`--include`/`--exclude`) with gitignore syntax."""
    return pathspec.GitIgnoreSpec.from_lines(patterns)


def is_literal(pattern: str) -> bool:
    """A pattern that names one path exactly: how a user opts a secret file back in."""
    return not any(c in pattern for c in "*?[!")


@dataclass
class IgnoreTree:
    """`.gitignore` and `.flyteignore` files found while walking a tree, each applying to the
    directory it sits in and below; deeper files override shallower ones, as in git."""

    root: Path
    _specs: dict[str, pathspec.GitIgnoreSpec] = field(default_factory=dict)

    def load_dir(self, rel_dir: str) -> None:
        """Read the ignore files of directory `rel_dir` (POSIX, "" for the root)."""
        lines: list[str] = []
        for name in IGNORE_FILES:
            path = self.root / rel_dir / name
            if path.is_file():
                lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        if lines:
            self._specs[rel_dir] = pathspec.GitIgnoreSpec.from_lines(lines)

    def is_ignored(self, rel_path: str, is_dir: bool = False) -> bool:
        """Whether the loaded ignore files exclude `rel_path` (POSIX, relative to the root)."""
        ignored = False
        parts = rel_path.split("/")
        for depth in range(len(parts)):
            spec = self._specs.get("/".join(parts[:depth]))
            if spec is None:
                continue
            sub = "/".join(parts[depth:]) + ("/" if is_dir else "")
            result = spec.check_file(sub)
            if result.include is not None:
                ignored = result.include
        return ignored
