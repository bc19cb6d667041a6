"""Check `FILE.py:FUNCTION --arg NAME=...` against the file's source before a run starts, so
a typo fails here in one line instead of remotely after an upload. Only the AST is read: the
user's module is never imported or executed locally."""

from __future__ import annotations

import ast
from pathlib import Path

from .errors import UsageError


def check_call(path: Path, function: str, kwargs: dict[str, object]) -> None:
    """Raise UsageError when `function` is not defined in `path` or the keyword arguments do
    not fit its parameters. Names bound some other way (imports, assignments, decorators that
    may change the signature) and files this Python cannot parse are left to the run."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return
    defs: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            defs[node.name] = node
        else:
            bound.update(_bound_names(node))
    if function not in defs:
        if function in bound or "*" in bound:
            return
        known = ", ".join(sorted(defs)) or "none"
        raise UsageError(f"{path.name} defines no function {function!r} (its functions: {known})")
    node = defs[function]
    if node.decorator_list:
        return  # a decorator (e.g. a Flyte task) may change what the call takes
    args = node.args
    if args.vararg is not None and args.kwarg is not None:
        return
    accepted = [a.arg for a in (*args.args, *args.kwonlyargs)]
    unknown = [name for name in kwargs if name not in accepted]
    if unknown and args.kwarg is None:
        raise UsageError(
            f"{function}() takes no argument {unknown[0]!r} "
            f"(its parameters: {', '.join(accepted) or 'none'})"
        )
    positional = [*args.posonlyargs, *args.args]
    required = [a.arg for a in positional[: len(positional) - len(args.defaults)]]
    required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise UsageError(f"{function}() needs argument {missing[0]!r}: add --arg {missing[0]}=JSON")


def _bound_names(node: ast.stmt) -> set[str]:
    """Top-level names a statement may bind other than by `def` ("*" for a star import)."""
    names: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
            names.add(child.id)
        elif isinstance(child, ast.alias):
            names.add(child.asname or child.name.split(".")[0])
        elif isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(child.name)
    return names
