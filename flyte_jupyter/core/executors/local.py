"""The embedded default executor: the runtime in a fresh local process.

The child gets `python -I` (no user site, no PYTHON* variables, no working directory on
sys.path), a minimal environment, its own temporary working directory and its own process
group, so nothing from the caller's process leaks in: a module that exists only next to the
notebook fails remotely unless the bundle ships it, exactly as it would in a container.
The "image" of a local run may name another interpreter or virtualenv
(`python=/path/to/venv`), which is how to try "the image lacks package X" without Docker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...runtime.blobs import STORAGE_OPTIONS_ENV
from ...runtime.locations import cache_dir
from .. import history
from ..errors import RunError, UsageError
from ..private import open_private, private_dir
from ..runtime_files import boot_line, runtime_copy
from ..storage import Store
from ..submit import LogLine, RunSpec

_PACKAGE_DIR = Path(__file__).resolve().parents[2]
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "SYSTEMROOT")
PASS_PREFIXES = ("AWS_", "GOOGLE_", "GCSFS_", "STORAGE_EMULATOR_HOST", "AZURE_", "FLYTE_JUPYTER_")
_GRACE_SECONDS = 3.0


class LocalExecutor:
    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python

    def validate(self, spec: RunSpec) -> None:
        """Before anything is uploaded or recorded: the interpreter the run needs exists."""
        _interpreter(self.python or _python_from_image(spec.image))

    def launch(self, spec: RunSpec, store: Store) -> LocalExecution:
        python = _interpreter(self.python or _python_from_image(spec.image))
        logs = _logs_dir(spec.run_id)
        private_dir(logs)
        workdir = tempfile.mkdtemp(prefix="flyte-jupyter-local-")
        env = _child_env(spec, store)
        with open_private(logs / "stdout.txt") as out, open_private(logs / "stderr.txt") as err:
            proc = _warm_start(python, spec.runtime_args(), env, workdir, out, err)
            if proc is None:
                proc = subprocess.Popen(
                    [*_runtime_command(python), *spec.runtime_args()],
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        identity = getattr(proc, "identity", None) or process_identity(proc.pid)
        history.update(spec.run_id, pid=proc.pid, pid_start=identity)
        return LocalExecution(proc.pid, logs, proc, workdir, identity)

    def attach(self, record: history.RunRecord, store: Store) -> LocalExecution | None:
        if record.pid is None:
            return None
        return LocalExecution(record.pid, _logs_dir(record.id), None, None, record.pid_start)


def _logs_dir(run_id: str) -> Path:
    return cache_dir() / "local-runs" / run_id


def _python_from_image(image: str | None) -> str | None:
    if image is None:
        return None
    if image.startswith("python="):
        return image.removeprefix("python=")
    raise UsageError(
        f"the local executor runs a local interpreter, not image {image!r}: use "
        "image 'python=/path/to/python' (or a virtualenv directory), or --executor docker"
    )


def _interpreter(python: str | None) -> str:
    if python is None:
        return sys.executable
    path = Path(python).expanduser()
    if path.is_dir():
        path = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not path.exists():
        raise UsageError(f"interpreter {path} not found: give a python executable or a venv dir")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise UsageError(f"{path} is not an executable file: give a python executable or a venv")
    return str(path)


def _runtime_command(python: str) -> list[str]:
    """This interpreter imports our runtime as installed; any other gets a private copy of the
    runtime (stdlib-only for file:// stores) put on sys.path just long enough to import it."""
    if _same_environment(python):
        return [python, "-I", "-u", "-m", "flyte_jupyter.runtime"]
    return [python, "-I", "-u", "-c", boot_line("run", str(runtime_copy()))]


def _warm_start(
    python: str, args: list[str], env: dict[str, str], workdir: str, out: Any, err: Any
) -> Any:
    """The run started by a warm worker of `python` (see core/workers.py), or None: warm
    workers are off, or none could be used (then the caller starts a cold process)."""
    from .. import workers

    if not workers.enabled():
        return None
    if _same_environment(python):
        boot = boot_line("worker")
        argv0 = str(_PACKAGE_DIR / "runtime" / "__main__.py")  # what `-m` puts in argv[0]
    else:
        boot = boot_line("worker", str(runtime_copy()))
        argv0 = "-c"
    return workers.spawn([python, "-I", "-u", "-c", boot], argv0, args, env, workdir, out, err)


def _same_environment(python: str) -> bool:
    """Whether `python` sees our installed packages: the same executable *and* the same
    sys.prefix. A venv made without --copies links to its base interpreter, so resolved paths
    match while its site-packages (no flyte_jupyter) differ; Python finds its venv by the
    pyvenv.cfg next to the unresolved executable or one level up, and so do we."""
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return False
    ours = Path(sys.prefix).resolve() if sys.prefix != sys.base_prefix else None
    return _venv_dir(Path(python)) == ours


def _venv_dir(python: Path) -> Path | None:
    for folder in (python.absolute().parent, python.absolute().parent.parent):
        if (folder / "pyvenv.cfg").is_file():
            return folder.resolve()
    return None


def _child_env(spec: RunSpec, store: Store) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _PASS_ENV or k.startswith(PASS_PREFIXES)}
    if not store.local:
        env[STORAGE_OPTIONS_ENV] = json.dumps(store.options)
    env.update(spec.env)
    return env


