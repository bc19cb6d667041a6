"""Submitting runs: the run spec, the `Run` handle and the executor registry.

`submit()` uploads the bundle (once per store), writes the run's spec and inputs to the
store, records the run in the local history and asks an executor to start the runtime.
Executors plug in through `executors/registry.py` (the contract and the entry-point
registry; re-exported here for older imports).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import pickle
import queue
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from ..runtime import blobs, protocol
from ..runtime.extract import extract_verified
from ..runtime.values import Sink
from . import config, history
from .bundle import Bundle
from .environment import client_environment
from .errors import (
    FlyteJupyterError,
    RemoteError,
    RunCancelled,
    RunError,
    UsageError,
    remote_error,
)
from .executors.registry import (  # noqa: F401 (re-exported)
    EXECUTOR_GROUP,
    Execution,
    Executor,
    LogLine,
    available_executors,
    get_executor,
)
from .storage import Progress, Store, UploadResult, default_store_url, normalize_url, redact
from .troubleshoot import missing_file_hint, missing_module_hint


@dataclass
class RunSpec:
    """Everything an executor needs to start a run; stored as runs/<id>/spec.json."""

    run_id: str
    entry: str
    store: str
    run_dir: str
    digest: str | None
    bundle_url: str | None
    version: str
    executor: str
    python_path: list[str]
    root_dir: str | None
    copy_style: str | None
    client: dict[str, Any]
    created: str
    name: str | None = None
    image: str | None = None
    env_names: list[str] = field(default_factory=list)
    """Names of the environment variables set for the run; their values are never stored."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """The store's fsspec options without credentials, so later reads reach the same endpoint."""
    env: dict[str, str] = field(default_factory=dict, repr=False)
    """The variables' values: in memory only, handed to the executor at launch."""
    notebook: str | None = None
    """The notebook the run came from (Jupyter's JPY_SESSION_NAME), if any."""
    cell: str | None = None
    """The cell's label, e.g. In[3], for runs of a notebook cell."""
    cell_id: str | None = None
    """JupyterLab's id of that cell, when the front end sent one."""
    workdir: str = ""
    """The client's working directory relative to root_dir, as a POSIX path ("" for root_dir
    itself, or a folder outside it): the run starts in the same folder of the shipped tree, so
    a relative path means there what it means here (a notebook in a subfolder)."""

    def __post_init__(self) -> None:
        self.env_names = sorted(set(self.env_names) | set(self.env))

    @property
    def inputs_url(self) -> str:
        return f"{self.run_dir}/{protocol.INPUTS}"

    @property
    def outputs_url(self) -> str:
        return f"{self.run_dir}/{protocol.OUTPUTS}"

    def runtime_args(self) -> list[str]:
        """Arguments for `python -m flyte_jupyter.runtime`."""
        args = ["--entry", self.entry, "--inputs", self.inputs_url]
        args += ["--outputs", self.outputs_url, "--run-dir", self.run_dir]
        if self.bundle_url and self.digest:
            args += ["--bundle", self.bundle_url, "--digest", self.digest]
        for path in self.python_path:
            args += ["--python-path", path]
        return args

    def to_json(self) -> dict[str, Any]:
        """What spec.json and the history keep: everything but the environment's values."""
        doc = asdict(self)
        del doc["env"]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RunSpec:
        """A stored spec; older specs kept `env` values, of which only the names are kept."""
        doc = dict(doc)
        legacy = doc.pop("env", None) or {}
        doc["env_names"] = sorted(set(doc.get("env_names", [])) | set(legacy))
        return cls(**doc)


class RunTimeout(RunError):
    """The run did not end within the time the caller gave."""


def check_timeout(timeout: float | None) -> None:
    """A timeout is a positive number of seconds (or None: no limit)."""
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout:g}")


