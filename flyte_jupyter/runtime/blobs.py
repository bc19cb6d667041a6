"""Reading and writing objects by URL: plain files for file:// (no fsspec needed), fsspec for
everything else. Writes are atomic: an object appears under its key only when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any
from urllib.parse import unquote, urlparse

STORAGE_OPTIONS_ENV = "FLYTE_JUPYTER_STORAGE_OPTIONS"


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


def write_json(url: str, doc: Any) -> None:
    write_bytes(url, json.dumps(doc, indent=2, sort_keys=True).encode())


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def write_local_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
