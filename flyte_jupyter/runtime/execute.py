"""Run one entry point of a bundle and write its outcome to the run directory.

    python -m flyte_jupyter.runtime --bundle URL --digest D --entry module:function
        --inputs URL --outputs URL [--run-dir URL] [--python-path DIR]...

The run-directory files and phases are named in protocol.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import io
import os
import pickle
import platform
import shutil
import signal
import socket
import sys
import tempfile
import threading
import traceback
from pathlib import Path, PurePosixPath
from typing import Any

from . import blobs, fd_capture, protocol
from .extract import describe_changes, discard_if_changed, fetch_bundle
from .values import dump, summarize

_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))
_IMPORT_MACHINERY = (importlib.__file__ or "<importlib>", "<frozen importlib.")


class EnvironmentMismatch(Exception):
    """The interpreter here cannot run what the client prepared."""


class Stopped(BaseException):
    """SIGTERM arrived: the run was cancelled (local cancel, `docker stop`, a deleted pod)."""


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind through the run's `finally`, so the status and the log so far
    are written before the process ends. Later SIGTERMs wait for that."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped()


def _on_sigterm() -> Any:
    """Install `_stop` (only the main thread can); the handler it replaced, or None."""
    try:
        return signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # not the main thread (the runtime called in-process)
        return None


class _Status:
    """status.json writer: the current phase plus every phase's timestamp."""

    def __init__(self, run_dir: str | None, digest: str):
        self.run_dir = run_dir
        self.doc: dict[str, Any] = {
            "digest": digest,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "python": platform.python_version(),
            "phases": [],
        }

    def phase(self, name: str, **extra: Any) -> None:
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        self.doc["phase"] = name
        self.doc["phases"].append({"phase": name, "at": now})
        self.doc.update(extra)
        if self.run_dir:
            blobs.write_json(blobs.join(self.run_dir, protocol.STATUS), self.doc)


class _Tee(io.TextIOBase):
    """Writes to the real stream (live logs) and to the run's log file. `original` is the
    stream it stands in for: its fd and bytes buffer are what fd-level writers get (their
    output reaches the log through fd_capture)."""

    def __init__(self, stream: Any, log: io.TextIOBase, lock: threading.Lock, original: Any):
        self.stream, self.log, self.lock, self.original = stream, log, lock, original

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.stream.flush()
        with self.lock:
            self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        with self.lock:
            self.log.flush()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def buffer(self) -> Any:
        self.stream.flush()
        return self.original.buffer

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flyte_jupyter.runtime")
    parser.add_argument("--bundle", help="URL of the bundle archive (none: code is installed)")
    parser.add_argument("--digest", help="expected digest of the bundle, sha256:<hex>")
    parser.add_argument("--entry", required=True, help="module:function to call")
    parser.add_argument("--inputs", help="URL of the pickled inputs")
    parser.add_argument("--outputs", required=True, help="URL to write the pickled result to")
    parser.add_argument("--run-dir", help="URL of the run directory (status, error, logs)")
    parser.add_argument(
        "--python-path", action="append", default=None, help="bundle dir to put on sys.path"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if bool(args.bundle) != bool(args.digest):
        raise SystemExit("--bundle and --digest go together")
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="backslashreplace") as log_file:
        return _run(args, log_file)


