"""Content-addressed blob storage on any fsspec URL.

Layout under one URL prefix: `bundles/<hex>.tar.gz` and `runs/<run_id>/...`. A bundle is
uploaded once per store: a local record of what each store already holds makes an unchanged
re-run send no request at all, and a HEAD-style check covers bundles other machines uploaded.
Objects appear under their final key only when complete. Transient failures are retried with
bounded backoff; auth errors, a missing bucket or an unreachable endpoint fail at once with
one message that names the URL and the likely fix.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..runtime import blobs
from ..runtime.locations import cache_dir
from .errors import FlyteJupyterError
from .hashcache import HashCache

STORE_ENV = "FLYTE_JUPYTER_STORE"
MAX_ATTEMPTS = 4
_CHUNK = 4 << 20
_SECRET_WORDS = ("key", "secret", "token", "password", "credential")

Progress = Callable[[int, int], None]
"""progress(bytes_sent, total_bytes), called as an upload advances."""

T = TypeVar("T")


class StorageError(FlyteJupyterError):
    """Storage cannot be used as configured; the message says why and what to do."""


def default_store_url() -> str:
    """`$FLYTE_JUPYTER_STORE`, else a file:// store under the cache dir (the embedded default)."""
    return os.environ.get(STORE_ENV) or (cache_dir() / "store").as_uri()


def normalize_url(url: str) -> str:
    """Plain paths become absolute file:// URLs; other URLs lose any trailing slash."""
    if "://" not in url:
        return Path(url).expanduser().resolve().as_uri()
    return url.rstrip("/")


def redact(options: dict[str, Any]) -> dict[str, Any]:
    """Storage options safe to print: anything that looks like a credential is masked."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            out[key] = redact(value)
        elif any(word in key.lower() for word in _SECRET_WORDS):
            out[key] = "***"
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class UploadResult:
    url: str
    uploaded_bytes: int
    skipped: str | None
    """Why nothing was sent: "known" (recorded locally) or "exists" (found in the store)."""


def describe_upload(upload: UploadResult | None) -> str:
    """One phrase for run banners: what submitting sent to the store."""
    if upload is None:
        return "no bundle to upload"
    if upload.skipped:
        return "bundle already in the store"
    from .preview import human_size

    return f"uploaded {human_size(upload.uploaded_bytes)}"


class Store:
    """One blob store: a URL prefix plus fsspec storage options."""

    def __init__(self, url: str | None = None, options: dict[str, Any] | None = None):
        self.url = normalize_url(url or default_store_url())
        self.options = _with_fast_failure(self.url, dict(options or {}))
        self.local = blobs.is_local(self.url)

    def __repr__(self) -> str:
        return f"Store({self.url!r}, options={redact(self.options)!r})"

    # --- keys --------------------------------------------------------------------------

    def bundle_url(self, digest: str) -> str:
        return blobs.join(self.url, "bundles", digest.split(":", 1)[-1] + ".tar.gz")

    def run_url(self, run_id: str, name: str = "") -> str:
        return blobs.join(self.url, "runs", run_id, *([name] if name else []))

    # --- objects -------------------------------------------------------------------------

    def _fs(self, url: str) -> tuple[Any, str]:
        return blobs.filesystem(url, self.options)

    def exists(self, url: str) -> bool:
        if self.local:
            return os.path.exists(blobs.local_path(url))
        return self._retry("check", url, lambda: _object_exists(*self._fs(url)))

    def get_bytes(self, url: str) -> bytes:
        """An object's bytes; FileNotFoundError when it does not exist."""
        if self.local:
            return blobs.read_bytes(url)
        return self._retry("read", url, lambda: _fs_call(self._fs(url), "cat_file"))

    def put_bytes(self, url: str, data: bytes) -> None:
        if self.local:
            blobs.write_local_atomic(blobs.local_path(url), data)
            return
        self._retry("write", url, lambda: _fs_call(self._fs(url), "pipe_file", data))

    def get_file(self, url: str, dest: str) -> None:
        if self.local:
            shutil.copyfile(blobs.local_path(url), dest)
            return
        self._retry("download", url, lambda: _fs_call(self._fs(url), "get_file", dest))

    # --- bundles -------------------------------------------------------------------------

    def upload_bundle(
        self, archive: Path, digest: str, progress: Progress | None = None
    ) -> UploadResult:
        """Upload an archive under its digest unless the store already has it."""
        url = self.bundle_url(digest)
        with HashCache(cache_dir() / "index.sqlite3") as index:
            if index.is_uploaded(self.url, digest):
                return UploadResult(url, 0, "known")
            if self.exists(url):
                index.mark_uploaded(self.url, digest)
                return UploadResult(url, 0, "exists")
            size = archive.stat().st_size
            if self.local:
                _copy_local_atomic(archive, blobs.local_path(url), progress)
            else:
                self._retry("upload", url, lambda: self._put_remote(archive, url, progress))
            index.mark_uploaded(self.url, digest)
        return UploadResult(url, size, None)

    def _put_remote(self, archive: Path, url: str, progress: Progress | None) -> None:
        from fsspec.callbacks import Callback

        total = archive.stat().st_size

        class _Report(Callback):
            def call(self, *args: Any, **kwargs: Any) -> None:
                if progress is not None:
                    progress(min(self.value, total), total)

        fs, path = self._fs(url)
        fs.put_file(str(archive), path, callback=_Report())
        if progress is not None:
            progress(total, total)

    # --- errors --------------------------------------------------------------------------

    def _retry(self, action: str, url: str, op: Callable[[], T]) -> T:
        delay = 0.2
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return op()
            except FileNotFoundError as exc:
                if _looks_like(exc, "bucket"):
                    raise StorageError(self._explain("no_bucket", action, url, exc)) from exc
                raise
            except Exception as exc:
                kind = classify_error(exc)
                if kind == "transient" and attempt < MAX_ATTEMPTS:
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                raise StorageError(self._explain(kind, action, url, exc)) from exc
        raise AssertionError("unreachable")

    def _explain(self, kind: str, action: str, url: str, exc: BaseException) -> str:
        detail = f"{type(exc).__name__}: {exc}".strip()
        fixes = {
            "auth": "check the credentials for this store (e.g. AWS_PROFILE / "
            "GOOGLE_APPLICATION_CREDENTIALS, or key/secret in the storage options)",
            "no_bucket": "create the bucket, or point the store at an existing one",
            "unreachable": "check the endpoint URL and your network; "
            f"storage options in use: {redact(self.options)}",
            "transient": f"the service kept failing after {MAX_ATTEMPTS} attempts; try again later",
            "other": "check the store URL and storage options",
        }
        return f"cannot {action} {url}: {detail}. Fix: {fixes[kind]}."