def new_run_id() -> str:
    """Sortable and unique: UTC time plus random hex."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


Dump = Callable[[Any, BinaryIO], None]
"""Pickles a value into a binary file (default: `cloudpickle.dump`)."""


def pickle_inputs(
    args: Sequence[Any], kwargs: dict[str, Any], file: BinaryIO, dump: Dump | None = None
) -> None:
    """Pickle call arguments straight into `file` (a 1 GB argument is not built as bytes); an
    argument that cannot travel is named in the error. The arguments are pickled once; only
    when that fails is each one tried, into a sink that keeps nothing, to name it."""
    import cloudpickle

    dump = dump or cloudpickle.dump
    try:
        dump({"args": list(args), "kwargs": kwargs}, file)
        return
    except Exception as whole:
        failure: Exception = whole
    named = [(f"argument {i + 1}", v) for i, v in enumerate(args)]
    named += [(f"argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in named:
        try:
            dump(value, Sink())
        except Exception as exc:
            raise RunError(
                f"{label} ({type(value).__name__}) cannot be sent to the run: {exc}. "
                "Pass plain data, or create the object inside the remote function."
            ) from exc
    raise RunError(f"the arguments cannot be sent to the run: {failure}") from failure


def submit(
    bundle: Bundle | None,
    entry: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    store: Store | str | None = None,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
    image: str | None = None,
    env: dict[str, str] | None = None,
    name: str | None = None,
    version: str | None = None,
    progress: Progress | None = None,
    dump: Dump | None = None,
    cell: str | None = None,
    cell_id: str | None = None,
    input_digests: dict[str, tuple[int, str]] | None = None,
) -> Run:
    """Start `entry` ("module:function") from `bundle` on an executor and return its handle.

    `bundle` is None, or empty, for copy_style "none": the code must already be in the image.
    `dump` pickles the inputs straight into the store (default: cloudpickle). `cell` and
    `cell_id` name the notebook cell the run came from; the notebook is the one Jupyter
    started this process for. `input_digests` (name -> pickled size and sha256 of each data
    input of a cell) are kept beside the inputs for `runs diff`, which never unpickles.
    """
    store = store if isinstance(store, Store) else Store(store)
    runner = get_executor(executor, **(executor_options or {}))
    digest = bundle.digest if bundle is not None and bundle.archive is not None else None
    selection = bundle.selection if bundle is not None else None
    run_id = new_run_id()
    spec = RunSpec(
        run_id=run_id,
        entry=entry,
        store=store.url,
        run_dir=store.run_url(run_id),
        digest=digest,
        bundle_url=store.bundle_url(digest) if digest else None,
        version=version or (bundle.version if bundle is not None else "") or "",
        executor=executor,
        python_path=selection.python_path if selection else [],
        root_dir=str(selection.root_dir) if selection else None,
        copy_style=selection.copy_style if selection else None,
        client=client_environment(selection.third_party if selection else ()),
        created=_now(),
        name=name,
        image=image,
        storage_options=public_options(store.options),
        env=dict(env or {}),
        notebook=os.environ.get("JPY_SESSION_NAME") or None,
        cell=cell,
        cell_id=cell_id,
        workdir=relative_workdir(selection.root_dir) if selection else "",
    )
    if not spec.version:
        raise UsageError("a run without a bundle needs an explicit version naming the image code")
    _check_launchable(runner, spec)
    upload = None
    if digest is not None and bundle is not None and bundle.archive is not None:
        upload = store.upload_bundle(bundle.archive, digest, progress)
    _store_and_record(
        spec,
        store,
        lambda file: pickle_inputs(args, kwargs or {}, file, dump),
        input_digests,
    )
    return Run(spec, store, _launch(runner, spec, store), upload)


def relative_workdir(root: Path) -> str:
    """This process's working directory relative to `root` ("" at or outside it). A kernel's
    is its notebook's folder (or wherever `%cd` took it)."""
    try:
        rel = Path.cwd().resolve().relative_to(Path(root).resolve())
    except (OSError, ValueError):
        return ""
    return rel.as_posix() if rel.parts else ""


