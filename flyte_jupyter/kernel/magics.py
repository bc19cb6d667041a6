"""IPython magics: `%%flyte_run`, `%flyte_run`, `%flyte_config`, `%flyte_bundle`,
`%flyte_runs`, `%flyte_result`, `%flyte_export`, `%flyte_panel`. Thin: parse options, call the
core, show the outcome."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shlex
import sys
from collections.abc import Iterator
from typing import Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.display import display

from ..core import cells, config, history, options
from ..core.errors import FlyteJupyterError, RemoteError, RunCancelled, UsageError
from ..core.executors.registry import LogLine
from ..core.export import export_notebook
from ..core.pairs import parse_pairs
from ..core.submit import Run, RunTimeout, check_timeout, recent_runs
from ..runtime import protocol
from . import display as views
from . import tracebacks
from .changes import CellChanges, cell_id, cell_key
from .output import CoalescedOutput
from .session import KernelSession

RUN_GROUPS = ("selection", "run", "flyte")
EXPORT_SETTINGS = ("root_dir", "include", "exclude")


def _run_arguments(func: Any) -> Any:
    """%%flyte_run's options (and %flyte_bundle's): the declared settings plus the magic's
    own, through IPython's magic_arguments (so `--help` and `%%flyte_run?` list them)."""
    for flag, kwargs in reversed(
        [
            (("-h", "--help"), {"action": "store_true", "help": "show this help"}),
            (("--name",), {"help": "a name for the run in the history"}),
            (("--timeout",), {"type": float, "metavar": "SECONDS",
                              "help": "stop waiting (and cancel the run) after this"}),
            (("--dry-run",), {"action": "store_true", "dest": "dry_run",
                              "help": "show what would ship, run nothing"}),
            (("--detach",), {"action": "store_true",
                             "help": "return the run at once (%%flyte_result fetches it)"}),
        ]
    ):  # fmt: skip
        func = magic_arguments.argument(*flag, **kwargs)(func)
    return options.decorators(RUN_GROUPS)(func)


def _run_parser(prog: str) -> Any:
    """The run options' parser (one, built from the declaration); `prog` is kept for callers."""
    return FlyteMagics.flyte_run.parser


def _flags() -> set[str]:
    """Options that take no value (for splitting a line magic's options from its code)."""
    actions = FlyteMagics.flyte_run.parser._actions
    return {opt for a in actions if a.nargs == 0 for opt in a.option_strings}


def _options(ns: argparse.Namespace) -> dict[str, Any]:
    """Parsed magic options as settings (only those given), validated."""
    return options.values(ns, RUN_GROUPS, "magic")


def _parse(parser: Any, magic: str, line: str | None = None, words: list[str] | None = None) -> Any:
    """A magic's options (`line`, or `words` already split), parsed; a bad one is one line
    saying what to do, not a traceback through IPython."""
    try:
        return parser.parse_args(shlex.split(line) if words is None else words)
    except ValueError as exc:  # shlex: an unclosed quote
        raise _unsplittable(magic, exc) from None
    except IPythonUsageError as exc:
        raise IPythonUsageError(f"{exc} (see {magic} --help)") from None


def _unsplittable(magic: str, exc: ValueError) -> IPythonUsageError:
    """shlex's complaint with what to do: an unclosed quote, or a backslash ending the line."""
    todo = "close the quote" if "quotation" in str(exc) else "double the backslash that ends it"
    return IPythonUsageError(f"{magic} options: {exc}: {todo}")


def _usage(exc: Exception) -> IPythonUsageError:
    """One line for the notebook, naming the magics' own flags."""
    return IPythonUsageError(config.front_door_message(str(exc), "magic"))


def _help(parser: Any, ns: argparse.Namespace) -> bool:
    if getattr(ns, "help", False):
        print(parser.format_help())
        return True
    return False


def split_line_options(line: str) -> tuple[list[str], str]:
    """Leading `--option value` words of a line magic, and the code after them."""
    words = line.split()
    i = 0
    while i < len(words) and words[i].startswith("--"):
        takes_value = words[i] not in _flags() and "=" not in words[i]
        i += 2 if takes_value else 1
    consumed = " ".join(words[:i])
    rest = line.strip()[len(consumed) :].strip() if consumed else line.strip()
    return shlex.split(consumed), rest


def magic_options(raw: str) -> tuple[dict[str, Any], str]:
    """A notebook cell's `%%flyte_run`/`%flyte_run` options as settings, and the code the
    magic would run (the sidebar preview slices exactly that, so its digest is the run's)."""
    first, _, rest = raw.partition("\n")
    if first.startswith("%%"):
        name, _, line = first[2:].partition(" ")
        if name in ("flyte_run", "flyte_bundle"):
            return _options(_run_parser(f"%%{name}").parse_args(shlex.split(line))), rest
        return {}, rest
    if first.startswith("%flyte_run ") and not rest.strip():
        words, code = split_line_options(first.removeprefix("%flyte_run"))
        return _options(_run_parser("%flyte_run").parse_args(words)), code
    return {}, raw


