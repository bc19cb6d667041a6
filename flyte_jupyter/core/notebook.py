"""Notebook code as source: which definitions a cell needs, and the module that ships them.

Flyte pickles notebook functions with cloudpickle, so what they use from local modules travels
by reference and a remote run silently imports whatever version (if any) the image has. Here
the kernel records every executed cell's top-level definitions (functions, classes, imports,
literal constants); a cell to run remotely gets the dependency closure of the definitions it
uses, written out as a readable module, and ships with the local modules it imports.

Pure library: it sees cell sources as Python text (IPython has already turned magics into
calls) and a namespace dict; it never imports IPython.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import inspect
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..runtime.cells import ASSIGNED, CELL_FILE, CELL_SOURCE
from .errors import NotebookError  # re-exported: callers import it from here

GENERATED_PACKAGE = "_flyte_notebook"
_MAGIC_CALL = re.compile(r"\bget_ipython\(\)")
_PIP_MAGIC = re.compile(r"get_ipython\(\)\.run_line_magic\(['\"]pip['\"],\s*['\"](.*)['\"]\)")
_SYSTEM_PIP = re.compile(r"get_ipython\(\)\.system\(['\"](?:python -m )?pip3? (.*)['\"]\)")


@dataclass(frozen=True)
class Definition:
    """One top-level statement that defines names, as the kernel executed it."""

    key: str
    """What a later definition replaces: the bound name, or `import a.b` for dotted imports."""
    names: tuple[str, ...]
    source: str
    cell: str
    """The cell it came from, e.g. "In[3]"."""
    line: int
    """Its first line within that cell."""
    kind: str
    """import | function | class | constant"""
    uses: frozenset[str]
    """Every module-level name it reads, now or when called: what ships with it."""
    needs: frozenset[str] = frozenset()
    """The names it reads while being defined (decorators, defaults, annotations, bases, class
    bodies): the only ones that must come before it in the generated module."""
    uses_magics: bool = False


def _bound_names(node: ast.AST) -> set[str]:
    """Names a top-level statement binds in the module namespace."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    names: set[str] = set()
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(child.name)
            continue  # its body is another scope
        if isinstance(child, ast.Lambda | ast.GeneratorExp | ast.ListComp | ast.SetComp):
            continue
        if isinstance(child, ast.DictComp):
            continue
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store | ast.Del):
            names.add(child.id)
        elif isinstance(child, ast.Import | ast.ImportFrom):
            names |= _bound_names(child)
        elif isinstance(child, ast.Global | ast.Nonlocal):
            continue
        stack.extend(ast.iter_child_nodes(child))
    return names


def _loaded_names(node: ast.AST) -> set[str]:
    """Names a statement reads from the module namespace. For a function or class: what its
    decorators, defaults and bases read at definition time, plus what its body reads and does
    not bind itself (an over-approximation for nested scopes, which is harmless here)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        outer: list[ast.AST] = [*node.decorator_list]
        if isinstance(node, ast.ClassDef):
            outer += [*node.bases, *(k.value for k in node.keywords)]
            params: set[str] = set()
        else:
            outer += _signature(node)
            params = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        return _scope_loads(outer) | (_scope_loads(node.body) - params)
    return _scope_loads([node])


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    """The parts of a `def` line evaluated when the function is defined: defaults and
    annotations (a name used only in an annotation must still ship, or the import fails)."""
    args = node.args
    every = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
    notes = [a.annotation for a in every if a is not None and a.annotation is not None]
    return [
        *args.defaults,
        *(d for d in args.kw_defaults if d),
        *notes,
        *filter(None, [node.returns]),
    ]


def _definition_time_loads(node: ast.AST) -> set[str]:
    """Names a statement reads while it executes, not later when what it defines is called
    (function and lambda bodies); class bodies run at definition time."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        parts: list[ast.AST] = [*node.decorator_list, *_signature(node)]
    elif isinstance(node, ast.Lambda):
        parts = [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
    elif isinstance(node, ast.ClassDef):
        parts = [*node.decorator_list, *node.bases, *(k.value for k in node.keywords), *node.body]
    elif isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, ast.Load) else set()
    else:
        parts = list(ast.iter_child_nodes(node))
    return set().union(*map(_definition_time_loads, parts))


def _scope_loads(nodes: list[ast.AST]) -> set[str]:
    loads: set[str] = set()
    local: set[str] = set()
    for child in (n for top in nodes for n in ast.walk(top)):
        if isinstance(child, ast.Name):
            (loads if isinstance(child.ctx, ast.Load) else local).add(child.id)
        elif isinstance(child, ast.arg):
            local.add(child.arg)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            local.add(child.name)
        elif isinstance(child, ast.Import | ast.ImportFrom):
            local |= _bound_names(child)
        elif isinstance(child, ast.ExceptHandler) and child.name:
            local.add(child.name)
    return loads - local