def _check_launchable(runner: Executor, spec: RunSpec) -> None:
    """Refuse a run its executor cannot start (no such interpreter or image) before anything
    is uploaded or recorded, and before a broken history costs an upload."""
    validate = getattr(runner, "validate", None)  # optional in the executor contract
    if validate is not None:
        validate(spec)
    history.check()


def _launch(runner: Executor, spec: RunSpec, store: Store) -> Execution:
    """Start the run; if starting fails, the history says so instead of `submitted` forever."""
    try:
        return runner.launch(spec, store)
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, FlyteJupyterError) else f"{type(exc).__name__}: {exc}"
        history.update(
            spec.run_id, status=protocol.FAILED, finished=_now(), error=f"not started: {reason}"
        )
        if isinstance(exc, Exception) and not isinstance(exc, FlyteJupyterError):
            raise RunError(
                f"run {spec.run_id} could not start on {spec.executor}: {reason}"
            ) from exc
        raise


def public_options(options: dict[str, Any]) -> dict[str, Any]:
    """Storage options without credentials (keys that look like secrets are left out), safe
    to keep in spec.json and the history. Named modes such as gcsfs's token="anon" stay."""
    out: dict[str, Any] = {}
    for key, shown in redact(options).items():
        value = options[key]
        if isinstance(value, dict):
            out[key] = public_options(value)
        elif shown != "***" or value in _NAMED_CREDENTIAL_MODES:
            out[key] = value
    return out


_NAMED_CREDENTIAL_MODES = ("anon", "google_default", "cloud", "cache", "browser")


def store_for(spec: RunSpec) -> Store:
    """The run's store with the options it was submitted with. Credentials were not kept:
    they come from the current environment (FLYTE_JUPYTER_STORAGE_OPTIONS when
    FLYTE_JUPYTER_STORE names this store, or the provider's own variables such as AWS_*)."""
    options = dict(spec.storage_options)
    current = config.from_environment()
    if normalize_url(current.get("store") or default_store_url()) == spec.store:
        options.update(current.get("storage_options") or {})
    return Store(spec.store, options)


def flyte_links(records: Sequence[history.RunRecord]) -> dict[str, str]:
    """Run id -> Flyte console URL of the flyte runs among `records`, for run listings
    (the flyte executor stores it in the run directory)."""
    from .executors.flyte import REMOTE_FILE

    links = {}
    for record in records:
        if record.executor != "flyte" or not record.spec:
            continue
        try:
            store = store_for(RunSpec.from_json(record.spec_json()))
            info = json.loads(store.get_bytes(store.run_url(record.id, REMOTE_FILE)))
        except Exception:  # a listing never fails on one run's store: that run has no link
            continue
        url = info.get("url") if isinstance(info, dict) else None
        if isinstance(url, str) and url.startswith(("https://", "http://")):  # never javascript:
            links[record.id] = url
    return links


def _store_and_record(
    spec: RunSpec,
    store: Store,
    write_inputs: Callable[[BinaryIO], None],
    input_digests: dict[str, tuple[int, str]] | None = None,
) -> None:
    """Write the run's inputs (streamed into the store: arguments that cannot be pickled
    leave nothing behind) and spec to the store, and add the run to the history."""
    try:
        store.put_stream(spec.inputs_url, write_inputs)
    except RunError:
        store.remove(store.run_url(spec.run_id))  # a file store's new, empty run folder
        raise
    if input_digests is not None:
        doc = {n: {"size": size, "sha256": sha} for n, (size, sha) in input_digests.items()}
        store.put_bytes(
            store.run_url(spec.run_id, protocol.INPUTS_SUMMARY), json.dumps(doc).encode()
        )
    store.put_bytes(store.run_url(spec.run_id, protocol.SPEC), json.dumps(spec.to_json()).encode())
    history.record(
        history.RunRecord(
            id=spec.run_id,
            entry=spec.entry,
            digest=spec.digest,
            version=spec.version,
            executor=spec.executor,
            store=store.url,
            status=protocol.SUBMITTED,
            created=spec.created,
            name=spec.name,
            image=spec.image,
            spec=json.dumps(spec.to_json()),
            notebook=spec.notebook,
            cell=spec.cell,
            cell_id=spec.cell_id,
        )
    )


