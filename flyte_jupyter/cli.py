"""`flyte-jupyter` command line: a thin front door onto the core."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .core import config
from .core.errors import FlyteJupyterError, RemoteError, RunError, UsageError
from .core.options import add_options, values
from .core.preview import TREE_LIMIT, human_size, render_tree, text_table

if TYPE_CHECKING:
    from .core import history
    from .core.bundle import Bundle
    from .core.config import Settings
    from .core.selection import Selection
    from .core.storage import Progress
    from .core.submit import Run

# Each command imports the modules it needs when it runs: `--help`, `bundle` and `runs` do not
# pay for the notebook exporter, the run machinery or the history they never use.

EXPORT_SETTINGS = ("root_dir", "include", "exclude")
"""The settings `export` takes as options (its --version is the image tag)."""


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line saying what to fix, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser. Given `only`, the command on the line, the parser has that command alone:
    each other command's subparser and options would cost a warm `bundle` milliseconds."""
    parser = _Parser(
        prog="flyte-jupyter",
        description="Package notebook and project code into content-hashed bundles and run "
        "them in clean interpreters or containers.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_text, description, add) in _COMMANDS.items():
        if only in (None, name):
            add(sub.add_parser(name, help=help_text, description=description))
    return parser


def _add_bundle(bundle: argparse.ArgumentParser) -> None:
    bundle.add_argument(
        "root",
        nargs="?",
        help="root_dir, as --root-dir (default: detected from the entry, else the current "
        "directory); a .py file here is taken as the entry, a .ipynb as the notebook",
    )
    bundle.add_argument(
        "--entry",
        action="append",
        default=[],
        metavar="FILE",
        help="file whose imports decide what ships with copy style auto (repeatable)",
    )
    _selection_options(bundle)
    bundle.add_argument("--output", "-o", metavar="PATH", help="also write the archive here")
    bundle.add_argument("--dry-run", action="store_true", help="hash and list, write no archive")
    bundle.add_argument("--json", action="store_true", help="print one JSON object")
    bundle.add_argument(
        "--all-files",
        action="store_true",
        help=f"list every file, even past {TREE_LIMIT} (default: top-level folders then)",
    )
    bundle.set_defaults(func=_cmd_bundle)


def _add_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("target", metavar="FILE.py:FUNCTION", help="what to run")
    run.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="keyword argument; the value is JSON, or a plain string if it is not valid JSON",
    )
    _selection_options(run)
    _run_options(run)
    run.add_argument("--detach", action="store_true", help="print the run id and return at once")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="give up waiting after this")
    run.set_defaults(func=_cmd_run)


def _add_runs(runs: argparse.ArgumentParser) -> None:
    runs.add_argument("--limit", type=_positive, default=20, help="how many runs to list")
    runs_sub = runs.add_subparsers(dest="runs_command", parser_class=_Parser)
    for name, help_text in [
        ("show", "a run's spec, status and outcome"),
        ("logs", "a run's output (live while it runs)"),
        ("cancel", "stop a run"),
    ]:
        runs_sub.add_parser(name, help=help_text).add_argument("run_id")
    code = runs_sub.add_parser("code", help="extract exactly the code a run executed")
    code.add_argument("run_id")
    code.add_argument("directory")
    _add_prune(runs_sub)
    _add_diff(runs_sub)
    runs.set_defaults(func=_cmd_runs)


def _add_export(export: argparse.ArgumentParser) -> None:
    export.add_argument("notebook", metavar="NOTEBOOK.ipynb")
    add_options(export, ["selection"], "cli", names=EXPORT_SETTINGS)
    export.add_argument("--image-name", help="image repository name (default: flyte-jupyter-<nb>)")
    export.add_argument("--version", help="tag (default: the build context's content hash)")
    export.add_argument("--base", help="base image (default: python:<this python>-slim-bookworm)")
    export.add_argument("--python-version", help="Python of the default base image, e.g. 3.11")
    export.add_argument(
        "--context-only", metavar="DIR", help="write Dockerfile and context here; build nothing"
    )
    export.add_argument("--network", help="network mode for the build, e.g. host")
    export.add_argument(
        "--ca-cert", action="append", default=[], metavar="PATH",
        help="extra CA certificate trusted during the build (TLS-intercepting proxies)",
    )  # fmt: skip
    export.add_argument(
        "--airgapped", action="store_true",
        help="download wheels here and build with no network",
    )  # fmt: skip
    export.set_defaults(func=_cmd_export)


