"""Real storage servers for tests: moto's S3 server and the GCS emulator, each on a free
loopback port, started as subprocesses and stopped afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until `url` answers (any HTTP status); RuntimeError if `proc` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server for {url} did not start in {timeout}s")


@dataclass(frozen=True)
class Server:
    url: str
    log: Path


@contextlib.contextmanager
def _server(
    argv: list[str], ready_url: str, url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        wait_http(ready_url, proc)
        yield Server(url, log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server, killing it if it does not stop within 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def moto_server(log_dir: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    # moto's request recorder writes to ./moto_recording unless told otherwise: keep the
    # checkout clean by pointing it into the server's own log directory.
    recording = {"MOTO_RECORDER_FILEPATH": str(log_dir / "moto_recording")}
    return _server(argv, f"{url}/moto-api/", url, log_dir / "moto.log", recording)


def gcs_emulator(log_dir: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [
        sys.executable,
        "-u",  # unbuffered, so its request log is current when counted
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
    ]
    url = f"http://127.0.0.1:{port}"
    return _server(argv, f"{url}/storage/v1/b", url, log_dir / "gcs.log")


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def s3_options(endpoint: str) -> dict:
    return {"endpoint_url": endpoint}


def gcs_options(endpoint: str) -> dict:
    return {"endpoint_url": endpoint, "token": "anon", "project": "test"}


def setup_env() -> None:
    """Credentials the emulators accept; set before any s3fs/gcsfs import."""
    for key, value in S3_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


class S3Requests:
    """The HTTP requests moto's server receives ("METHOD path"), from its request recorder."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.requests: list[str] = []

    def _call(self, action: str, method: str = "POST") -> bytes:
        url = f"{self.endpoint}/moto-api/recorder/{action}"
        return urllib.request.urlopen(urllib.request.Request(url, method=method)).read()

    def __enter__(self) -> S3Requests:
        self._call("reset-recording")
        self._call("start-recording")
        return self

    def __exit__(self, *exc: object) -> None:
        self._call("stop-recording")
        lines = self._call("download-recording", "GET").decode().splitlines()
        self.requests = [f"{r['method']} {r['url']}" for r in map(json.loads, lines)]


class GcsRequests:
    """The requests the GCS emulator logged ("METHOD path"), one log line per request."""

    def __init__(self, log: Path):
        self.log = log
        self.requests: list[str] = []

    def _lines(self) -> list[str]:
        return [m.group(1) for m in map(_REQUEST_LINE.search, self.log.open()) if m]

    def __enter__(self) -> GcsRequests:
        self._start = len(self._lines())
        return self

    def __exit__(self, *exc: object) -> None:
        self.requests = self._lines()[self._start :]


_REQUEST_LINE = re.compile(r'"([A-Z]+ \S+) HTTP/1\.[01]" \d{3}')
