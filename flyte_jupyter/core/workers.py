"""Warm workers, the client side: find, start, use, list and stop the fork servers of
runtime/worker.py (one per interpreter and start-up environment, per owner).

A worker lives in `<cache>/workers/NAME/` (0700): `sock` (0600) and `info.json`, the 0600
file the worker writes when it is ready (pid, process identity, token, runtime hash). A worker
is used only when all of these hold: the info file is ours and private, its runtime hash is the
client's, and the process answering on the socket has the identity the info file records (a
local worker: also its pid, of our user). Anything else is replaced, never reused; any failure
falls back to a cold process. A docker worker is a long-lived container of the image (label
flyte-jupyter.worker=NAME) running the same server, its folder bind-mounted. Workers started
by a kernel (`bind_to_process`) are its own: they stop with it. Workers started by other
processes (the CLI) outlive them for the idle timeout.
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
import sys
import threading
import time
from collections.abc import Callable
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
_setting: Callable[[], bool] | None = None
_started_here: set[str] = set()
"""Names of the workers this process started (a kernel's docker workers: the container
cannot watch a host process, so the kernel stops them)."""
LABEL_WORKER = "flyte-jupyter.worker"
CONTAINER_DIR = "/run/flyte-jupyter-worker"


def enabled() -> bool:
    """The `warm_workers` setting: a kernel's session and project (`bind_to_process`), else
    the working directory's project file, else $FLYTE_JUPYTER_WARM_WORKERS, else on (Linux)."""
    from . import config
    from .errors import FlyteJupyterError

    if not hasattr(socket, "SO_PEERCRED") or not hasattr(os, "fork"):
        return False  # Linux only: a worker must know who connects
    try:
        return bool(_setting()) if _setting is not None else bool(config.resolve().warm_workers)
    except (FlyteJupyterError, OSError):  # no readable project here: the environment decides
        return os.environ.get(ENABLE_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def idle_seconds() -> float:
    raw = os.environ.get(IDLE_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_IDLE
    except ValueError:
        return DEFAULT_IDLE


def workers_dir() -> Path:
    return private_dir(cache_dir() / "workers")


def bind_to_process(setting: Callable[[], bool] | None = None) -> None:
    """Workers this process starts from now on are its own: they stop when it exits (atexit,
    and the worker watches its owner in case it is killed). `setting` reads `warm_workers`
    where this process keeps it (a kernel: its session settings over the project's)."""
    global _owner, _setting
    _setting = setting
    if not _owner:
        _owner = f"{os.getpid()}:{_identity(os.getpid()) or ''}"
        atexit.register(stop_workers, owned=True)


class WorkerProcess:
    """A run's process started by a worker, waited for like a `subprocess.Popen`: the worker
    sends its exit code on the request's connection. If the worker goes away first, the pid
    is followed (with its identity) and the exit code is -1 (status.json tells how it ended)."""

    def __init__(
        self, conn: socket.socket, pid: int, identity: str | None, worker: str, info: dict
    ):
        self.conn = conn
        self.pid = pid
        self.identity = identity
        self.worker = worker
        """The worker's name (its folder under workers_dir())."""
        self.worker_pid = int(info.get("peer_pid", 0))
        """The worker's pid as this host sees it."""
        self.host_pid: int | None = pid
        """The run's pid as this host sees it (a container's pids are its own)."""
        self.returncode: int | None = None
        self._buffer = b""
        self._reading = threading.Lock()
        """A log follower and a cancel may wait at once: one of them reads at a time."""

    def poll(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.wait(0)
        return None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = 0.05 if left is None else min(0.05, left)
            with self._reading:
                if self.conn is not None:
                    if select.select([self.conn], [], [], step)[0]:
                        self._read()
                        continue
                elif not _running(self.pid, self.identity):
                    self.returncode = -1
                    break
            if self.conn is None:
                time.sleep(step)
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
    name = _name("local", [command])

    def start(folder: Path) -> None:
        _start_local(command, argv0, folder)

    request = {"args": args, "env": env, "cwd": cwd}
    return _request(name, start, request, [stdout.fileno(), stderr.fileno()])


def spawn_in_container(
    client: Any,
    image_id: str,
    run: dict[str, Any],
    args: list[str],
    env: dict[str, str],
    run_dir: str | None,
    stdout: Any,
    stderr: Any,
) -> WorkerProcess | None:
    """Start `args` in a fresh process of the long-lived container of `image_id` (started
    now if there is none) with the container settings `run` (volumes, network...). The run's
    directory `run_dir` is handed over as a descriptor: the store stays mounted read-only."""
    name = _name("docker", [image_id, run])

    def start(folder: Path) -> None:
        _start_container(client, image_id, run, folder)

    fds = [stdout.fileno(), stderr.fileno()]
    dir_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY) if run_dir else None
    try:
        request = {"args": args, "env": env, "cwd": "/tmp"}
        if dir_fd is not None:
            request["run_dir"] = Path(run_dir).as_uri()  # type: ignore[arg-type]
        proc = _request(name, start, request, fds + ([dir_fd] if dir_fd is not None else []))
        if proc is not None:
            proc.host_pid = _host_child(proc.worker_pid, proc.pid)
        return proc
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _request(
    name: str, start: Any, request: dict[str, Any], fds: list[int]
) -> WorkerProcess | None:
    try:
        conn, info = _worker(name, start)
    except (OSError, ValueError, KeyError) as exc:
        _note(name, f"not used ({exc}): the run starts cold")
        return None
    try:
        message = {**request, "token": info["token"], "umask": _umask()}
        socket.send_fds(conn, [json.dumps(message).encode() + b"\n"], fds)
        reply = _read_line(conn, timeout=10)
        pid = int(reply["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        conn.close()
        return None
    conn.settimeout(None)
    return WorkerProcess(conn, pid, reply.get("identity"), name, info)


def _host_child(parent: int, inner_pid: int) -> int | None:
    """The host pid of the child of `parent` whose pid in its own namespace is `inner_pid`
    (the last NSpid of /proc/PID/status); None once it has ended."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
            status = (entry / "status").read_text().splitlines()
            ppid = next(x for x in status if x.startswith("PPid:")).split()[-1]
            nspid = next(x for x in status if x.startswith("NSpid:")).split()[-1]
            if int(ppid) == parent and int(nspid) == inner_pid:
                return int(entry.name)
    return None


def _note(name: str, text: str) -> None:
    if os.environ.get("FLYTE_JUPYTER_VERBOSE"):
        print(f"flyte-jupyter: warm worker {name} {text}", file=sys.stderr)


def kill(name: str, pid: int, identity: str | None, sig: int) -> bool:
    """Ask worker `name` to signal the process group of its child `pid` (a container's
    process, which the host user may not be allowed to signal)."""
    found = _connect(workers_dir() / name)
    if not found:
        return False
    conn, info = found
    try:
        request = {"op": "kill", "token": info["token"], "pid": pid, "identity": identity}
        conn.sendall(json.dumps({**request, "signal": int(sig)}).encode() + b"\n")
        return bool(_read_line(conn, timeout=5).get("killed"))
    except (OSError, ValueError):
        return False
    finally:
        conn.close()


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


def _name(kind: str, key: list[Any]) -> str:
    from ..runtime.worker import runtime_digest

    startup = {k: os.environ.get(k) for k in STARTUP_ENV}
    digest = json.dumps([key, startup, _owner, runtime_digest()], sort_keys=True).encode()
    return f"{kind}-{'kernel' if _owner else 'shared'}-{hashlib.sha256(digest).hexdigest()[:12]}"


def _worker(name: str, start: Any) -> tuple[socket.socket, dict[str, Any]]:
    """A verified connection to worker `name`, started by `start(folder)` if there is none."""
    _reap_all()  # workers this process started that have exited (idle) leave no zombie
    folder = workers_dir() / name
    if len(str(folder / "sock")) > _MAX_SOCKET_PATH:
        raise OSError(f"socket path too long for a Unix socket: {folder / 'sock'}")
    found = _connect(folder)
    if found:
        return found
    with open_private(workers_dir() / f"{name}.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _connect(folder)  # another process may have started it meanwhile
        if found:
            return found
        _discard(folder, None)
        private_dir(folder)
        start(folder)
        _started_here.add(name)
        found = _connect(folder)
        if not found:
            raise OSError("the worker started but does not answer")
        return found


def _server_args(folder: Path, inside: Path, argv0: str, owner: str, label: str) -> list[str]:
    return [
        *("--socket", str(inside / "sock"), "--info", str(inside / "info.json")),
        *(f"--idle={idle_seconds()}", f"--owner={owner}", f"--label={label}", f"--argv0={argv0}"),
    ]


def _start_local(command: list[str], argv0: str, folder: Path) -> None:
    label = f"kernel {_owner.partition(':')[0]}" if _owner else "shared"
    argv = [*command, *_server_args(folder, folder, argv0, _owner, label)]
    env = {k: v for k, v in os.environ.items() if k in STARTUP_ENV}
    with open_private(folder / "log") as log:
        proc = subprocess.Popen(
            argv,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    _started[folder.name] = proc
    _wait_ready(folder, lambda: proc.poll() is None, proc.kill)


def _start_container(client: Any, image_id: str, run: dict[str, Any], folder: Path) -> None:
    """The worker container: the image's python3 running the fork server from the mounted
    runtime, its socket in `folder` (bind-mounted), labelled with the worker's name."""
    import docker.errors

    _remove_containers(folder.name, client)
    label = f"kernel {_owner.partition(':')[0]}" if _owner else "shared"
    inside = Path(CONTAINER_DIR)
    server = [*_server_args(folder, inside, "-c", "", label), "--keep-env"]
    server += ["--client-uid", str(os.getuid())]
    container = client.containers.run(
        image_id,
        ["python3", "-I", "-u", "-c", run["boot"], *server],
        detach=True,
        auto_remove=True,
        environment=run["environment"],
        volumes={**run["volumes"], str(folder): {"bind": CONTAINER_DIR, "mode": "rw"}},
        labels={LABEL_WORKER: folder.name},
        network_mode=run["network"],
        working_dir="/tmp",
    )

    def running() -> bool:
        try:
            container.reload()
        except docker.errors.NotFound:
            return False
        return container.status in ("created", "running")

    def kill() -> None:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)

    _wait_ready(folder, running, kill)


def _wait_ready(folder: Path, alive: Any, kill: Any) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    checked = 0.0
    while time.monotonic() < deadline:
        if (folder / "info.json").exists() and (folder / "sock").exists():
            return
        if time.monotonic() - checked > 0.5:  # a container answers slowly: not every turn
            checked = time.monotonic()
            if not alive():
                raise OSError(f"the worker exited at start: see {folder}")
        time.sleep(0.01)
    kill()
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


def _connect(folder: Path) -> tuple[socket.socket, dict[str, Any]] | None:
    """A connection to the worker of `folder`, if it passes every check: info file ours and
    private, runtime hash ours, and the process answering on the socket is the one the info
    file names (its identity; for a local worker also its pid and our user)."""
    from ..runtime.worker import peer_uid, runtime_digest

    info = _read_info(folder / "info.json")
    if info is None or info.get("runtime") != runtime_digest():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(5)
        conn.connect(str(folder / "sock"))
        pid, uid = peer_uid(conn)
        local = folder.name.startswith("local-")
        if local and (pid != info.get("pid") or uid != os.getuid()):
            raise OSError("another process answers on the worker's socket")
        if not info.get("identity") or _identity(pid) != info["identity"]:
            raise OSError("the process on the worker's socket is not the worker")
    except OSError as exc:
        _note(folder.name, f"refused: {exc}")
        conn.close()
        return None
    return conn, {**info, "peer_pid": pid}


def _running(pid: int, identity: str | None) -> bool:
    from .executors.local import _alive

    return _alive(pid) and (identity is None or _identity(pid) == identity)


def _identity(pid: int) -> str | None:
    from .executors.local import process_identity

    return process_identity(pid)


def _discard(folder: Path, client: Any) -> None:
    """Stop the worker of `folder` if it is still the process its (our, private) info file
    names, then remove its files so a fresh one starts. Runs in progress go on."""
    info = _read_info(folder / "info.json")
    found = _connect(folder) if info is not None and info.get("token") else None
    if found:
        conn, info = found
        with contextlib.suppress(OSError, ValueError):
            conn.sendall(json.dumps({"op": "stop", "token": info["token"]}).encode() + b"\n")
            _read_line(conn, timeout=3)
        conn.close()
    elif info is not None and folder.name.startswith("local-"):
        pid, identity = info.get("pid"), info.get("identity")
        if isinstance(pid, int) and identity and _running(pid, identity):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)  # stale or tampered: it must not serve again
    if info is not None and folder.name.startswith("local-") and isinstance(info.get("pid"), int):
        _wait_gone(info["pid"], info.get("identity"))
    if folder.name.startswith("docker-"):
        _remove_containers(folder.name, client)
    for name in ("info.json", "sock"):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    _reap(folder.name)


def _remove_containers(name: str, client: Any) -> None:
    try:
        import docker

        client = client or docker.from_env()
        labelled = {"label": f"{LABEL_WORKER}={name}"}
        for container in client.containers.list(all=True, filters=labelled):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
    except Exception:  # no engine (or no docker package): nothing of ours runs there
        return


def _wait_gone(pid: int, identity: str | None, timeout: float = 3.0) -> None:
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
    """The workers of this cache dir that answer (name, pid, label, idle timeout, started)."""
    found = []
    for folder in _folders():
        connected = _connect(folder)
        if not connected:
            continue
        conn, info = connected
        conn.close()
        found.append(
            {
                "name": folder.name,
                "pid": info["pid"],
                "label": info.get("label", ""),
                "python": info.get("python", ""),
                "idle": info.get("idle"),
                "started": info.get("started"),
                "owner": info.get("owner", ""),
            }
        )
    return found


def _folders() -> list[Path]:
    directory = cache_dir() / "workers"
    return sorted(p for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []


def stop_workers(owned: bool = False) -> list[str]:
    """Stop the workers of this cache dir (only this process's own with `owned`); runs in
    progress go on. The names of the workers that were running."""
    stopped = []
    for folder in _folders():
        info = _read_info(folder / "info.json") or {}
        mine = folder.name in _started_here or (_owner and info.get("owner") == _owner)
        if owned and not mine:
            continue
        connected = _connect(folder)
        if connected:
            connected[0].close()
            stopped.append(folder.name)
        _discard(folder, None)
    return stopped
