"""Static import graph: which modules a Python source imports, found with `ast`.

Flyte's `auto` copy style only sees modules that were imported when the task
module loaded, so an import inside a function ("lazy import") is silently left
out and fails remotely. Reading the source instead finds those too, and the extra
files a Flyte environment declares with `include=` (`IncludeDecl`).
"""

from __future__ import annotations

import ast
import importlib.machinery
import io
import os
import tokenize
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

_IMPORT_FUNCS = {"import_module", "__import__"}
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


# Named tuples, not dataclasses: each dataclass costs every bundle ~0.5 ms to build at import.
class ImportRef(NamedTuple):
    """One import statement (or `importlib.import_module` call) in a source file."""

    lineno: int
    module: str | None
    """Absolute or relative (leading dots) module name; None for a non-literal dynamic import."""
    names: tuple[str, ...] = ()
    """For `from m import a, b`: `a` and `b`, which may be submodules of `m`."""
    lazy: bool = False
    """Inside a function or method body: not run when the module is imported."""
    optional: bool = False
    """Guarded by `try/except ImportError`: a missing module is not an error."""


class IncludeDecl(NamedTuple):
    """`include=` on a Flyte environment (`flyte.TaskEnvironment(..., include=(...))`, an app
    environment, `env.clone_with(include=...)`): files flyte bundles with the code. Paths are
    relative to the declaring file's folder (or absolute): files, folders, or glob patterns."""

    lineno: int
    call: str
    """The environment class as written, e.g. `flyte.TaskEnvironment`."""
    paths: tuple[str, ...] | None
    """None when the value is not a literal list or tuple of strings."""


_FLYTE_PACKAGES = ("flyte", "flyteplugins")
_CLONE = "clone_with"
"""`Environment.clone_with(include=...)` creates an environment declared in the calling file."""


class _Visitor(ast.NodeVisitor):
    def __init__(self) -> None:
        self.refs: list[ImportRef] = []
        self._func_depth = 0
        self._optional_depth = 0
        self.aliases: dict[str, str] = {}
        """Local name -> the dotted name it was imported as (`AE` -> `flyte.app.AppEnvironment`)."""
        self.env_calls: list[tuple[int, str, ast.expr]] = []
        """(line, dotted callee, `include=` value) of every call passing `include=`."""

    def _add(self, lineno: int, module: str | None, names: tuple[str, ...] = ()) -> None:
        self.refs.append(
            ImportRef(lineno, module, names, self._func_depth > 0, self._optional_depth > 0)
        )

    def _visit_function(self, node: ast.AST) -> None:
        self._func_depth += 1
        self.generic_visit(node)
        self._func_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            # Typing-only imports never run: not required, not an error.
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(_catches_import_error(h) for h in node.handlers)
        self._optional_depth += guarded
        for child in node.body:
            self.visit(child)
        self._optional_depth -= guarded
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(child)

    visit_TryStar = visit_Try

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node.lineno, alias.name)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "__future__":
            return
        module = "." * node.level + (node.module or "")
        self._add(node.lineno, module, tuple(a.name for a in node.names if a.name != "*"))
        if not node.level and node.module:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in _IMPORT_FUNCS and node.args:
            target = _literal_str(node.args[0])
            if target is not None and target.startswith("."):
                package = _literal_str(node.args[1]) if len(node.args) > 1 else None
                package = package or _keyword_str(node, "package")
                target = _absolutize(target, package) if package else None
            self._add(node.lineno, target)
        include = next((kw.value for kw in node.keywords if kw.arg == "include"), None)
        dotted = _dotted(func)
        if include is not None and dotted:  # the line of `include=`, in a call over many lines
            self.env_calls.append((include.lineno, dotted, include))
        self.generic_visit(node)

    def includes(self) -> list[IncludeDecl]:
        """The `include=` declarations of calls that resolve to a Flyte environment class (a
        class of the flyte packages whose name ends in `Environment`) or to `clone_with`."""
        out = []
        for lineno, dotted, value in self.env_calls:
            head, _, rest = dotted.partition(".")
            resolved = ".".join(filter(None, [self.aliases.get(head, ""), rest]))
            is_env = resolved.split(".")[0] in _FLYTE_PACKAGES and resolved.endswith("Environment")
            if is_env or dotted.endswith(f".{_CLONE}"):
                out.append(IncludeDecl(lineno, dotted, _literal_strs(value)))
        return out


