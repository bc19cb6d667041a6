"""The `flyte` executor: a run becomes a Flyte 2 run of one task, code shipped as our bundle.

The bundle `submit()` built (our selection, our digest, our version) is uploaded through Flyte's
data plane (signed URLs from the data proxy, as the flyte SDK does), once per endpoint, project,
domain and digest. The task spec is serialized by flyte's own serializer for the task in
`runtime/flyte_task.py`, with a code bundle flyte did not build; its container runs our short
bootstrap first, which re-verifies the bundle against the digest the task spec names before
`a0` starts. Inputs and outputs travel as the task's Flyte inputs and outputs, inline when small
and as `flyte.io.File`s above `flyte_task.INLINE_LIMIT`; the client writes what came back into
the run directory of the local store, so `Run` reads it as for any executor.

`flyte` is imported only when this executor is used (see `INSTALL_HINTS` in registry.py).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import queue
import re
import socket
import sys
import tarfile
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from ...runtime import blobs, protocol
from ...runtime.locations import cache_dir
from .. import config, history
from ..errors import StorageError, UsageError
from ..runtime_files import runtime_files
from ..storage import Store
from ..submit import RunSpec
from .registry import LogLine

_PACKAGE_DIR = Path(__file__).resolve().parents[2]
_FINAL_PHASES = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
_CONNECT_SECONDS = 3.0
_POLL_SECONDS = 0.2
_FLYTE_LOG_PREFIX = "[flyte] "
"""flyte's own console log lines in the pod's output."""
REMOTE_FILE = "flyte.json"
"""Run-directory file with the Flyte run's name, URL, project and domain."""


@dataclass(frozen=True)
class Target:
    """Where runs go: the Flyte config found and our settings on top of it."""

    config_path: str | None
    endpoint: str
    insecure: bool
    project: str
    domain: str
    org: str | None


