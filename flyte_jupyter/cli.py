"""`flyte-jupyter` command line: a thin front door onto the core."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .core.bundle import build_bundle
from .core.errors import FlyteJupyterError, UsageError
from .core.preview import render_tree
from .core.select import COPY_STYLES, DEFAULT_MAX_BYTES, select_files


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line saying what to fix, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="flyte-jupyter",
        description="Package notebook and project code into content-hashed bundles.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bundle = sub.add_parser(
        "bundle",
        help="build a deterministic code bundle and show what it ships",
        description="Build a deterministic, content-hashed code bundle and show what it ships.",
    )
    bundle.add_argument(
        "root",
        nargs="?",
        help="root_dir (default: detected from the entry, else the current directory); "
        "a .py file here is taken as the entry",
    )
    bundle.add_argument(
        "--entry",
        action="append",
        default=[],
        metavar="FILE",
        help="file whose imports decide what ships with copy style auto (repeatable)",
    )
    bundle.add_argument(
        "--copy-style",
        default="auto",
        metavar="|".join(COPY_STYLES),
        help="auto: the local modules the entries import (lazy imports too); all: every file "
        "not ignored; none: no code (needs --version)",
    )
    bundle.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="also ship files matching this gitignore-style glob, e.g. 'data/*.csv'",
    )
    bundle.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="never ship these files"
    )
    bundle.add_argument("--version", help="explicit version (required with --copy-style none)")
    bundle.add_argument("--output", "-o", metavar="PATH", help="also write the archive here")
    bundle.add_argument("--dry-run", action="store_true", help="hash and list, write no archive")
    bundle.add_argument("--json", action="store_true", help="print one JSON object")
    bundle.add_argument(
        "--no-lazy-imports",
        action="store_true",
        help="do not follow imports inside functions (Flyte's own behaviour)",
    )
    bundle.add_argument(
        "--max-size",
        type=float,
        default=DEFAULT_MAX_BYTES / 1024**2,
        metavar="MB",
        help="refuse bundles larger than this (default: %(default)g MB)",
    )
    bundle.add_argument(
        "--force-root", action="store_true", help="allow your home directory or / as root_dir"
    )
    bundle.set_defaults(func=_cmd_bundle)
    return parser


def _cmd_bundle(args: argparse.Namespace) -> int:
    root, entries = args.root, list(args.entry)
    if root is not None:
        path = Path(root)
        if not path.exists():
            raise UsageError(f"{root} does not exist: give a project directory or a .py file")
        if path.is_file():
            entries.insert(0, root)
            root = None
    selection = select_files(
        root,
        entries=entries,
        copy_style=args.copy_style,
        include=args.include,
        exclude=args.exclude,
        lazy_imports=not args.no_lazy_imports,
        version=args.version,
        max_bytes=int(args.max_size * 1024**2),
        force_root=args.force_root,
    )
    bundle = build_bundle(selection, output=args.output, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(bundle.to_json(), indent=2))
    else:
        print(render_tree(bundle))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"flyte-jupyter {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FlyteJupyterError as exc:
        print(f"flyte-jupyter {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
