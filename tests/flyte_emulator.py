"""A local stand-in for the Flyte 2 control plane, the way moto stands in for S3.

It serves flyteidl2's own connect server stubs (ClusterService, DataProxyService, RunService)
to the real flyte SDK client on a free 127.0.0.1 port, signs upload URLs on a moto S3 server,
fills a run's container-arg templates and starts the pod: `a0` (flyte._bin.runtime) as a local
process, or the same command in a container on the real Docker engine. Phases follow the pod:
QUEUED -> RUNNING -> SUCCEEDED | FAILED (from the pod's error.pb) | ABORTED (AbortRun kills it).
Not emulated: Kubernetes scheduling, auth, real log backends, console URLs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import servers
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl2.cluster import payload_pb2 as cluster_pb2
from flyteidl2.cluster.service_connect import ClusterServiceSync, ClusterServiceWSGIApplication
from flyteidl2.common import identifier_pb2, phase_pb2, run_pb2
from flyteidl2.core import execution_pb2
from flyteidl2.dataproxy import dataproxy_service_pb2 as dp
from flyteidl2.dataproxy.dataproxy_service_connect import (
    DataProxyServiceSync,
    DataProxyServiceWSGIApplication,
)
from flyteidl2.logs.dataplane import payload_pb2 as logs_pb2
from flyteidl2.task import common_pb2 as task_common_pb2
from flyteidl2.task import task_definition_pb2
from flyteidl2.workflow import run_definition_pb2 as rd
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceSync, RunServiceWSGIApplication
from google.protobuf import timestamp_pb2
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wsgi import LimitedStream

P = phase_pb2.ActionPhase
TERMINAL = {P.ACTION_PHASE_SUCCEEDED, P.ACTION_PHASE_FAILED, P.ACTION_PHASE_ABORTED}
ACTION = "a0"  # the root action's name, as in Flyte
POD_ORG = "emulator"  # a0 requires a non-empty org; used when the client sends none
INLINE_LIMIT = 10 << 20
"""Bytes of inline inputs or outputs (serialized protos) a run may carry, as a cluster's default
cap: bigger data must travel as files (blobs) in the data plane."""
_TEMPLATE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


@dataclass
class _Run:
    """One run with its single root action `a0` and the pod that executes it."""

    id: identifier_pb2.RunIdentifier
    request: rs.CreateRunRequest
    task_spec: Any
    inputs_uri: str
    output_prefix: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    phase: int = P.ACTION_PHASE_QUEUED
    start_time: timestamp_pb2.Timestamp = field(default_factory=_now)
    end_time: timestamp_pb2.Timestamp | None = None
    error: rd.ErrorInfo | None = None
    abort: rd.AbortInfo | None = None
    proc: subprocess.Popen | None = None
    container: Any = None
    pod_done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def action_id(self) -> identifier_pb2.ActionIdentifier:
        return identifier_pb2.ActionIdentifier(run=self.id, name=ACTION)


class FlyteEmulator:
    """Context manager: the control-plane server plus the pods it starts.

    `pod_mode="process"` runs `a0` as a local subprocess in an empty temp cwd (it sees this
    interpreter's site-packages); `"docker"` runs the TaskSpec's command/args in a container of
    the TaskSpec's image when the engine has it, else of `image`, with host networking, so the
    pod reaches moto on 127.0.0.1.
    """

    def __init__(
        self,
        workdir: Path,
        s3: servers.Server,
        pod_mode: str = "process",
        image: str | None = None,
        project: str = "flytesnacks",
        domain: str = "development",
    ):
        if pod_mode not in ("process", "docker"):
            raise ValueError(f"pod_mode must be 'process' or 'docker', not {pod_mode!r}")
        self.workdir = Path(workdir)
        self.s3 = s3
        self.pod_mode = pod_mode
        self.image = image
        self.project = project
        self.domain = domain
        self.bucket = f"flyte-emu-{uuid.uuid4().hex[:10]}"
        self.port = servers.free_port()
        self.endpoint = f"dns:///127.0.0.1:{self.port}"
        self.config_path = self.workdir / "flyte-config.yaml"
        self.client_env: dict[str, str] = {}
        self.create_run_requests: list[rs.CreateRunRequest] = []
        self.uploads: list[dict] = []
        self.calls: list[str] = []
        self.inline_input_sizes: list[int] = []
        """Bytes of each inputs proto received inline (UploadInputs or CreateRun.inputs)."""
        self._runs: dict[str, _Run] = {}
        self._threads: list[threading.Thread] = []
        self._names: set[str] = set()
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._server = None
        self._docker = None
        apps = [
            ClusterServiceWSGIApplication(_ClusterService()),
            DataProxyServiceWSGIApplication(_DataProxyService(self)),
            RunServiceWSGIApplication(_RunService(self)),
        ]
        self._apps = {app.path.strip("/"): app for app in apps}
        self._s3 = boto3.client(
            "s3",
            endpoint_url=s3.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            config=botocore.config.Config(
                signature_version="s3v4", s3={"addressing_style": "path"}
            ),
        )

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FlyteEmulator:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._s3.create_bucket(Bucket=self.bucket)
        if self.pod_mode == "docker":
            import docker

            self._docker = docker.from_env()
        self.config_path.write_text(
            "admin:\n"
            f"  endpoint: {self.endpoint}\n"
            "  insecure: true\n"
            "task:\n"
            f"  project: {self.project}\n"
            f"  domain: {self.domain}\n"
        )
        self._new_client_env()
        self._server = make_server(
            "127.0.0.1",
            self.port,
            self._wsgi,
            threaded=True,
            request_handler=_QuietHandler,
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        self._kill_pods("emulator stopped")
        for thread in self._threads:  # containers are removed by their pod threads
            thread.join(120)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        """Kill running pods, forget runs and recorded calls, and give clients a fresh HOME
        (flyte caches uploads per endpoint in ~/.flyte), so a session-scoped emulator serves one
        test at a time. Uploaded objects stay in the bucket."""
        self._kill_pods("emulator reset")
        with self._cond:
            self._runs.clear()
            self.create_run_requests.clear()
            self.uploads.clear()
            self.calls.clear()
            self.inline_input_sizes.clear()
        self._new_client_env()

    def _new_client_env(self) -> None:
        home = Path(tempfile.mkdtemp(prefix="home-", dir=self.workdir))
        self.client_env = {
            "HOME": str(home),
            "FLYTECTL_CONFIG": str(self.config_path),
            **self._storage_env(),
        }

    def _storage_env(self) -> dict[str, str]:
        """Static test credentials and the moto endpoint: nothing probes the cloud."""
        return {
            "FLYTE_AWS_ENDPOINT": self.s3.url,
            "FLYTE_AWS_ACCESS_KEY_ID": "testing",
            "FLYTE_AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    # ---- what tests read ------------------------------------------------------------------

    @property
    def run_names(self) -> list[str]:
        """The runs created since the start or the last reset(), oldest first."""
        return list(self._runs)

    def run_phase(self, run_name: str) -> str:
        """The run's phase name without its prefix: QUEUED, RUNNING, SUCCEEDED, FAILED, ..."""
        return P.Name(self._get(run_name).phase).removeprefix("ACTION_PHASE_")

    def pod_alive(self, run_name: str) -> bool:
        """Whether the run's pod (process or container) runs; see wait_pod_gone()."""
        run = self._get(run_name)
        if run.proc is not None:
            return run.proc.poll() is None
        if run.container is not None:
            import docker

            try:
                run.container.reload()
            except docker.errors.NotFound:
                return False
            return run.container.status in ("created", "running", "restarting")
        return False

    def wait_pod_gone(self, run_name: str, timeout: float = 120) -> bool:
        """Wait until the pod has ended and, in docker mode, its container is removed."""
        thread = self._get(run_name).thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def pod_argv(self, run_name: str) -> list[str]:
        """The command the pod ran, templates filled."""
        return list(self._get(run_name).argv)

    def pod_log(self, run_name: str) -> str:
        """Everything the pod wrote to stdout and stderr so far."""
        log = self._get(run_name).log
        return log.read_text(errors="replace") if log.exists() else ""

    def wait_terminal(self, run_name: str, timeout: float = 60) -> str:
        """Block until the run reaches a terminal phase; returns run_phase()."""
        run = self._get(run_name)
        with self._cond:
            self._cond.wait_for(lambda: run.phase in TERMINAL, timeout)
        return self.run_phase(run_name)

    def read_object(self, uri: str) -> bytes | None:
        """The bytes at an s3:// URI in the emulator's storage, or None if absent."""
        bucket, key = _split_s3(uri)
        try:
            return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError:
            return None

    def write_object(self, uri: str, data: bytes) -> None:
        """Replace the bytes at an s3:// URI (e.g. to tamper with an uploaded bundle)."""
        bucket, key = _split_s3(uri)
        self._s3.put_object(Bucket=bucket, Key=key, Body=data)

    def _get(self, run_name: str) -> _Run:
        try:
            return self._runs[run_name]
        except KeyError:
            raise KeyError(f"no run named {run_name!r} in the emulator") from None

    # ---- HTTP -----------------------------------------------------------------------------

    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        service, _, method = environ.get("PATH_INFO", "").strip("/").partition("/")
        with self._cond:
            self.calls.append(method or service)
        app = self._apps.get(service)
        length = environ.get("CONTENT_LENGTH")
        if length and not environ.get("wsgi.input_terminated"):
            # connectrpc reads (and on errors drains) the body until EOF; on a kept-alive
            # connection that EOF never comes unless the stream stops at Content-Length.
            environ["wsgi.input"] = LimitedStream(environ["wsgi.input"], int(length))
        if app is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"the Flyte emulator does not serve {service}\n".encode()]
        return app(environ, start_response)

    # ---- storage ---------------------------------------------------------------------------

    def _put(self, key: str, data: bytes) -> str:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def _presign(self, method: str, uri: str, expires: int = 3600) -> str:
        bucket, key = _split_s3(uri)
        return self._s3.generate_presigned_url(
            method, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
        )

    def _outputs_size(self, run: _Run) -> int:
        bucket, key = _split_s3(f"{run.output_prefix}/outputs.pb")
        try:
            return self._s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except botocore.exceptions.ClientError:
            return 0

    def _exists(self, uri: str) -> bool:
        bucket, key = _split_s3(uri)
        try:
            self._s3.head_object(Bucket=bucket, Key=key)
            return True
        except botocore.exceptions.ClientError:
            return False

    # ---- runs ------------------------------------------------------------------------------

    def _create_run(self, req: rs.CreateRunRequest) -> rs.CreateRunResponse:
        with self._cond:
            self.create_run_requests.append(rs.CreateRunRequest.FromString(req.SerializeToString()))
        if not req.HasField("task_spec"):
            raise ConnectError(Code.UNIMPLEMENTED, "the emulator runs only a CreateRun's task_spec")
        if req.HasField("run_id"):
            run_id = identifier_pb2.RunIdentifier()
            run_id.CopyFrom(req.run_id)
        else:
            p = req.project_id
            run_id = identifier_pb2.RunIdentifier(
                org=p.organization, project=p.name, domain=p.domain, name=""
            )
        if not run_id.name:
            run_id.name = "r" + secrets.token_hex(10)[:19]
        if req.HasField("offloaded_input_data"):
            inputs_uri = req.offloaded_input_data.uri
        else:
            data = self._inline_inputs(req.inputs)
            inputs_uri = self._put(f"inputs/{run_id.name}/inputs.pb", data)
        base = req.run_spec.run_base_dir or (
            f"s3://{self.bucket}/metadata/{run_id.org or POD_ORG}/{run_id.project}"
            f"/{run_id.domain}/{run_id.name}"
        )
        output_prefix = f"{base}/{ACTION}/1"
        start = _now()
        values = {
            "input": inputs_uri,
            "inputs": inputs_uri,
            "inputprefix": inputs_uri.rsplit("/", 1)[0],
            "outputprefix": output_prefix,
            "outputs": output_prefix,
            "rawoutputdataprefix": f"s3://{self.bucket}/raw/{run_id.name}/{ACTION}/1",
            "checkpointoutputprefix": f"{output_prefix}/_flytecheckpoints",
            "prevcheckpointprefix": "",
            "runname": run_id.name,
            "actionname": ACTION,
            "podname": f"{run_id.name}-{ACTION}-0",
            "runstarttime": start.ToJsonString(),
        }

        def fill(arg: str) -> str:
            return _TEMPLATE.sub(lambda m: values.get(m.group(1).lower(), m.group(0)), arg)

        container = req.task_spec.task_template.container
        argv = [fill(a) for a in (*container.command, *container.args)]
        env = {kv.key: kv.value for kv in container.env}
        env.update({kv.key: kv.value for kv in req.run_spec.envs.values})
        env.update(
            {
                **self._storage_env(),
                "_U_RUN_BASE": base,
                "_U_EP_OVERRIDE": f"dns:///localhost:{self.port}",
                "_U_ORG_NAME": run_id.org or POD_ORG,
                "FLYTE_INTERNAL_EXECUTION_PROJECT": run_id.project,
                "FLYTE_INTERNAL_EXECUTION_DOMAIN": run_id.domain,
                "RUN_NAME": run_id.name,
                "ACTION_NAME": ACTION,
                "PYTHONUNBUFFERED": "1",
            }
        )
        with self._cond:
            if run_id.name in self._names:  # also across reset(): storage paths are per name
                raise ConnectError(Code.ALREADY_EXISTS, f"run {run_id.name} already exists")
            self._names.add(run_id.name)
            run = _Run(
                id=run_id,
                request=req,
                task_spec=req.task_spec,
                inputs_uri=inputs_uri,
                output_prefix=output_prefix,
                argv=argv,
                env=env,
                log=self.workdir / "pods" / f"{run_id.name}.log",
                start_time=start,
            )
            self._runs[run_id.name] = run
        run.log.parent.mkdir(parents=True, exist_ok=True)
        run.log.touch()
        run.thread = threading.Thread(target=self._run_pod, args=(run,), daemon=True)
        run.thread.start()
        self._threads.append(run.thread)
        return rs.CreateRunResponse(run=rd.Run(action=self._action(run)))

    def _inline_inputs(self, inputs: task_common_pb2.Inputs) -> bytes:
        """The serialized inputs, recorded; refused above the inline cap like a cluster's."""
        data = inputs.SerializeToString(deterministic=True)
        with self._cond:
            self.inline_input_sizes.append(len(data))
        if len(data) > INLINE_LIMIT:
            raise ConnectError(
                Code.RESOURCE_EXHAUSTED,
                f"inline inputs are {len(data)} bytes, over the {INLINE_LIMIT} byte limit: "
                "pass big values as files",
            )
        return data

    def _set_phase(self, run: _Run, phase: int, **result: Any) -> bool:
        """Move `run` to `phase` unless it already ended; wakes every watcher."""
        with self._cond:
            if run.phase in TERMINAL:
                return False
            run.phase = phase
            if phase in TERMINAL:
                run.end_time = _now()
                run.error = result.get("error")
                run.abort = result.get("abort")
            self._cond.notify_all()
            return True

    def _run_pod(self, run: _Run) -> None:
        try:
            start = self._run_container if self.pod_mode == "docker" else self._run_process
            code = start(run)
        except Exception as exc:  # the pod could not start: a system failure of the action
            run.pod_done.set()
            self._set_phase(run, P.ACTION_PHASE_FAILED, error=_system_error("PodStartFailed", exc))
            self._remove_container(run)
            return
        run.pod_done.set()
        error_doc = self.read_object(f"{run.output_prefix}/error.pb")
        if run.phase in TERMINAL:  # aborted while running
            pass
        elif error_doc is not None:
            doc = execution_pb2.ErrorDocument.FromString(error_doc)
            kind = {
                execution_pb2.ExecutionError.USER: rd.ErrorInfo.KIND_USER,
                execution_pb2.ExecutionError.SYSTEM: rd.ErrorInfo.KIND_SYSTEM,
            }.get(doc.error.origin, rd.ErrorInfo.KIND_UNSPECIFIED)
            info = rd.ErrorInfo(message=doc.error.message, kind=kind, code=doc.error.code)
            self._set_phase(run, P.ACTION_PHASE_FAILED, error=info)
        elif code == 0 and self._outputs_size(run) > INLINE_LIMIT:
            size = self._outputs_size(run)
            message = f"outputs.pb is {size} bytes, over the {INLINE_LIMIT} byte inline limit"
            error = _system_error("OutputsTooBig", message)
            self._set_phase(run, P.ACTION_PHASE_FAILED, error=error)
        elif code == 0:
            self._set_phase(run, P.ACTION_PHASE_SUCCEEDED)
        else:
            tail = "\n".join(self.pod_log(run.id.name).splitlines()[-20:])
            message = f"pod exited with code {code} and wrote no error.pb:\n{tail}"
            self._set_phase(run, P.ACTION_PHASE_FAILED, error=_system_error("PodFailed", message))
        self._remove_container(run)  # after the phase: removal is slow on a vfs engine

    def _started(self, run: _Run) -> None:
        """RUNNING once the pod exists; a run aborted while its pod was starting is killed."""
        if not self._set_phase(run, P.ACTION_PHASE_RUNNING):
            self._kill(run)

    def _run_process(self, run: _Run) -> int:
        cwd = Path(tempfile.mkdtemp(prefix=f"pod-{run.id.name}-", dir=self.workdir))
        argv = list(run.argv)
        local = Path(sys.executable).parent / argv[0]
        if local.exists():  # `a0` from this interpreter, not whatever else is on PATH
            argv[0] = str(local)
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(cwd),
            "LANG": "C.UTF-8",
            **run.env,
        }
        with open(run.log, "ab") as out:
            run.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the abort kills the whole process group
            )
        self._started(run)
        code = run.proc.wait()
        shutil.rmtree(cwd, ignore_errors=True)
        return code

    def _run_container(self, run: _Run) -> int:
        import docker

        image = self.image
        spec_image = run.task_spec.task_template.container.image
        if spec_image:
            try:
                self._docker.images.get(spec_image)
                image = spec_image  # the TaskSpec's image when the engine has it
            except docker.errors.ImageNotFound:
                pass
        if not image:
            raise RuntimeError(f"image {spec_image!r} is not on the engine and no image was given")
        n = len(run.task_spec.task_template.container.command)
        run.container = self._docker.containers.run(
            image,
            entrypoint=run.argv[:n] or None,
            command=run.argv[n:],
            environment=run.env,
            network_mode="host",
            working_dir="/root/pod",
            labels={"flyte-emulator": self.bucket},
            name=f"flyte-emu-{run.id.name}",
            detach=True,
        )
        self._started(run)
        with open(run.log, "ab") as out:
            for chunk in run.container.logs(stream=True, follow=True):
                out.write(chunk)
                out.flush()
        return run.container.wait()["StatusCode"]

    def _remove_container(self, run: _Run) -> None:
        if run.container is not None:
            import docker

            with contextlib.suppress(docker.errors.NotFound):
                run.container.remove(force=True)

    def _kill(self, run: _Run) -> None:
        """Kill the pod (SIGKILL to its process group, or to its container) and wait for it to
        end; a killed container is removed by its pod thread."""
        if run.proc is not None and run.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
        if run.container is not None:
            import docker

            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                run.container.kill()
        if run.proc is not None or run.container is not None:
            run.pod_done.wait(60)

    def _abort(self, run_name: str, reason: str) -> None:
        run = self._runs.get(run_name)
        if run is None:
            raise ConnectError(Code.NOT_FOUND, f"run {run_name} not found")
        if self._set_phase(run, P.ACTION_PHASE_ABORTED, abort=rd.AbortInfo(reason=reason)):
            self._kill(run)

    def _kill_pods(self, reason: str) -> None:
        for name in list(self._runs):
            self._abort(name, reason)

    def _lookup(self, run_id: identifier_pb2.RunIdentifier) -> _Run:
        run = self._runs.get(run_id.name)
        if run is None:
            raise ConnectError(Code.NOT_FOUND, f"run {run_id.name} not found")
        return run

    # ---- protos ------------------------------------------------------------------------------

    def _status(self, run: _Run) -> rd.ActionStatus:
        status = rd.ActionStatus(phase=run.phase, start_time=run.start_time, attempts=1)
        if run.end_time is not None:
            status.end_time.CopyFrom(run.end_time)
            ms = run.end_time.ToMilliseconds() - run.start_time.ToMilliseconds()
            status.duration_ms = max(ms, 0)
        return status

    def _metadata(self, run: _Run) -> rd.ActionMetadata:
        template = run.task_spec.task_template
        t = template.id
        task_id = task_definition_pb2.TaskIdentifier(
            org=t.org, project=t.project, domain=t.domain, name=t.name, version=t.version
        )
        return rd.ActionMetadata(
            task=rd.TaskActionMetadata(
                id=task_id, task_type=template.type, short_name=run.task_spec.short_name
            ),
            action_type=rd.ACTION_TYPE_TASK,
            environment_name=run.task_spec.environment.name,
        )

    def _action(self, run: _Run) -> rd.Action:
        return rd.Action(id=run.action_id, metadata=self._metadata(run), status=self._status(run))

    def _details(self, run: _Run) -> rd.ActionDetails:
        attempt = rd.ActionAttempt(
            phase=run.phase,
            start_time=run.start_time,
            attempt=1,
            logs_available=run.phase != P.ACTION_PHASE_QUEUED,
            outputs=task_common_pb2.OutputReferences(
                output_uri=f"{run.output_prefix}/outputs.pb",
                report_uri=f"{run.output_prefix}/report.html",
            ),
            cluster="emulator",
        )
        if run.end_time is not None:
            attempt.end_time.CopyFrom(run.end_time)
        if run.error is not None:
            attempt.error_info.CopyFrom(run.error)
        details = rd.ActionDetails(
            id=run.action_id,
            metadata=self._metadata(run),
            status=self._status(run),
            task=run.task_spec,
            attempts=[attempt],
        )
        if run.error is not None:
            details.error_info.CopyFrom(run.error)
        if run.abort is not None:
            details.abort_info.CopyFrom(run.abort)
        return details

    def _run_details(self, run: _Run) -> rd.RunDetails:
        return rd.RunDetails(run_spec=run.request.run_spec, action=self._details(run))

    def _watch(self, run: _Run) -> Iterator[_Run]:
        """Yield `run` now and after every phase change, until it ends or the emulator stops."""
        while True:
            with self._cond:
                seen = run.phase
            yield run
            if seen in TERMINAL:
                return
            with self._cond:
                while run.phase == seen and not self._closing.is_set():
                    self._cond.wait(1.0)
            if self._closing.is_set():
                return

    def _action_data(self, run: _Run) -> tuple[task_common_pb2.Inputs, task_common_pb2.Outputs]:
        raw_in = self.read_object(run.inputs_uri) or b""
        raw_out = self.read_object(f"{run.output_prefix}/outputs.pb") or b""
        return (
            task_common_pb2.Inputs.FromString(raw_in),
            task_common_pb2.Outputs.FromString(raw_out),
        )

    def _tail(self, run: _Run) -> Iterator[dp.TailLogsResponse]:
        """The pod's output as log lines, following it until the pod has ended."""
        with open(run.log, "rb") as f:
            pending = b""
            while True:
                done = run.pod_done.is_set()
                pending += f.read()
                *lines, pending = pending.split(b"\n")
                if done and pending:
                    lines, pending = [*lines, pending], b""
                if lines:
                    stamp = _now()
                    yield dp.TailLogsResponse(
                        logs=[
                            dp.TailLogsResponse.Logs(
                                lines=[
                                    logs_pb2.LogLine(
                                        timestamp=stamp,
                                        message=line.decode(errors="replace"),
                                        originator=logs_pb2.USER,
                                    )
                                    for line in lines
                                ]
                            )
                        ]
                    )
                if done or self._closing.is_set():
                    return
                run.pod_done.wait(0.2)


