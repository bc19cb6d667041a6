"""Warm workers, the client side: find, start, use, list and stop the fork servers of
runtime/worker.py (one per interpreter and start-up environment, per owner).

A worker lives in `<cache>/workers/` (0700): NAME.sock (0600) and NAME.json, the 0600 info
file the worker writes when it is ready (pid, process identity, token, runtime hash). A worker
is used only when all of these hold: the info file is ours and private, its runtime hash is the
client's, its pid runs with the recorded identity, and the process answering on the socket is
that pid, of our user. Anything else is replaced, never reused; any failure falls back to a
cold process. Workers started by a kernel (`bind_to_process`) are its own: they stop with it.
Workers started by other processes (the CLI) outlive them for the idle timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ..runtime.locations import cache_dir
from .private import open_private, private_dir

ENABLE_ENV = "FLYTE_JUPYTER_WARM_WORKERS"
IDLE_ENV = "FLYTE_JUPYTER_WORKER_IDLE"
DEFAULT_IDLE = 600.0
STARTUP_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PATH", "HOME")
"""What an interpreter reads at start-up: part of a worker's key."""
_START_TIMEOUT = 15.0
_MAX_SOCKET_PATH = 100

_owner: str = ""
"""PID:IDENTITY of this process once `bind_to_process` made its workers its own."""
_started: dict[str, subprocess.Popen] = {}