def _run(args: argparse.Namespace, log_file: Any) -> int:
    status = _Status(args.run_dir, args.digest)
    real_out, real_err = sys.stdout, sys.stderr
    lock = threading.Lock()
    capture = fd_capture.start(log_file, lock, (real_out, real_err))
    out, err = real_out, real_err
    if capture is not None:  # the tee writes where fds 1 and 2 pointed; others go through pipes
        out, err = capture.direct(real_out, 1), capture.direct(real_err, 2)
    sys.stdout, sys.stderr = (
        _Tee(out, log_file, lock, real_out),
        _Tee(err, log_file, lock, real_err),
    )
    workdir: str | None = None
    root: Path | None = None
    code = 0
    previous = _on_sigterm()
    try:
        spec = _read_spec(args.run_dir)
        if args.bundle:
            status.phase(protocol.DOWNLOADING)
            root = fetch_bundle(args.bundle, args.digest)
        check_environment(spec.get("client", {}))
        if root is not None:
            workdir = linked_workdir(root, spec.get("workdir") or "")
            _isolate_sys_path(root, args.python_path or spec.get("python_path") or ["."])
        inputs = {}
        if args.inputs:
            with blobs.open_read(args.inputs) as f:
                inputs = pickle.load(f)  # from the file: big inputs are not read twice
        status.phase(protocol.RUNNING)
        target = load_entry(args.entry)
        result = call(target, inputs.get("args", ()), inputs.get("kwargs", {}))
        with blobs.open_write(args.outputs) as out:
            size = dump(result, out)  # into the file: a big result is not copied to bytes
        if args.run_dir:
            summary = summarize_result(target, result, size)
            blobs.write_json(blobs.join(args.run_dir, protocol.OUTPUTS_SUMMARY), summary)
        status.phase(protocol.SUCCEEDED)
    except Stopped:
        code = 128 + signal.SIGTERM
        with lock:  # the log only: the cell and the sidebar show the state
            log_file.write("\nflyte-jupyter: the run was cancelled (SIGTERM)\n")
        status.phase(protocol.CANCELLED, exit_code=code)
    except BaseException as exc:
        code = _exit_code(exc)
        error = describe_error(exc, root)
        log_file.write(error["traceback"])  # the log keeps it; the client shows it from error.json
        if not args.run_dir:
            print(error["traceback"], file=real_err, end="")
        if args.run_dir:
            blobs.write_json(blobs.join(args.run_dir, protocol.ERROR), error)
        status.phase(protocol.FAILED, exit_code=code)
    finally:
        if root is not None:
            _forget_changes(root)
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = real_out, real_err
        if capture is not None:
            capture.stop()
        if args.run_dir:
            log_file.seek(0)
            blobs.write_bytes(blobs.join(args.run_dir, protocol.LOGS), log_file.read().encode())
        if workdir:
            os.chdir(tempfile.gettempdir())
            shutil.rmtree(workdir, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return code


def _read_spec(run_dir: str | None) -> dict[str, Any]:
    """The client's spec.json, if the run directory has one (the runtime also runs bare)."""
    if not run_dir:
        return {}
    try:
        return blobs.read_json(blobs.join(run_dir, protocol.SPEC))
    except FileNotFoundError:
        return {}


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) and exc.code != 0 else 1
    return 1


def check_environment(client: dict[str, Any]) -> None:
    """Refuse, in one message, an interpreter that cannot run what the client prepared:
    another Python minor version, or packages the shipped code imports that are missing."""
    problems = []
    python = client.get("python")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python and ".".join(python.split(".")[:2]) != here:
        problems.append(
            f"this environment runs Python {here} but the client runs Python {python}; "
            f"use an image or interpreter with Python {'.'.join(python.split('.')[:2])}"
        )
    missing = []
    wanted = client.get("distributions", {})
    if wanted:
        import importlib.metadata  # costs ~25 ms: only when there is something to check
    for dist, version in sorted(wanted.items()):
        try:
            local = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{dist}=={version}" if version else dist)
            continue
        if version and local != version:
            print(
                f"flyte-jupyter: note: {dist} is {local} here, {version} on the client",
                file=sys.stderr,
            )
    if missing:
        pins = ", ".join(repr(m) for m in missing)
        problems.append(
            f"packages the shipped code imports are not installed here: {', '.join(missing)}; "
            f"add them to the image, e.g. .with_pip_packages({pins})"
        )
    if problems:
        raise EnvironmentMismatch("; ".join(problems))


