"""What never ships: the standard ignore list, secrets, and `.gitignore`/`.flyteignore` files.

Patterns use gitignore semantics (pathspec's `GitIgnoreSpec`), so a user's existing
`.gitignore` means the same thing here as it does to git, nested files included.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
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
_SECRET_FILES = [p for p in SECRET_PATTERNS if "/" not in p]
_SECRET_PAIRS = {
    tuple(p.split("/")): p for p in SECRET_PATTERNS if "/" in p and not p.endswith("/")
}
_SECRET_PAIR_NAMES = frozenset(name for _, name in _SECRET_PAIRS)


def _literal_ends(pattern: str) -> tuple[str, str]:
    """The literal text before a glob's first wildcard and after its last one."""
    wild = [i for i, c in enumerate(pattern) if c in "*?[]"]
    return (pattern[: wild[0]], pattern[wild[-1] + 1 :]) if wild else (pattern, pattern)


_SECRET_NAME_ENDS = [_literal_ends(p) for p in _SECRET_FILES]
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


@functools.cache
def _secret_file_regexes() -> tuple[re.Pattern[str], list[tuple[str, re.Pattern[str]]]]:
    """Compiled on first use: most runs meet no name that passes the prefix and suffix test."""
    return _names_regex(_SECRET_FILES), [(p, _names_regex([p])) for p in _SECRET_FILES]


def _secret_name(name: str) -> str | None:
    if not (name.startswith(_SECRET_PREFIXES) or name.endswith(_SECRET_SUFFIXES)):
        return None
    any_secret, each_secret = _secret_file_regexes()
    if not any_secret.match(name):
        return None
    pattern = next(p for p, regex in each_secret if regex.match(name))
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


def glob_spec(patterns: list[str] | tuple[str, ...], option: str) -> pathspec.GitIgnoreSpec:
    """Compile user globs (`--include`/`--exclude`, named by `option`) with gitignore syntax;
    one that pathspec cannot read is one UsageError naming it."""
    spec, bad = _compile(patterns)
    if bad:
        raise UsageError(
            f"{option} {bad[0]!r} is not a valid glob (gitignore syntax): fix or drop it"
        )
    return spec


def _compile(lines: list[str] | tuple[str, ...]) -> tuple[pathspec.GitIgnoreSpec, list[str]]:
    """The spec of the lines pathspec can read, and the ones it cannot."""
    import pathspec  # ~10 ms: loaded only when there are globs or ignore files to match

    try:
        return pathspec.GitIgnoreSpec.from_lines(lines), []
    except ValueError:  # pathspec's pattern errors are ValueErrors, in every version
        good, bad = [], []
        for line in lines:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except ValueError:
                bad.append(line)
            else:
                good.append(line)
        return pathspec.GitIgnoreSpec.from_lines(good), bad


def matcher(spec: pathspec.GitIgnoreSpec | None) -> Callable[[str], bool] | None:
    """`spec.match_file`, asked only about the paths `may_match` lets through; None without
    a spec."""
    if spec is None:
        return None
    quick = may_match(spec)
    return lambda path: quick(path) and spec.match_file(path)


def may_match(spec: pathspec.GitIgnoreSpec) -> Callable[[str], bool]:
    """A quick test that is False only for paths no pattern of `spec` matches: call the spec
    on the others only (a spec checks its patterns one by one, ~1 us each, per path)."""
    prefilter = _Prefilter.of(spec)
    return prefilter.may_match if prefilter is not None else _anything


def _anything(path: str) -> bool:
    return True


def is_literal(pattern: str) -> bool:
    """A pattern that names one path exactly: how a user opts a secret file back in."""
    return not any(c in pattern for c in "*?[!")


_ANY_FOLDER = "^(?:.+/)?"
"""How pathspec starts the regex of a pattern that may match below any folder."""
_NAME_ENDS = {
    "(?:(?P<ps_d>/)|$)": "(?:/|$)",
    "(?P<ps_d>/)": "/",
    "(?:(?P<ps_d>/).*)?$": "(?:/|$)",
    "(?P<ps_d>/).*$": "/",
}
"""How pathspec (1.x, then 0.12) ends the regex of a file-or-folder / folder-only pattern ->
an ending without the named group (a union may not repeat a group name) that accepts at
least the same names."""
_ONE_NAME = (
    r"(?:\\[^0-9A-Za-z/]|[^\\\[\](){}.*+?^$|/]|\[\^/\][*+]?|\[[^\]^\-/\\\[][^\]\-/\\\[]*\])+"
)
"""Regex text that can match no "/": escaped punctuation, plain characters, `[^/]`, `[^/]*`,
`[^/]+` and positive classes without "/", "-" or escapes. What pathspec makes of a name glob."""
_NAMED_GROUP = r"(?<!\\)\(\?P<\w+>"
_GROUP_REFERENCE = r"\\[1-9]|\(\?\("
"""A numbered back-reference or conditional: its meaning would change inside a union."""
_compiled = functools.cache(re.compile)
"""The three above, compiled on first use: only ignore files and --include/--exclude globs
need them, not every bundle."""


