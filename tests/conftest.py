"""Shared fixtures: real file trees in temporary directories and an isolated cache."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import servers

from flyte_jupyter.core.storage import Store
from flyte_jupyter.runtime import blobs

pytest_plugins = ["flyte_fixtures", "worker_fixtures"]

servers.setup_env()


@pytest.fixture(autouse=True)
def isolated_history(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLYTE_JUPYTER_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    monkeypatch.delenv("FLYTE_JUPYTER_STORE", raising=False)


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own cache dir, so archives and hashes never leak between tests."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(cache))
    return cache


def process_alive(pid: int) -> bool:
    """Whether `pid` still runs; a zombie (ended, not yet reaped) counts as ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create `files` (relative path -> text or bytes) under `root`; text is dedented."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"))
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Callable[..., Path]:
    """`tree({"app.py": "...", ...}, name="project")` builds a real file tree."""

    def make(files: dict[str, str | bytes], name: str = "project") -> Path:
        return write_tree(tmp_path / name, files)

    return make


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    with servers.moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    with servers.gcs_emulator(tmp_path_factory.mktemp("gcs")) as server:
        yield server


@pytest.fixture(params=["file", "s3", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The same Store API on a file:// directory, a moto S3 server and the GCS emulator,
    each in a fresh bucket."""
    if request.param == "file":
        return Store((tmp_path / "store").as_uri())
    bucket = f"b{uuid.uuid4().hex[:12]}"
    if request.param == "s3":
        options = servers.s3_options(request.getfixturevalue("s3_server").url)
        url = f"s3://{bucket}/prefix"
    else:
        options = servers.gcs_options(request.getfixturevalue("gcs_server").url)
        url = f"gs://{bucket}/prefix"
    fs, _ = blobs.filesystem(url, options)
    fs.mkdir(bucket)
    return Store(url, options)


@pytest.fixture
def count_requests(request: pytest.FixtureRequest, store: Store):
    """`with count_requests() as c: ...; c.requests` lists the requests the store's server saw
    (None for file:// stores, which have no server)."""

    class _NoServer:
        requests = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    def make():
        if store.url.startswith("s3://"):
            return servers.S3Requests(request.getfixturevalue("s3_server").url)
        if store.url.startswith("gs://"):
            return servers.GcsRequests(request.getfixturevalue("gcs_server").log)
        return _NoServer()

    return make
