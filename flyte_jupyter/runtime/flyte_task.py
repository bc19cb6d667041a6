"""The Flyte task a `--executor flyte` run executes, and the pod bootstrap that precedes it.

Imported only in a Flyte pod (it needs `flyte`) and by the flyte executor to serialize the task.
The pod's container runs `python -c BOOT RUNTIME_URL RUNTIME_SHA256 BUNDLE_URL DIGEST a0 ...`:
BOOT downloads this runtime (checked against the sha256 in the task spec) and our bundle
(re-verified against the digest in the task spec, extracted safely), then hands over to Flyte's
own `a0` without `--tgz`. Both expected hashes come from the control plane, never from inside an
archive. `a0` loads `run` below through Flyte's default resolver; `run` calls our runtime
exactly as the local executor does, in a private run directory, and returns what the runtime
wrote. A failed run raises, so the Flyte action fails with the remote exception. When `a0` is
done, BOOT runs the exit handlers and ends the process without finalizing the interpreter: while
it finalizes, a native thread sometimes aborts the pod after its outputs were written ("Fatal
Python error: Aborted", exit -6, about 1 pod in 50 on this machine), failing a finished run.

Pickled inputs and outputs up to `INLINE_LIMIT` travel inline (base64 in the task's string
input and output); bigger ones as a `flyte.io.File` in the run's data plane, streamed between
disk and storage: a cluster caps inline data, and a big value inline is held several times over.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import flyte
from flyte.io import File

BUNDLE_ENV = "FLYTE_JUPYTER_FLYTE_BUNDLE"
"""Local path of the verified bundle archive, set by BOOT."""
DIGEST_ENV = "FLYTE_JUPYTER_FLYTE_DIGEST"
"""The digest BOOT verified (from the task spec's arguments)."""
REFUSED_ENV = "FLYTE_JUPYTER_FLYTE_REFUSED"
"""Why BOOT refused the bundle; `run` fails with it before any code of the bundle runs."""
ERROR_MARK = "[flyte-jupyter-error]"
"""Brackets the runtime's error.json in the exception message, for the client to read back."""
ENV_NAME = "flyte-jupyter"
INLINE_LIMIT = 1 << 20
"""Pickled inputs or outputs above this many bytes travel as a File, not inline."""
CHUNK = 8 << 20
"""Bytes read from storage at a time: a big value is never held whole in memory."""

BOOT = f"""\
import asyncio, hashlib, os, sys, tarfile, tempfile
import flyte.storage as storage
rt_url, rt_sha, tgz, digest = sys.argv[1:5]
home = tempfile.mkdtemp(prefix="flyte-jupyter-")
def fetch(url, name):
    path = os.path.join(home, name)
    asyncio.run(storage.get(url, path))
    return path
rt = fetch(rt_url, "runtime.tar.gz")
got = hashlib.sha256(open(rt, "rb").read()).hexdigest()
if got != rt_sha:
    sys.exit(f"flyte-jupyter: runtime archive sha256 {{got}} is not {{rt_sha}}: refusing to run")
with tarfile.open(rt) as tar:
    tar.extractall(os.path.join(home, "rt"))
sys.path.insert(0, os.path.join(home, "rt"))
if tgz != "-":
    from flyte_jupyter.runtime.extract import BundleVerificationError, fetch_bundle
    archive = fetch(tgz, "bundle.tar.gz")
    try:
        fetch_bundle("file://" + archive, digest)
        os.environ[{BUNDLE_ENV!r}] = archive
        os.environ[{DIGEST_ENV!r}] = digest
    except BundleVerificationError as exc:
        os.environ[{REFUSED_ENV!r}] = str(exc)
from flyte._bin.runtime import main
try:
    main(sys.argv[6:], prog_name="a0")
    code = 0
except SystemExit as exc:
    code = exc.code
if isinstance(code, str):
    print(code, file=sys.stderr)
import atexit
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code if isinstance(code, int) else int(code is not None))
"""

env = flyte.TaskEnvironment(name=ENV_NAME)


class RunFailed(Exception):
    """The run's code raised; the message carries the runtime's error.json."""


class BundleRefused(Exception):
    """The bundle in the data plane is not the one the task spec names: nothing ran."""


class InputsMissing(Exception):
    """The inputs file the task names is gone from the data plane: nothing ran."""


@env.task
def run(
    entry: str, inputs: str, spec: str, inputs_file: File | None = None
) -> tuple[str, File | None, File | None]:
    """Run `entry` of the verified bundle on the pickled inputs (base64 `inputs`, or
    `inputs_file` when big); the run's status as JSON with its pickled outputs (base64) and
    its log inline when small, else in the returned Files (outputs, log), their sizes and
    sha256 in the JSON."""
    from .execute import main

    refused = os.environ.get(REFUSED_ENV)
    if refused:
        raise BundleRefused(refused)
    with tempfile.TemporaryDirectory(prefix="flyte-jupyter-run-") as tmp:
        run_dir = Path(tmp)
        (run_dir / "spec.json").write_text(spec)
        if inputs_file is not None:
            with open(run_dir / "inputs.pkl", "wb") as f:
                try:
                    fetch(inputs_file.path, f)
                except FileNotFoundError:
                    raise InputsMissing(
                        f"the run's inputs file {inputs_file.path} is not in Flyte's storage: "
                        "if the cluster's storage was cleaned, delete flyte-uploads.json in "
                        "flyte-jupyter's cache dir and run again"
                    ) from None
        else:
            (run_dir / "inputs.pkl").write_bytes(base64.b64decode(inputs))
        argv = ["--entry", entry, "--inputs", str(run_dir / "inputs.pkl")]
        argv += ["--outputs", str(run_dir / "outputs.pkl"), "--run-dir", str(run_dir)]
        if os.environ.get(BUNDLE_ENV):
            argv += ["--bundle", "file://" + os.environ[BUNDLE_ENV]]
            argv += ["--digest", os.environ[DIGEST_ENV]]
        code = main(argv)
        result: dict[str, Any] = {"status": _read(run_dir / "status.json")}
        logs = run_dir / "logs.txt"
        if code != 0:
            error = _read(run_dir / "error.json") or "{}"
            doc = json.loads(error)
            summary = f"{doc.get('type', 'Error')}: {doc.get('message', '')}"
            failed = {**result, "logs": _tail(logs), "error": error}
            raise RunFailed(f"{summary}\n{ERROR_MARK}{json.dumps(failed)}")
        log_file = outputs_file = None
        if logs.exists() and logs.stat().st_size > INLINE_LIMIT:
            log_file, result["logs_file"] = _upload(logs)
        else:
            result["logs"] = _read(logs)
        outputs = run_dir / "outputs.pkl"
        if outputs.stat().st_size > INLINE_LIMIT:
            outputs_file, result["outputs_file"] = _upload(outputs)
        else:
            result["outputs"] = base64.b64encode(outputs.read_bytes()).decode()
        return json.dumps(result), outputs_file, log_file


def _upload(path: Path) -> tuple[File, dict[str, Any]]:
    """`path` uploaded to the run's raw data now (its folder goes), with its size and sha256.
    Hashed apart: flyte's hashing upload (`hash_method=`) is ~50x slower than its plain one
    (52 s vs 1.1 s for 100 MB here)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    doc = {"size": path.stat().st_size, "sha256": digest.hexdigest()}
    return File.from_local_sync(path), doc


def _tail(path: Path) -> str | None:
    """The log, or its end when long: it rides inline in the error message (the whole log is
    in Flyte's log service)."""
    if not path.exists():
        return None
    size, keep = path.stat().st_size, INLINE_LIMIT // 2
    if size <= keep:
        return path.read_text(errors="replace")
    with open(path, "rb") as f:
        f.seek(size - keep)
        end = f.read().decode(errors="replace")
    return f"[the first {size - keep} bytes are cut here: Flyte's log service has them]\n{end}"


def fetch(uri: str, f: BinaryIO) -> tuple[int, str]:
    """Copy the object at `uri` into `f` in bounded chunks with flyte's storage layer (the
    credentials `File.download()` uses); its size and sha256. One streamed GET where flyte's
    store is obstore's (s3, gs, abfs): `File.download_sync` reads the whole object into
    memory first, and ranged reads cost an object store emulator (moto) the whole object each."""
    import flyte.storage as storage
    from flyte.syncify import syncify

    digest = hashlib.sha256()
    size = 0

    def write(chunk: Any) -> None:
        nonlocal size
        f.write(chunk)
        digest.update(chunk)
        size += len(chunk)

    if not storage.is_remote(uri):  # a local raw-data path (a cluster's is never local)
        with open(uri, "rb") as src:
            while chunk := src.read(CHUNK):
                write(chunk)
        return size, digest.hexdigest()

    @syncify
    async def copy() -> None:
        fs: Any = storage.get_underlying_filesystem(path=uri)
        if hasattr(fs, "_split_path") and hasattr(fs, "_construct_store"):  # as flyte's get()
            import obstore

            bucket, key = fs._split_path(uri)
            result = await obstore.get_async(fs._construct_store(bucket), key)
            async for chunk in result.stream(min_chunk_size=CHUNK):
                write(chunk)
            return
        fh = await storage.open(uri, "rb")
        try:
            while chunk := await fh.read(CHUNK):
                write(chunk)
        finally:
            closed = fh.close()
            if closed is not None:
                await closed

    copy()
    return size, digest.hexdigest()


def _read(path: Path) -> str | None:
    return path.read_text(errors="replace") if path.exists() else None