class FlyteExecutor:
    name = "flyte"

    def __init__(self, **options: Any):
        # trio (a flyte dependency) warns on import when IPython already has a custom exception
        # handler, as ours is: it then leaves IPython alone, which is what we want, so a cell
        # would only show a red band of noise.
        warnings.filterwarnings(
            "ignore", message="IPython detected, but you already have a custom exception handler"
        )
        import flyte  # noqa: F401 - missing extra: the registry turns this into one line

        self.options = {k: v for k, v in options.items() if v is not None}
        self.last_upload_bytes = 0
        """Code bytes the last launch sent (0 when the data plane already had the bundle)."""
        # No config, no project or an endpoint that does not answer: say so now, before
        # `submit()` uploads or records anything (settings of the working directory's project).
        settings = self.settings(str(Path.cwd()))
        self._checked = (settings, self.target(settings))

    # --- settings and connection -------------------------------------------------------

    def settings(self, root_dir: str | None) -> dict[str, Any]:
        root = Path(root_dir) if root_dir else None
        resolved = config.resolve(self.options, {}, root)
        return {key: setting.value for key, setting in resolved.items()}

    def target(self, settings: dict[str, Any]) -> Target:
        """The Flyte config found the Flyte way (`flyte.config.auto`: ./config.yaml,
        ./.flyte/config.yaml, the git root, $FLYTECTL_CONFIG, ~/.flyte...), our keys on top.
        Checks the endpoint answers, so a wrong one is one line within seconds."""
        import flyte.config

        path = settings.get("flyte_config")
        if path and not Path(path).expanduser().is_file():
            raise UsageError(f"Flyte config {path} does not exist: give the path of a config.yaml")
        cfg = flyte.config.auto(str(Path(path).expanduser()) if path else None)
        endpoint = settings.get("endpoint") or cfg.platform.endpoint
        if not endpoint:
            raise UsageError(
                "no Flyte configuration found: create .flyte/config.yaml "
                "(flyte create config --endpoint HOST --project P --domain D) "
                "or set flyte_config / endpoint"
            )
        project = settings.get("project") or cfg.task.project
        domain = settings.get("domain") or cfg.task.domain
        if not project or not domain:
            raise UsageError(
                "no Flyte project/domain: set task.project and task.domain in the Flyte config, "
                "or the project and domain settings"
            )
        insecure = bool(settings.get("endpoint") and settings.get("insecure")) or bool(
            cfg.platform.insecure
        )
        target = Target(
            config_path=str(Path(path).expanduser()) if path else _found_config(cfg),
            endpoint=endpoint,
            insecure=insecure,
            project=project,
            domain=domain,
            org=settings.get("org") or cfg.task.org,
        )
        _check_reachable(target)
        return target

    def connect(self, target: Target) -> None:
        """`flyte.init*` once per target in this process."""
        global _CONNECTED
        if target == _CONNECTED:
            return
        import flyte

        common = dict(project=target.project, domain=target.domain, org=target.org)
        if target.config_path:
            flyte.init_from_config(target.config_path, sync_local_sys_paths=False, **common)
        else:
            flyte.init(endpoint=target.endpoint, insecure=target.insecure, **common)
        _CONNECTED = target

    # --- the executor contract ---------------------------------------------------------

    def validate(self, spec: RunSpec) -> None:
        """Before anything is uploaded or recorded: the run's image has `flyte` and the
        distributions the shipped code imports, where that can be checked here (a Docker
        engine that has the image): the docker executor's cached probe, per image id."""
        image = config.resolve_image(spec.image, self.settings(spec.root_dir).get("images") or {})
        if image:
            check_image(spec, image)

    def launch(self, spec: RunSpec, store: Store) -> FlyteExecution:
        settings = self.settings(spec.root_dir)
        checked, target = self._checked
        if settings != checked:
            target = self.target(settings)
        self.connect(target)
        try:
            remote = _submit(self, spec, store, settings, target)
        except UsageError:
            history.update(spec.run_id, status=protocol.FAILED, error="not submitted")
            raise
        except Exception as exc:
            message = f"Flyte did not accept the run: {exc}"
            history.update(spec.run_id, status=protocol.FAILED, error=message)
            raise UsageError(message) from exc
        info = {"name": remote.name, "url": remote.url, "endpoint": target.endpoint}
        info.update(project=target.project, domain=target.domain)
        store.put_bytes(store.run_url(spec.run_id, REMOTE_FILE), json.dumps(info).encode())
        label = spec.name if spec.name and spec.name != remote.name else None
        history.update(spec.run_id, name=f"{label} {remote.name}" if label else remote.name)
        return FlyteExecution(remote, spec, store)

    def attach(self, record: history.RunRecord, store: Store) -> FlyteExecution | None:
        try:
            info = json.loads(store.get_bytes(store.run_url(record.id, REMOTE_FILE)))
        except FileNotFoundError:
            return None
        spec = RunSpec(**record.spec_json())
        settings = self.settings(spec.root_dir)
        settings.update(project=info["project"], domain=info["domain"])
        self.connect(self.target(settings))
        import flyte.remote

        return FlyteExecution(flyte.remote.Run.get(info["name"]), spec, store)


_CONNECTED: Target | None = None
_RUN_NAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
"""A name Flyte accepts for a run; other names (a cell's `In[3]`) stay our label only."""


def _found_config(cfg: Any) -> str | None:
    source = getattr(cfg, "source", None)
    return str(source) if source else None