def _statement_source(source: str, node: ast.stmt) -> str:
    lines = source.splitlines()
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return "\n".join(lines[first - 1 : node.end_lineno]) + "\n"


def _first_line(node: ast.stmt) -> int:
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])


def _is_constant(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def cell_requirements(source: str) -> list[str]:
    """`%pip install x` / `!pip install x` lines of a (transformed) cell, as pip arguments."""
    out = []
    for pattern in (_PIP_MAGIC, _SYSTEM_PIP):
        for args in pattern.findall(source):
            words = args.split()
            if words and words[0] == "install":
                out += [w for w in words[1:] if not w.startswith("-")]
    return out


@dataclass
class NotebookState:
    """The definitions the kernel currently holds, as source, latest first by name."""

    definitions: dict[str, Definition] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)

    def record_cell(self, source: str, label: str) -> None:
        """Record the top-level definitions of a cell the kernel just executed."""
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return
        for req in cell_requirements(source):
            if req not in self.requirements:
                self.requirements.append(req)
        for stmt in tree.body:
            for definition in self._definitions_of(stmt, source, label):
                self._replace(definition)
            for name in _bound_names(stmt) - self._names_defined_by(stmt):
                self.forget(name)  # now holds some computed value: data, not code

    def _names_defined_by(self, stmt: ast.stmt) -> set[str]:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return {stmt.name}
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            return _bound_names(stmt)
        if self._constant_targets(stmt):
            return set(self._constant_targets(stmt))
        return set()

    @staticmethod
    def _constant_targets(stmt: ast.stmt) -> list[str]:
        if (
            isinstance(stmt, ast.Assign)
            and all(isinstance(t, ast.Name) for t in stmt.targets)
            and _is_constant(stmt.value)
        ):
            return [t.id for t in stmt.targets]  # type: ignore[attr-defined]
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.value is not None
            and _is_constant(stmt.value)
        ):
            return [stmt.target.id]
        return []

    def _definitions_of(self, stmt: ast.stmt, source: str, label: str) -> list[Definition]:
        line = _first_line(stmt)
        magics = bool(_MAGIC_CALL.search(_statement_source(source, stmt)))
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            out = []
            for alias in stmt.names:
                if alias.name == "*":
                    continue
                text = _import_text(stmt, alias)
                bound = (alias.asname or alias.name).split(".")[0]
                key = text if (isinstance(stmt, ast.Import) and not alias.asname) else bound
                out.append(
                    Definition(key, (bound,), text + "\n", label, line, "import", frozenset())
                )
            return out
        kinds = {
            ast.FunctionDef: "function",
            ast.AsyncFunctionDef: "function",
            ast.ClassDef: "class",
        }
        kind = kinds.get(type(stmt))
        if kind is None and self._constant_targets(stmt):
            kind = "constant"
        if kind is None:
            return []
        names = tuple(self._names_defined_by(stmt))
        uses = frozenset(_loaded_names(stmt) - set(names)) if kind != "constant" else frozenset()
        needs = frozenset(_definition_time_loads(stmt) - set(names))
        text = _statement_source(source, stmt)
        return [
            Definition(names[0] if len(names) == 1 else "|".join(sorted(names)), names, text,
                       label, line, kind, uses, needs, magics)
        ]  # fmt: skip

    def _replace(self, definition: Definition) -> None:
        for name in definition.names:
            if definition.kind == "import" and definition.key != name:
                # `import a.b` keeps earlier `import a.c`, but replaces anything else named a
                self.forget(name, keep_dotted_imports=True)
            else:
                self.forget(name)
        self.definitions[definition.key] = definition

    def forget(self, name: str, keep_dotted_imports: bool = False) -> None:
        for key, d in list(self.definitions.items()):
            if name in d.names and not (keep_dotted_imports and d.kind == "import" and key != name):
                del self.definitions[key]

    def providers(self, name: str) -> list[Definition]:
        return [d for d in self.definitions.values() if name in d.names]


def _import_text(stmt: ast.Import | ast.ImportFrom, alias: ast.alias) -> str:
    part = alias.name + (f" as {alias.asname}" if alias.asname else "")
    if isinstance(stmt, ast.Import):
        return f"import {part}"
    return f"from {'.' * stmt.level}{stmt.module or ''} import {part}"


def free_names(source: str) -> tuple[list[str], list[str]]:
    """Names the cell reads before (or without) binding them, in order of first use; then the
    names a statement may read before binding them itself (`df = df.dropna()`, `n += 1`)."""
    tree = ast.parse(source)
    bound: set[str] = set()
    free: list[str] = []
    maybe: list[str] = []
    for stmt in tree.body:
        for name in sorted(_loaded_names(stmt)):
            if name not in bound and name not in free:
                free.append(name)
        for name in sorted(_rebound_reads(stmt) - bound):
            if name not in free and name not in maybe:
                maybe.append(name)
        bound |= _bound_names(stmt)
    return free, maybe