def enabled(setting: bool | None = None) -> bool:
    """The `warm_workers` setting, else $FLYTE_JUPYTER_WARM_WORKERS, else on."""
    if setting is not None:
        return setting
    return os.environ.get(ENABLE_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def idle_seconds() -> float:
    raw = os.environ.get(IDLE_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_IDLE
    except ValueError:
        return DEFAULT_IDLE


def workers_dir() -> Path:
    return private_dir(cache_dir() / "workers")


def bind_to_process() -> None:
    """Workers this process starts from now on are its own: they stop when it exits (atexit,
    and the worker watches its owner in case it is killed)."""
    global _owner
    if not _owner:
        _owner = f"{os.getpid()}:{_identity(os.getpid()) or ''}"
        atexit.register(stop_workers, owned=True)


class WorkerProcess:
    """A run's process started by a worker, waited for like a `subprocess.Popen`: the worker
    sends its exit code on the request's connection. If the worker goes away first, the pid
    is followed (with its identity) and the exit code is -1 (status.json tells how it ended)."""

    def __init__(self, conn: socket.socket, pid: int, identity: str | None):
        self.conn = conn
        self.pid = pid
        self.identity = identity
        self.returncode: int | None = None
        self._buffer = b""

    def poll(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.wait(0)
        return None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.conn is not None:
                ready, _, _ = select.select([self.conn], [], [], left)
                if ready:
                    self._read()
                    continue
            elif not _running(self.pid, self.identity):
                self.returncode = -1
                break
            else:
                time.sleep(min(0.05, left) if left is not None else 0.05)
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"run process {self.pid}", timeout or 0)
        return self.returncode

    def _read(self) -> None:
        try:
            data = self.conn.recv(4096)
        except OSError:
            data = b""
        if not data:  # the worker went away: follow the pid
            self.conn.close()
            self.conn = None  # type: ignore[assignment]
            return
        self._buffer += data
        if b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            with contextlib.suppress(ValueError):
                self.returncode = int(json.loads(line)["exit"])
            self.conn.close()
            self.conn = None  # type: ignore[assignment]
            if self.returncode is None:
                self.returncode = -1


def spawn(
    command: list[str],
    argv0: str,
    args: list[str],
    env: dict[str, str],
    cwd: str,
    stdout: Any,
    stderr: Any,
) -> WorkerProcess | None:
    """Start `args` of the runtime on the warm worker that `command` starts (found or
    started now); None when no worker can be used (then start a cold process)."""
    try:
        conn, info = _worker(command, argv0)
    except (OSError, ValueError, KeyError):
        return None
    try:
        request = {"token": info["token"], "args": args, "env": env, "cwd": cwd}
        request["umask"] = _umask()
        socket.send_fds(
            conn, [json.dumps(request).encode() + b"\n"], [stdout.fileno(), stderr.fileno()]
        )
        reply = _read_line(conn, timeout=10)
        pid = int(reply["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        conn.close()
        return None
    conn.settimeout(None)
    return WorkerProcess(conn, pid, reply.get("identity") or _identity(pid))


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _read_line(conn: socket.socket, timeout: float) -> dict[str, Any]:
    conn.settimeout(timeout)
    data = b""
    while b"\n" not in data:
        more = conn.recv(65536)
        if not more:
            raise OSError("the worker closed the connection")
        data += more
    return json.loads(data.partition(b"\n")[0])


def _name(command: list[str]) -> str:
    startup = {k: os.environ.get(k) for k in STARTUP_ENV}
    key = json.dumps([command, startup, _owner]).encode()
    kind = "kernel" if _owner else "shared"
    return f"local-{kind}-{hashlib.sha256(key).hexdigest()[:12]}"


def _worker(command: list[str], argv0: str) -> tuple[socket.socket, dict[str, Any]]:
    """A verified connection to the worker for `command`, started if there is none."""
    directory = workers_dir()
    name = _name(command)
    sock_path = directory / f"{name}.sock"
    if len(str(sock_path)) > _MAX_SOCKET_PATH:
        raise OSError(f"socket path too long for a Unix socket: {sock_path}")
    found = _connect(directory / f"{name}.json")
    if found:
        return found
    with open_private(directory / f"{name}.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _connect(directory / f"{name}.json")  # another process may have started it
        if found:
            return found
        _start(command, argv0, name, directory)
        found = _connect(directory / f"{name}.json")
        if not found:
            raise OSError("the worker started but does not answer")
        return found


def _start(command: list[str], argv0: str, name: str, directory: Path) -> None:
    info = directory / f"{name}.json"
    with contextlib.suppress(FileNotFoundError):
        info.unlink()
    label = f"kernel {_owner.partition(':')[0]}" if _owner else "shared"
    argv = [
        *command,
        *("--socket", str(directory / f"{name}.sock"), "--info", str(info)),
        *("--idle", str(idle_seconds()), "--owner", _owner, "--label", label, "--argv0", argv0),
    ]
    env = {k: v for k, v in os.environ.items() if k in STARTUP_ENV}
    with open_private(directory / f"{name}.log") as log:
        proc = subprocess.Popen(
            argv,
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    _started[name] = proc
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OSError(f"the worker exited at start ({proc.returncode}): see {name}.log")
        with contextlib.suppress(OSError, ValueError):
            if json.loads(info.read_text()).get("pid") == proc.pid:
                return
        time.sleep(0.01)
    proc.kill()
    raise OSError("the worker did not start in time")


def _read_info(path: Path) -> dict[str, Any] | None:
    """The info file, if it is ours, private and a JSON object."""
    try:
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _connect(info_path: Path) -> tuple[socket.socket, dict[str, Any]] | None:
    """A connection to the worker `info_path` describes, if it passes every check; a worker
    that fails one is stopped (when it is still the recorded process) and its files removed."""
    if not info_path.exists():
        return None
    from ..runtime.worker import peer_uid, runtime_digest

    info = _read_info(info_path)
    if info is None or info.get("runtime") != runtime_digest() or not _trusted_process(info):
        _discard(info_path, info)
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(5)
        conn.connect(str(info_path.with_suffix(".sock")))
        pid, uid = peer_uid(conn)
        if pid != info["pid"] or uid != os.getuid():
            raise OSError("another process answers on the worker's socket")
    except OSError:
        conn.close()
        _discard(info_path, info)
        return None
    return conn, info


def _trusted_process(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    return isinstance(pid, int) and bool(info.get("identity")) and _running(pid, info["identity"])


def _running(pid: int, identity: str | None) -> bool:
    from .executors.local import _alive

    return _alive(pid) and (identity is None or _identity(pid) == identity)


def _identity(pid: int) -> str | None:
    from .executors.local import process_identity

    return process_identity(pid)


def _discard(info_path: Path, info: dict[str, Any] | None) -> None:
    """Stop the worker if it is still the process its (our, private) info file names, then
    remove its files so a fresh one starts."""
    if info is not None and _trusted_process(info):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(info["pid"], signal.SIGTERM)
        _wait_gone(info["pid"], info["identity"])
    for suffix in (".json", ".sock"):
        with contextlib.suppress(FileNotFoundError):
            info_path.with_suffix(suffix).unlink()
    _reap(info_path.stem)


def _wait_gone(pid: int, identity: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap_all()
        if not _running(pid, identity):
            return
        time.sleep(0.02)


def _reap(name: str) -> None:
    proc = _started.get(name)
    if proc is not None and proc.poll() is not None:
        del _started[name]


def _reap_all() -> None:
    for name in list(_started):
        _reap(name)


def list_workers() -> list[dict[str, Any]]:
    """The workers of this cache dir that run (name, pid, label, idle timeout, started)."""
    directory = cache_dir() / "workers"
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        info = _read_info(path)
        if info is None or not _trusted_process(info):
            continue
        found.append(
            {
                "name": path.stem,
                "pid": info["pid"],
                "label": info.get("label", ""),
                "python": info.get("python", ""),
                "idle": info.get("idle"),
                "started": info.get("started"),
            }
        )
    return found


def stop_workers(owned: bool = False) -> list[str]:
    """Stop the workers of this cache dir (only this process's own with `owned`); runs in
    progress go on. The names of the workers stopped."""
    directory = cache_dir() / "workers"
    stopped = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        info = _read_info(path)
        if owned and (info is None or not _owner or info.get("owner") != _owner):
            continue
        if info is not None and _trusted_process(info):
            stopped.append(path.stem)
        _discard(path, info)
    return stopped