def check_image(spec: RunSpec, image: str) -> None:
    """Probe `image` for `flyte` (the pod's entrypoint) and the shipped code's distributions;
    silent when it cannot be checked (no docker SDK or engine, image not on the engine)."""
    import flyte

    try:
        from .docker import DockerExecutor

        docker = DockerExecutor()
        docker.client.images.get(image)
    except Exception:  # no engine or not pulled here: the cluster's registry has it, unchecked
        return
    wanted = {**spec.client.get("distributions", {}), "flyte": flyte.__version__}
    probe = dataclasses.replace(spec, image=image, client={**spec.client, "distributions": wanted})
    try:
        docker.preflight(probe)
    except UsageError as exc:
        raise UsageError(f"flyte executor: {exc}") from None
    except Exception as exc:  # the probe did not run: no python3 in the image
        raise UsageError(
            f"flyte executor: image {image} cannot run python3 ({exc}); a Flyte pod needs "
            "Python with flyte: flyte.Image.from_debian_base().with_pip_packages(...)"
        ) from None


def _check_reachable(target: Target) -> None:
    parsed = urlparse(target.endpoint if "://" in target.endpoint else f"x://{target.endpoint}")
    netloc = parsed.netloc or parsed.path.lstrip("/")
    host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    port_number = int(port) if port.isdigit() else (80 if target.insecure else 443)
    try:
        socket.create_connection((host or "localhost", port_number), _CONNECT_SECONDS).close()
    except OSError as exc:
        raise UsageError(
            f"cannot reach the Flyte endpoint {target.endpoint} ({exc.strerror or exc}): "
            "check admin.endpoint in the Flyte config, or the endpoint setting"
        ) from exc


# --- shipping code ---------------------------------------------------------------------


def _uploads_path() -> Path:
    return cache_dir() / "flyte-uploads.json"


class _NoProgress:
    """A progress handler that shows nothing (see chunked_uploads)."""

    def start(self, key: str, *, name: str, phase: str, total: int) -> None:
        pass

    def advance(self, key: str, size: int) -> None:
        pass

    def finish(self, key: str, *, failed: bool = False) -> None:
        pass


@contextlib.contextmanager
def chunked_uploads() -> Iterator[None]:
    """flyte's signed-URL upload (`flyte.remote.upload_file`) sends a file in 1 MiB chunks only
    while an upload progress handler is installed; without one httpx iterates the binary file
    by lines (~256 B for pickled data): 100 MB took 47 s instead of 0.9 s here."""
    from flyte.remote._progress import current_handler, report_uploads

    if current_handler() is not None:
        yield
        return
    with report_uploads(_NoProgress()):
        yield


def _upload_once(local: Path, key: str, name: str) -> tuple[str, int]:
    """The data-plane URL of `local`, uploaded only if this endpoint/project/domain has not had
    the same content (`key`) before; (URL, bytes sent)."""
    from flyte.remote._data import upload_file

    path = _uploads_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key], 0
    with chunked_uploads():
        _md5, url = upload_file(local, fname=name)
    known[key] = url
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1))
    os.replace(tmp, path)
    return url, local.stat().st_size


