"""What never ships: the standard ignore list, secrets, and `.gitignore`/`.flyteignore` files.

Patterns use gitignore semantics (pathspec's `GitIgnoreSpec`), so a user's existing
`.gitignore` means the same thing here as it does to git, nested files included.
"""

from __future__ import annotations

import fnmatch
import functools
import re
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
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".ssh/",
    ".aws/",
    ".netrc",
    "*.p12",
    "credentials*.json",
    "*service[-_]account*.json",
    "token.json",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    ".htpasswd",
    ".docker/config.json",
    ".kube/config",
    ".streamlit/secrets.toml",
)
"""Secrets never ship unless named exactly in include. A pattern ending in "/" is a directory
whose whole content is secret; "dir/name" is a file in a directory of that name, anywhere;
any other pattern is a file name. SSH public keys (`id_*.pub`) are not secrets."""

_PUBLIC_KEY = ".pub"

# Every built-in pattern names one path component (or a parent/name pair), so matching names
# is exact and much faster than general gitignore matching on each of thousands of paths.


def _names_regex(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(p.rstrip("/")) for p in patterns))


_STANDARD_DIR = _names_regex([p for p in STANDARD_IGNORES if p.endswith("/")])
_STANDARD_FILE = _names_regex([p for p in STANDARD_IGNORES if not p.endswith("/")])
_SECRET_DIRS = [(p, _names_regex([p])) for p in SECRET_PATTERNS if p.endswith("/")]
_SECRET_FILES = [(p, _names_regex([p])) for p in SECRET_PATTERNS if "/" not in p]
_SECRET_PAIRS = {
    tuple(p.split("/")): p for p in SECRET_PATTERNS if "/" in p and not p.endswith("/")
}
_SECRET_FILE_ANY = _names_regex([p for p, _ in _SECRET_FILES])
_SECRET_PAIR_NAMES = frozenset(name for _, name in _SECRET_PAIRS)


def _literal_ends(pattern: str) -> tuple[str, str]:
    """The literal text before a glob's first wildcard and after its last one."""
    wild = [i for i, c in enumerate(pattern) if c in "*?[]"]
    return (pattern[: wild[0]], pattern[wild[-1] + 1 :]) if wild else (pattern, pattern)


_SECRET_NAME_ENDS = [_literal_ends(p) for p, _ in _SECRET_FILES]
_SECRET_PREFIXES = tuple(start for start, _ in _SECRET_NAME_ENDS if start)
_SECRET_SUFFIXES = tuple(end for start, end in _SECRET_NAME_ENDS if not start)
"""A name can match a secret file pattern only if it starts with one of these prefixes or
(for patterns starting with a wildcard) ends with one of these suffixes: two string checks
rule out almost every name before any regex runs."""


def is_standard_name(name: str, is_dir: bool = False) -> bool:
    """True for a file or directory name on the always-excluded list."""
    return bool((_STANDARD_DIR if is_dir else _STANDARD_FILE).match(name))


is_standard_file_name = _STANDARD_FILE.match
"""`is_standard_name(name)` without a call in between, for walks over thousands of names."""
is_standard_dir_name = _STANDARD_DIR.match
"""`is_standard_name(name, is_dir=True)` without a call in between."""


def is_standard_ignored(rel_path: str, is_dir: bool = False) -> bool:
    """True for paths on the always-excluded list (VCS data, caches, virtualenvs, builds)."""
    *dirs, name = rel_path.split("/")
    return any(_STANDARD_DIR.match(d) for d in dirs) or is_standard_name(name, is_dir)


@functools.lru_cache(maxsize=4096)
def _secret_dir(rel_dir: str) -> str | None:
    for pattern, regex in _SECRET_DIRS:
        if any(regex.match(d) for d in rel_dir.split("/")):
            return pattern
    return None


def _secret_name(name: str) -> str | None:
    if not (name.startswith(_SECRET_PREFIXES) or name.endswith(_SECRET_SUFFIXES)):
        return None
    if not _SECRET_FILE_ANY.match(name):
        return None
    pattern = next(p for p, regex in _SECRET_FILES if regex.match(name))
    if pattern.startswith("id_") and name.endswith(_PUBLIC_KEY):
        return None
    return pattern


def secret_pattern(rel_path: str) -> str | None:
    """The secrets-guard pattern that `rel_path` matches, if any."""
    rel_dir, _, name = rel_path.rpartition("/")
    found = _secret_dir(rel_dir) if rel_dir else None
    if found is None:
        found = _secret_name(name)
    if found is None and rel_dir and name in _SECRET_PAIR_NAMES:
        found = _SECRET_PAIRS.get((rel_dir.rpartition("/")[2], name))
    return found


def secret_pattern_anywhere(rel_path: str) -> str | None:
    """Like `secret_pattern`, but any component may match any pattern: for what a symlink
    points at, where `docs.txt -> .env` or `notes -> .ssh/id_rsa` must not ship a secret."""
    parts = rel_path.split("/")
    for i, part in enumerate(parts):
        found = _secret_dir(part) or _secret_name(part) or secret_pattern("/".join(parts[: i + 1]))
        if found:
            return found
    return None


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

    @property
    def active(self) -> bool:
        """Whether any ignore file was loaded: without one, nothing needs matching."""
        return bool(self._specs)

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
        if not self._specs:
            return False
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
