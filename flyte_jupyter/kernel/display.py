"""Rich (HTML) and plain-text views for notebooks: each view is a MIME bundle, so JupyterLab
shows a table and a terminal IPython shows text."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from IPython.display import display

from ..core import config, history
from ..core.cells import PreparedCell
from ..core.preview import human_size, render_tree, text_table
from ..core.storage import describe_upload
from ..core.submit import Run

_TABLE = '<table class="flyte-jupyter">{head}{rows}</table>'


def _table(header: list[str], rows: list[list[Any]], caption: str = "") -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    text = _TABLE.format(head=head, rows=body)
    return (f"<p>{html.escape(caption)}</p>" if caption else "") + text


def bundle_preview(prepared: PreparedCell) -> dict[str, str]:
    bundle = prepared.bundle
    sel = bundle.selection
    reasons = {f.path: f.reason for f in sel.files}
    rows = [[e.path, human_size(e.size), reasons[e.path]] for e in bundle.entries]
    values = [[n, human_size(s)] for n, s in prepared.payload_sizes.items()]
    summary = (
        f"{len(bundle.entries)} files, {human_size(bundle.total_bytes)}, digest {bundle.digest}, "
        f"version {bundle.version}, copy_style {sel.copy_style}, root_dir {sel.root_dir}"
    )
    parts = [_table(["file", "size", "why it ships"], rows, summary)]
    if values:
        parts.append(_table(["input value", "pickled size"], values))
    for label, items in (("left out as secrets", sel.excluded_secrets), ("warnings", sel.warnings)):
        if items:
            parts.append(
                f"<p>{label}:</p><ul>"
                + "".join(f"<li>{html.escape(i)}</li>" for i in items)
                + "</ul>"
            )
    cell = prepared.slice
    cells = ", ".join(dict.fromkeys(d.cell for d in cell.definitions)) or "none"
    caption = f"generated module {cell.module_path} (definitions from {cells})"
    parts.append(
        f"<details><summary>{html.escape(caption)}</summary>"
        f"<pre>{html.escape(cell.module_text)}</pre></details>"
    )
    text = [render_tree(bundle)]
    if values:
        text.append("input values:\n" + text_table(["name", "pickled size"], values))
    text.append(f"{caption}:\n{cell.module_text}")
    return {"text/plain": "\n\n".join(text), "text/html": "\n".join(parts)}


def settings_table(settings: dict[str, config.Setting]) -> dict[str, str]:
    rows = [[key, repr(s.value), s.source] for key, s in settings.items()]
    header = ["setting", "value", "from"]
    return {"text/plain": text_table(header, rows), "text/html": _table(header, rows)}


def runs_table(records: list[history.RunRecord]) -> dict[str, str]:
    if not records:
        return {"text/plain": "no runs yet", "text/html": "<p>no runs yet</p>"}
    header, rows = history.table(records)
    return {"text/plain": text_table(header, rows), "text/html": _table(header, rows)}


UPLOAD_BAR_BYTES = 256 * 1024
"""Uploads smaller than this finish before a progress bar would be worth drawing."""


def upload_progress() -> Callable[[int, int], None]:
    """An upload progress callback that shows an ipywidgets bar once an upload is big enough
    to watch (and falls back to nothing where widgets cannot render)."""
    bar: list[Any] = []

    def update(sent: int, total: int) -> None:
        if total < UPLOAD_BAR_BYTES:
            return
        if not bar:
            try:
                import ipywidgets
            except ImportError:
                return
            bar.append(ipywidgets.FloatProgress(min=0, max=total, description="upload"))
            display(bar[0])
        bar[0].value = sent
        bar[0].description = f"{human_size(sent)}/{human_size(total)}"

    return update


def run_banner(run: Run, prepared: PreparedCell) -> str:
    digest = run.spec.digest[:19] + "…" if run.spec.digest else "no bundle"
    files = len(prepared.bundle.entries)
    shipped = describe_upload(run.upload)
    return f"flyte-jupyter: run {run.id} on {run.spec.executor}: {files} files, {digest}; {shipped}"