def _positive(text: str) -> int:
    """A count of at least 1 (`runs --limit 0` would list nothing and say "no runs yet")."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _selection_options(parser: argparse.ArgumentParser) -> None:
    """What ships: the declared settings of the "selection" group, plus CLI-only switches.
    Unset options fall back to the session-less layers: project file, environment, default."""
    add_options(parser, ["selection"], "cli")
    parser.add_argument(
        "--force-root", action="store_true", help="allow your home directory or / as root_dir"
    )
    parser.add_argument(
        "--keep-notebook-outputs",
        action="store_true",
        help="ship .ipynb files with their outputs (default: outputs and counts stripped)",
    )


def _run_options(parser: argparse.ArgumentParser) -> None:
    """Where and how it runs: the declared "run" and "flyte" settings, plus the run's name."""
    add_options(parser, ["run", "flyte"], "cli")
    parser.add_argument("--name", help="a name for the run in the history")


def _settings(args: argparse.Namespace, path: str | Path | None) -> Settings:
    """The one resolver: these options over project files, FLYTE_JUPYTER_*, defaults."""
    groups = ["selection", "run", "flyte"] if args.command == "run" else ["selection"]
    return config.resolve(path, values(args, groups, "cli"))


def _select(args: argparse.Namespace, settings: Settings, entries: list[str]) -> Selection:
    from .core.selection import select_files

    return select_files(
        settings.root_dir,
        entries=entries,
        copy_style=settings.copy_style,
        lazy_imports=settings.lazy_imports,
        **_tree_options(args, settings),
    )