def _rebound_reads(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement reads (or deletes) and also binds: `df = df.dropna()` and
    `n += 1` read the notebook's value first, while `for i in ...: print(i)` need not. The
    order inside a statement is not worked out: each is sent when the notebook has it (and
    can be pickled), and is never reported missing. Definitions and imports bind their name
    before anything reads it."""
    defining = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom
    if isinstance(stmt, defining):
        return set()
    reads = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store):
            reads.add(node.id)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            reads.add(node.target.id)
    return reads & _bound_names(stmt)


def assigned_names(source: str) -> list[str]:
    """Data names a cell binds at top level (what comes back into the namespace). Functions,
    classes and imports defined inside a remote cell stay remote."""
    tree = ast.parse(source)
    data: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        for name in sorted(_bound_names(stmt)):
            if name not in data:
                data.append(name)
    return data


@dataclass(frozen=True)
class LineMap:
    """Which notebook cell line each line of a generated module came from, under the labels
    the notebook shows now. It stays on the client: the shipped text has no labels or
    execution counts, so re-running a cell (or re-running its definitions in another order)
    ships the same bundle, and tracebacks still name the current `In[n]`."""

    module_path: str
    label: str
    """The run cell's own label; its body runs remotely as file CELL_FILE."""
    spans: tuple[tuple[int, int, str, int], ...]
    """(first, last) generated-file lines -> (cell label, first line in that cell)."""
    sources: tuple[str, ...]
    """Each span's definition text, to find it again under a later label."""

    def relabel(self, state: NotebookState) -> LineMap:
        """This map under the labels the notebook shows now: a definition executed again since
        (same text, new `In[n]`) is named by its latest cell. For results fetched later."""
        where = {d.source: (d.cell, d.line) for d in state.definitions.values()}
        spans = tuple(
            (first, last, *where.get(text, (cell, line)))
            for (first, last, cell, line), text in zip(self.spans, self.sources, strict=True)
        )
        return replace(self, spans=spans)

    def apply(self, text: str) -> str:
        """Rewrite a remote traceback's references to the generated module and to the cell
        body as notebook cell lines."""
        module = re.compile(rf'File "(?:[^"\n]*/)?{re.escape(self.module_path)}", line (\d+)')
        body = re.compile(rf'File "{re.escape(CELL_FILE)}", line (\d+)')

        def in_module(match: re.Match[str]) -> str:
            line = int(match.group(1))
            for first, last, cell, cell_line in self.spans:
                if first <= line <= last:
                    return f'File "{cell}", line {cell_line + line - first}'
            return match.group(0)

        text = module.sub(in_module, text)
        return body.sub(lambda m: f'File "{self.label}", line {m.group(1)}', text)


@dataclass
class CellSlice:
    """What a remote cell needs: definitions as source, data values, and the module text."""

    label: str
    source: str
    definitions: list[Definition]
    """In the generated module's (canonical) order."""
    values: dict[str, Any]
    assigned: list[str]
    module_name: str
    module_text: str
    line_map: LineMap
    undefined: list[str]
    optional: frozenset[str] = frozenset()
    """Names among `values` the cell may rebind before reading (`_rebound_reads`): one that
    cannot be pickled stays behind instead of failing the run."""

    @property
    def module_path(self) -> str:
        return self.module_name.replace(".", "/") + ".py"


def slice_cell(
    state: NotebookState,
    source: str,
    label: str,
    namespace: Mapping[str, Any],
    hidden: Iterable[str] = (),
) -> CellSlice:
    """The dependency closure of the definitions `source` uses, plus its data inputs."""
    try:
        ast.parse(source)
    except SyntaxError as exc:
        raise NotebookError(f"{label} line {exc.lineno}: {exc.msg}") from exc
    if _MAGIC_CALL.search(source):
        raise NotebookError(
            f"{label} uses an IPython magic or shell command (%/!), which cannot run remotely: "
            "move it to a normal cell before the %%flyte_run cell"
        )
    skip = set(dir(builtins)) | set(hidden)
    chosen: dict[str, Definition] = {}
    values: dict[str, Any] = {}
    undefined: list[str] = []
    free, maybe = free_names(source)
    queue = [*free, *maybe]
    seen: set[str] = set()
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        providers = [d for d in state.providers(name) if _still_held(d, name, namespace)]
        if not providers and name in namespace and name not in skip:
            providers = _synthesize(name, namespace[name], state)
        if providers:
            for d in providers:
                if d.uses_magics:
                    raise NotebookError(
                        f"{d.kind} {name!r} ({d.cell}, line {d.line}) uses an IPython magic or "
                        "shell command, which cannot run remotely: rewrite it without magics"
                    )
                chosen[d.key] = d
                queue.extend(sorted(d.uses))
        elif name in namespace and name not in skip:
            values[name] = namespace[name]
        elif name not in skip and name not in maybe:
            undefined.append(name)
    ordered = canonical_order(chosen.values())
    assigned = assigned_names(source)
    text, spans = _module_text(ordered, source, assigned)
    module_name = f"{GENERATED_PACKAGE}.cell_{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return CellSlice(
        label=label,
        source=source,
        definitions=ordered,
        values=values,
        assigned=assigned,
        module_name=module_name,
        module_text=text,
        line_map=LineMap(
            module_name.replace(".", "/") + ".py", label, spans, tuple(d.source for d in ordered)
        ),
        undefined=undefined,
        optional=frozenset(maybe) & set(values),
    )