def _dotted(node: ast.AST) -> str | None:
    """`a.b.C` for a call's callee made of names and attributes; None otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _literal_strs(node: ast.AST) -> tuple[str, ...] | None:
    if isinstance(node, ast.Tuple | ast.List):
        items = [_literal_str(e) for e in node.elts]
        if all(i is not None for i in items):
            return tuple(i for i in items if i is not None)
    return None


def _literal_str(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _keyword_str(node: ast.Call, name: str) -> str | None:
    for kw in node.keywords:
        if kw.arg == name:
            return _literal_str(kw.value)
    return None


def _absolutize(relative: str, package: str) -> str:
    level = len(relative) - len(relative.lstrip("."))
    base = package.split(".")
    base = base[: len(base) - (level - 1)] if level > 1 else base
    rest = relative[level:]
    return ".".join([*base, rest] if rest else base)


def _is_type_checking(test: ast.AST) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(getattr(t, "id", getattr(t, "attr", None)) in _IMPORT_ERRORS for t in types)


def scan_source(source: str | bytes, filename: str = "<source>") -> list[ImportRef]:
    """All imports in `source`, module-level and lazy, in source order.

    Raises SyntaxError for source that does not parse.
    """
    return scan(source, filename)[0]


def scan(
    source: str | bytes, filename: str = "<source>"
) -> tuple[list[ImportRef], list[IncludeDecl]]:
    """The imports of `source` (as `scan_source`) and its Flyte `include=` declarations, from
    one parse. Raises SyntaxError for source that does not parse."""
    visitor = _Visitor()
    visitor.visit(ast.parse(source, filename=filename))
    return visitor.refs, visitor.includes()


def scan_tokens(source: str | bytes) -> list[ImportRef]:
    """The imports of a file `ast` cannot parse (syntax newer than this Python, such as 3.12's
    `type X = ...` under 3.11), found with the tokenizer: `import a.b [as c], d` and
    `from x import y, z` at the start of a statement. An indented import may sit in a function
    or under `try`: it counts as lazy and optional. Text the tokenizer cannot read ends the
    scan; what was found before it is kept."""
    data = source.encode() if isinstance(source, str) else source
    tokens = tokenize.tokenize(io.BytesIO(data).readline)
    refs: list[ImportRef] = []
    statement: list[tokenize.TokenInfo] = []
    depth = indented = 0
    try:
        for token in tokens:
            if token.type in _STATEMENT_END or (token.type == tokenize.OP and token.string == ";"):
                refs += _import_statement(statement, indented > 0)
                statement = []
            elif token.type == tokenize.INDENT:
                depth += 1
            elif token.type == tokenize.DEDENT:
                depth -= 1
            elif token.type not in _IGNORED_TOKENS:
                if not statement:
                    indented = depth
                statement.append(token)
    except (tokenize.TokenError, SyntaxError):
        pass
    return refs


_STATEMENT_END = {tokenize.NEWLINE, tokenize.ENDMARKER}
_IGNORED_TOKENS = {tokenize.ENCODING, tokenize.NL, tokenize.COMMENT}


def _import_statement(tokens: list[tokenize.TokenInfo], indented: bool) -> list[ImportRef]:
    """The imports of one statement's tokens, if it is an import statement."""
    words = [t.string for t in tokens]
    if not words or words[0] not in ("import", "from"):
        return []
    lineno = tokens[0].start[0]
    refs = []
    if words[0] == "import":
        for part in " ".join(words[1:]).split(","):
            name = part.split(" as ")[0].replace(" ", "")
            if _dotted_name(name):
                refs.append(ImportRef(lineno, name, (), indented, indented))
        return refs
    if "import" not in words:
        return []
    at = words.index("import")
    module = "".join(words[1:at])
    names = " ".join(w for w in words[at + 1 :] if w not in "()").split(",")
    imported = tuple(n.split(" as ")[0].strip() for n in names)
    imported = tuple(n for n in imported if n and n != "*" and n.isidentifier())
    if module == "__future__" or not _dotted_name(module.lstrip(".") or "x"):
        return []
    return [ImportRef(lineno, module, imported, indented, indented)]