@lru_cache(maxsize=1)
def runtime_archive() -> tuple[Path, str]:
    """Our runtime package (stdlib-only plus the Flyte task module) as a deterministic
    .tar.gz, and its sha256, so the pod needs only `flyte` and the user's packages."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, source in runtime_files().items():
            data = Path(source).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o644, 347155200
            tar.addfile(info, io.BytesIO(data))
    import gzip

    blob = gzip.compress(raw.getvalue(), mtime=0)
    sha = hashlib.sha256(blob).hexdigest()
    target = cache_dir() / "flyte-runtime" / f"{sha}.tar.gz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, target)
    return target, sha


def _upload_key(target: Target, content: str) -> str:
    return "|".join([target.endpoint, target.org or "", target.project, target.domain, content])


# --- the task spec ---------------------------------------------------------------------


def parse_resources(text: str | None) -> Any:
    """`cpu=2,memory=4Gi,gpu=1` as `flyte.Resources`."""
    if not text:
        return None
    import flyte

    fields = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("cpu", "memory", "gpu", "disk", "shm"):
            raise UsageError(
                f"resources {text!r}: give key=value pairs of cpu, memory, gpu, disk, shm, "
                "e.g. cpu=2,memory=4Gi,gpu=1"
            )
        value = value.strip()
        fields[key] = int(value) if value.isdigit() else value
    return flyte.Resources(**fields)


def parse_secrets(items: list[str]) -> list[Any]:
    """`NAME` or `NAME=ENV_VAR` as `flyte.Secret`s."""
    import flyte

    out = []
    for item in items:
        key, _, env_var = item.partition("=")
        if not key.strip():
            raise UsageError(f"secret {item!r}: give NAME or NAME=ENV_VAR")
        out.append(flyte.Secret(key=key.strip(), as_env_var=env_var.strip() or None))
    return out


def task_for(spec: RunSpec, settings: dict[str, Any]) -> Any:
    """The Flyte task of a run: runtime/flyte_task.py's `run`, with the run's knobs."""
    from ...runtime import flyte_task

    overrides: dict[str, Any] = {"short_name": spec.entry.rpartition(":")[2] or "run"}
    resources = parse_resources(settings.get("resources"))
    if resources is not None:
        overrides["resources"] = resources
    if settings.get("secrets"):
        overrides["secrets"] = parse_secrets(settings["secrets"])
    if settings.get("retries"):
        overrides["retries"] = int(settings["retries"])
    if settings.get("timeout"):
        overrides["timeout"] = int(settings["timeout"])
    return flyte_task.run.override(**overrides)


def build_task_spec(
    task: Any,
    *,
    version: str,
    image: str | None,
    bundle_url: str | None,
    target: Target,
) -> Any:
    """flyte's own TaskSpec for `task` with a code bundle flyte did not build (`bundle_url`
    or none), pinned to `version` and, when given, `image`."""
    import flyte.report
    from flyte._internal.image_cache import ImageCache
    from flyte._internal.runtime.task_serde import translate_task_to_wire
    from flyte.models import ActionID, CodeBundle, RawDataPath, SerializationContext, TaskContext

    code_bundle = (
        CodeBundle(tgz=bundle_url, computed_version=version, destination=".")
        if bundle_url
        else None
    )
    image_cache = ImageCache(image_lookup={task.parent_env_name: image}) if image else None
    s_ctx = SerializationContext(
        code_bundle=code_bundle,
        version=version,
        image_cache=image_cache,
        root_dir=_PACKAGE_DIR.parent,
    )
    action = ActionID(
        name="{{.actionName}}",
        run_name="{{.runName}}",
        project=target.project,
        domain=target.domain,
        org=target.org,
    )
    tctx = TaskContext(
        action=action,
        code_bundle=code_bundle,
        output_path="",
        version=version,
        raw_data_path=RawDataPath(path=""),
        compiled_image_cache=image_cache,
        run_base_dir="",
        report=flyte.report.Report(name=action.name),
    )
    task_spec = translate_task_to_wire(task, s_ctx, default_inputs=None, task_context=tctx)
    task_id = task_spec.task_template.id
    task_id.project, task_id.domain = target.project, target.domain
    task_id.org, task_id.version = target.org or "", version
    return task_spec


def with_bootstrap(task_spec: Any, runtime_url: str, runtime_sha: str, digest: str | None) -> None:
    """Make the container run our bootstrap before `a0`, and `a0` without `--tgz`: the
    bootstrap downloads and verifies the bundle itself (flyte's `tar -xf` checks nothing)."""
    from ...runtime.flyte_task import BOOT

    container = task_spec.task_template.container
    args = list(container.args)
    tgz = "-"
    if "--tgz" in args:
        at = args.index("--tgz")
        tgz = args[at + 1]
        del args[at : at + 2]
    boot = ["python", "-c", BOOT, runtime_url, runtime_sha, tgz, digest or "-"]
    del container.args[:]
    container.args.extend([*boot, *args])


_KNOBS = ("resources", "secrets", "retries", "timeout")
_TASK_SPECS: dict[tuple, Any] = {}


def _submit(
    executor: FlyteExecutor, spec: RunSpec, store: Store, settings: dict[str, Any], target: Target
) -> Any:
    from flyte._internal.runtime.convert import convert_from_native_to_inputs
    from flyte._run import _Runner
    from flyte.syncify import syncify

    sent = 0
    bundle_url = None
    if spec.bundle_url and spec.digest:
        archive = Path(blobs.local_path(spec.bundle_url)) if store.local else None
        if archive is None:
            archive = cache_dir() / "flyte-bundles" / f"{spec.digest.split(':', 1)[1]}.tar.gz"
            if not archive.exists():
                archive.parent.mkdir(parents=True, exist_ok=True)
                store.get_file(spec.bundle_url, str(archive))
        key = _upload_key(target, spec.digest)
        bundle_url, sent = _upload_once(archive, key, f"{spec.digest.split(':', 1)[1]}.tar.gz")
    runtime_path, runtime_sha = runtime_archive()
    runtime_url, runtime_sent = _upload_once(
        runtime_path, _upload_key(target, f"runtime:{runtime_sha}"), runtime_path.name
    )
    executor.last_upload_bytes = sent + runtime_sent
    image = config.resolve_image(spec.image, settings.get("images") or {})
    task = task_for(spec, settings)
    knobs = tuple(str(settings.get(k)) for k in _KNOBS)
    key = (spec.entry, spec.version, image, bundle_url, runtime_url, spec.digest, target, knobs)
    if key not in _TASK_SPECS:  # serializing reads the task's source: once per process
        task_spec = build_task_spec(
            task, version=spec.version, image=image, bundle_url=bundle_url, target=target
        )
        with_bootstrap(task_spec, runtime_url, runtime_sha, spec.digest)
        _TASK_SPECS[key] = task_spec
    task_spec = type(_TASK_SPECS[key])()
    task_spec.CopyFrom(_TASK_SPECS[key])
    runner = _Runner(
        force_mode="remote",
        name=spec.name if spec.name and _RUN_NAME.match(spec.name) else None,
        version=spec.version,
        interactive_mode=False,
        project=target.project,
        domain=target.domain,
        env_vars=dict(spec.env),
    )
    spec_json = json.dumps(spec.to_json())
    with _inputs_file(spec, store) as big:
        payload = "" if big else base64.b64encode(store.get_bytes(spec.inputs_url)).decode()
        inputs_file = _big_inputs(big, target) if big else None

        @syncify
        async def go() -> Any:
            inputs = await convert_from_native_to_inputs(
                task.native_interface,
                entry=spec.entry,
                inputs=payload,
                spec=spec_json,
                inputs_file=inputs_file,
            )
            run_id, project_id = runner._resolve_run_target(
                target.project, target.domain, target.org
            )
            run_spec = runner._apply_overrides(None, task=task, task_spec=task_spec)
            return await runner._submit_remote(
                task_spec=task_spec,
                task_id=None,
                proto_inputs=inputs.proto_inputs,
                run_spec=run_spec,
                run_id=run_id,
                project_id=project_id,
            )

        return go()


def _big_inputs(path: Path, target: Target) -> Any:
    """The run's pickled inputs as a Flyte File, uploaded with the data proxy's signed URL (no
    bucket credentials here; streamed from disk; Content-MD5 checked by the store) unless this
    endpoint/project/domain already has the same bytes: re-running a cell on the same big
    value sends nothing again."""
    from flyte.io import File

    md5 = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            md5.update(chunk)
    key = _upload_key(target, f"inputs:{md5.hexdigest()}")
    url, _sent = _upload_once(path, key, "inputs.pkl")
    return File.from_existing_remote(url, file_cache_key=md5.hexdigest())


@contextlib.contextmanager
def _inputs_file(spec: RunSpec, store: Store) -> Iterator[Path | None]:
    """The local path of the run's pickled inputs when they are too big to travel inline
    (the store's own file, or a download of it kept for the submit); None when small."""
    from ...runtime.flyte_task import INLINE_LIMIT

    if store.size(spec.inputs_url) <= INLINE_LIMIT:
        yield None
    elif store.local:
        yield Path(blobs.local_path(spec.inputs_url))
    else:
        cache_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="flyte-inputs-", dir=cache_dir()) as tmp:
            path = Path(tmp) / "inputs.pkl"
            store.get_file(spec.inputs_url, str(path))
            yield path