def recent_runs(limit: int = 50) -> list[history.RunRecord]:
    """The newest `limit` runs (all for -1), newest first, each with its status brought up
    to date: what every run listing shows."""
    return [Run.refresh(record) for record in history.recent(limit)]


class Run:
    """A handle on a submitted run: follow it, wait for it, fetch its result, cancel it."""

    def __init__(
        self,
        spec: RunSpec,
        store: Store,
        execution: Execution | None,
        upload: UploadResult | None = None,
    ):
        self.spec = spec
        self.store = store
        self.upload = upload
        """What submitting sent to the store (None for runs without a bundle or from history)."""
        self._execution = execution
        self._cancelled = False
        self._final: str | None = None

    @property
    def id(self) -> str:
        return self.spec.run_id

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.status()} entry={self.spec.entry}>"

    @classmethod
    def from_history(cls, run_id: str) -> Run:
        """A handle on an earlier run, e.g. one started with --detach."""
        record = history.get(run_id)
        spec = RunSpec.from_json(record.spec_json())
        store = store_for(spec)
        run = cls(spec, store, None)
        if record.is_final:
            run._final = record.status
        else:
            run._execution = get_executor(spec.executor).attach(record, store)
        return run

    @staticmethod
    def refresh(record: history.RunRecord) -> history.RunRecord:
        """The record with its status brought up to date (for runs still going)."""
        if record.is_final:
            return record
        try:
            run = Run.from_history(record.id)
            phase = run.status()
            doc = None if phase in protocol.FINAL else run._read_status()
        except FlyteJupyterError:
            return record  # its executor is unreachable now (e.g. no Docker engine): as recorded
        if doc and phase != record.status:  # still going: record the phase status.json says
            phases = {p["phase"]: p["at"] for p in doc.get("phases", [])}
            started = phases.get(protocol.RUNNING) or phases.get(protocol.DOWNLOADING)
            history.update(record.id, status=phase, started=started)
        return history.get(record.id)

    # --- state -------------------------------------------------------------------------

    def _read_json(self, name: str) -> dict[str, Any] | None:
        """A run file as a JSON object; None when it is missing or is not one (the run's own
        code can write its run directory: what it holds is checked before use)."""
        try:
            raw = self.store.get_bytes(self.store.run_url(self.id, name))
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        return doc if isinstance(doc, dict) else None

    def _read_status(self) -> dict[str, Any] | None:
        return protocol.checked_status(self._read_json(protocol.STATUS))

    def _read_error(self) -> dict[str, Any] | None:
        return protocol.checked_error(self._read_json(protocol.ERROR))

    def status(self) -> str:
        """submitted, downloading, running, succeeded, failed or cancelled."""
        if self._final:
            return self._final
        if self._execution is not None:
            code = self._execution.wait(0)
            if code is not None:
                return self._finish(code)
        doc = self._read_status()
        return doc["phase"] if doc else protocol.SUBMITTED

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends; its final status. RunError if `timeout` passes first."""
        if self._final:
            return self._final
        if self._execution is None:
            return self._poll_store(timeout)
        code = self._execution.wait(timeout)
        if code is None:
            raise RunTimeout(
                f"run {self.id} is still {self.status()} after {timeout:g}s: "
                "wait again, or cancel it"
            )
        return self._finish(code)

    def follow(self, timeout: float | None = None) -> Iterator[LogLine]:
        """The run's output as it is produced, until the run ends. After `timeout` seconds the
        run is cancelled and RunTimeout raised: a deadline ends the run, not only the waiting."""
        check_timeout(timeout)
        if timeout is None:
            yield from self.logs()
            return
        deadline = time.monotonic() + timeout
        lines: queue.Queue[LogLine | BaseException | None] = queue.Queue()

        def pump() -> None:  # log streams block until output comes: read them aside
            try:
                for line in self.logs():
                    lines.put(line)
            except BaseException as exc:  # handed to the caller's thread
                lines.put(exc)
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"logs-{self.id}").start()
        while True:
            try:
                item = lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                self._time_out(timeout)
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        try:
            self.wait(max(deadline - time.monotonic(), 0.1))
        except RunTimeout:
            self._time_out(timeout)

    def _time_out(self, timeout: float) -> NoReturn:
        self.cancel()
        if self.status() == protocol.CANCELLED:
            raise RunTimeout(f"run {self.id} timed out after {timeout:g}s and was cancelled")
        raise RunTimeout(
            f"run {self.id} timed out after {timeout:g}s; stop it with "
            f"`flyte-jupyter runs cancel {self.id}`"
        )

    def _poll_store(self, timeout: float | None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            doc = self._read_status()
            if doc and doc["phase"] in protocol.FINAL:
                return self._finish()
            if deadline is not None and time.monotonic() >= deadline:
                raise RunTimeout(f"run {self.id} has not finished after {timeout:g}s")
            time.sleep(0.2)

    def _finish(self, exit_code: int | None = None) -> str:
        doc = self._read_status() or {}
        phase = doc.get("phase")
        if self._cancelled:
            phase = protocol.CANCELLED
        elif phase not in protocol.FINAL:
            # ended without saying how: killed, or stopped by another process (the sidebar,
            # `runs cancel`), which records the run cancelled before it signals it
            recorded = history.get(self.id).status
            phase = protocol.CANCELLED if recorded == protocol.CANCELLED else protocol.FAILED
        phases = {p["phase"]: p["at"] for p in doc.get("phases", [])}
        error = self._read_error() if phase == protocol.FAILED else None
        history.update(
            self.id,
            status=phase,
            started=phases.get(protocol.RUNNING) or phases.get(protocol.DOWNLOADING),
            finished=phases.get(phase) or _now(),
            exit_code=doc.get("exit_code", exit_code if exit_code != -1 else None),
            error=f"{error['type']}: {error['message']}" if error else None,
        )
        self._final = phase
        return phase

    # --- results -----------------------------------------------------------------------

    def result(
        self, timeout: float | None = None, load: Callable[[BinaryIO], Any] | None = None
    ) -> Any:
        """The return value; RemoteError (with the remote traceback) if the code raised.
        `load` unpickles it from a binary file (default: `pickle.load`)."""
        status = self.wait(timeout)
        if status == protocol.SUCCEEDED:
            return self._load_output(load or pickle.load)
        if status == protocol.CANCELLED:
            raise RunCancelled(f"run {self.id} was cancelled")
        error = self._read_error()
        if error is None and (history.get(self.id).error or "").startswith("not started: "):
            raise RunError(f"run {self.id} {history.get(self.id).error}")
        if error is None:
            tail = "".join(line.text for line in self.logs())[-2000:]
            raise RemoteError(
                self.id, "ProcessDied", "the runtime ended without reporting a result", tail
            )
        hint = missing_file_hint(error["type"], error["message"], self.spec)
        if error.get("missing_module"):
            hint = missing_module_hint(error["missing_module"], self.spec)
        raise remote_error(
            self.id,
            error["type"],
            error["message"],
            error["traceback"],
            hint,
            error.get("module", ""),
        )

    def rerun(self) -> Run:
        """Run the same code (same bundle digest) with the same inputs again, as a new run.
        Environment values were never stored: they come from this process's environment."""
        missing = [n for n in self.spec.env_names if n not in os.environ]
        if missing:
            raise RunError(
                f"run {self.id} had environment variables whose values are never stored; set "
                f"{', '.join(missing)} in this process's environment to re-run it"
            )
        run_id = new_run_id()
        spec = RunSpec.from_json(
            {**self.spec.to_json(), "run_id": run_id, "run_dir": self.store.run_url(run_id)}
        )
        spec.created = _now()
        spec.env = {name: os.environ[name] for name in spec.env_names}
        runner = get_executor(spec.executor)
        _check_launchable(runner, spec)
        _store_and_record(spec, self.store, self._copy_inputs, self.input_digests())
        return Run(spec, self.store, _launch(runner, spec, self.store))

    def _copy_inputs(self, file: BinaryIO) -> None:
        """This run's inputs.pkl into `file`, in chunks from a file store (never unpickled)."""
        url = self.spec.inputs_url
        if not self.store.local:
            file.write(self.store.get_bytes(url))
            return

        def copy() -> None:
            with blobs.open_read(url) as source:
                shutil.copyfileobj(source, file, 4 << 20)

        self.store._local("read", url, copy)

    def input_digests(self) -> dict[str, tuple[int, str]] | None:
        """Name -> (pickled size, sha256) of a cell run's data inputs, from inputs.json as
        the client wrote it; None when there is none (not a cell run, or an older client)
        or it is not shaped like that (the run's own code can write its run directory)."""
        doc = self._read_json(protocol.INPUTS_SUMMARY)
        if not isinstance(doc, dict):
            return None
        out = {}
        for name, entry in doc.items():
            if not isinstance(entry, dict):
                return None
            size, sha = entry.get("size"), entry.get("sha256")
            if type(size) is not int or not isinstance(sha, str):
                return None
            out[str(name)] = (size, sha)
        return out

    def describe(self) -> dict[str, Any]:
        """Spec, status with phase timestamps, and a summary of the outcome."""
        status = self.status()
        doc = self._read_status() or {}
        outcome: dict[str, Any] = {}
        if status == protocol.SUCCEEDED:
            outcome = self._output_summary()
        elif status == protocol.FAILED:
            outcome = self._read_error() or {"note": "the runtime reported nothing"}
        described = {
            "id": self.id,
            "status": status,
            "phases": doc.get("phases", []),
            "outcome": outcome,
            "spec": self.spec.to_json(),
        }
        if self.spec.executor == "flyte":  # the Flyte run's name, console URL, project, domain
            from .executors.flyte import REMOTE_FILE

            described["flyte"] = self._read_json(REMOTE_FILE)
        return described

    def _output_summary(self) -> dict[str, Any]:
        """What the runtime recorded about the result, as text. Never unpickles: this runs in
        the Jupyter server and `runs show`, which must not run code from a run's data."""
        summary = self._read_json(protocol.OUTPUTS_SUMMARY)
        if summary is None:
            return {
                "note": "no summary recorded (run from an older flyte-jupyter); "
                "Run.result() in the notebook or script that started it loads the value"
            }
        value = summary.get("value")
        value = value if isinstance(value, dict) else {}
        size = summary.get("size")
        outcome = {"output_bytes": size if type(size) is int else None}
        outcome.update({k: str(value[k]) for k in ("type", "module", "repr") if k in value})
        outcome.update({k: v for k, v in summary.items() if k not in ("size", "value")})
        return outcome

    def extract_code(self, directory: Path) -> int:
        """Write exactly the code this run executed into `directory` (new or empty), verified
        against the run's digest; the number of files."""
        if not self.spec.digest:
            raise RunError(f"run {self.id} shipped no bundle (copy_style none): no code to extract")
        if directory.exists() and any(directory.iterdir()):
            raise UsageError(f"{directory} is not empty: give a new or empty directory")
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "bundle.tar.gz"
            self.store.get_file(self.store.bundle_url(self.spec.digest), str(archive))
            staging = Path(tmp) / "code"
            staging.mkdir()
            digest = extract_verified(archive, staging)
            if digest != self.spec.digest:
                raise RunError(
                    f"the stored bundle has digest {digest}, not the run's {self.spec.digest}"
                )
            files = [p for p in staging.rglob("*") if p.is_file()]
            shutil.copytree(staging, directory, dirs_exist_ok=True)
        return len(files)

    def _load_output(self, unpickle: Callable[[BinaryIO], Any]) -> Any:
        """Unpickle the result with `unpickle`. Instances of the project's own classes need
        the project importable here; when it is not yet, the run's root_dir is appended to
        sys.path. The pickle is read from a file as it is unpickled (a remote store's object
        is downloaded to a private temporary file first): a big result is held once."""
        url = self.spec.outputs_url

        def from_file() -> Any:
            with blobs.open_read(url) as f:
                return unpickle(f)

        def load() -> Any:
            if self.store.local:
                return self.store._local("read", url, from_file)
            with tempfile.TemporaryDirectory(prefix="flyte-jupyter-result-") as tmp:
                local = os.path.join(tmp, protocol.OUTPUTS)
                self.store.get_file(url, local)
                with open(local, "rb") as f:
                    return unpickle(f)

        try:
            return load()
        except ModuleNotFoundError as exc:
            if not self.spec.root_dir:
                raise
            extra = [str(Path(self.spec.root_dir) / p) for p in self.spec.python_path]
            missing = [p for p in extra if p not in sys.path]
            if not missing:
                raise RunError(
                    f"the result of run {self.id} needs module {exc.name!r}, "
                    "which cannot be imported here"
                ) from exc
            sys.path.extend(missing)
            return load()

    def output_so_far(self) -> str:
        """The run's output up to now, without waiting: live while it runs, the stored log
        once it has ended."""
        if self._execution is not None and self.status() not in protocol.FINAL:
            return self._execution.output_so_far()
        return "".join(line.text for line in self.logs())

    def logs(self) -> Iterator[LogLine]:
        """Output lines, live while the run is going; the stored log for runs from the history."""
        if self._execution is not None:
            yield from self._execution.log_lines()
            return
        try:
            text = self.store.get_bytes(self.store.run_url(self.id, protocol.LOGS)).decode()
        except FileNotFoundError:
            return
        for line in text.splitlines(keepends=True):
            yield LogLine("stdout", line)

    def cancel(self) -> None:
        """Stop the run (its whole process tree or container) and mark it cancelled."""
        if self._final:
            return
        if self._execution is not None:
            ended = self._execution.wait(0)
            if ended is not None:  # nothing left to stop: record how it ended
                self._finish(ended)
                return
            self._cancelled = True
            before = history.get(self.id).status
            history.update(self.id, status=protocol.CANCELLED)  # a kernel following it sees why
            try:
                self._execution.cancel()
            except BaseException:
                history.update(self.id, status=before)  # not stopped after all
                raise
            self._finish(self._execution.wait(0))
            doc = self._read_status() or {"phases": []}
            if doc.get("phase") != protocol.CANCELLED:  # the runtime says so itself on SIGTERM
                doc["phase"] = protocol.CANCELLED
                doc["phases"].append({"phase": protocol.CANCELLED, "at": _now()})
                self.store.put_bytes(
                    self.store.run_url(self.id, protocol.STATUS), json.dumps(doc).encode()
                )
            self._keep_output()

    def _keep_output(self) -> None:
        """A run killed before its runtime wrote logs.txt keeps what it printed: the local
        copy of its output goes to the run directory."""
        logs = self.store.run_url(self.id, protocol.LOGS)
        try:
            self.store.get_bytes(logs)
        except FileNotFoundError:
            text = self._execution.output_so_far() if self._execution is not None else ""
            if text:
                self.store.put_bytes(logs, text.encode())
