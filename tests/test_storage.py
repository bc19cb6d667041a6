"""One storage suite, three real backends: file://, moto's S3 server via s3fs, and the GCS
emulator via gcsfs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from flyte_jupyter.core.storage import StorageError, Store, classify_error, redact


def make_archive(tmp_path, size: int = 3 * 1024 * 1024) -> tuple:
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(os.urandom(size))
    return archive, "sha256:" + "ab" * 32


def test_objects_round_trip(store: Store):
    url = store.run_url("r1", "spec.json")
    store.put_bytes(url, b'{"a": 1}')
    assert store.exists(url)
    assert store.get_bytes(url) == b'{"a": 1}'
    store.put_bytes(url, b'{"a": 2}')  # overwrite is allowed for run objects
    assert store.get_bytes(url) == b'{"a": 2}'
    with pytest.raises(FileNotFoundError):
        store.get_bytes(store.run_url("r1", "missing.json"))
    assert not store.exists(store.run_url("r1", "missing.json"))


def test_bundle_uploads_once_and_rerun_only_checks(store: Store, tmp_path, count_requests):
    archive, digest = make_archive(tmp_path)
    seen: list[tuple[int, int]] = []
    first = store.upload_bundle(archive, digest, progress=lambda s, t: seen.append((s, t)))
    assert first.uploaded_bytes == archive.stat().st_size and first.skipped is None
    assert seen and seen[-1] == (archive.stat().st_size, archive.stat().st_size)
    assert first.url.endswith(f"bundles/{'ab' * 32}.tar.gz")
    assert store.get_bytes(first.url) == archive.read_bytes()
    with count_requests() as counted:
        again = store.upload_bundle(archive, digest)
    assert again.uploaded_bytes == 0 and again.skipped == "exists"
    if counted.requests is not None:  # a metadata request, nothing sent
        assert counted.requests and all(r.startswith(("GET", "HEAD")) for r in counted.requests)


def test_bundle_uploaded_by_another_machine_is_found_not_resent(
    store: Store, tmp_path, monkeypatch, count_requests
):
    archive, digest = make_archive(tmp_path, 1024)
    store.upload_bundle(archive, digest)
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(tmp_path / "other-machine"))
    with count_requests() as counted:
        result = store.upload_bundle(archive, digest)
    assert result.skipped == "exists" and result.uploaded_bytes == 0
    if counted.requests is not None:  # an existence check, nothing written
        assert counted.requests and all(r.startswith(("GET", "HEAD")) for r in counted.requests)


KILLER = """
import os, signal, sys
from pathlib import Path
from flyte_jupyter.core.storage import Store
store = Store(sys.argv[1], {options})
def progress(sent, total):
    if sent < total:
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-upload
store.upload_bundle(Path(sys.argv[2]), "sha256:" + "cd" * 32, progress)
"""


def test_upload_killed_midway_leaves_no_final_object(store: Store, tmp_path):
    archive = tmp_path / "big.tar.gz"
    archive.write_bytes(os.urandom(12 * 1024 * 1024))
    script = KILLER.format(options=repr(store.options))
    proc = subprocess.run(
        [sys.executable, "-c", script, store.url, str(archive)], capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()
    assert not store.exists(store.bundle_url("sha256:" + "cd" * 32))


def test_unreachable_endpoint_fails_fast_with_one_clear_message(tmp_path):
    from servers import free_port

    port = free_port()  # nothing listens here
    store = Store("s3://bucket/prefix", {"endpoint_url": f"http://127.0.0.1:{port}"})
    archive, digest = make_archive(tmp_path, 10)
    start = time.monotonic()
    with pytest.raises(StorageError) as err:
        store.upload_bundle(archive, digest)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert message.startswith("cannot check s3://bucket/prefix/bundles/")
    assert "check the endpoint URL" in message


def test_missing_bucket_is_named(s3_server, tmp_path):
    store = Store("s3://no-such-bucket-here/x", {"endpoint_url": s3_server.url})
    archive, digest = make_archive(tmp_path, 10)
    with pytest.raises(StorageError, match="create the bucket"):
        store.upload_bundle(archive, digest)


def test_error_classes_and_secret_redaction():
    assert classify_error(PermissionError("Access Denied")) == "auth"
    assert classify_error(ConnectionRefusedError()) == "unreachable"
    assert classify_error(OSError("503 Service Unavailable")) == "transient"
    assert classify_error(OSError("SlowDown: please reduce your request rate")) == "transient"
    assert classify_error(ValueError("bad path")) == "other"
    shown = redact({"key": "AKIA", "secret": "s", "client_kwargs": {"aws_session_token": "t"}})
    assert shown == {"key": "***", "secret": "***", "client_kwargs": {"aws_session_token": "***"}}
    assert "AKIA" not in repr(Store("s3://b/p", {"key": "AKIA", "secret": "s"}))


def test_plain_paths_become_file_urls(tmp_path):
    store = Store(str(tmp_path / "here"))
    assert store.url == (tmp_path / "here").resolve().as_uri()
    assert store.local


def test_s3_stores_and_buckets_survive_an_imported_flyte(s3_server):
    """Importing flyte swaps fsspec's registered s3 filesystem for obstore's process-wide
    (FLYTE-NOTES pitfall 1). The runtime's own file access (blobs.filesystem, which the store,
    the runtime and the test fixtures share) must keep using s3fs: in a fresh process that
    imported flyte first, create a bucket, write and read an object through our layers."""
    pytest.importorskip("flyte")
    script = (
        "import sys, flyte.storage, fsspec\n"
        "from flyte_jupyter.runtime import blobs\n"
        "from flyte_jupyter.core.storage import Store\n"
        "options = {'endpoint_url': sys.argv[1]}\n"
        "print('registry s3:', fsspec.get_filesystem_class('s3').__module__)\n"
        "fs, _ = blobs.filesystem('s3://afterflyte', options)\n"
        "fs.mkdir('afterflyte')\n"
        "store = Store('s3://afterflyte/prefix', options)\n"
        "store.put_bytes(store.run_url('r1', 'spec.json'), b'{}')\n"
        "print('read back:', store.get_bytes(store.run_url('r1', 'spec.json')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, s3_server.url], capture_output=True, text=True, timeout=120
    )
    print(done.stdout, done.stderr[-2000:])
    assert done.returncode == 0, done.stderr
    assert "read back: b'{}'" in done.stdout