def _object_exists(fs: Any, path: str) -> bool:
    """One metadata request for an object (fsspec's `exists` may also list a "directory")."""
    try:
        return fs.info(path).get("type") == "file"
    except FileNotFoundError:
        return False


def _fs_call(fs_and_path: tuple[Any, str], method: str, *args: Any) -> Any:
    fs, path = fs_and_path
    return getattr(fs, method)(path, *args)


def _with_fast_failure(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Let our bounded retries decide: botocore's own retries turn an unreachable endpoint into
    a wait of several seconds. Users' explicit settings win."""
    if url.startswith(("s3://", "s3a://")):
        config = options.setdefault("config_kwargs", {})
        config.setdefault("retries", {"max_attempts": 1})
        config.setdefault("connect_timeout", 10)
    return options


_AUTH_WORDS = (
    "accessdenied",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "expiredtoken",
    "forbidden",
    "unauthorized",
    "401",
    "403",
    "credentials",
)
_UNREACHABLE_WORDS = (
    "could not connect",
    "cannot connect",
    "connection refused",
    "name or service not known",
    "nodename nor servname",
    "no route to host",
)
_TRANSIENT_WORDS = (
    "slowdown",
    "throttl",
    "requesttimeout",
    "internalerror",
    "serviceunavailable",
    "connection reset",
    "timed out",
    "timeout",
)


_HTTP_5XX = re.compile(r"\b(?:500|502|503|504)\b")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _looks_like(exc: BaseException, *words: str) -> bool:
    text = " ".join(f"{type(e).__name__} {e}" for e in _chain(exc)).lower()
    return any(w in text for w in words)


def classify_error(exc: BaseException) -> str:
    """auth | unreachable | transient | other, from the exception chain's types and text."""
    chain = _chain(exc)
    if any(isinstance(e, PermissionError) for e in chain) or _looks_like(exc, *_AUTH_WORDS):
        return "auth"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or _looks_like(
        exc, *_UNREACHABLE_WORDS
    ):
        return "unreachable"
    if (
        any(isinstance(e, ConnectionResetError | TimeoutError) for e in chain)
        or _looks_like(exc, *_TRANSIENT_WORDS)
        or any(_HTTP_5XX.search(str(e)) for e in chain)
    ):
        return "transient"
    return "other"


def _copy_local_atomic(src: Path, dest: str, progress: Progress | None) -> None:
    """Copy into a temp file beside `dest`, then rename: a killed copy leaves no final file."""
    directory = os.path.dirname(dest)
    os.makedirs(directory, exist_ok=True)
    total = src.stat().st_size
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".partial-")
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            sent = 0
            while chunk := fin.read(_CHUNK):
                fout.write(chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, total)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
