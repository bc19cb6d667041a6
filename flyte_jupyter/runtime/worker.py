"""A warm worker: a fork server that has imported the runtime (and no user code), so a run
starts in microseconds instead of an interpreter start-up.

    python -I -u -m flyte_jupyter.runtime.worker --socket PATH --info PATH [--idle S]
        [--owner PID:IDENTITY] [--argv0 A]

Each request on the Unix socket (one JSON line, the run's stdout and stderr passed as file
descriptors) forks a child that does what a fresh `python -I -u -m flyte_jupyter.runtime ARGS`
would: its own session and process group, the run's environment (os.environ replaced), its
own working directory, its log files as fds 1 and 2, the interpreter's import caches
refreshed, then `execute.main(ARGS)` and the interpreter's exit steps (threads joined, atexit
callbacks, streams flushed). The server replies with the child's pid and identity, then its
exit code. Only the server's user may connect (SO_PEERCRED), and only with the token of the
0600 info file. The server exits after `--idle` seconds without runs, when its owner process
(a kernel) ends, on SIGTERM, or when its info file no longer names it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

from . import execute

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_OWNER_CHECK_SECONDS = 1.0
_MAX_REQUEST = 4 * 1024 * 1024


def runtime_digest(package_dir: Path = _PACKAGE_DIR) -> str:
    """The runtime's source hash (flyte_jupyter/__init__.py and runtime/*.py): a worker whose
    runtime differs from the client's is never used."""
    files = [package_dir / "__init__.py", *sorted((package_dir / "runtime").glob("*.py"))]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]