def _tree_options(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """What decides the files of any bundle the CLI builds, from the settings and the flags."""
    return {
        "include": settings.include,
        "exclude": settings.exclude,
        "version": settings.version,
        "max_bytes": int(settings.max_size_mb * 1024**2),
        "force_root": args.force_root,
        "keep_notebook_outputs": args.keep_notebook_outputs,
    }


def _cmd_bundle(args: argparse.Namespace) -> int:
    from .core.bundle import build_bundle

    root, entries = args.root, list(args.entry)
    path = Path(root) if root is not None else None
    if path is not None and not path.exists():
        raise UsageError(f"{root} does not exist: give a project directory or a .py file")
    if path is not None and path.suffix == ".ipynb":
        from .core.export import notebook_selection

        selection = notebook_selection(
            path,
            settings=_settings(args, path),
            keep_notebook_outputs=args.keep_notebook_outputs,
        )[0]
        bundle = build_bundle(selection, output=args.output, dry_run=args.dry_run)
        _print_bundle(bundle, args)
        return 0
    if path is not None and path.is_file():
        entries.insert(0, root)
    elif path is not None and args.root_dir is None:
        args.root_dir = root  # ROOT is --root-dir's positional spelling
    if args.root_dir is None and not entries:
        args.root_dir = str(Path.cwd())  # no entry to detect the project from
    settings = _settings(args, entries[0] if entries else None)
    if not entries and settings.copy_style == "all":  # a pure function of the tree
        from .core.warm import bundle_tree

        bundle = bundle_tree(
            settings.root_dir,
            output=args.output,
            dry_run=args.dry_run,
            **_tree_options(args, settings),
        )
    else:
        bundle = build_bundle(
            _select(args, settings, entries), output=args.output, dry_run=args.dry_run
        )
    _print_bundle(bundle, args)
    return 0


def _print_bundle(bundle: Bundle, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(bundle.to_json(), indent=2))
    else:
        print(render_tree(bundle, limit=None if args.all_files else TREE_LIMIT))


def _progress_printer() -> Progress:
    """An upload progress bar on a terminal; silence otherwise (the summary line follows)."""
    if not sys.stderr.isatty():
        return lambda sent, total: None

    def show(sent: int, total: int) -> None:
        width = 30
        done = int(width * sent / total) if total else width
        end = "\n" if sent >= total else ""
        print(
            f"\ruploading [{'#' * done}{'.' * (width - done)}] "
            f"{human_size(sent)} / {human_size(total)}",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    return show


def _render(value: Any) -> str:
    try:
        return json.dumps(value, indent=2)
    except (TypeError, ValueError):
        return repr(value)


def _cmd_run(args: argparse.Namespace) -> int:
    from .core.bundle import build_bundle
    from .core.entrypoint import check_call
    from .core.executors.registry import executor_options
    from .core.imports import module_name_for
    from .core.pairs import parse_pairs
    from .core.storage import Store
    from .core.submit import check_timeout, submit

    file_part, sep, function = args.target.rpartition(":")
    if not sep or not file_part.endswith(".py") or not function.isidentifier():
        raise UsageError(f"{args.target!r} must look like FILE.py:FUNCTION")
    path = Path(file_part).resolve()
    if not path.is_file():
        raise UsageError(f"{file_part} does not exist")
    check_timeout(args.timeout)
    kwargs = parse_pairs(args.arg, "--arg", json_values=True, identifiers=True)
    check_call(path, function, kwargs)
    settings = _settings(args, path)
    selection = _select(args, settings, [str(path)])
    for warning in selection.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    bundle = build_bundle(selection)
    roots = [selection.root_dir / p for p in selection.python_path]
    module = module_name_for(path, roots)
    if module is None:  # pragma: no cover - select_files already checked the entry
        raise UsageError(f"{path} is not importable from root_dir {selection.root_dir}")
    store = Store(settings.store, settings.storage_options)
    run = submit(
        bundle,
        f"{module[0]}:{function}",
        kwargs=kwargs,
        store=store,
        executor=settings.executor,
        executor_options=executor_options(settings.executor, settings.raw),
        image=config.resolve_image(settings.image, settings.images),
        env=settings.env,
        name=args.name,
        version=settings.version,
        progress=_progress_printer(),
    )
    print(_run_banner(run, bundle), file=sys.stderr)
    if args.detach:
        print(run.id)
        return 0
    for line in run.follow(args.timeout):
        stream = sys.stdout if line.stream == "stdout" else sys.stderr
        stream.write(line.text)
        stream.flush()
    try:
        result = run.result(timeout=args.timeout)
    except RemoteError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(_render(result))
    return 0


def _run_banner(run: Run, bundle: Bundle) -> str:
    """What was sent where; a Flyte run adds its name and console URL (the notebook's status
    display shows them instead)."""
    from .core.storage import describe_upload

    banner = (
        f"run {run.id} on {run.spec.executor}: {len(bundle.entries)} files, "
        f"digest {bundle.digest[:19]}…, version {run.spec.version}; {describe_upload(run.upload)}"
    )
    if run.spec.executor == "flyte":
        from .core.executors.flyte import REMOTE_FILE

        remote = json.loads(run.store.get_bytes(run.store.run_url(run.id, REMOTE_FILE)))
        banner += f"\nflyte-jupyter: Flyte run {remote['name']}: {remote['url']}"
    return banner


def _cmd_runs(args: argparse.Namespace) -> int:
    from .core.submit import Run, recent_runs

    command = args.runs_command
    if command is None:
        print(_runs_table(recent_runs(args.limit)))
        return 0
    run = Run.from_history(args.run_id)
    try:
        if command == "show":
            print(json.dumps(run.describe(), indent=2))
            if _files_gone(run):
                print(
                    f"note: {_gone_message(run)}; shown as the local history has it",
                    file=sys.stderr,
                )
        elif command == "logs":
            return _print_logs(run)
        elif command == "cancel":
            run.cancel()
            print(f"run {run.id}: {run.status()}")
        elif command == "code":
            files = run.extract_code(Path(args.directory))
            print(f"extracted {files} files of {run.spec.digest} into {args.directory}")
    except FileNotFoundError as exc:
        raise RunError(f"{_gone_message(run)} ({exc.filename or exc} is missing)") from exc
    return 0


def _files_gone(run: Run) -> bool:
    from .runtime import protocol

    return not run.store.exists(run.store.run_url(run.id, protocol.SPEC))


def _gone_message(run: Run) -> str:
    return (
        f"the files of run {run.id} are gone from its store {run.spec.store}: the store, or "
        "the run's folder in it, was deleted or moved"
    )


def _print_logs(run: Run) -> int:
    """The run's output; no output at all is said, with exit status 1, not left blank."""
    from .runtime import protocol

    printed = False
    for line in run.logs():
        (sys.stdout if line.stream == "stdout" else sys.stderr).write(line.text)
        printed = True
    if printed:
        return 0
    if run.store.exists(run.store.run_url(run.id, protocol.LOGS)):
        print(f"run {run.id} printed nothing (its log is empty)", file=sys.stderr)
    elif _files_gone(run):
        print(f"no logs: {_gone_message(run)}", file=sys.stderr)
    else:
        print(f"run {run.id} has no logs yet (status {run.status()})", file=sys.stderr)
    return 1


def _runs_table(records: list[history.RunRecord]) -> str:
    from .core import history
    from .core.submit import flyte_links

    if not records:
        return "no runs yet"
    lines = [text_table(*history.table(records))]
    links = flyte_links(records)
    if links:
        lines += ["Flyte console:", *(f"  {run_id}  {url}" for run_id, url in links.items())]
    return "\n".join(lines)


def _add_diff(runs_sub: Any) -> None:
    diff = runs_sub.add_parser(
        "diff",
        help="why did my version change? what differs between two runs",
        description="Compare two runs: the files of their bundles, the notebook definitions "
        "of cell runs, their inputs (by pickled size and hash) and their image and settings.",
    )
    diff.add_argument("run_a", metavar="A", help="the earlier run (id or unique prefix)")
    diff.add_argument("run_b", metavar="B", help="the later run")
    diff.add_argument("--json", action="store_true", help="print one JSON object")
    diff.set_defaults(func=_cmd_diff)


def _cmd_diff(args: argparse.Namespace) -> int:
    from .core.rundiff import diff_runs, render

    diff = diff_runs(args.run_a, args.run_b)
    print(json.dumps(diff.to_json(), indent=2) if args.json else render(diff))
    return 0


def _add_prune(runs_sub: Any) -> None:
    prune = runs_sub.add_parser(
        "prune",
        help="delete old runs from the store and the history",
        description="Delete ended runs (their store directory, local logs and history row) and "
        "the bundles only they used; a bundle any remaining run references is kept.",
    )
    prune.add_argument("--older-than", metavar="AGE", help="runs older than this, e.g. 7d, 12h")
    prune.add_argument("--keep-last", type=int, metavar="N", help="keep the N newest runs")
    prune.add_argument("--failed-only", action="store_true", help="only failed runs")
    prune.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    prune.set_defaults(func=_cmd_prune)


def _cmd_prune(args: argparse.Namespace) -> int:
    from .core.prune import apply_prune, parse_age, plan_prune

    plan = plan_prune(
        older_than=parse_age(args.older_than) if args.older_than else None,
        keep_last=args.keep_last,
        failed_only=args.failed_only,
    )
    for item in plan.items:
        what = f"run {item.name} ({item.detail})" if item.kind == "run" else f"bundle {item.name}"
        print(f"{'would delete' if args.dry_run else 'deleting'} {what}: {human_size(item.bytes)}")
    if not args.dry_run:
        apply_prune(plan)
    verb = "would free" if args.dry_run else "freed"
    print(
        f"{_count(len(plan.runs), 'run')} and {_count(len(plan.bundles), 'bundle')}: {verb} "
        f"{human_size(plan.total_bytes)}; {_count(plan.kept_runs, 'run')} kept"
    )
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _cmd_export(args: argparse.Namespace) -> int:
    from .core.export import export_notebook

    given = values(args, ["selection"], "cli", names=EXPORT_SETTINGS)
    result = export_notebook(
        args.notebook,
        settings=config.resolve(args.notebook, given),
        image_name=args.image_name,
        version=args.version,
        base=args.base,
        python_version=args.python_version,
        context_only=args.context_only,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        network=args.network,
        extra_ca_certs=args.ca_cert,
        airgapped=args.airgapped,
    )
    for warning in result.selection.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.tag is None:
        files = len(result.context.files)
        print(f"wrote Dockerfile and {files - 1} context files to {args.context_only}")
        print(f"build it with: docker build -t IMAGE {args.context_only}")
    else:
        print(result.tag)
    return 0


def _add_workers(workers: argparse.ArgumentParser) -> None:
    workers.add_argument("action", nargs="?", choices=["list", "stop"], default="list")
    workers.set_defaults(func=_cmd_workers)


def _cmd_workers(args: argparse.Namespace) -> int:
    import time

    from .core import workers

    if args.action == "stop":
        print(f"stopped {_count(len(workers.stop_workers()), 'worker')}")
        return 0
    found = workers.list_workers()
    if not found:
        print("no warm workers")
        return 0
    rows = [
        [
            w["name"],
            str(w["pid"]),
            w["label"],
            f"{time.time() - (w['started'] or time.time()):.0f} s",
            f"{w['idle']:g} s" if w["idle"] is not None else "-",
            w["python"],
        ]
        for w in found
    ]
    print(text_table(["NAME", "PID", "LABEL", "UP", "IDLE TIMEOUT", "PYTHON"], rows))
    return 0


_COMMANDS: dict[str, tuple[str, str | None, Callable[[argparse.ArgumentParser], None]]] = {
    "bundle": (
        "build a deterministic code bundle and show what it ships",
        "Build a deterministic, content-hashed code bundle and show what it ships.",
        _add_bundle,
    ),
    "run": (
        "run a function from a project file in a clean interpreter, code shipped as a bundle",
        "Bundle FILE's project, upload it to the store once, run FUNCTION with the given "
        "arguments on an executor, stream its output and print its result.",
        _add_run,
    ),
    "runs": ("the run history", "List and inspect runs.", _add_runs),
    "export": (
        "build a container image that runs a notebook as a job",
        "Export a notebook into a container image: its code becomes a job module, the local "
        "modules it imports and --include files are copied in, %%pip lines and third-party "
        "imports become requirements. `docker run IMAGE` runs the notebook.",
        _add_export,
    ),
    "workers": (
        "list or stop warm workers",
        "Warm workers start local runs from a prepared interpreter (docs/runs.md). List the "
        "ones of this cache dir, or stop them (runs in progress go on).",
        _add_workers,
    ),
}
"""Each command: its help line, its description, and what adds its options."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    only = argv[0] if argv and argv[0] in _COMMANDS else None
    args = _build_parser(only).parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        # the reader went away (`flyte-jupyter runs | head -3`): stop quietly, as CLIs do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except FlyteJupyterError as exc:  # one family; messages name this door's flags
        message = config.front_door_message(str(exc), "cli")
        usage = isinstance(exc, UsageError)
        command = " ".join(filter(None, [args.command, getattr(args, "runs_command", None)]))
        print(f"flyte-jupyter {command}: {'error: ' if usage else ''}{message}", file=sys.stderr)
        return 2 if usage else 1


if __name__ == "__main__":
    sys.exit(main())