def _running(lines: Iterator[LogLine], status: views.StatusLine) -> Iterator[LogLine]:
    """The run's output; its first line shows the run as running."""
    for line in lines:
        status.update(protocol.RUNNING)
        yield line


@magics_class
class FlyteMagics(Magics):
    def __init__(self, shell: Any, session: KernelSession):
        super().__init__(shell)
        self.session = session
        self.run_cells: dict[str, tracebacks.RunCell] = {}
        """Per run id: where its cell's remote frames are shown (see tracebacks.py)."""
        self.changes = CellChanges()
        """The last run of each cell, for "changed since the last run of this cell"."""

    # --- running ---------------------------------------------------------------------------

    @line_cell_magic
    @magic_arguments.magic_arguments("%flyte_run")
    @_run_arguments
    def flyte_run(self, line: str, cell: str | None = None) -> Any:
        """Run a cell (or, as a line magic `%flyte_run [options] EXPR`, one expression)
        remotely, code shipped as source. Unset options come from %flyte_config, the
        project's settings files, FLYTE_JUPYTER_* and the defaults."""
        magic = "%flyte_run" if cell is None else "%%flyte_run"
        if cell is None:
            try:
                words, code = split_line_options(line)
            except ValueError as exc:  # shlex: an unclosed quote
                raise _unsplittable(magic, exc) from None
            if not code and not {"-h", "--help"} & set(words):
                raise IPythonUsageError("%flyte_run needs an expression, e.g. %flyte_run f(1)")
        else:
            words, code = None, cell
        parser = _run_parser("%%flyte_run")
        ns = _parse(parser, magic, line, words)
        if _help(parser, ns):
            return None
        try:
            return self._run(code, ns)
        except UsageError as exc:
            raise _usage(exc) from None

    def _run(self, code: str, ns: argparse.Namespace) -> Any:
        check_timeout(ns.timeout)
        session = self.session
        settings, root = session.effective(_options(ns))
        count = self.session.current_count()
        label = f"In[{count}]"
        source = self.shell.transform_cell(code)
        prepared = cells.prepare_cell(
            session.state,
            source,
            label,
            self.shell.user_ns,
            settings,
            root,
            hidden=session.hidden_names(),
            dry_run=ns.dry_run,
        )
        for note in self._notes(prepared, root, previewed=ns.dry_run):
            print(note, file=sys.stderr)
        if ns.dry_run:
            display(views.bundle_preview(prepared), raw=True)
            return None
        run = cells.submit_cell(
            prepared, settings, ns.name or label, views.upload_progress(), cell_id(self.shell)
        )
        session.line_maps[run.id] = prepared.slice.line_map
        change = self.changes.note(cell_key(self.shell, code), run, prepared)
        status: views.StatusLine | None = None
        try:  # from here on, Stop cancels the run, whenever it comes
            raw = self.shell.history_manager.input_hist_raw
            self.run_cells[run.id] = tracebacks.register_run_cell(
                self.shell, run.id, label, raw[count] if count < len(raw) else code, code, str(root)
            )
            status = views.StatusLine(run, prepared, change)
            if ns.detach:
                status.update(protocol.SUBMITTED, f"detached; %flyte_result {run.id} fetches it")
                return run
            output = CoalescedOutput({"stdout": sys.stdout, "stderr": sys.stderr})
            output.copy(_running(run.follow(ns.timeout), status))
            result = cells.cell_result(run, self.shell.user_ns, prepared.slice.line_map, ns.timeout)
        except (KeyboardInterrupt, RunCancelled):  # the Stop button, or the sidebar / CLI
            run.cancel()
            if status is not None:
                status.update(protocol.CANCELLED)
            # an error, as a local cell's interrupt is: "Run All" stops here
            raise RunCancelled(
                f"run {run.id} was cancelled; its output so far is kept (above, and in "
                f"`flyte-jupyter runs logs {run.id}`)"
            ) from None
        except BaseException as exc:
            if status is not None:
                status.update("timed out" if isinstance(exc, RunTimeout) else protocol.FAILED)
            raise
        status.update(protocol.SUCCEEDED)
        return self._apply(result)

    def _notes(self, prepared: cells.PreparedCell, root: Any, previewed: bool) -> list[str]:
        # secrets left out are listed by previews (%flyte_bundle, the sidebar), not every run;
        # a preview lists the selection's warnings itself, so they are not printed twice
        warnings = [] if previewed else prepared.bundle.selection.warnings
        notes = [f"warning: {w}" for w in warnings if "looks like a secret" not in w]
        for rel in self.session.stale_modules(root):
            notes.append(
                f"note: {rel} changed on disk after this kernel imported it: the run ships the "
                "file on disk, while the kernel keeps the old code until you reload it"
            )
        for name in prepared.slice.undefined:
            notes.append(f"note: {name!r} is not defined in this notebook; the remote run will "
                         "raise NameError if the cell reaches it")  # fmt: skip
        return notes

    def _apply(self, result: cells.CellResult) -> Any:
        """Assigned names back into the namespace; the last expression's value is the Out."""
        for name, value in result.values.items():
            self.shell.user_ns[name] = value
            self.session.state.forget(name)
        for name, reason in result.skipped.items():
            print(f"note: {name} stayed remote: it cannot be pickled ({reason})", file=sys.stderr)
        return result.out if result.has_out else None

    @line_magic
    def flyte_result(self, line: str) -> Any:
        """%flyte_result RUN_ID: wait for a (detached) run and bring its result back."""
        run_id = line.strip()
        if not run_id:
            raise IPythonUsageError("%flyte_result needs a run id (see %flyte_runs)")
        try:
            run = Run.from_history(run_id)
            if run.spec.entry != cells.ENTRY:
                return run.result()
            line_map = self.session.line_map(run_id)
            return self._apply(cells.cell_result(run, self.shell.user_ns, line_map))
        except UsageError as exc:
            raise _usage(exc) from None

    # --- settings and previews ---------------------------------------------------------------

    @line_magic
    def flyte_config(self, line: str) -> None:
        """%flyte_config [key=value ...]: set session settings (`key=` unsets one), checked at
        once and confirmed; with no arguments, show each effective setting and where it comes
        from (the store is the one runs use, even when it is the default)."""
        try:
            changes = parse_pairs(shlex.split(line), "%flyte_config", json_values=False)
            self.session.update_settings(changes)
            settings, _root = self.session.effective({})
        except UsageError as exc:
            raise IPythonUsageError(str(exc)) from None
        if changes:
            for key in changes:
                shown = settings[key]
                print(f"{key} = {shown.value!r} ({shown.source})")
            return
        if settings.store is None:
            settings = settings.with_value("store", config.default_store(), "default")
        display(views.settings_table(settings), raw=True)

    @line_magic
    def flyte_panel(self, line: str) -> Any:
        """%flyte_panel: settings, bundle preview and runs as widgets (for front ends without
        the JupyterLab sidebar)."""
        from .panel import panel

        return panel(self.session, self.preview_notebook)

    def _every_definition(self) -> str:
        """A cell body that uses every definition the notebook holds."""
        names = {n for d in self.session.state.definitions.values() for n in d.names}
        return "\n".join(sorted(names))

    def preview_notebook(self) -> dict[str, str]:
        """What a cell using every definition of this notebook would ship, as a MIME bundle."""
        return views.bundle_preview(self.session.dry_run(self._every_definition(), "preview"))

    @line_cell_magic
    @magic_arguments.magic_arguments("flyte_bundle")
    @_run_arguments
    def flyte_bundle(self, line: str, cell: str | None = None) -> None:
        """Preview what %%flyte_run would ship: for the given cell body, or (as a line magic)
        for every definition this notebook holds. Accepts %%flyte_run's options."""
        parser = FlyteMagics.flyte_bundle.parser
        ns = _parse(parser, "%flyte_bundle" if cell is None else "%%flyte_bundle", line)
        if _help(parser, ns):
            return
        if cell is None:
            cell = self._every_definition()
        ns.dry_run = True
        try:
            self._run(cell, ns)
        except UsageError as exc:
            raise _usage(exc) from None

    @line_magic
    @magic_arguments.magic_arguments("flyte_export")
    @magic_arguments.argument("notebook", nargs="?", help="default: this notebook")
    @magic_arguments.argument("-h", "--help", action="store_true", help="show this help")
    @magic_arguments.argument("--image-name", help="image repository (default: flyte-jupyter-NB)")
    @magic_arguments.argument("--version", help="tag (default: the build context's hash)")
    @magic_arguments.argument("--base", help="base image (default: python:X.Y-slim-bookworm)")
    @magic_arguments.argument("--context-only", metavar="DIR", help="write the context only")
    @magic_arguments.argument("--network", help="network mode for the build, e.g. host")
    @options.decorators(["selection"], names=EXPORT_SETTINGS)
    def flyte_export(self, line: str) -> None:
        """Build an image that runs the notebook as a job. It ships what %flyte_bundle and
        the sidebar preview show: this session's settings and the project's apply."""
        parser = FlyteMagics.flyte_export.parser
        ns = _parse(parser, "%flyte_export", line)
        if _help(parser, ns):
            return
        notebook = ns.notebook or os.environ.get("JPY_SESSION_NAME")
        if not notebook:
            raise IPythonUsageError("%flyte_export needs the notebook path (Jupyter did not say)")
        try:
            given = options.values(ns, ["selection"], "magic", EXPORT_SETTINGS)
            settings = config.resolve(notebook, given, self.session.settings)
            result = export_notebook(
                notebook,
                settings=settings,
                image_name=ns.image_name,
                version=ns.version,
                base=ns.base,
                context_only=ns.context_only,
                network=ns.network,
                log=lambda text: print(text, file=sys.stderr, flush=True),
            )
        except UsageError as exc:
            raise _usage(exc) from None
        print(result.tag or f"wrote the build context to {ns.context_only}")

    @line_magic
    @magic_arguments.magic_arguments("flyte_runs")
    @magic_arguments.argument("limit", nargs="?", type=int, default=20, help="how many runs")
    @magic_arguments.argument("-h", "--help", action="store_true", help="show this help")
    def flyte_runs(self, line: str) -> None:
        """The run history, newest first."""
        parser = FlyteMagics.flyte_runs.parser
        ns = _parse(parser, "%flyte_runs", line)
        if _help(parser, ns):
            return
        if ns.limit < 1:
            raise IPythonUsageError(f"%flyte_runs N: N must be at least 1, not {ns.limit}")
        display(views.runs_table(recent_runs(ns.limit)), raw=True)