def _system_error(code: str, detail: object) -> rd.ErrorInfo:
    return rd.ErrorInfo(message=str(detail), kind=rd.ErrorInfo.KIND_SYSTEM, code=code)


class _QuietHandler(WSGIRequestHandler):
    """No access log on the test output."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


logging.getLogger("werkzeug").setLevel(logging.ERROR)


# ---- the services, as flyteidl2's connect stubs call them ---------------------------------


class _ClusterService(ClusterServiceSync):
    def select_cluster(self, request, ctx) -> cluster_pb2.SelectClusterResponse:
        # No endpoint: the client keeps using the control plane for the data proxy.
        return cluster_pb2.SelectClusterResponse()


class _DataProxyService(DataProxyServiceSync):
    def __init__(self, emu: FlyteEmulator):
        self.emu = emu

    def create_upload_location(self, request, ctx) -> dp.CreateUploadLocationResponse:
        digest = request.content_md5
        folder = request.filename_root or _b32(digest) or uuid.uuid4().hex
        parts = [request.org or POD_ORG, request.project, request.domain, folder, request.filename]
        key = "uploads/" + "/".join(p for p in parts if p)
        native_url = f"s3://{self.emu.bucket}/{key}"
        with self.emu._cond:
            self.emu.uploads.append(
                {
                    "filename": request.filename,
                    "filename_root": request.filename_root,
                    "content_md5": digest.hex(),
                    "size": request.content_length or None,
                    "native_url": native_url,
                }
            )
        expires = request.expires_in.seconds or 3600
        return dp.CreateUploadLocationResponse(
            signed_url=self.emu._presign("put_object", native_url, expires),
            native_url=native_url,
            expires_at=timestamp_pb2.Timestamp(seconds=int(time.time()) + expires),
        )

    def upload_inputs(self, request, ctx) -> dp.UploadInputsResponse:
        data = self.emu._inline_inputs(request.inputs)
        digest = hashlib.sha256(data).hexdigest()
        base = request.base_dir.rstrip("/") if request.base_dir else None
        if base:
            bucket, key = _split_s3(f"{base}/inputs/{digest}/inputs.pb")
            self.emu._s3.put_object(Bucket=bucket, Key=key, Body=data)
            uri = f"s3://{bucket}/{key}"
        else:
            uri = self.emu._put(f"inputs/{digest}/inputs.pb", data)
        return dp.UploadInputsResponse(
            offloaded_input_data=run_pb2.OffloadedInputData(uri=uri, inputs_hash=digest)
        )

    def create_download_link(self, request, ctx) -> dp.CreateDownloadLinkResponse:
        if not request.HasField("action_attempt_id"):
            raise ConnectError(Code.UNIMPLEMENTED, "the emulator links only action attempts")
        run = self.emu._lookup(request.action_attempt_id.action_id.run)
        if request.artifact_type == dp.ARTIFACT_TYPE_REPORT:
            uri = f"{run.output_prefix}/report.html"
        elif request.artifact_type == dp.ARTIFACT_TYPE_CODE_BUNDLE:
            args = list(run.task_spec.task_template.container.args)
            flag = "--tgz" if "--tgz" in args else "--pkl" if "--pkl" in args else None
            uri = args[args.index(flag) + 1] if flag else ""
        else:
            raise ConnectError(Code.INVALID_ARGUMENT, "unknown artifact type")
        urls = [self.emu._presign("get_object", uri)] if uri and self.emu._exists(uri) else []
        return dp.CreateDownloadLinkResponse(pre_signed_urls=dp.PreSignedURLs(signed_url=urls))

    def get_action_data(self, request, ctx) -> dp.GetActionDataResponse:
        run = self.emu._lookup(request.action_id.run)
        inputs, outputs = self.emu._action_data(run)
        return dp.GetActionDataResponse(
            inputs=inputs,
            outputs=outputs,
            inputs_uri=run.inputs_uri,
            outputs_uri=f"{run.output_prefix}/outputs.pb",
        )

    def tail_logs(self, request, ctx) -> Iterator[dp.TailLogsResponse]:
        run = self.emu._lookup(request.action_id.run)
        if run.phase == P.ACTION_PHASE_QUEUED and run.proc is None and run.container is None:
            raise ConnectError(Code.NOT_FOUND, f"no logs yet for {run.id.name}")
        yield from self.emu._tail(run)


class _RunService(RunServiceSync):
    def __init__(self, emu: FlyteEmulator):
        self.emu = emu

    def create_run(self, request, ctx) -> rs.CreateRunResponse:
        return self.emu._create_run(request)

    def abort_run(self, request, ctx) -> rs.AbortRunResponse:
        self.emu._abort(request.run_id.name, request.reason or "aborted")
        return rs.AbortRunResponse()

    def abort_action(self, request, ctx) -> rs.AbortActionResponse:
        self.emu._abort(request.action_id.run.name, request.reason or "aborted")
        return rs.AbortActionResponse()

    def get_run_details(self, request, ctx) -> rs.GetRunDetailsResponse:
        run = self.emu._lookup(request.run_id)
        return rs.GetRunDetailsResponse(details=self.emu._run_details(run))

    def watch_run_details(self, request, ctx) -> Iterator[rs.WatchRunDetailsResponse]:
        for run in self.emu._watch(self.emu._lookup(request.run_id)):
            yield rs.WatchRunDetailsResponse(details=self.emu._run_details(run))

    def get_action_details(self, request, ctx) -> rs.GetActionDetailsResponse:
        run = self.emu._lookup(request.action_id.run)
        return rs.GetActionDetailsResponse(details=self.emu._details(run))

    def watch_action_details(self, request, ctx) -> Iterator[rs.WatchActionDetailsResponse]:
        for run in self.emu._watch(self.emu._lookup(request.action_id.run)):
            yield rs.WatchActionDetailsResponse(details=self.emu._details(run))

    def get_action_data(self, request, ctx) -> rs.GetActionDataResponse:
        inputs, outputs = self.emu._action_data(self.emu._lookup(request.action_id.run))
        return rs.GetActionDataResponse(inputs=inputs, outputs=outputs)

    def get_action_data_u_r_is(self, request, ctx) -> rs.GetActionDataURIsResponse:
        run = self.emu._lookup(request.action_id.run)
        return rs.GetActionDataURIsResponse(
            inputs_uri=run.inputs_uri, outputs_uri=f"{run.output_prefix}/outputs.pb"
        )

    def list_actions(self, request, ctx) -> rs.ListActionsResponse:
        run = self.emu._lookup(request.run_id)
        wanted = _phase_filter(request.request)
        actions = [self.emu._action(run)] if not wanted or run.phase in wanted else []
        return rs.ListActionsResponse(actions=actions)

    def list_runs(self, request, ctx) -> rs.ListRunsResponse:
        wanted = _phase_filter(request.request)
        runs = [
            rd.Run(action=self.emu._action(run))
            for run in list(self.emu._runs.values())
            if not wanted or run.phase in wanted
        ]
        return rs.ListRunsResponse(runs=runs)


def _phase_filter(request: Any) -> set[int]:
    """The phases a ListRequest's `phase` filter asks for (empty: no filter)."""
    wanted: set[int] = set()
    for f in request.filters:
        if f.field == "phase":
            for value in f.values:
                wanted.add(int(value) if value.isdigit() else P.Value(value))
    return wanted


def _b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode().rstrip("=").lower() if digest else ""
