"""Command-line options generated from the settings declaration (`config.FIELDS`): the CLI
and the magics add the same flags, with the same help, and read them back as settings."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import config
from .errors import UsageError
from .pairs import parse_pairs

GROUPS = ("selection", "run", "flyte")


def fields(
    groups: Iterable[str], door: str, names: Iterable[str] | None = None
) -> Iterator[config.Field]:
    """The declared fields of these groups (only `names`, if given) that have a flag in
    `door` ("cli" or "magic")."""
    wanted, only = set(groups), None if names is None else set(names)
    for f in config.FIELDS.values():
        if f.group in wanted and _flag(f, door) and (only is None or f.name in only):
            yield f


def _flag(f: config.Field, door: str) -> str | None:
    return f.cli_flag if door == "cli" else f.magic_flag


def dest(f: config.Field, door: str) -> str:
    """The namespace attribute: named after the flag (`--task-timeout` -> task_timeout), so a
    setting never collides with a front door's own option (`run --timeout` is the wait)."""
    return str(_flag(f, door)).lstrip("-").removeprefix("no-").replace("-", "_")


def argument(f: config.Field, door: str) -> tuple[str, dict[str, Any]]:
    """`add_argument(flag, **kwargs)` for a field. Values stay strings here: they are
    checked by `config.coerce` (one message naming the allowed values, for every door)."""
    flag = _flag(f, door)
    assert flag is not None
    kwargs: dict[str, Any] = {"dest": dest(f, door), "default": None, "help": f.help}
    choices = f.choices if isinstance(f.choices, tuple) else ()
    if f.kind is bool:
        kwargs["action"] = "store_const"
        kwargs["const"] = not f.default
    else:
        if f.kind in (list, dict):
            kwargs["action"] = "append"
        kwargs["metavar"] = "|".join(choices) if choices else f.metavar or f.name.upper()
    if f.default not in (None, [], {}, False, True):
        kwargs["help"] += f" (default: {f.default:g})" if f.kind is float else (
            f" (default: {f.default})")  # fmt: skip
    return flag, kwargs


def add_options(
    parser: argparse.ArgumentParser,
    groups: Iterable[str],
    door: str,
    names: Iterable[str] | None = None,
) -> None:
    for f in fields(groups, door, names):
        flag, kwargs = argument(f, door)
        parser.add_argument(flag, **kwargs)


def decorators(
    groups: Iterable[str], names: Iterable[str] | None = None, door: str = "magic"
) -> Callable[[Any], Any]:
    """IPython `magic_arguments` decorators for these fields (the magic's `--help` and
    docstring list them)."""
    from IPython.core.magic_arguments import argument as magic_argument

    specs = [argument(f, door) for f in fields(groups, door, names)]

    def apply(func: Any) -> Any:
        for flag, kwargs in reversed(specs):
            func = magic_argument(flag, **kwargs)(func)
        return func

    return apply


def values(
    ns: argparse.Namespace, groups: Iterable[str], door: str, names: Iterable[str] | None = None
) -> dict[str, Any]:
    """The settings given as options (only those), validated; an error names the flag."""
    out: dict[str, Any] = {}
    for f in fields(groups, door, names):
        raw = getattr(ns, dest(f, door), None)
        if raw is None:
            continue
        flag = _flag(f, door)
        if f.kind is dict:
            raw = parse_pairs(raw, str(flag), json_values=f.pairs_json)
        try:
            out[f.name] = config.coerce(f.name, raw)
        except UsageError as exc:
            raise UsageError(config.front_door_message(str(exc), door)) from None
    return out
