"""REST API of the Jupyter server extension, under /flyte-jupyter/api/. Each handler only
translates HTTP to a core call: settings, bundle preview, runs, export.

What the API promises:
- Authenticated `APIHandler`s (token/cookie auth and XSRF as the rest of Jupyter).
- Everything it reads or writes stays under the server root (the contents root): notebook
  paths, the project folder (detection stops at the root), project settings files and the
  `root_dir` setting; symlinks that resolve outside it are refused.
- Core work runs in a thread, so a long preview never stalls the server; request bodies are
  capped at 1 MB.
- One error shape, `{"message": ...}`: bad input 400, outside the root 403, unknown run,
  notebook or export 404, body too large 413, store/image failures 502, anything else 500.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable
from http.client import responses
from pathlib import Path
from typing import Any, TypeVar

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..core import config, history
from ..core.bundle import build_bundle
from ..core.errors import BundleError, FlyteJupyterError, UsageError
from ..core.export import export_notebook, notebook_selection
from ..core.image import ImageError, docker_client
from ..core.rundiff import since_previous
from ..core.selection import detect_root_dir
from ..core.settings_file import update_project
from ..core.storage import StorageError
from ..core.submit import Run, recent_runs

API = "flyte-jupyter/api"
MAX_BODY_BYTES = 1024 * 1024
MAX_RUNS = 1000
T = TypeVar("T")

# first match wins: a core error's HTTP status
_STATUS: tuple[tuple[type[FlyteJupyterError], int], ...] = (
    (StorageError, 502),  # before UsageError: a broken store is not the request's fault
    (ImageError, 502),
    (UsageError, 400),
    (BundleError, 400),
    (FlyteJupyterError, 500),
)


def http_error(status: int, message: str) -> tornado.web.HTTPError:
    """An HTTPError whose message is sent as is (a '%' in it is not a format directive)."""
    return tornado.web.HTTPError(status, "%s", message)


@tornado.web.stream_request_body
class _Base(APIHandler):
    """Streams the body so it is counted while it arrives, never held beyond the cap."""

    async def prepare(self) -> None:
        self._chunks: list[bytes] = []
        self._received = 0
        await super().prepare()
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise self.too_large()

    def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received <= MAX_BODY_BYTES and not self._finished:
            self._chunks.append(chunk)

    def too_large(self) -> tornado.web.HTTPError:
        return http_error(413, f"request body over {MAX_BODY_BYTES // 1024} KB: send less")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """One error shape for every endpoint: {"message": ...}, never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = responses.get(status_code, "error")
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    async def call(self, work: Callable[[], T]) -> T:
        """Run blocking core work in a thread (the server keeps answering meanwhile), with
        core errors turned into HTTP errors that carry their message."""
        try:
            return await asyncio.to_thread(work)
        except tornado.web.HTTPError:
            raise
        except FlyteJupyterError as exc:
            status = next(code for kind, code in _STATUS if isinstance(exc, kind))
            raise http_error(status, str(exc)) from exc
        except Exception as exc:
            self.log.exception(
                "flyte-jupyter: %s %s failed", self.request.method, self.request.path
            )
            message = f"internal error: {_describe(exc)} (the server log has more)"
            raise http_error(500, message) from exc

    def body(self) -> dict[str, Any]:
        if self._received > MAX_BODY_BYTES:
            raise self.too_large()
        try:
            doc = json.loads(b"".join(self._chunks) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise http_error(400, f"request body is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise http_error(400, "request body is nested too deeply: send flatter JSON") from exc
        if not isinstance(doc, dict):
            raise http_error(400, "request body must be a JSON object")
        return doc

    def server_root(self) -> Path:
        root = getattr(self.contents_manager, "root_dir", None) or self.settings.get(
            "server_root_dir", "."
        )
        return Path(root).expanduser().resolve()

    def notebook_path(self) -> Path:
        """The `path` argument, resolved inside the server root (never outside it)."""
        return self.confined(self.get_argument("path", ""))

    def confined(self, rel: Any) -> Path:
        """A client path (relative to the server root) resolved, symlinks included, and
        refused when it leaves the root."""
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or "\\" in rel:
            raise http_error(400, "give a notebook path relative to the server root")
        root = self.server_root()
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise http_error(403, f"{rel} is outside the server root")
        return path

    def project_folder(self, notebook: Path) -> Path:
        """The notebook's project folder, detected no higher than the server root; its
        settings files must not link out of the root."""
        root = self.server_root()
        folder = detect_root_dir(notebook.parent, boundary=root)
        for name in config.PROJECT_FILES:
            file = folder / name
            if file.is_symlink() and not file.resolve().is_relative_to(root):
                rel = file.relative_to(root)
                raise http_error(403, f"{rel} links outside the server root: refused")
        return folder

    def bundle_root(self, notebook: Path, value: str | None, folder: Path) -> Path:
        """The bundle's root: the `root_dir` setting (relative to the notebook's folder, as
        in the kernel) when set, else the project folder; never outside the server root."""
        if not value:
            return folder
        root = self.server_root()
        path = (notebook.parent / Path(value).expanduser()).resolve()
        if not path.is_relative_to(root):
            raise http_error(
                400,
                f"root_dir {value} is outside the server root {root}: "
                "set root_dir to a folder inside it",
            )
        if not path.is_dir():
            raise http_error(400, f"root_dir {value} is not a folder under the server root")
        return path

    def settings_for(self, notebook: Path) -> tuple[config.Settings, Path]:
        """A notebook's effective settings and its bundle root."""
        folder = self.project_folder(notebook)
        settings = config.resolve({}, {}, folder)
        return settings, self.bundle_root(notebook, settings["root_dir"].value, folder)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class SettingsHandler(_Base):
    """GET: effective settings for a notebook, each with its source, plus the field list.
    PUT {"settings": {...}}: set these keys in the project's .flyte-jupyter.toml."""

    @tornado.web.authenticated
    async def get(self) -> None:
        path = self.notebook_path()

        def read() -> dict[str, Any]:
            folder = self.project_folder(path)
            settings = config.resolve({}, {}, folder)
            return {
                "root_dir": str(folder),
                "settings": {
                    k: {"value": s.value, "source": s.source} for k, s in settings.items()
                },
                "fields": {k: f.to_json() for k, f in config.FIELDS.items()},
            }

        self.finish(json.dumps(await self.call(read)))

    @tornado.web.authenticated
    async def put(self) -> None:
        path = self.notebook_path()
        values = self.body().get("settings", {})
        if not isinstance(values, dict):
            raise http_error(400, 'give "settings" as a JSON object of setting name -> value')

        def save() -> Path:
            """Only the keys sent change (an empty value removes its key); every other line
            of the file, comments included, stays."""
            folder = self.project_folder(path)
            if values.get("root_dir"):
                self.bundle_root(path, config.coerce("root_dir", values["root_dir"]), folder)
            return update_project(folder, values)

        self.finish(json.dumps({"saved": str(await self.call(save))}))


class PreviewHandler(_Base):
    """GET ?path=nb.ipynb: what the notebook ships, the same document as
    `flyte-jupyter bundle NOTEBOOK.ipynb --dry-run --json`."""

    @tornado.web.authenticated
    async def get(self) -> None:
        path = self.notebook_path()

        def preview() -> dict[str, Any]:
            if not path.is_file():
                raise http_error(404, f"no notebook {self.get_argument('path')} on the server")
            settings, root = self.settings_for(path)
            selection = notebook_selection(path, root_dir=root, settings=settings)[0]
            return build_bundle(selection, dry_run=True).to_json()

        self.finish(json.dumps(await self.call(preview)))


class RunsHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        raw = self.get_argument("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_RUNS:
            raise http_error(400, f"limit must be a whole number from 1 to {MAX_RUNS}, not {raw!r}")

        root = self.server_root()

        def notebook(r: history.RunRecord) -> str | None:
            """The run's notebook relative to the server root (None: not from a notebook
            under it)."""
            path = r.notebook
            if not path or not Path(path).is_absolute():
                return path or None
            resolved = Path(path).resolve()
            return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else None

        def rows() -> list[dict[str, Any]]:
            return [
                {
                    "id": r.id,
                    "name": r.name or r.entry,
                    "status": r.status,
                    "final": r.is_final,
                    "digest": r.digest,
                    "version": r.version,
                    "image": r.image,
                    "executor": r.executor,
                    "created": r.created,
                    "started": r.started,
                    "finished": r.finished,
                    "duration": history.duration(r),
                    "error": r.error,
                    "notebook": notebook(r),
                    "cell": r.cell,
                    "cell_id": r.cell_id,
                }
                for r in recent_runs(int(raw))
            ]

        self.finish(json.dumps({"runs": await self.call(rows)}))


def _find_run(run_id: str) -> Run:
    """The run, or 404 when the history has no (unique) run with this id."""
    try:
        history.get(run_id)
    except UsageError as exc:
        raise http_error(404, str(exc)) from exc
    return Run.from_history(run_id)


class RunHandler(_Base):
    @tornado.web.authenticated
    async def get(self, run_id: str, what: str | None = None) -> None:
        def read() -> dict[str, Any]:
            run = _find_run(run_id)
            if what == "logs":
                status = run.status()
                text = run.output_so_far()
                return {"status": status, "logs": text, "final": status in history.FINAL}
            # what changed since the cell's previous run: bundles hashed and listed, never unpickled
            changed_since, changed = since_previous(run.id) or (None, None)
            return {**run.describe(), "changed": changed, "changed_since": changed_since}

        self.finish(json.dumps(await self.call(read), default=str))

    @tornado.web.authenticated
    async def post(self, run_id: str, what: str | None = None) -> None:
        if what not in ("cancel", "rerun"):
            raise http_error(404, "POST runs/ID/cancel or runs/ID/rerun")

        def act() -> dict[str, Any]:
            run = _find_run(run_id)
            if what == "cancel":
                run.cancel()
            else:
                run = run.rerun()
            return {"id": run.id, "status": run.status()}

        self.finish(json.dumps(await self.call(act)))


_EXPORTS: dict[str, dict[str, Any]] = {}


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise http_error(400, f"{key} must be a string, not {json.dumps(value)}")
    return value or None


class ExportHandler(_Base):
    """GET: whether exports can run here (a Docker engine answers), with why not.
    POST {"path", "image_name"?, "version"?, "include"?, "network"?}: start an export
    (build) in the background; its id is polled at /export/<id>."""

    @tornado.web.authenticated
    async def get(self) -> None:
        def probe() -> dict[str, Any]:
            try:
                docker_client().close()
            except FlyteJupyterError as exc:
                return {"available": False, "reason": str(exc)}
            return {"available": True, "reason": None}

        self.finish(json.dumps(await self.call(probe)))

    @tornado.web.authenticated
    async def post(self) -> None:
        doc = self.body()
        path = self.confined(doc.get("path", ""))
        include = doc.get("include") or []
        if not isinstance(include, list) or not all(isinstance(g, str) for g in include):
            raise http_error(
                400,
                f'include must be a list of globs, e.g. ["data/*.csv"], not {json.dumps(include)}',
            )
        options = {k: _optional_str(doc, k) for k in ("image_name", "version", "network")}
        settings, root = await self.call(lambda: self.settings_for(path))
        job_id = uuid.uuid4().hex[:12]
        job: dict[str, Any] = {"status": "running", "log": [], "tag": None, "error": None}
        _EXPORTS[job_id] = job

        def work() -> None:
            """Whatever happens, the job ends: succeeded with its tag or failed with why."""
            try:
                result = export_notebook(  # the project's settings, as the preview shows
                    path,
                    root_dir=root,
                    include=include,
                    settings=settings,
                    log=job["log"].append,
                    **options,
                )
                job.update(status="succeeded", tag=result.tag)
            except FlyteJupyterError as exc:
                job.update(status="failed", error=str(exc))
            except Exception as exc:
                self.log.exception("flyte-jupyter: export %s failed", job_id)
                job.update(status="failed", error=f"export failed: {_describe(exc)}")

        threading.Thread(target=work, daemon=True, name=f"flyte-export-{job_id}").start()
        self.set_status(202)
        self.finish(json.dumps({"id": job_id}))


class ExportJobHandler(_Base):
    """GET: an export's status, its build log so far, and the tag once built."""

    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        job = _EXPORTS.get(job_id)
        if job is None:
            raise http_error(404, f"no export {job_id} on this server (exports end with it)")
        self.finish(json.dumps(job))


def setup_handlers(web_app: Any) -> None:
    base = url_path_join(web_app.settings.get("base_url", "/"), API)
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "settings"), SettingsHandler),
            (url_path_join(base, "preview"), PreviewHandler),
            (url_path_join(base, "runs"), RunsHandler),
            (url_path_join(base, r"runs/([\w-]+)"), RunHandler),
            (url_path_join(base, r"runs/([\w-]+)/(logs|cancel|rerun)"), RunHandler),
            (url_path_join(base, "export"), ExportHandler),
            (url_path_join(base, r"export/(\w+)"), ExportJobHandler),
        ],
    )
