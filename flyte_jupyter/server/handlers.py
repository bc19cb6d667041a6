"""REST API of the Jupyter server extension, under /flyte-jupyter/api/. Each handler only
translates HTTP to a core call: settings, bundle preview, runs, export.

All handlers are authenticated `APIHandler`s (token/cookie auth and XSRF as the rest of
Jupyter); notebook paths are relative to the server's root directory and may not leave it.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..core import config, history
from ..core.bundle import build_bundle
from ..core.errors import FlyteJupyterError
from ..core.export import export_notebook, notebook_selection
from ..core.select import detect_root_dir
from ..core.submit import Run

API = "flyte-jupyter/api"


class _Base(APIHandler):
    def notebook_path(self) -> Path:
        """The `path` argument, resolved inside the server root (never outside it)."""
        rel = self.get_argument("path", "")
        return self.confined(rel)

    def confined(self, rel: str) -> Path:
        root = Path(self.settings.get("server_root_dir", ".")).expanduser().resolve()
        if not rel or Path(rel).is_absolute() or "\\" in rel:
            raise tornado.web.HTTPError(400, "give a notebook path relative to the server root")
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise tornado.web.HTTPError(403, f"{rel} is outside the server root")
        return path

    def fail(self, exc: FlyteJupyterError) -> None:
        self.set_status(400)
        self.finish(json.dumps({"error": str(exc)}))

    def body(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError as exc:
            raise tornado.web.HTTPError(400, f"request body is not JSON: {exc.msg}") from exc
        if not isinstance(doc, dict):
            raise tornado.web.HTTPError(400, "request body must be a JSON object")
        return doc


class SettingsHandler(_Base):
    """GET: effective settings for a notebook, each with its source, plus the field list.
    PUT {"settings": {...}}: store them in the project's .flyte-jupyter.toml."""

    @tornado.web.authenticated
    def get(self) -> None:
        path = self.notebook_path()
        root = detect_root_dir(path.parent)
        try:
            settings = config.resolve({}, {}, root)
        except FlyteJupyterError as exc:
            return self.fail(exc)
        self.finish(
            json.dumps(
                {
                    "root_dir": str(root),
                    "settings": {
                        k: {"value": s.value, "source": s.source} for k, s in settings.items()
                    },
                    "fields": {
                        k: {"type": t.__name__, "help": h}
                        for k, (t, _d, h) in config.FIELDS.items()
                    },
                }
            )
        )

    @tornado.web.authenticated
    def put(self) -> None:
        path = self.notebook_path()
        root = detect_root_dir(path.parent)
        values = self.body().get("settings", {})
        try:
            current = {
                k: v
                for k, (v, source) in config.from_project(root).items()
                if source != "pyproject.toml"
            }
            merged = {**current, **values}
            written = config.save_project(
                root, {k: v for k, v in merged.items() if v not in (None, "", [], {})}
            )
        except FlyteJupyterError as exc:
            return self.fail(exc)
        self.finish(json.dumps({"saved": str(written)}))


class PreviewHandler(_Base):
    """GET ?path=nb.ipynb: what the notebook ships, the same document as
    `flyte-jupyter bundle NOTEBOOK.ipynb --dry-run --json`."""

    @tornado.web.authenticated
    def get(self) -> None:
        path = self.notebook_path()
        try:
            settings = config.resolve({}, {}, detect_root_dir(path.parent))
            value = {k: s.value for k, s in settings.items()}
            selection = notebook_selection(
                path,
                root_dir=value["root_dir"],
                copy_style=value["copy_style"],
                include=value["include"],
                exclude=value["exclude"],
                version=value["version"],
            )[0]
            bundle = build_bundle(selection, dry_run=True)
        except FlyteJupyterError as exc:
            return self.fail(exc)
        self.finish(json.dumps(bundle.to_json()))


class RunsHandler(_Base):
    @tornado.web.authenticated
    def get(self) -> None:
        limit = int(self.get_argument("limit", "50"))
        records = [Run.refresh(r) for r in history.recent(limit)]
        rows = [
            {
                "id": r.id,
                "name": r.name or r.entry,
                "status": r.status,
                "digest": r.digest,
                "version": r.version,
                "image": r.image,
                "executor": r.executor,
                "created": r.created,
                "duration": history.duration(r),
                "error": r.error,
            }
            for r in records
        ]
        self.finish(json.dumps({"runs": rows}))


class RunHandler(_Base):
    @tornado.web.authenticated
    def get(self, run_id: str, what: str | None = None) -> None:
        try:
            run = Run.from_history(run_id)
            if what == "logs":
                status = run.status()
                final = status in history.FINAL
                text = run.output_so_far()
                self.finish(json.dumps({"status": status, "logs": text, "final": final}))
            else:
                self.finish(json.dumps(run.describe(), default=str))
        except FlyteJupyterError as exc:
            self.set_status(404)
            self.finish(json.dumps({"error": str(exc)}))

    @tornado.web.authenticated
    def post(self, run_id: str, what: str | None = None) -> None:
        if what not in ("cancel", "rerun"):
            raise tornado.web.HTTPError(404)
        try:
            run = Run.from_history(run_id)
            if what == "cancel":
                run.cancel()
                return self.finish(json.dumps({"id": run.id, "status": run.status()}))
            again = run.rerun()
        except FlyteJupyterError as exc:
            return self.fail(exc)
        self.finish(json.dumps({"id": again.id, "status": again.status()}))


_EXPORTS: dict[str, dict[str, Any]] = {}


class ExportHandler(_Base):
    """POST {"path", "image_name"?, "version"?, "include"?}: start an export (build) in the
    background; its id is polled at /export/<id>."""

    @tornado.web.authenticated
    def post(self) -> None:
        doc = self.body()
        path = self.confined(doc.get("path", ""))
        job_id = uuid.uuid4().hex[:12]
        job: dict[str, Any] = {"status": "running", "log": [], "tag": None, "error": None}
        _EXPORTS[job_id] = job

        def work() -> None:
            try:
                result = export_notebook(
                    path,
                    image_name=doc.get("image_name") or None,
                    version=doc.get("version") or None,
                    include=doc.get("include") or (),
                    network=doc.get("network") or None,
                    log=job["log"].append,
                )
                job.update(status="succeeded", tag=result.tag)
            except FlyteJupyterError as exc:
                job.update(status="failed", error=str(exc))

        threading.Thread(target=work, daemon=True).start()
        self.set_status(202)
        self.finish(json.dumps({"id": job_id}))


class ExportJobHandler(_Base):
    """GET: an export's status, its build log so far, and the tag once built."""

    @tornado.web.authenticated
    def get(self, job_id: str) -> None:
        job = _EXPORTS.get(job_id)
        if job is None:
            raise tornado.web.HTTPError(404, f"no export {job_id}")
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