def _dotted_name(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def declared_files(pattern: str, anchor: Path) -> list[Path]:
    """The files one `include=` entry names, as flyte reads it: relative to `anchor` (the
    declaring file's folder) unless absolute; a folder ships recursively (without the
    standard ignore list: caches, virtualenvs); otherwise a glob (`glob.glob`, no `**`).
    Sorted; empty when nothing matches."""
    from .ignore import is_standard_name

    path = Path(pattern) if os.path.isabs(pattern) else anchor / pattern
    if path.is_file():
        return [path]
    if path.is_dir():
        found = []
        for folder, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not is_standard_name(d, is_dir=True))
            found += [Path(folder, n) for n in names if not is_standard_name(n)]
        return sorted(found)
    import glob  # imported here: most projects declare no include= glob

    prefix = glob.escape(str(anchor)) + os.sep if not os.path.isabs(pattern) else ""
    return sorted(Path(m) for m in glob.glob(prefix + pattern) if os.path.isfile(m))


# --- resolving module names to files -------------------------------------------------------

_SOURCE_SUFFIXES = tuple(importlib.machinery.SOURCE_SUFFIXES)
_MODULE_SUFFIXES = _SOURCE_SUFFIXES + tuple(importlib.machinery.EXTENSION_SUFFIXES)


class ModuleLocation(NamedTuple):
    """Where a module lives under a search root."""

    root: Path
    files: tuple[Path, ...]
    """Files Python executes to import it: each package `__init__.py`, then the module itself."""
    is_package: bool
    namespace_only: bool
    """Resolved only through PEP 420 namespace directories (no file at all)."""


def find_module(name: str, roots: list[Path]) -> ModuleLocation | None:
    """Locate dotted module `name` the way the import system would with `roots` on sys.path."""
    parts = name.split(".")
    if not all(parts):
        return None
    for root in roots:
        found = _find_in_root(parts, root)
        if found is not None:
            return found
    return None


def _find_in_root(parts: list[str], root: Path) -> ModuleLocation | None:
    cur = root
    files: list[Path] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        pkg_dir = cur / part
        init = pkg_dir / "__init__.py"
        if init.is_file():
            files.append(init)
            cur = pkg_dir
            continue
        module_file = next(
            (cur / (part + s) for s in _MODULE_SUFFIXES if (cur / (part + s)).is_file()), None
        )
        if module_file is not None:
            if not last:
                return None  # a plain module has no submodules
            files.append(module_file)
            return ModuleLocation(root, tuple(files), False, False)
        if pkg_dir.is_dir():
            cur = pkg_dir  # PEP 420 namespace package portion
            continue
        return None
    return ModuleLocation(root, tuple(files), True, not files)


def module_name_for(path: Path, roots: list[Path]) -> tuple[str, bool] | None:
    """Dotted name of the file at `path` under the deepest root containing it, and whether
    it is a package `__init__`. None when no root contains it."""
    for root in sorted(roots, key=lambda r: len(r.parts), reverse=True):
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        parts = list(rel.parts)
        is_init = parts[-1] == "__init__.py"
        if is_init:
            parts = parts[:-1]
        else:
            parts[-1] = parts[-1].split(".", 1)[0]
        return ".".join(parts), is_init
    return None


def absolute_targets(
    ref: ImportRef, importer: str | None, importer_is_package: bool
) -> Iterator[tuple[str, bool]]:
    """Module names an import needs, each with whether it must exist.

    `from pkg import a` needs `pkg` and may need `pkg.a` (if `a` is a submodule rather than an
    attribute). Relative names are resolved against `importer`, the importing module's name.
    Yields nothing for a relative import that climbs above the top-level package.
    """
    assert ref.module is not None
    module = ref.module
    if module.startswith("."):
        if importer is None:
            return
        package = importer if importer_is_package else importer.rpartition(".")[0]
        level = len(module) - len(module.lstrip("."))
        depth = len(package.split(".")) if package else 0
        if level - 1 >= depth:
            return
        module = _absolutize(module, package)
    yield module, True
    for name in ref.names:
        yield f"{module}.{name}", False


def suggest_root(module: str, starts: Iterable[Path]) -> Path | None:
    """The nearest directory, from each start upwards, that `module` imports from: the
    root_dir that would ship it. Used both by the warning before a run and by the hint after
    a remote ModuleNotFoundError, so the two name the same directory. A bare namespace
    directory counts only when it holds Python files (any folder could be one)."""
    for start in starts:
        for candidate in (start, *start.parents):
            found = find_module(module, [candidate])
            if found is None:
                continue
            if found.files or _holds_python(candidate / module.split(".")[0]):
                return candidate
    return None


def _holds_python(directory: Path) -> bool:
    return any(directory.glob("*.py")) or any(directory.glob("*/__init__.py"))