class _Prefilter:
    """Rules out, cheaply, the paths that no pattern of one ignore file can match (nearly
    all of them), so only the rest pay for pathspec's pattern-by-pattern check, which then
    decides exactly as before. A pattern naming one path component anywhere (`*.pyc`,
    `build/`, `.env`) can only match where a component starts, so it is tried on each folder
    name once per folder and on each path's last name; any other pattern is tried whole."""

    def __init__(self, names: re.Pattern[str] | None, paths: re.Pattern[str] | None):
        self.names = names
        self.paths = paths
        self.folders: dict[str, bool] = {}

    @classmethod
    def of(cls, spec: pathspec.GitIgnoreSpec) -> _Prefilter | None:
        """The prefilter of `spec`; None when its regexes are not in a form this reads (then
        every path goes to pathspec)."""
        names, paths = [], []
        try:
            for pattern in spec.patterns:
                if pattern.include is None:
                    continue
                regex = pattern.regex
                if regex.flags != re.UNICODE or _compiled(_GROUP_REFERENCE).search(regex.pattern):
                    return None
                name = _name_regex(regex.pattern)
                if name is not None:
                    names.append(name)
                else:
                    paths.append(_compiled(_NAMED_GROUP).sub("(?:", regex.pattern))
            return cls(_union(names), _union(paths))
        except (AttributeError, re.error):
            return None

    def may_match(self, path: str) -> bool:
        """False only when no pattern matches `path` (as given to `check_file`)."""
        if path.startswith(("/", "./")):
            return True  # pathspec matches it with that start removed
        if self.paths is not None and self.paths.search(path):
            return True
        if self.names is None:
            return False
        folder, _, name = path.rstrip("/").rpartition("/")
        if self.names.match(name + "/" if path.endswith("/") else name):
            return True
        if not folder:
            return False
        hit = self.folders.get(folder)
        if hit is None:
            hit = self.folders[folder] = any(
                self.names.match(part + "/") for part in folder.split("/")
            )
        return hit


if TYPE_CHECKING:
    _Spec = tuple[pathspec.GitIgnoreSpec, _Prefilter | None]


def _name_regex(text: str) -> str | None:
    """For the regex of a pattern matching one whole path component anywhere (as pathspec
    writes it), that match from the component's start, without the named group; else None."""
    if text.startswith(_ANY_FOLDER):
        for end, plain_end in _NAME_ENDS.items():
            if text.endswith(end):
                name = text[len(_ANY_FOLDER) : -len(end)]
                return name + plain_end if name and _compiled(_ONE_NAME).fullmatch(name) else None
    return None


def _union(regexes: list[str]) -> re.Pattern[str] | None:
    if not regexes:
        return None
    with warnings.catch_warnings():  # pathspec already warned about each regex
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile("|".join(f"(?:{r})" for r in regexes))


class IgnoreTree:
    """`.gitignore` and `.flyteignore` files found while walking a tree, each applying to the
    directory it sits in and below; deeper files override shallower ones, as in git."""

    def __init__(self, root: Path):
        self.root = root
        self.skipped: list[str] = []
        """Ignore-file lines that are not valid patterns: left out (git never fails on them)."""
        self._specs: dict[str, _Spec] = {}
        self._by_folder: dict[str, list[tuple[int, _Spec]]] = {}
        """Folder -> the ignore files applying to its entries, outermost first, each with the
        length of the path prefix to cut (paths are matched relative to the ignore file)."""

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
                own = path.read_text(encoding="utf-8", errors="replace").splitlines()
                shown = f"{rel_dir}/{name}" if rel_dir else name
                self.skipped += [f"{shown}: {line!r}" for line in _compile(own)[1]]
                lines += own
        if lines:
            spec = _compile(lines)[0]
            self._specs[rel_dir] = (spec, _Prefilter.of(spec))
            self._by_folder.clear()

    def is_ignored(self, rel_path: str, is_dir: bool = False) -> bool:
        """Whether the loaded ignore files exclude `rel_path` (POSIX, relative to the root)."""
        if not self._specs:
            return False
        folder = rel_path.rpartition("/")[0]
        applying = self._by_folder.get(folder)
        if applying is None:
            applying = self._by_folder[folder] = self._applying(folder)
        ignored = False
        for cut, (spec, prefilter) in applying:
            sub = rel_path[cut:] + "/" if is_dir else rel_path[cut:]
            if prefilter is not None and not prefilter.may_match(sub):
                continue  # no pattern matches: the path stays as the outer files left it
            result = spec.check_file(sub)
            if result.include is not None:
                ignored = result.include
        return ignored

    def _applying(self, folder: str) -> list[tuple[int, _Spec]]:
        parts = folder.split("/") if folder else []
        out = []
        for depth in range(len(parts) + 1):
            where = "/".join(parts[:depth])
            found = self._specs.get(where)
            if found is not None:
                out.append((len(where) + 1 if where else 0, found))
        return out