class LocalExecution:
    """A runtime process, followed through its pid and its log files. A run started by another
    process is known by its pid and that process's identity (`process_identity`): once the pid
    belongs to another process, the run has ended and nothing is signalled."""

    def __init__(
        self,
        pid: int,
        logs: Path,
        proc: subprocess.Popen | None,
        workdir: str | None,
        identity: str | None = None,
    ):
        self.pid = pid
        self.logs = logs
        self.proc = proc
        self.workdir = workdir
        self.identity = identity

    def wait(self, timeout: float | None) -> int | None:
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
            if self.workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            return code
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._running():
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        return -1  # not our child: the exit code is in status.json

    def _running(self) -> bool:
        """Our run's process is alive: the pid runs and, when recorded, is the same process."""
        if not _alive(self.pid):
            return False
        return self.identity is None or process_identity(self.pid) == self.identity

    def cancel(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after a grace period; only when the
        pid is still our run's process."""
        if self.proc is None:
            if self.identity is None:
                raise RunError(
                    f"process {self.pid} was recorded by an older flyte-jupyter without its "
                    "identity, so it is not signalled: stop it yourself if it is still the run"
                )
            if not self._running():
                return  # the run ended; the pid may belong to another process by now
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            if self.wait(_GRACE_SECONDS) is not None:
                break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers that left the leader behind
        self.wait(_GRACE_SECONDS)

    def output_so_far(self) -> str:
        parts = []
        for name in ("stdout", "stderr"):
            with contextlib.suppress(OSError):
                parts.append((self.logs / f"{name}.txt").read_text(errors="replace"))
        return "".join(parts)

    def log_lines(self) -> Iterator[LogLine]:
        streams = {name: (self.logs / f"{name}.txt").open("rb") for name in ("stdout", "stderr")}
        partial = dict.fromkeys(streams, b"")
        try:
            while True:
                ended = self.wait(0.02) is not None
                got = False
                for name, handle in streams.items():
                    data = handle.read()
                    if not data:
                        continue
                    got = True
                    *lines, partial[name] = (partial[name] + data).split(b"\n")
                    for line in lines:
                        yield LogLine(name, line.decode(errors="replace") + "\n")
                if ended and not got:
                    break
            for name, rest in partial.items():
                if rest:
                    yield LogLine(name, rest.decode(errors="replace"))
        finally:
            for handle in streams.values():
                handle.close()


def process_identity(pid: int) -> str | None:
    """Who `pid` is, beyond its number: the boot id and the process's start time (clock ticks
    after boot, field 22 of /proc/<pid>/stat), else `ps`'s start time; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # /proc works: the process is gone
        return _ps_start_time(pid)
    except OSError:
        return None
    boot = Path("/proc/sys/kernel/random/boot_id")
    boot_id = boot.read_text().strip() if boot.exists() else "-"
    return f"{boot_id}:{stat.rsplit(')', 1)[1].split()[19]}"


def _ps_start_time(pid: int) -> str | None:
    """Start time from `ps` where there is no /proc (macOS)."""
    try:
        out = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"ps:{out}" if out else None


def _alive(pid: int) -> bool:
    """Whether `pid` still runs; a zombie (ended, not yet reaped by its parent) has ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: trust kill(0)
    return state != "Z"