def linked_workdir(root: Path, sub: str = "") -> str:
    """A fresh working directory holding a link to each top-level entry of the extraction, so
    relative data paths work at the cost of a few symlinks. New top-level files stay private;
    writes through the links reach the extraction, which the post-run check then discards.

    The run starts in `sub` (the client's folder relative to root_dir, e.g. `notebooks`): each
    folder on the way is a real one, holding links to the extraction's entries at its level,
    so `../data/x.csv` from there is root_dir's `data/x.csv`, as it is on the client."""
    bad = f"the run's working directory {sub!r} is not a folder under root_dir"
    if not isinstance(sub, str) or "\0" in sub:
        raise ValueError(bad)
    parts = PurePosixPath(sub).parts
    if sub and (PurePosixPath(sub).is_absolute() or any(p in (".", "..") for p in parts)):
        raise ValueError(bad)
    workdir = here = tempfile.mkdtemp(prefix="flyte-jupyter-run-")
    source, linked = root, True
    try:
        for depth in range(len(parts) + 1):
            step = parts[depth] if depth < len(parts) else None
            # a bundle holds no links: defensive, and never past one (it may lead anywhere)
            linked = linked and source.is_dir() and not source.is_symlink()
            if linked:
                with os.scandir(source) as entries:
                    for entry in entries:
                        if entry.name not in ("__pycache__", step):
                            os.symlink(entry.path, os.path.join(here, entry.name))
            if step is not None:
                here = os.path.join(here, step)
                os.mkdir(here)
                source = source / step
        os.chdir(here)
    except (OSError, ValueError) as exc:  # a name too long, or not encodable here
        shutil.rmtree(workdir, ignore_errors=True)
        raise ValueError(f"{bad}: {exc}") from None
    return workdir


def _forget_changes(root: Path) -> None:
    """What a run wrote into its code directory never reaches a later run: a changed
    extraction is discarded (and fetched again by the next run)."""
    try:
        changed = discard_if_changed(root)
    except OSError as exc:
        print(f"flyte-jupyter: note: could not check the bundle directory: {exc}", file=sys.stderr)
        return
    if changed:
        print(
            f"flyte-jupyter: note: this run changed its code directory "
            f"({describe_changes(changed)}); the change "
            "was discarded, later runs get the verified bundle",
            file=sys.stderr,
        )


def _isolate_sys_path(root: Path, python_path: list[str]) -> None:
    """The bundle first, then installed packages; never the working directory."""
    kept = [p for p in sys.path if p and p != "."]
    sys.path[:] = [str((root / p).resolve()) for p in python_path] + kept
    sys.dont_write_bytecode = True  # the shared extraction was compiled once when extracted
    from .verified_imports import install  # the tree may change after the pre-run check

    install(root)


def load_entry(entry: str) -> Any:
    """The function named by "module:function" (imports the module)."""
    module_name, _, attr = entry.partition(":")
    if not module_name or not attr:
        raise ValueError(f"entry {entry!r} must look like 'module:function'")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    return target


def call(target: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    result = target(*args, **kwargs)
    if inspect.iscoroutine(result):
        import asyncio  # only async entries pay for it

        result = asyncio.run(result)
    return result


def summarize_result(target: Any, result: Any, size: int) -> dict[str, Any]:
    """outputs.json: `{"size": pickled bytes, "value": summary, ...}`. An entry whose result is
    a container of values (a notebook cell's) says how to summarize it with a `summarize`
    attribute."""
    custom = getattr(target, "summarize", None)
    if callable(custom):
        return {"size": size, **custom(result)}
    return {"size": size, "value": summarize(result, size)}


def describe_error(exc: BaseException, root: Path | None) -> dict[str, Any]:
    """error.json: the exception's type, message and the traceback of user code, with file
    names relative to the bundle."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIR):
        tb = tb.tb_next
    user = tb  # importlib's frames above the entry module: `import` would not show them
    while user is not None and user.tb_frame.f_code.co_filename.startswith(_IMPORT_MACHINERY):
        user = user.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, user or tb))
    if root:
        text = text.replace(str(root.resolve()) + os.sep, "")
    cls = type(exc)
    message = str(exc)
    if isinstance(exc, SystemExit):
        message = f"exit code {exc.code}"
    return {
        "type": cls.__qualname__,
        "module": cls.__module__,
        "message": message,
        "traceback": text,
        "missing_module": getattr(exc, "name", None) if isinstance(exc, ImportError) else None,
    }
