"""Reading and writing objects by URL: plain files for file:// (no fsspec needed), fsspec for
everything else. Writes are atomic: an object appears under its key only when complete.

A local write goes to a `.partial-*` file beside its key, locked while it is written: a partial
nobody holds a lock on was left by a killed writer, and `remove_dead_partials` deletes it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

STORAGE_OPTIONS_ENV = "FLYTE_JUPYTER_STORAGE_OPTIONS"
PARTIAL_PREFIX = ".partial-"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: partials are never judged dead
    fcntl = None  # type: ignore[assignment]


def is_local(url: str) -> bool:
    return url.startswith("file://") or "://" not in url


def local_path(url: str) -> str:
    """The filesystem path of a file:// URL (or a plain path)."""
    if url.startswith("file://"):
        return unquote(urlparse(url).path)
    return url


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def storage_options_from_env() -> dict[str, Any]:
    """fsspec options the executor handed down (endpoint, anonymous access...)."""
    raw = os.environ.get(STORAGE_OPTIONS_ENV)
    return json.loads(raw) if raw else {}


def filesystem(url: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a remote URL."""
    opts = storage_options_from_env() if options is None else options
    if url.startswith(("gs://", "gcs://")):
        # gcsfs's experimental filesystem probes every bucket over gRPC first, which stalls
        # for a minute wherever that is not reachable (emulators, proxies). Plain write-once
        # objects need none of it, so use the core filesystem unless the user opted in.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(**opts)
        return fs, fs._strip_protocol(url)
    if url.startswith(("s3://", "s3a://")):
        # s3fs itself, not fsspec's registry: importing flyte (the flyte executor, or a Flyte
        # pod) swaps the registry's s3 for obstore's, which rejects s3fs options and treats
        # buckets differently (FLYTE-NOTES pitfall 1)
        from s3fs import S3FileSystem

        fs = S3FileSystem(**opts)
        return fs, fs._strip_protocol(url)
    import fsspec

    return fsspec.core.url_to_fs(url, **opts)


def read_bytes(url: str) -> bytes:
    if is_local(url):
        with open(local_path(url), "rb") as f:
            return f.read()
    fs, path = filesystem(url)
    return fs.cat_file(path)


def exists(url: str) -> bool:
    if is_local(url):
        return os.path.exists(local_path(url))
    fs, path = filesystem(url)
    return fs.exists(path)


def get_file(url: str, dest: str) -> None:
    """Download `url` to the local file `dest`."""
    if is_local(url):
        shutil.copyfile(local_path(url), dest)
        return
    fs, path = filesystem(url)
    fs.get_file(path, dest)


def write_bytes(url: str, data: bytes) -> None:
    """Write an object atomically: temp file + rename locally, a single PUT remotely."""
    if is_local(url):
        write_local_atomic(local_path(url), data)
        return
    fs, path = filesystem(url)
    fs.pipe_file(path, data)


@contextlib.contextmanager
def open_read(url: str) -> Iterator[BinaryIO]:
    """The object as a binary file, read as it is used: a big value is never held twice."""
    if is_local(url):
        with open(local_path(url), "rb") as f:
            yield f
        return
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        yield f


@contextlib.contextmanager
def open_write(url: str) -> Iterator[BinaryIO]:
    """A binary file that becomes the object at `url` when the block completes, nothing on
    error: written in place (atomically) for file://, else uploaded from a local temporary
    file, so that a big value is streamed out rather than built as bytes first."""
    if is_local(url):
        with atomic_local_file(local_path(url)) as f:
            yield f
        return
    fs, path = filesystem(url)
    with tempfile.NamedTemporaryFile(prefix=PARTIAL_PREFIX) as f:
        yield f
        f.flush()
        fs.put_file(f.name, path)


def write_json(url: str, doc: Any) -> None:
    write_bytes(url, json.dumps(doc, indent=2, sort_keys=True).encode())


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def write_local_atomic(path: str, data: bytes) -> None:
    with atomic_local_file(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_local_file(path: str) -> Iterator[BinaryIO]:
    """A file whose content appears at `path` only when the block completes. The partial is
    locked until it is renamed, so a concurrent cleanup never takes a live write for dead."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=PARTIAL_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield f
            f.flush()
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_dead_partials(directory: str) -> int:
    """Delete the `.partial-*` files in `directory` that no live writer holds (killed uploads
    leave them); the number removed."""
    if fcntl is None:
        return 0
    try:
        names = [n for n in os.listdir(directory) if n.startswith(PARTIAL_PREFIX)]
    except OSError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(f.fileno()).st_ino == os.stat(path).st_ino:
                    os.unlink(path)
                    removed += 1
        except OSError:
            continue  # locked by a live writer, or already gone
    return removed
