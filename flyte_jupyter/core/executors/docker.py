"""The Docker executor: the runtime inside a container of the run's image.

The runtime is mounted into the container read-only (so any image with Python 3 runs it, and
always the client's version). A file:// store is bind-mounted read-only at the same path,
with the run's own directory mounted writable on top; other stores are reached over the
network with the store's options. Verified bundles are cached in one named volume shared by
all runs. Containers carry the run id and digest as labels; cancel stops and removes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...runtime.blobs import STORAGE_OPTIONS_ENV, is_local, local_path
from ...runtime.locations import cache_dir
from .. import history
from ..errors import UsageError
from ..image import docker_client
from ..private import open_private, private_dir
from ..runtime_files import boot_line, runtime_copy
from ..storage import Store
from ..submit import LogLine, RunSpec
from .local import PASS_PREFIXES, LocalExecution

RUNTIME_MOUNT = "/opt/flyte-jupyter-runtime"
BUNDLE_VOLUME = "flyte-jupyter-bundles"
BUNDLE_CACHE = "/var/cache/flyte-jupyter/bundles"
NETWORK_ENV = "FLYTE_JUPYTER_DOCKER_NETWORK"
LABEL_RUN = "flyte-jupyter.run-id"
LABEL_DIGEST = "flyte-jupyter.digest"
_PROBE = (
    "import json, importlib.metadata as m, sys\n"
    "names = json.loads(sys.argv[1])\n"
    "found = {}\n"
    "for n in names:\n"
    "    try:\n"
    "        found[n] = m.version(n)\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
    "print(json.dumps({'python': '%d.%d.%d' % sys.version_info[:3], 'found': found}))\n"
)


class DockerExecutor:
    name = "docker"

    def __init__(self, network: str | None = None):
        self.network = network or os.environ.get(NETWORK_ENV) or None
        self.client = docker_client()

    def validate(self, spec: RunSpec) -> None:
        """Before anything is uploaded or recorded: the image is named, is on the engine (or
        can be pulled) and has the packages the shipped code imports."""
        import docker.errors

        if not spec.image:
            raise UsageError(
                "the docker executor needs an image: --image URI (or a reference name mapped "
                "with --images NAME=URI)"
            )
        try:
            try:
                self.client.images.get(spec.image)
            except docker.errors.ImageNotFound:
                self.client.images.pull(spec.image)
        except docker.errors.APIError as exc:
            raise UsageError(
                f"image {spec.image!r} is not on the Docker engine and cannot be pulled "
                f"({exc.explanation or exc}): build it, or check the name"
            ) from exc
        self.preflight(spec)

    def launch(self, spec: RunSpec, store: Store) -> DockerExecution | WarmDockerExecution:
        warm = self._launch_warm(spec, store)
        if warm is not None:
            return warm
        container = self.client.containers.run(
            spec.image,
            ["python3", "-I", "-u", "-c", boot_line("run", RUNTIME_MOUNT), *spec.runtime_args()],
            detach=True,
            environment=self._environment(spec, store),
            volumes=self._volumes(spec, store),
            labels={LABEL_RUN: spec.run_id, LABEL_DIGEST: spec.digest or ""},
            network_mode=self.network,
            working_dir="/tmp",
        )
        return DockerExecution(container)

    def attach(
        self, record: history.RunRecord, store: Store
    ) -> DockerExecution | WarmDockerExecution | None:
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={record.id}"})
        if found:
            return DockerExecution(found[0])
        return WarmDockerExecution.attach(record.id)

    def _launch_warm(self, spec: RunSpec, store: Store) -> WarmDockerExecution | None:
        """The run as a fresh process of the image's long-lived worker container (see
        core/workers.py), or None: warm workers are off or none could be used."""
        from .. import workers

        if not workers.enabled():
            return None
        volumes = self._volumes(spec, store)
        run_dir = local_path(spec.run_dir) if is_local(store.url) else None
        if run_dir is not None:
            del volumes[run_dir]  # handed over as a descriptor: the store stays read-only
        container = {
            "boot": boot_line("worker", RUNTIME_MOUNT),
            "volumes": volumes,
            "network": self.network,
            "environment": {"FLYTE_JUPYTER_BUNDLE_CACHE": BUNDLE_CACHE},
        }
        image_id = self.client.images.get(spec.image).id
        logs = private_dir(cache_dir() / "docker-runs" / spec.run_id)
        with open_private(logs / "stdout.txt") as out, open_private(logs / "stderr.txt") as err:
            proc = workers.spawn_in_container(
                self.client, image_id, container, spec.runtime_args(),
                self._environment(spec, store), run_dir, out, err,
            )  # fmt: skip
        if proc is None:
            return None
        where = {"worker": proc.worker, "pid": proc.pid, "host_pid": proc.host_pid}
        (logs / "worker.json").write_text(json.dumps({**where, "identity": proc.identity}))
        return WarmDockerExecution(proc.host_pid, logs, proc, proc.identity, proc.worker, proc.pid)

    # --- pieces --------------------------------------------------------------------------

    def _environment(self, spec: RunSpec, store: Store) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.startswith(PASS_PREFIXES)}
        env.pop("FLYTE_JUPYTER_CACHE_DIR", None)
        env.pop("FLYTE_JUPYTER_DATA_DIR", None)
        env["FLYTE_JUPYTER_BUNDLE_CACHE"] = BUNDLE_CACHE
        if not store.local:
            env[STORAGE_OPTIONS_ENV] = json.dumps(store.options)
        env.update(spec.env)
        return env

    def _volumes(self, spec: RunSpec, store: Store) -> dict[str, dict[str, str]]:
        volumes = {
            str(runtime_copy()): {"bind": RUNTIME_MOUNT, "mode": "ro"},
            BUNDLE_VOLUME: {"bind": BUNDLE_CACHE, "mode": "rw"},
        }
        if is_local(store.url):
            root = local_path(store.url)
            run_dir = local_path(spec.run_dir)
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            volumes[root] = {"bind": root, "mode": "ro"}
            volumes[run_dir] = {"bind": run_dir, "mode": "rw"}
        return volumes

    def preflight(self, spec: RunSpec) -> None:
        """Check, before the run, that the image has the packages the shipped code imports
        (one probe container per image, remembered by image id)."""
        wanted = spec.client.get("distributions", {})
        if not wanted:
            return
        image = self.client.images.get(spec.image)
        cache = cache_dir() / "image-probes" / f"{image.id.replace(':', '_')}.json"
        known = json.loads(cache.read_text()) if cache.is_file() else {"found": {}, "asked": []}
        if not set(wanted) <= set(known["asked"]):
            output = self.client.containers.run(
                image.id, ["python3", "-c", _PROBE, json.dumps(sorted(wanted))], remove=True
            )
            probe = json.loads(output.decode().strip().splitlines()[-1])
            known = {
                "found": {**known["found"], **probe["found"]},
                "asked": sorted(set(known["asked"]) | set(wanted)),
            }
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known))
        missing = sorted(set(wanted) - set(known["found"]))
        if missing:
            pins = ", ".join(repr(f"{name}=={wanted[name]}") for name in missing)
            raise UsageError(
                f"image {spec.image} lacks packages the shipped code imports: "
                f"{', '.join(missing)}. Add them to the image: .with_pip_packages({pins})"
            )


class WarmDockerExecution(LocalExecution):
    """A run in a worker container: followed like a local process (its log files, its host
    pid and identity), cancelled through the worker, which signals the run's process group
    (the host user may not be allowed to signal the container's processes)."""

    def __init__(
        self,
        host_pid: int | None,
        logs: Path,
        proc: Any,
        identity: str | None,
        worker: str,
        container_pid: int,
    ):
        super().__init__(host_pid or -1, logs, proc, None, identity)
        self.worker = worker
        self.container_pid = container_pid

    @classmethod
    def attach(cls, run_id: str) -> WarmDockerExecution | None:
        try:
            where = json.loads((cache_dir() / "docker-runs" / run_id / "worker.json").read_text())
        except (OSError, ValueError):
            return None
        if not where.get("host_pid"):
            return None  # ended before it was seen from the host: the store says how
        logs = cache_dir() / "docker-runs" / run_id
        return cls(where["host_pid"], logs, None, where["identity"], where["worker"], where["pid"])

    def cancel(self) -> None:
        from .. import workers

        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.wait(0) is not None:
                return
            if not workers.kill(self.worker, self.container_pid, self.identity, sig):
                break
            if self.wait(3.0) is not None:
                return


class DockerExecution:
    def __init__(self, container: Any):
        self.container = container
        self.exit_code: int | None = None

    def wait(self, timeout: float | None) -> int | None:
        """The exit code once the container has exited (it is then removed), else None."""
        import docker.errors
        import requests

        if self.exit_code is not None:
            return self.exit_code
        try:
            if timeout is not None and timeout <= 0:
                self.container.reload()
                if self.container.status != "exited":
                    return None
                code = int(self.container.attrs["State"]["ExitCode"])
            else:
                code = int(self.container.wait(timeout=timeout).get("StatusCode", -1))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return None
        except docker.errors.NotFound:
            code = -1  # removed by someone else: status.json tells how it ended
        self.exit_code = code
        with contextlib.suppress(docker.errors.APIError):
            self.container.remove(force=True)
        return code

    def cancel(self) -> None:
        import docker.errors

        try:
            self.container.stop(timeout=3)
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass

    def output_so_far(self) -> str:
        import docker.errors

        try:
            return self.container.logs(stdout=True, stderr=True).decode(errors="replace")
        except docker.errors.NotFound:
            return ""

    def log_lines(self) -> Iterator[LogLine]:
        """stdout and stderr, live, as separate streams."""
        lines: queue.Queue[LogLine | None] = queue.Queue()

        def pump(stream: str) -> None:
            import docker.errors

            partial = b""
            try:
                chunks = self.container.logs(
                    stream=True, follow=True, stdout=stream == "stdout", stderr=stream == "stderr"
                )
                for chunk in chunks:
                    *complete, partial = (partial + chunk).split(b"\n")
                    for line in complete:
                        lines.put(LogLine(stream, line.decode(errors="replace") + "\n"))
                if partial:
                    lines.put(LogLine(stream, partial.decode(errors="replace")))
            except docker.errors.NotFound:
                pass  # already removed: the run's logs.txt in the store has the output
            finally:
                lines.put(None)

        threads = [
            threading.Thread(target=pump, args=(s,), daemon=True) for s in ("stdout", "stderr")
        ]
        for thread in threads:
            thread.start()
        done = 0
        while done < len(threads):
            item = lines.get()
            if item is None:
                done += 1
            else:
                yield item
