"""The Flyte task a `--executor flyte` run executes, and the pod bootstrap that precedes it.

Imported only in a Flyte pod (it needs `flyte`) and by the flyte executor to serialize the task.
The pod's container runs `python -c BOOT RUNTIME_URL RUNTIME_SHA256 BUNDLE_URL DIGEST a0 ...`:
BOOT downloads this runtime (checked against the sha256 in the task spec) and our bundle
(re-verified against the digest in the task spec, extracted safely), then hands over to Flyte's
own `a0` without `--tgz`. Both expected hashes come from the control plane, never from inside an
archive. `a0` loads `run` below through Flyte's default resolver; `run` calls our runtime
exactly as the local executor does, in a private run directory, and returns what the runtime
wrote. A failed run raises, so the Flyte action fails with the remote exception.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path

import flyte

BUNDLE_ENV = "FLYTE_JUPYTER_FLYTE_BUNDLE"
"""Local path of the verified bundle archive, set by BOOT."""
DIGEST_ENV = "FLYTE_JUPYTER_FLYTE_DIGEST"
"""The digest BOOT verified (from the task spec's arguments)."""
REFUSED_ENV = "FLYTE_JUPYTER_FLYTE_REFUSED"
"""Why BOOT refused the bundle; `run` fails with it before any code of the bundle runs."""
ERROR_MARK = "[flyte-jupyter-error]"
"""Brackets the runtime's error.json in the exception message, for the client to read back."""
ENV_NAME = "flyte-jupyter"

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
main(sys.argv[6:], prog_name="a0")
"""

env = flyte.TaskEnvironment(name=ENV_NAME)


class RunFailed(Exception):
    """The run's code raised; the message carries the runtime's error.json."""


class BundleRefused(Exception):
    """The bundle in the data plane is not the one the task spec names: nothing ran."""


@env.task
def run(entry: str, inputs: str, spec: str) -> str:
    """Run `entry` of the verified bundle on base64 pickled `inputs`; the run's outputs,
    status and logs as JSON (pickled outputs base64)."""
    from .execute import main

    refused = os.environ.get(REFUSED_ENV)
    if refused:
        raise BundleRefused(refused)
    with tempfile.TemporaryDirectory(prefix="flyte-jupyter-run-") as tmp:
        run_dir = Path(tmp)
        (run_dir / "spec.json").write_text(spec)
        (run_dir / "inputs.pkl").write_bytes(base64.b64decode(inputs))
        argv = ["--entry", entry, "--inputs", str(run_dir / "inputs.pkl")]
        argv += ["--outputs", str(run_dir / "outputs.pkl"), "--run-dir", str(run_dir)]
        if os.environ.get(BUNDLE_ENV):
            argv += ["--bundle", "file://" + os.environ[BUNDLE_ENV]]
            argv += ["--digest", os.environ[DIGEST_ENV]]
        code = main(argv)
        result = {"status": _read(run_dir / "status.json"), "logs": _read(run_dir / "logs.txt")}
        if code != 0:
            error = _read(run_dir / "error.json") or "{}"
            doc = json.loads(error)
            summary = f"{doc.get('type', 'Error')}: {doc.get('message', '')}"
            raise RunFailed(f"{summary}\n{ERROR_MARK}{json.dumps({**result, 'error': error})}")
        outputs = (run_dir / "outputs.pkl").read_bytes()
        result["outputs"] = base64.b64encode(outputs).decode()
    return json.dumps(result)


def _read(path: Path) -> str | None:
    return path.read_text(errors="replace") if path.exists() else None
