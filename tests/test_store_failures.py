"""Store failures end clearly and nothing stays stuck: a bundle deleted from the store comes
back, dead endpoints fail within the default deadline in one line, and what killed uploads
leave behind is cleaned up by the next upload. Real servers and processes throughout."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers

from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.storage import StorageError, Store
from flyte_jupyter.core.submit import submit
from flyte_jupyter.runtime import blobs

PROJECT = {
    "pyproject.toml": "[project]\nname='calc'\n",
    "calc.py": "def double(x):\n    return 2 * x\n",
}


def _store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "file":
        return Store((tmp_path / "store").as_uri())
    options = servers.s3_options(request.getfixturevalue("s3_server").url)
    bucket = f"b{uuid.uuid4().hex[:12]}"
    fs, _ = blobs.filesystem(f"s3://{bucket}", options)
    fs.mkdir(bucket)
    return Store(f"s3://{bucket}/prefix", options)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_bundle_deleted_behind_the_clients_back_is_uploaded_again(
    kind, tree, tmp_path, monkeypatch, request
):
    store = _store(kind, tmp_path, request)
    root = tree(PROJECT)
    bundle = build_bundle(select_files(root, entries=[root / "calc.py"]))
    first = submit(bundle, "calc:double", kwargs={"x": 4}, store=store)
    assert first.result(timeout=60) == 8 and first.upload.uploaded_bytes > 0

    url = store.bundle_url(bundle.digest)
    if store.local:
        os.unlink(blobs.local_path(url))
    else:
        fs, path = blobs.filesystem(url, store.options)
        fs.rm_file(path)
    assert not store.exists(url)
    # a fresh executor machine: nothing extracted yet, so the run needs the stored object
    monkeypatch.setenv("FLYTE_JUPYTER_BUNDLE_CACHE", str(tmp_path / "other-executor"))

    again = submit(bundle, "calc:double", kwargs={"x": 5}, store=store)
    assert again.result(timeout=60) == 10
    print(f"{kind}: re-uploaded {again.upload.uploaded_bytes} bytes after the object was deleted")
    assert again.upload.skipped is None and again.upload.uploaded_bytes > 0
    assert store.exists(url)


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers; closed on exit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_endpoint_that_never_answers_fails_within_the_default_deadline(scheme, tmp_path, capfd):
    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(b"x" * 100)
    with silent_server() as endpoint:
        options = {"endpoint_url": endpoint, **({"token": "anon"} if scheme == "gs" else {})}
        store = Store(f"{scheme}://bucket/prefix", options)
        start = time.monotonic()
        with pytest.raises(StorageError) as err:
            store.upload_bundle(archive, "sha256:" + "ab" * 32)
        elapsed = time.monotonic() - start
    logged = capfd.readouterr().err
    print(f"silent {scheme}:// endpoint reported after {elapsed:.1f}s: {err.value}")
    print(f"lines the storage clients logged: {len(logged.splitlines())}")
    assert elapsed < 30 and not logged
    assert "did not answer within 20s" in str(err.value) and "\n" not in str(err.value)


def _cli(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - start


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    print(f"exit {proc.returncode}, stderr lines: {len(lines)}: {proc.stderr.strip()}")
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


def test_store_path_below_a_file_is_one_line_exit_2(tree):
    root = tree(PROJECT)
    proc, _ = _cli("run", "calc.py:double", "--arg=x=1", "--store=/etc/passwd/store", cwd=root)
    line = _one_line(proc)
    assert proc.returncode == 2
    assert "/etc/passwd is a file, not a directory" in line and "Fix:" in line


def test_unreachable_gcs_endpoint_is_one_line_without_logged_tracebacks(tree):
    root = tree(PROJECT)
    port = servers.free_port()  # nothing listens here
    proc, elapsed = _cli(
        "run",
        "calc.py:double",
        "--arg",
        "x=1",
        "--store",
        "gs://bucket/prefix",
        "--storage-option",
        f'endpoint_url="http://127.0.0.1:{port}"',
        "--storage-option",
        'token="anon"',
        cwd=root,
    )
    print(f"unreachable gs:// endpoint reported after {elapsed:.1f}s")
    line = _one_line(proc)
    assert proc.returncode == 1 and elapsed < 30
    assert line.startswith("flyte-jupyter run: cannot check gs://bucket/prefix/bundles/")
    assert "Fix:" in line


class _NotFound(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # answers `Expect: 100-continue`, as web servers do

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_endpoint_answering_404_to_everything_is_one_line(tree):
    root = tree(PROJECT)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        proc, elapsed = _cli(
            "run",
            "calc.py:double",
            "--arg",
            "x=1",
            "--store",
            "s3://bucket/prefix",
            "--storage-option",
            f'endpoint_url="{endpoint}"',
            cwd=root,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    print(f"404 endpoint reported after {elapsed:.1f}s")
    line = _one_line(proc)
    assert proc.returncode == 1 and elapsed < 30
    assert "s3://bucket/prefix/bundles/" in line and "Fix:" in line


KILLER = """
import os, signal, sys
from pathlib import Path
from flyte_jupyter.core.storage import Store
store = Store(sys.argv[1])
def progress(sent, total):
    if sent < total:
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-upload
store.upload_bundle(Path(sys.argv[2]), "sha256:" + "cd" * 32, progress)
"""


def test_partial_file_of_a_killed_upload_is_removed_by_the_next_upload(tmp_path):
    store = Store((tmp_path / "store").as_uri())
    archive = tmp_path / "big.tar.gz"
    archive.write_bytes(os.urandom(12 * 1024 * 1024))
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, store.url, str(archive)], capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr
    bundles = tmp_path / "store" / "bundles"
    before = sorted(p.name for p in bundles.glob(".partial-*"))
    print(f"partials after the kill: {len(before)}")
    assert len(before) == 1

    with blobs.atomic_local_file(str(bundles / "in-progress.tar.gz")) as live:
        live.write(b"a concurrent upload, still being written")
        small = tmp_path / "small.tar.gz"
        small.write_bytes(b"small")
        store.upload_bundle(small, "sha256:" + "ef" * 32)
        left = sorted(p.name for p in bundles.glob(".partial-*"))
        print(f"partials after the next upload: {len(left)} (the live one)")
        assert before[0] not in left and len(left) == 1
    assert not list(bundles.glob(".partial-*"))


def test_stale_multipart_uploads_are_aborted_by_the_next_upload(s3_server, tmp_path):
    options = servers.s3_options(s3_server.url)
    bucket = f"b{uuid.uuid4().hex[:12]}"
    fs, _ = blobs.filesystem(f"s3://{bucket}", options)
    fs.mkdir(bucket)
    store = Store(f"s3://{bucket}/prefix", options)
    key = "prefix/bundles/" + "cd" * 32 + ".tar.gz"
    # what a process killed during a multipart upload leaves: an upload with a part, never done
    mpu = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    fs.call_s3(
        "upload_part",
        Bucket=bucket,
        Key=key,
        UploadId=mpu["UploadId"],
        PartNumber=1,
        Body=os.urandom(5 * 1024 * 1024),
    )
    elsewhere = fs.call_s3("create_multipart_upload", Bucket=bucket, Key="other/data.bin")

    def unfinished() -> list[str]:
        return [u["Key"] for u in fs.call_s3("list_multipart_uploads", Bucket=bucket)["Uploads"]]

    print(f"unfinished uploads before: {len(unfinished())}")
    small = tmp_path / "small.tar.gz"
    small.write_bytes(b"small")
    store.upload_bundle(small, "sha256:" + "01" * 32)
    # moto reports every upload as initiated in 2010, so here all of them count as stale
    print(f"unfinished uploads under bundles/ after the next upload: {unfinished().count(key)}")
    assert unfinished() == ["other/data.bin"]  # outside bundles/: not ours to judge
    upload_id = elsewhere["UploadId"]
    fs.call_s3("abort_multipart_upload", Bucket=bucket, Key="other/data.bin", UploadId=upload_id)


def test_local_write_that_fails_is_one_line(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "runs").write_text("a file where the runs folder should be")
    store = Store((tmp_path / "store").as_uri())
    with pytest.raises(StorageError) as err:
        store.put_bytes(store.run_url("r1", "spec.json"), b"{}")
    print(err.value)
    assert "Not a directory" in str(err.value) and "directory you can write to" in str(err.value)


PRUNE_PROJECT = {
    "pyproject.toml": "[project]\nname='calc'\n",
    "calc.py": "def double(x):\n    return 2 * x\n\n\ndef broken(x):\n    raise ValueError(x)\n",
}


def _prune(*args: str, cwd: Path) -> list[str]:
    proc, _ = _cli("runs", "prune", *args, cwd=cwd)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    print(f"$ flyte-jupyter runs prune {' '.join(args)}\n{proc.stdout}")
    return proc.stdout.splitlines()


def _objects(store: Store) -> set[str]:
    """Keys under the store (run objects and bundles), relative to its URL."""
    if store.local:
        base = Path(blobs.local_path(store.url))
        return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}
    fs, path = blobs.filesystem(store.url, store.options)
    fs.invalidate_cache()
    return {p[len(path) + 1 :] for p in fs.find(path)}


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_prune_deletes_chosen_runs_and_bundles_only_they_use(kind, tree, tmp_path, request):
    from flyte_jupyter.core import history

    store = _store(kind, tmp_path, request)
    root = tree(PRUNE_PROJECT)
    bundle_a = build_bundle(select_files(root, entries=[root / "calc.py"]))
    old_ok = submit(bundle_a, "calc:double", kwargs={"x": 1}, store=store)
    old_failed = submit(bundle_a, "calc:broken", kwargs={"x": 2}, store=store)
    (root / "calc.py").write_text(PRUNE_PROJECT["calc.py"] + "\nVERSION = 2\n")
    bundle_b = build_bundle(select_files(root, entries=[root / "calc.py"]))
    old_b = submit(bundle_b, "calc:double", kwargs={"x": 3}, store=store)
    new_b = submit(bundle_b, "calc:double", kwargs={"x": 4}, store=store)
    for run in (old_ok, old_failed, old_b, new_b):
        run.wait(60)
    ten_days_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    for run in (old_ok, old_failed, old_b):  # these were made ten days ago
        history.update(run.id, created=ten_days_ago.isoformat())
    before = _objects(store)
    a_key = f"bundles/{bundle_a.hex}.tar.gz"
    b_key = f"bundles/{bundle_b.hex}.tar.gz"
    assert {a_key, b_key} <= before

    dry = _prune("--older-than", "7d", "--dry-run", cwd=root)
    assert _objects(store) == before
    assert sum(line.startswith("would delete run") for line in dry) == 3
    assert [line for line in dry if line.startswith("would delete bundle")] == [
        next(line for line in dry if bundle_a.digest in line)
    ]  # bundle B stays: the newer run uses it
    assert "3 runs and 1 bundle: would free" in dry[-1] and "; 1 run kept" in dry[-1]

    _prune("--failed-only", "--older-than", "7d", cwd=root)
    after_failed = _objects(store)
    gone = before - after_failed
    others = sum(old_failed.id not in k for k in gone)
    print(f"objects deleted: {len(gone)}; of other runs: {others}")
    assert gone and all(k.startswith(f"runs/{old_failed.id}/") for k in gone)
    assert a_key in after_failed  # still used by old_ok
    assert {r.id for r in history.recent(-1)} == {old_ok.id, old_b.id, new_b.id}

    _prune("--keep-last", "1", cwd=root)
    left = _objects(store)
    print(f"objects left: {len(left)}; bundles left: {sorted(k for k in left if 'bundles/' in k)}")
    assert b_key in left and a_key not in left
    assert all(k.startswith((f"runs/{new_b.id}/", "bundles/")) for k in left)
    assert [r.id for r in history.recent(-1)] == [new_b.id]
    assert new_b.result() == 8


def test_prune_needs_a_rule_and_reads_ages(tree):
    root = tree(PRUNE_PROJECT)
    for args, message in [
        ([], "say what to prune"),
        (["--older-than", "soon"], "give a number and a unit"),
    ]:
        proc, _ = _cli("runs", "prune", *args, cwd=root)
        assert proc.returncode == 2 and message in _one_line(proc)


def test_missing_object_in_a_bucket_named_bucket_is_not_a_missing_bucket(s3_server):
    options = servers.s3_options(s3_server.url)
    bucket = f"bucket{uuid.uuid4().hex[:8]}"  # the word once made every missing key "no bucket"
    fs, _ = blobs.filesystem(f"s3://{bucket}", options)
    fs.mkdir(bucket)
    store = Store(f"s3://{bucket}/prefix", options)
    with pytest.raises(FileNotFoundError):
        store.get_bytes(store.run_url("r1", "error.json"))
    missing = Store(f"s3://nosuch{uuid.uuid4().hex[:8]}/prefix", options)
    with pytest.raises(StorageError, match="create the bucket"):
        missing.get_bytes(missing.run_url("r1", "error.json"))