def _show_error(
    run_cells: dict[str, tracebacks.RunCell],
    shell: Any,
    etype: type,
    value: BaseException,
    tb: Any,
    tb_offset: Any = None,
) -> Any:
    """Show a RemoteError as IPython shows a local exception, its frames those of the
    remote traceback (mapped to notebook cells and project files), without the local frames
    of the magic that re-raised it; any other of our errors as its one line."""
    stb = None
    if isinstance(value, RemoteError):
        try:
            stb = tracebacks.structured(shell, value, _run_cell(run_cells, value.run_id))
        except Exception:  # a traceback the formatter cannot draw: its text, as sent
            stb = [str(value)]
        if stb is None:  # no frames: the runtime died; its output is not repeated here
            stb = [
                f"run {value.run_id} failed with {value.remote_type}: {value.remote_message}; "
                f"its output is above and in `flyte-jupyter runs logs {value.run_id}`",
                *([value.hint] if value.hint else []),
            ]
    if stb is None:
        stb = [config.front_door_message(str(value), "magic")]
        shell._showtraceback(etype, value, stb)
        return stb
    value.brief = True  # the error's value is its message, as for a local exception
    try:
        shell._showtraceback(etype, value, stb)
    finally:
        value.brief = False
    return stb


def _run_cell(run_cells: dict[str, tracebacks.RunCell], run_id: str) -> tracebacks.RunCell:
    """Where run `run_id`'s frames are shown; for a run another kernel started, only its
    project root (from the history), so project files still show their lines."""
    if run_id in run_cells:
        return run_cells[run_id]
    try:
        root = history.get(run_id).spec_json().get("root_dir")
    except FlyteJupyterError:
        root = None
    return tracebacks.RunCell("", "", 0, root)