def process_identity(pid: int) -> str | None:
    """Boot id and start time of `pid`, as core/executors/local.py's process_identity writes it
    (the runtime cannot import core)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    boot = Path("/proc/sys/kernel/random/boot_id")
    boot_id = boot.read_text().strip() if boot.exists() else "-"
    return f"{boot_id}:{stat.rsplit(')', 1)[1].split()[19]}"


def peer_uid(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


class _Server:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.token = os.urandom(16).hex()
        self.identity = process_identity(os.getpid())
        self.base_env = dict(os.environ) if args.keep_env else {}
        """A container's own environment (its image's ENV) under each run's variables."""
        self.uids = {os.getuid(), args.client_uid if args.client_uid >= 0 else os.getuid()}
        self.children: dict[int, socket.socket | None] = {}
        self.last_active = time.monotonic()
        self.stopping = False
        self.owner_checked = 0.0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.args.socket)
        old = os.umask(0o077)
        try:
            self.listener.bind(self.args.socket)
        finally:
            os.umask(old)
        os.chmod(self.args.socket, 0o600)
        if self.args.client_uid >= 0 and self.args.client_uid != os.getuid():
            os.chown(self.args.socket, self.args.client_uid, -1)  # a container's host user
        self.listener.listen(16)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        info = {
            "pid": os.getpid(),
            "identity": self.identity,
            "token": self.token,
            "runtime": runtime_digest(),
            "python": sys.executable,
            "socket": self.args.socket,
            "owner": self.args.owner,
            "label": self.args.label,
            "idle": self.args.idle,
            "started": time.time(),
        }
        fd = os.open(self.args.info + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if self.args.client_uid >= 0 and self.args.client_uid != os.getuid():
            os.fchown(fd, self.args.client_uid, -1)
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
        os.replace(self.args.info + ".tmp", self.args.info)

    def _cleanup(self) -> None:
        """Remove the socket and info file if they are still this server's. Running children
        keep running (their own sessions); their clients then follow them by pid."""
        if self._still_named():
            for path in (self.args.info, self.args.socket):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self.listener.close()
        for conn in self.children.values():
            if conn is not None:
                conn.close()

    def _on_term(self, *_: Any) -> None:
        self.stopping = True

    def serve(self) -> None:
        try:
            while not self.stopping and not self._should_exit():
                ready, _, _ = select.select([self.listener, self.wake_r], [], [], 0.5)
                if self.wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 512)
                self._reap()
                if self.listener in ready:
                    self._accept()
        finally:
            self._cleanup()

    def _should_exit(self) -> bool:
        if not self._still_named():
            return True
        if self.args.owner and time.monotonic() - self.owner_checked > _OWNER_CHECK_SECONDS:
            self.owner_checked = time.monotonic()
            pid, _, identity = self.args.owner.partition(":")
            if process_identity(int(pid)) != (identity or None):
                return True
        idle = time.monotonic() - self.last_active
        return not self.children and idle > self.args.idle

    def _still_named(self) -> bool:
        """The info file still names this process (a replaced or stopped worker steps down)."""
        try:
            with open(self.args.info) as handle:
                return json.load(handle).get("token") == self.token
        except (OSError, ValueError):
            return False

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            self.last_active = time.monotonic()
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(_line({"exit": os.waitstatus_to_exitcode(status)}))
                conn.close()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(5)
            _pid, uid = peer_uid(conn)
            if uid not in self.uids:
                return  # another user: not even an answer
            data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
            while not data.endswith(b"\n") and len(data) < _MAX_REQUEST:
                more = conn.recv(65536)
                if not more:
                    break
                data += more
            request = json.loads(data)
            if request.get("token") != self.token:
                conn.sendall(_line({"error": "wrong token"}))
                return
            if request.get("op") == "stop":
                self.stopping = True
                conn.sendall(_line({"stopping": True}))
                return
            if request.get("op") == "kill":
                conn.sendall(_line({"killed": self._kill(request)}))
                return
            if len(fds) not in (2, 3):
                conn.sendall(_line({"error": "a run needs its stdout and stderr"}))
                return
            self.last_active = time.monotonic()
            pid = self._fork(request, fds, conn)
            conn.sendall(_line({"pid": pid, "identity": process_identity(pid)}))
            self.children[pid] = conn
            conn = None  # kept for the exit code
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                conn.sendall(_line({"error": str(exc)}))
        finally:
            for fd in fds:
                os.close(fd)
            if conn is not None:
                conn.close()

    def _kill(self, request: dict[str, Any]) -> bool:
        """Signal the process group of one of this worker's running children, if `pid` is
        still that child (its identity): the way a container's run is cancelled."""
        pid = request.get("pid")
        if pid not in self.children or process_identity(pid) != request.get("identity"):
            return False
        try:
            os.killpg(pid, int(request.get("signal", signal.SIGTERM)))
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _fork(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 70
        try:
            self._become_run(request, fds, conn)
            code = _run_like_main(self.args.argv0, request["args"])
        except BaseException:  # the child must never return into the server
            with contextlib.suppress(BaseException):
                import traceback

                traceback.print_exc()
        finally:
            os._exit(code)

    def _become_run(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> None:
        """In the child: drop everything of the server, then take the run's process state."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sock in (self.listener, conn, *[c for c in self.children.values() if c]):
            sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (devnull, *fds[:2]):
            os.close(fd)
        if len(fds) == 3 and request.get("run_dir"):
            # the run's directory, opened by the client: the only writable place of the store
            # (mounted read-only), reached through the descriptor
            through = f"file:///proc/self/fd/{fds[2]}"
            request["args"] = [a.replace(request["run_dir"], through) for a in request["args"]]
        os.umask(int(request.get("umask", 0o022)))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**self.base_env, **request["env"]})
        tempfile.tempdir = None  # $TMPDIR of this run, not the server's
        importlib.invalidate_caches()  # packages installed since the server started
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        if __name__ != "__main__":
            sys.modules.pop(__name__, None)


def _run_like_main(argv0: str, args: list[str]) -> int:
    """execute.main, then what the interpreter does at exit: join non-daemon threads, run
    atexit callbacks, flush the standard streams."""
    sys.argv = [argv0, *args]
    try:
        code: Any = execute.main(args)
    except SystemExit as exc:
        code = exc.code
    code = code if isinstance(code, int) else (0 if code is None else 1)
    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    return code


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def serve(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flyte_jupyter.runtime.worker")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--info", required=True)
    parser.add_argument("--idle", type=float, default=600.0)
    parser.add_argument("--owner", default="", help="PID:IDENTITY: stop when it ends")
    parser.add_argument("--label", default="")
    parser.add_argument("--argv0", default="-c")
    parser.add_argument("--client-uid", type=int, default=-1, help="also serve this user")
    parser.add_argument("--keep-env", action="store_true", help="runs inherit this environment")
    args = parser.parse_args(argv)
    if args.argv0 != "-c":
        importlib.import_module("runpy")  # a `python -m` run has it loaded: so do its forks
    server = _Server(args)
    server.start()
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
