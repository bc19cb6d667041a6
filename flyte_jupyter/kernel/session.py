"""What the kernel remembers between cells: the notebook's definitions as source, session
settings, and which local modules it imported (to notice when their files change)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..core import config
from ..core.cells import PreparedCell, prepare_cell, resolved_file
from ..core.notebook import LineMap, NotebookState


class KernelSession:
    def __init__(self, shell: Any):
        self.shell = shell
        self.state = NotebookState()
        self.settings: dict[str, Any] = {}
        """The session layer: %flyte_config and the JupyterLab sidebar write here."""
        self._modules: dict[str, tuple[int, str, int, int]] = {}
        self.line_maps: dict[str, LineMap] = {}
        """Per run id: generated module lines -> this notebook's cells. Kept here, never
        shipped, so the bundle does not change with execution counts."""

    # --- recording -----------------------------------------------------------------------

    def post_run_cell(self, result: Any) -> None:
        """IPython `post_run_cell` hook: record the cell's definitions as the kernel ran them."""
        if result.error_before_exec is not None or result.info is None:
            return
        raw = result.info.raw_cell or ""
        self.record(raw, result.execution_count)
        self.snapshot_modules()

    def record(self, raw: str, count: int | None) -> None:
        source = self.shell.transform_cell(raw)
        self.state.record_cell(source, f"In[{count}]" if count is not None else "kernel")

    def replay_history(self) -> None:
        """Record cells executed before the extension was loaded."""
        history = self.shell.user_ns.get("In", [])
        for count, raw in enumerate(history):
            if raw and "load_ext" not in raw:
                self.state.record_cell(raw, f"In[{count}]")
        self.snapshot_modules()

    # --- stale modules -------------------------------------------------------------------

    def snapshot_modules(self) -> None:
        """Remember each newly imported (or reloaded) module's file stat."""
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if not file or not file.endswith(".py"):
                continue
            known = self._modules.get(name)
            if known is not None and known[0] == id(module):
                continue
            try:
                st = os.stat(file)
            except OSError:
                continue
            self._modules[name] = (id(module), file, st.st_mtime_ns, st.st_size)

    def stale_modules(self, root: Path) -> list[str]:
        """Local modules whose file changed on disk since the kernel imported them. Asked on
        every run of a kernel that has imported hundreds of modules: a string prefix picks
        the local ones (pathlib's relative_to for each cost a trivial cell ~8 ms)."""
        prefix = os.path.join(root, "")
        out = []
        for name, (ident, file, mtime, size) in self._modules.items():
            module = sys.modules.get(name)
            if module is None or id(module) != ident:
                continue
            path = str(resolved_file(file))
            if not path.startswith(prefix):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_mtime_ns, st.st_size) != (mtime, size):
                out.append(Path(path).relative_to(root).as_posix())
        return sorted(out)

    # --- settings ------------------------------------------------------------------------

    def notebook_dir(self) -> Path:
        """The notebook's directory: Jupyter names the notebook in JPY_SESSION_NAME; the
        kernel's working directory is the notebook's directory otherwise."""
        session = os.environ.get("JPY_SESSION_NAME")
        if session and Path(session).is_file():
            return Path(session).resolve().parent
        return Path.cwd().resolve()

    def effective(self, options: dict[str, Any]) -> tuple[config.Settings, Path]:
        """Effective settings for a run (the one resolver, from the notebook's folder), and
        its root_dir."""
        settings = config.resolve(self.notebook_dir(), options, self.settings)
        return settings, Path(settings.root_dir)

    def update_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Set session settings (empty values unset them); the effective values after."""
        for key, value in values.items():
            if value in (None, "", [], {}):
                self.settings.pop(key, None)
            else:
                self.settings[key] = config.coerce(key, value)
        settings, _root = self.effective({})
        return {key: s.value for key, s in settings.items()}

    def open_comm(self, comm: Any, msg: dict[str, Any]) -> None:
        """The "flyte_jupyter" comm target. The JupyterLab sidebar sends `settings` here so
        the next %%flyte_run uses them at once (magic options still win), and asks for a
        `preview` of what a cell's run would ship, sliced from this kernel's state."""
        data = msg.get("content", {}).get("data", {}) or {}
        try:
            reply: dict[str, Any] = {"ok": True}
            if "settings" in data:
                reply["settings"] = self.update_settings(data["settings"])
            if "preview" in data:
                reply["preview"] = self.preview_cell(str(data["preview"]))
        except Exception as exc:  # the sidebar shows the message; the kernel carries on
            comm.send({"ok": False, "error": str(exc)})
            return
        comm.send(reply)

    def line_map(self, run_id: str) -> LineMap | None:
        """How to show run `run_id`'s remote traceback in this notebook's current cells (None
        for a run this kernel did not submit)."""
        known = self.line_maps.get(run_id)
        return known.relabel(self.state) if known else None

    def preview_cell(self, raw: str) -> dict[str, Any]:
        """What running this cell remotely would ship: the bundle document plus the pickled
        size of each input value. A `%%flyte_run`/`%flyte_run` cell's own options count, so
        the digest shown is the one the run then ships."""
        from .magics import magic_options  # the magics module imports this one

        options, body = magic_options(raw)
        prepared = self.dry_run(self.shell.transform_cell(body), "the active cell", options)
        return {**prepared.bundle.to_json(), "values": prepared.payload_sizes}

    def dry_run(
        self, source: str, label: str, options: dict[str, Any] | None = None
    ) -> PreparedCell:
        """Slice and bundle `source` as a run with these magic options would, uploading
        nothing."""
        settings, root = self.effective(options or {})
        return prepare_cell(
            self.state,
            source,
            label,
            self.shell.user_ns,
            settings,
            root,
            hidden=self.hidden_names(),
            dry_run=True,
        )

    def current_count(self) -> int:
        """The running cell's number. IPython stores a cell's input before running it (while
        when it advances execution_count differs between versions)."""
        return len(self.shell.history_manager.input_hist_parsed) - 1

    def hidden_names(self) -> set[str]:
        return set(getattr(self.shell, "user_ns_hidden", {})) | {"get_ipython", "exit", "quit"}