def load(shell: Any) -> None:
    session = KernelSession(shell)
    session.replay_history()
    shell.events.register("post_run_cell", session.post_run_cell)
    magics = FlyteMagics(shell, session)
    shell.register_magics(magics)
    shell.set_custom_exc(
        (RemoteError, FlyteJupyterError), functools.partial(_show_error, magics.run_cells)
    )
    shell._flyte_session = session
    _register_comm_target(session)
    from ..core import workers

    # the kernel's warm workers stop with it; %flyte_config warm_workers=false turns them off
    workers.bind_to_process(lambda: session.effective({})[0].warm_workers)


def unload(shell: Any) -> None:
    """`%unload_ext` and `%reload_ext`: take back what `load` added (hook, magics, error
    display, comm target), so a reload leaves one `post_run_cell` hook, not two."""
    session = getattr(shell, "_flyte_session", None)
    if session is None:
        return
    with contextlib.suppress(ValueError):
        shell.events.unregister("post_run_cell", session.post_run_cell)
    for kind, names in FlyteMagics.magics.items():
        for name in names:
            shell.magics_manager.magics[kind].pop(name, None)
    shell.set_custom_exc((), None)
    with contextlib.suppress(Exception):  # plain IPython: no comm manager
        from comm import get_comm_manager

        get_comm_manager().unregister_target("flyte_jupyter", session.open_comm)
    del shell._flyte_session


def _register_comm_target(session: KernelSession) -> None:
    """Let the JupyterLab sidebar reach this kernel (only inside a Jupyter kernel)."""
    try:
        from comm import get_comm_manager

        manager = get_comm_manager()
    except Exception:  # plain IPython: no kernel, no comms
        return
    if manager is not None:
        manager.register_target("flyte_jupyter", session.open_comm)
