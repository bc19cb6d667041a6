"""Content-addressed blob storage on any fsspec URL.

Layout under one URL prefix: `bundles/<hex>.tar.gz` and `runs/<run_id>/...`. A bundle is
uploaded once per store: each run asks the store (one metadata request) whether it already
holds the digest, so a bundle deleted behind our back is simply uploaded again. Objects appear
under their final key only when complete; what killed uploads leave behind is cleaned up by
the next upload. Transient failures are retried with bounded backoff; every operation has a
deadline, so an endpoint that accepts connections and never answers fails within
DEFAULT_TIMEOUT seconds; auth errors, a missing bucket or an unreachable endpoint fail at once.
Every failure is one StorageError message that names the URL and the likely fix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlparse

from ..runtime import blobs
from ..runtime.locations import cache_dir, private_dir
from .errors import (  # StorageError and StoreConfigError are imported from here too
    StorageError,
    StoreConfigError,
)

STORE_ENV = "FLYTE_JUPYTER_STORE"
MAX_ATTEMPTS = 4
DEFAULT_TIMEOUT = 20.0
"""Seconds an operation on a small object may take, retries included, before the store
counts as unresponsive (so every failure is reported within 30 s)."""
MIN_RATE = 256 * 1024
"""Bytes per second a transfer may not fall below: big objects get DEFAULT_TIMEOUT plus
size / MIN_RATE."""
STALE_SECONDS = 600
"""An unfinished S3 multipart upload this old is taken to be from a killed process."""
_CHUNK = 4 << 20
_SECRET_WORDS = ("key", "secret", "token", "password", "credential")

Progress = Callable[[int, int], None]
"""progress(bytes_sent, total_bytes), called as an upload advances."""

T = TypeVar("T")


def default_store_url() -> str:
    """`$FLYTE_JUPYTER_STORE`, else a file:// store under the cache dir (the embedded default),
    a private directory: it holds every run's inputs and results."""
    if os.environ.get(STORE_ENV):
        return os.environ[STORE_ENV]
    store = cache_dir() / "store"
    with contextlib.suppress(OSError):  # unusable: the Store reports it, naming the fix
        private_dir(store)
    return store.as_uri()


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
    """Why nothing was sent: "exists" (the store already holds the bundle), else None."""


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

    def __init__(
        self,
        url: str | None = None,
        options: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.url = normalize_url(url or default_store_url())
        self.options = _with_fast_failure(self.url, dict(options or {}))
        self.local = blobs.is_local(self.url)
        self.timeout = timeout
        if self.local:
            _check_local_root(self.url)
        else:
            _quiet_client_logs()

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

    def _preflight(self, action: str, url: str) -> None:
        """One TCP connect to an explicit endpoint before its first use in this process: the
        clients retry a refused connection for half a minute, this says so at once."""
        endpoint = self.options.get("endpoint_url") or self.options.get("client_kwargs", {}).get(
            "endpoint_url"
        )
        if not endpoint or endpoint in _reachable or any(os.environ.get(v) for v in _PROXY_ENV):
            return
        parsed = urlparse(endpoint)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=min(5, self.timeout)).close()
        except OSError as exc:
            raise StorageError(self._explain("unreachable", action, url, exc)) from None
        _reachable.add(endpoint)

    def exists(self, url: str) -> bool:
        if self.local:
            return os.path.exists(blobs.local_path(url))
        return self._retry("check", url, lambda left: _object_exists(*self._fs(url), left))

    def size(self, url: str) -> int:
        """An object's size in bytes; FileNotFoundError when it does not exist."""
        if self.local:
            return self._local("check", url, lambda: os.path.getsize(blobs.local_path(url)))
        return self._retry("check", url, lambda left: _call(self._fs(url), "size", left))

    def get_bytes(self, url: str) -> bytes:
        """An object's bytes; FileNotFoundError when it does not exist."""
        if self.local:
            return self._local("read", url, lambda: blobs.read_bytes(url))
        budget = self._budget(self.size(url))
        return self._retry("read", url, lambda left: _call(self._fs(url), "cat_file", left), budget)

    def put_bytes(self, url: str, data: bytes) -> None:
        if self.local:
            self._local("write", url, lambda: blobs.write_local_atomic(blobs.local_path(url), data))
            return
        budget = self._budget(len(data))
        self._retry(
            "write", url, lambda left: _call(self._fs(url), "pipe_file", left, data), budget
        )

    def put_stream(self, url: str, write: Callable[[BinaryIO], None]) -> None:
        """Make the object at `url` from what `write` writes into a file: in place (atomically)
        for file://, else uploaded from a local temporary file. A big object (a run's pickled
        inputs) is streamed, never held as bytes; nothing is left if `write` raises."""
        if self.local:

            def local() -> None:
                with blobs.atomic_local_file(blobs.local_path(url)) as f:
                    write(f)

            self._local("write", url, local)
            return
        fs, path = self._fs(url)
        with tempfile.NamedTemporaryFile(prefix=blobs.PARTIAL_PREFIX) as f:
            write(f)
            f.flush()
            self._retry(
                "write",
                url,
                lambda left: fs.put_file(f.name, path, **_deadline(fs, left)),
                self._budget(f.tell()),
            )

    def get_file(self, url: str, dest: str) -> None:
        if self.local:
            self._local("download", url, lambda: shutil.copyfile(blobs.local_path(url), dest))
            return
        budget = self._budget(self.size(url))
        self._retry(
            "download", url, lambda left: _call(self._fs(url), "get_file", left, dest), budget
        )

    def usage(self, url: str) -> int:
        """Bytes stored under a prefix (a run's directory) or in one object; 0 when absent."""
        if self.local:
            return self._local("check", url, lambda: _local_usage(blobs.local_path(url)))

        def measure(left: float | None) -> int:
            fs, path = self._fs(url)
            found = fs.find(path, withdirs=False, detail=True, **_deadline(fs, left))
            return sum(int(info.get("size") or 0) for info in found.values())

        return self._retry("check", url, measure)

    def remove(self, url: str) -> None:
        """Delete an object or everything under a prefix; nothing to delete is fine."""
        if self.local:
            path = blobs.local_path(url)
            if os.path.isdir(path):
                self._local("delete", url, lambda: shutil.rmtree(path))
            else:
                with contextlib.suppress(FileNotFoundError):
                    self._local("delete", url, lambda: os.unlink(path))
            return

        def delete(left: float | None) -> None:
            fs, path = self._fs(url)
            found = fs.find(path, withdirs=False, **_deadline(fs, left))
            if found:
                fs.rm(found, **_deadline(fs, left))

        self._retry("delete", url, delete)

    def _budget(self, size: int) -> float:
        return self.timeout + size / MIN_RATE

    # --- bundles -------------------------------------------------------------------------

    def upload_bundle(
        self, archive: Path, digest: str, progress: Progress | None = None
    ) -> UploadResult:
        """Upload an archive under its digest unless the store holds it now. Asking every time
        (one metadata request) is what makes a bundle deleted from the store come back."""
        url = self.bundle_url(digest)
        if self.exists(url):
            return UploadResult(url, 0, "exists")
        size = archive.stat().st_size
        if self.local:
            path = blobs.local_path(url)
            self._local("upload", url, lambda: _copy_local_atomic(archive, path, progress))
            blobs.remove_dead_partials(os.path.dirname(path))
        else:
            self._retry(
                "upload",
                url,
                lambda left: self._put_remote(archive, url, progress, left),
                self._budget(size),
            )
            self._abort_stale_multipart(url)
        return UploadResult(url, size, None)

    def _put_remote(
        self, archive: Path, url: str, progress: Progress | None, left: float | None
    ) -> None:
        from fsspec.callbacks import Callback

        total = archive.stat().st_size

        class _Report(Callback):
            def call(self, *args: Any, **kwargs: Any) -> None:
                if progress is not None:
                    progress(min(self.value, total), total)

        fs, path = self._fs(url)
        fs.put_file(str(archive), path, callback=_Report(), **_deadline(fs, left))
        if progress is not None:
            progress(total, total)

    def _abort_stale_multipart(self, url: str) -> None:
        """Abort S3 multipart uploads under bundles/ that killed processes left (they are
        billed storage that never shows in a listing). Best effort: a store that refuses to
        list them still works."""
        if not url.startswith(("s3://", "s3a://")):
            return
        fs, path = self._fs(url)
        bucket, key, _ = fs.split_path(path)
        prefix = key.rsplit("/", 1)[0] + "/"
        now = dt.datetime.now(dt.timezone.utc)
        try:
            listing = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
            for upload in listing.get("Uploads", []):
                if (now - upload["Initiated"]).total_seconds() >= STALE_SECONDS:
                    fs.call_s3(
                        "abort_multipart_upload",
                        Bucket=bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
        except Exception as exc:  # cleanup must never fail an upload
            logging.getLogger(__name__).debug("multipart cleanup under %s failed: %s", url, exc)

    # --- errors --------------------------------------------------------------------------

    def _local(self, action: str, url: str, op: Callable[[], T]) -> T:
        """Run a file:// operation; OS errors other than a missing object become one line."""
        try:
            return op()
        except FileNotFoundError:
            if action in ("read", "check", "download"):
                raise
            raise StorageError(self._explain("local", action, url, None)) from None
        except OSError as exc:
            raise StorageError(self._explain("local", action, url, exc)) from None

    def _retry(
        self,
        action: str,
        url: str,
        op: Callable[[float | None], T],
        budget: float | None = None,
    ) -> T:
        """Run `op(seconds_left)`, retrying transient failures while the budget lasts."""
        self._preflight(action, url)
        deadline = time.monotonic() + (budget or self.timeout)
        delay = 0.2
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return op(max(deadline - time.monotonic(), 0.1))
            except FileNotFoundError as exc:
                if _looks_like(exc, "nosuchbucket", "bucket does not exist"):
                    raise StorageError(self._explain("no_bucket", action, url, exc)) from None
                if action in ("read", "check", "download"):
                    raise
                raise StorageError(self._explain("not_found", action, url, exc)) from None
            except Exception as exc:
                kind = "unresponsive" if _timed_out(exc) else classify_error(exc)
                left = deadline - time.monotonic()
                if kind == "transient" and attempt < MAX_ATTEMPTS and left > delay + 1:
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                raise StorageError(self._explain(kind, action, url, exc)) from None
        raise AssertionError("unreachable")

    def _explain(self, kind: str, action: str, url: str, exc: BaseException | None) -> str:
        if kind == "unresponsive":
            detail = "no answer in time"
        else:
            detail = _one_line(exc) if exc is not None else "a parent directory is missing"
        fixes = {
            "auth": "check the credentials for this store (e.g. AWS_PROFILE / "
            "GOOGLE_APPLICATION_CREDENTIALS, or key/secret in the storage options)",
            "no_bucket": "create the bucket, or point the store at an existing one",
            "not_found": "the endpoint answered 'not found' to a write: check the endpoint URL "
            "and the bucket name (storage options in use: "
            f"{redact(self.options)})",
            "unreachable": "check the endpoint URL and your network; "
            f"storage options in use: {redact(self.options)}",
            "unresponsive": "check the endpoint URL and your network (the store did not answer "
            f"within {self.timeout:g}s; pass Store(timeout=...) for a slow one); "
            f"storage options in use: {redact(self.options)}",
            "transient": f"the service kept failing after {MAX_ATTEMPTS} attempts; try again later",
            "local": "point the store (--store / $FLYTE_JUPYTER_STORE) at a directory you can "
            "write to",
            "other": "check the store URL and storage options",
        }
        return f"cannot {action} {url}: {detail}. Fix: {fixes[kind]}."


def _one_line(exc: BaseException) -> str:
    """The exception as one short line (services put whole XML bodies in messages)."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def _local_usage(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(d, name)) for d, _, names in os.walk(path) for name in names
    )


def _check_local_root(url: str) -> None:
    """A store path below a file (`/etc/passwd/store`) can never work: say so up front."""
    path = Path(blobs.local_path(url))
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise StoreConfigError(
                    f"cannot use store {url}: {candidate} is a file, not a directory. Fix: "
                    "point the store (--store / $FLYTE_JUPYTER_STORE) at a directory"
                )
            return


_quieted = False
_reachable: set[str] = set()
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _quiet_client_logs() -> None:
    """gcsfs logs a traceback for errors it then raises (and we report in one line); keep
    storage clients' own logging quiet unless the user configured their level."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    for name in ("gcsfs", "s3fs", "aiobotocore", "botocore"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL)


def _timed_out(exc: BaseException) -> bool:
    """Our deadline ran out (fsspec cancels the request when it does)."""
    from fsspec.exceptions import FSTimeoutError

    return any(isinstance(e, FSTimeoutError) for e in _chain(exc))


def _object_exists(fs: Any, path: str, left: float | None) -> bool:
    """One metadata request for an object (fsspec's `exists` may also list a "directory")."""
    try:
        return _call((fs, path), "info", left).get("type") == "file"
    except FileNotFoundError:
        return False


def _call(
    fs_and_path: tuple[Any, str], method: str, left: float | None, *args: Any, **kwargs: Any
) -> Any:
    """`fs.method(path, ...)`, cancelled after `left` seconds on async filesystems (s3fs,
    gcsfs): their own retries would otherwise keep a dead endpoint busy for minutes."""
    fs, path = fs_and_path
    return getattr(fs, method)(path, *args, **kwargs, **_deadline(fs, left))


def _deadline(fs: Any, left: float | None) -> dict[str, float]:
    """fsspec's sync wrapper takes `timeout=` and cancels the coroutine when it runs out."""
    if left is not None and getattr(fs, "async_impl", False) and not fs.asynchronous:
        return {"timeout": left}
    return {}


def _with_fast_failure(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Let our bounded retries decide: botocore's own retries turn an unreachable endpoint into
    a wait of several seconds. Users' explicit settings win."""
    if url.startswith(("s3://", "s3a://")):
        config = options.setdefault("config_kwargs", {})
        config.setdefault("retries", {"max_attempts": 1})
        config.setdefault("connect_timeout", 5)
        config.setdefault("read_timeout", 10)
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
    """Copy into a locked temp file beside `dest`, then rename: a killed copy leaves no final
    file, and its unlocked partial is removed by the next upload."""
    total = src.stat().st_size
    with open(src, "rb") as fin, blobs.atomic_local_file(dest) as fout:
        sent = 0
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            sent += len(chunk)
            if progress is not None:
                progress(sent, total)