# --- following a run -------------------------------------------------------------------


class FlyteExecution:
    """A Flyte run, followed through the control plane; what it returned is written to the
    local run directory when it ends."""

    def __init__(self, remote: Any, spec: RunSpec, store: Store):
        self.remote = remote
        self.spec = spec
        self.store = store
        self._code: int | None = None
        self._running = False
        self._lock = threading.Lock()

    def _phase(self) -> str:
        import flyte.remote

        self.remote = flyte.remote.Run.get(self.remote.name)
        return _phase_name(self.remote)

    def wait(self, timeout: float | None) -> int | None:
        if self._code is not None:
            return self._code
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            phase = self._phase()
            if phase in _FINAL_PHASES:
                return self._finish(phase)
            if phase == "RUNNING" and not self._running:
                self._running = True  # `runs` and the sidebar show it running, not submitted
                doc = {
                    "phase": protocol.RUNNING,
                    "phases": [{"phase": protocol.RUNNING, "at": _now()}],
                }
                self._put(protocol.STATUS, json.dumps(doc).encode())
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_SECONDS)

    def cancel(self) -> None:
        """Abort the Flyte run (AbortRun) and wait until the control plane says so."""
        if self._code is not None:
            return
        self.remote.abort(reason="cancelled from flyte-jupyter")
        deadline = time.monotonic() + 30
        while self._phase() not in _FINAL_PHASES and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
        self._code = -1

    def log_lines(self) -> Iterator[LogLine]:
        """The pod's output live from Flyte's log service (TailLogs), without flyte's own
        lines; where no log service answers, the run's log once it has ended."""
        streamed = False
        if self._code is None:
            for text in self._stream():
                streamed = True
                yield LogLine("stdout", text)
        self.wait(None)
        if not streamed:
            for line in self.output_so_far().splitlines(keepends=True):
                yield LogLine("stdout", line)

    def _stream(self) -> Iterator[str]:
        """Log lines read in a thread of their own: the caller's thread stays interruptible
        (flyte's sync log generator holds an interrupted caller until its stream ends)."""
        from ...runtime.flyte_task import ERROR_MARK

        lines: queue.Queue[str | BaseException | None] = queue.Queue()

        def pump() -> None:
            try:
                for text in self.remote.get_logs(filter_system=True):
                    lines.put(text)
            except Exception as exc:  # no log backend: the log comes back with the result
                lines.put(exc)
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name="flyte-logs").start()
        while True:
            try:
                item = lines.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                print(f"flyte-jupyter: no live logs ({item}); they follow the run", file=sys.stderr)
                return
            text = item.removeprefix(" ")  # flyte formats "<timestamp> <message>"
            if text.startswith(_FLYTE_LOG_PREFIX) or ERROR_MARK in text:
                continue  # flyte's own lines; its log of the error we raised
            yield text if text.endswith("\n") else text + "\n"

    def output_so_far(self) -> str:
        try:
            return self.store.get_bytes(self.store.run_url(self.spec.run_id, protocol.LOGS)).decode(
                errors="replace"
            )
        except FileNotFoundError:
            return ""

    def _finish(self, phase: str) -> int:
        """Write what the run returned (or why it failed) into the local run directory."""
        with self._lock:
            if self._code is not None:
                return self._code
            if phase == "SUCCEEDED":
                literals = self.remote.output_literals()
                result = json.loads(literals["o0"].scalar.primitive.string_value)
                if "outputs" in result:  # inline (also every run of an older runtime)
                    self._put(protocol.OUTPUTS, base64.b64decode(result["outputs"]))
                else:
                    self._fetch(protocol.OUTPUTS, literals["o1"], result["outputs_file"])
                if "logs_file" in result:
                    self._fetch(protocol.LOGS, literals["o2"], result["logs_file"])
                code = 0
            else:
                result = _error_result(self.remote, phase)
                code = 1
            if result.get("logs"):
                self._put(protocol.LOGS, result["logs"].encode())
            if result.get("error"):
                self._put(protocol.ERROR, result["error"].encode())
            status = json.loads(result["status"]) if result.get("status") else {"phases": []}
            if phase != "SUCCEEDED" and status.get("phase") != protocol.FAILED:
                status["phase"] = protocol.FAILED
                status["phases"].append({"phase": protocol.FAILED, "at": _now()})
            self._put(protocol.STATUS, json.dumps(status).encode())
            self._code = code
            return code

    def _fetch(self, name: str, literal: Any, expected: dict[str, Any]) -> None:
        """Stream a File the pod returned (pickled outputs, or a long log) from the run's raw
        data into the run directory as `name`, checked against the size and sha256 the pod
        reported; nothing is written when the copy fails or differs, so asking again works."""
        from ...runtime.flyte_task import fetch
        from ..sizes import human_size

        uri = literal.scalar.union.value.scalar.blob.uri
        what = "outputs" if name == protocol.OUTPUTS else "log"
        run_id = self.spec.run_id

        def write(f: BinaryIO) -> None:
            try:
                size, sha = fetch(uri, f)
            except Exception as exc:
                raise StorageError(
                    f"the {what} file of run {run_id} ({human_size(expected['size'])}) is in "
                    f"Flyte's storage but cannot be read from here ({_one_line(exc)}): "
                    f"{uri}. Give this machine read access to that bucket (the credentials "
                    f"flyte's File.download() uses, e.g. FLYTE_AWS_* or an AWS profile), then "
                    f"ask again: %flyte_result {run_id} or flyte-jupyter runs show {run_id}"
                ) from None
            if (size, sha) != (expected["size"], expected["sha256"]):
                raise StorageError(
                    f"the {what} file of run {run_id} at {uri} is {size} bytes, sha256 {sha}, "
                    f"not the {expected['size']} bytes, sha256 {expected['sha256']}, the "
                    "run wrote: changed in storage, not loaded"
                )

        self.store.put_stream(self.store.run_url(run_id, name), write)

    def _put(self, name: str, data: bytes) -> None:
        self.store.put_bytes(self.store.run_url(self.spec.run_id, name), data)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat()


def _phase_name(remote: Any) -> str:
    from flyteidl2.common import phase_pb2

    return phase_pb2.ActionPhase.Name(remote.raw_phase).removeprefix("ACTION_PHASE_")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _error_result(remote: Any, phase: str) -> dict[str, Any]:
    """The runtime's error.json, status and logs carried in the Flyte error message; or, when
    the run failed before our task ran (a refused bundle, a pod that died), Flyte's message."""
    from flyte.remote._run import ActionDetails

    from ...runtime.flyte_task import ERROR_MARK

    details = ActionDetails.get_details(remote.pb2.action.id)
    info = details.error_info
    message = info.message if info else f"the Flyte run ended {phase}"
    if ERROR_MARK in message:
        doc, _ = json.JSONDecoder().raw_decode(message.split(ERROR_MARK, 1)[1])
        return doc
    kind = "FlyteRunFailed"
    first = message.strip().splitlines()[-1] if message.strip() else message
    error = {"type": str(kind), "message": first, "traceback": message, "missing_module": None}
    error["module"] = "flyte"
    return {"error": json.dumps(error), "status": None, "logs": None}