def canonical_order(definitions: Iterable[Definition]) -> list[Definition]:
    """The order the generated module lists definitions in, which depends on their text only
    (never on which cell ran first): imports sorted, then a topological order of what each
    definition needs while it is defined (a base class before its subclass, a decorator before
    what it decorates), ties broken by name. A cycle (only possible through over-approximated
    needs) is broken by name too."""
    imports = sorted((d for d in definitions if d.kind == "import"), key=lambda d: d.source)
    rest = {d.key: d for d in definitions if d.kind != "import"}
    provider = {name: d.key for d in rest.values() for name in d.names}
    waiting = {
        key: {provider[n] for n in d.needs if n in provider and provider[n] != key}
        for key, d in rest.items()
    }
    ordered: list[Definition] = []
    while waiting:
        ready = [key for key, before in waiting.items() if not before]
        key = min(ready or waiting)
        ordered.append(rest[key])
        del waiting[key]
        for before in waiting.values():
            before.discard(key)
    return imports + ordered


def _still_held(definition: Definition, name: str, namespace: Mapping[str, Any]) -> bool:
    """A constant ships as source only while the kernel still holds that value; once a later
    cell changed it (appended to a list, say), the current value ships as data instead."""
    if definition.kind != "constant" or name not in namespace:
        return True
    try:
        literal = ast.literal_eval(ast.parse(definition.source).body[0].value)  # type: ignore[attr-defined]
        return type(literal) is type(namespace[name]) and literal == namespace[name]
    except Exception:  # a value that cannot be compared ships as data
        return False


def _synthesize(name: str, value: Any, state: NotebookState) -> list[Definition]:
    """A definition for a namespace entry the recorder never saw (defined before the extension
    loaded, or by exec): modules become imports, notebook functions/classes their source."""
    if isinstance(value, types.ModuleType):
        text = f"import {value.__name__} as {name}" if value.__name__ != name else f"import {name}"
        return [Definition(name, (name,), text + "\n", "kernel", 0, "import", frozenset(), 0)]
    if inspect.isfunction(value) or inspect.isclass(value):
        module = getattr(value, "__module__", None)
        if module != "__main__":
            if module and "." not in value.__qualname__:
                text = f"from {module} import {value.__name__}"
                if value.__name__ != name:
                    text += f" as {name}"
                return [
                    Definition(name, (name,), text + "\n", "kernel", 0, "import", frozenset(), 0)
                ]
            return []
        try:
            text = inspect.getsource(value)
        except (OSError, TypeError) as exc:
            raise NotebookError(
                f"cannot find the source of {name!r}: define it in a cell of this notebook "
                "(after %load_ext flyte_jupyter) or in a module under root_dir"
            ) from exc
        probe = NotebookState()
        probe.record_cell(text, "kernel")
        return probe.providers(name)
    return []


def _module_text(
    definitions: list[Definition], source: str, assigned: list[str]
) -> tuple[str, tuple[tuple[int, int, str, int], ...]]:
    """The shipped module: content only (no cell labels, no execution counts), so its hash
    and the bundle's digest change only when the code does. The spans for the client's
    LineMap come with it."""
    lines = [
        '"""Generated by flyte-jupyter from notebook cells. Do not edit.',
        "",
        "Imports sorted, then definitions in dependency order (ties by name), then the cell.",
        '"""',
        "",
    ]
    spans: list[tuple[int, int, str, int]] = []
    for i, d in enumerate(definitions):
        first = len(lines) + 1
        body = d.source.rstrip("\n").split("\n")
        lines += body
        spans.append((first, first + len(body) - 1, d.cell, d.line))
        following = definitions[i + 1].kind if i + 1 < len(definitions) else None
        if d.kind != "import" or following != "import":
            lines.append("")
    lines += [
        "",
        f"{CELL_SOURCE} = {source!r}",
        f"{ASSIGNED} = {assigned!r}",
        "",
    ]
    return "\n".join(lines), tuple(spans)
