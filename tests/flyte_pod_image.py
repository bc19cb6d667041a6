"""The pod image for the Flyte emulator's docker mode: only `flyte` (the client's version) and
the test packages, on the local base image scripts/docker-engine.sh makes.

Wheels are downloaded on the host (`pip download`, cached) and installed in the image with
`--no-index` in a build without network, so the build needs no registry and no proxy CA.
The tag is a content hash of the base image, the Dockerfile and the wheel files: any change
rebuilds, an unchanged image is reused.

    python tests/flyte_pod_image.py [EXTRA_REQUIREMENT ...]   # prints the tag
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

BASE_IMAGE = "python:3.11-slim-bookworm"
REPOSITORY = "flyte-emulator-pod"
DOCKERFILE = """\
FROM {base}
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/flyte \\
 && /opt/flyte/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels {requirements} \\
 && rm -rf /tmp/wheels
ENV PATH=/opt/flyte/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PYTHONUNBUFFERED=1
WORKDIR /root
"""


class PodImageUnavailable(RuntimeError):
    """No pod image can be had here; the message says why and what to run."""


def cache_dir() -> Path:
    return Path(os.environ.get("FLYTE_JUPYTER_CI_CACHE", Path.home() / ".cache/flyte-jupyter-ci"))


def requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """flyte at the version this client runs, plus `extra` test packages."""
    return [f"flyte=={version('flyte')}", *extra]


def download_wheels(reqs: list[str]) -> Path:
    """Wheels for `reqs` and their dependencies, downloaded once per requirement set."""
    if sys.platform != "linux" or sys.version_info[:2] != (3, 11):
        raise PodImageUnavailable(
            "pod wheels are downloaded for this host's platform; it must be Linux with Python 3.11"
        )
    key = hashlib.sha256("\n".join([platform.machine(), *reqs]).encode()).hexdigest()[:16]
    wheels = cache_dir() / f"pod-wheels-{key}"
    if wheels.is_dir():
        return wheels
    wheels.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="pod-wheels-", dir=wheels.parent))
    argv = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d"]
    proc = subprocess.run([*argv, str(staging), *reqs], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise PodImageUnavailable(f"pip download {' '.join(reqs)} failed: {tail[0]}")
    staging.rename(wheels)
    return wheels


def build_pod_image(client: Any, extra: tuple[str, ...] = (), base: str = BASE_IMAGE) -> str:
    """Build (or reuse) the pod image on the engine behind docker `client`; returns its tag."""
    import docker

    try:
        base_id = client.images.get(base).id
    except docker.errors.ImageNotFound:
        raise PodImageUnavailable(
            f"base image {base} is missing; scripts/docker-engine.sh makes it locally"
        ) from None
    reqs = requirements(extra)
    wheels = download_wheels(reqs)
    dockerfile = DOCKERFILE.format(base=base, requirements=" ".join(f"'{r}'" for r in reqs))
    digest = hashlib.sha256(f"{base_id}\n{dockerfile}".encode())
    for wheel in sorted(wheels.iterdir()):
        digest.update(wheel.name.encode() + hashlib.sha256(wheel.read_bytes()).digest())
    tag = f"{REPOSITORY}:{digest.hexdigest()[:16]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="pod-image-") as context:
        shutil.copytree(wheels, Path(context) / "wheels")
        (Path(context) / "Dockerfile").write_text(dockerfile)
        try:
            client.images.build(path=context, tag=tag, rm=True, network_mode="none")
        except docker.errors.BuildError as exc:
            log = "".join(str(line.get("stream", "")) for line in exc.build_log)
            raise PodImageUnavailable(f"pod image build failed: {exc}\n{log[-2000:]}") from None
    return tag


if __name__ == "__main__":
    import docker

    print(build_pod_image(docker.from_env(), tuple(sys.argv[1:])))
