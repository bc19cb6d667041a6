"""Rich (HTML) and plain-text views for notebooks: each view is a MIME bundle, so JupyterLab
shows a table and a terminal IPython shows text."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from typing import Any

from IPython import get_ipython
from IPython.display import display

from ..core import config, history
from ..core.cells import PreparedCell
from ..core.preview import human_size, render_tree, text_table
from ..core.storage import describe_upload
from ..core.submit import Run, flyte_links
from ..runtime import protocol

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
    text, markup = text_table(header, rows), _table(header, rows)
    links = flyte_links(records)
    if links:
        text += "\nFlyte console:" + "".join(f"\n  {i}  {url}" for i, url in links.items())
        markup += (
            "<p>Flyte console: "
            + ", ".join(
                f'<a href="{html.escape(url)}" target="_blank" rel="noopener">{html.escape(i)}</a>'
                for i, url in links.items()
            )
            + "</p>"
        )
    return {"text/plain": text, "text/html": markup}


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


_STATUS_STYLE = (
    "font-family: var(--jp-ui-font-family); font-size: var(--jp-ui-font-size0); "
    "color: var(--jp-ui-font-color2); padding: 1px 0"
)
_STATE_COLOURS = {
    "succeeded": "var(--jp-success-color1)",
    "failed": "var(--jp-error-color1)",
    "cancelled": "var(--jp-warn-color1)",
    "timed out": "var(--jp-warn-color1)",
}


class StatusLine:
    """A run's status as one quiet display above its output, updated in place (run id,
    files, size, state, elapsed time, the Flyte console link): not a stderr line, which
    notebooks paint as a warning. A terminal IPython prints its text form."""

    def __init__(self, run: Run, prepared: PreparedCell, changed: str | None = None):
        self.run = run
        self.changed = changed
        """What changed since the cell's last run (kernel/changes.py): a second line."""
        self.started = time.monotonic()
        entries = prepared.bundle.entries
        digest = run.spec.digest[7:19] if run.spec.digest else "no bundle"
        self.facts = [
            run.spec.executor,
            f"{len(entries)} files, {human_size(prepared.bundle.total_bytes)}",
            f"bundle {digest}",
            describe_upload(run.upload),
        ]
        self.console = console_url(run)
        self.state = ""
        self.in_place = getattr(get_ipython(), "kernel", None) is not None
        """Jupyter redraws the display; a terminal prints each update, so it gets the ends."""
        self.handle = display(self._bundle(protocol.SUBMITTED), raw=True, display_id=True)

    def update(self, state: str, note: str = "") -> None:
        """Show `state` (a run phase, or "timed out"), unless it is already shown."""
        if state == self.state and not note:
            return
        if not (self.in_place or note or state in _STATE_COLOURS):
            return
        self.handle.update(self._bundle(state, note), raw=True)

    def _bundle(self, state: str, note: str = "") -> dict[str, str]:
        elapsed = time.monotonic() - self.started
        when = f"{state} after {elapsed:.1f}s" if state in _STATE_COLOURS else state
        if note:
            when += f": {note}"
        facts = " · ".join(self.facts)
        text = f"flyte-jupyter run {self.run.id} · {facts} · {when}"
        if self.state and not self.in_place:  # a terminal already printed the facts
            text = f"flyte-jupyter run {self.run.id} · {when}"
        if self.console:
            text += f" · {self.console}"
        if self.changed and not (self.state and not self.in_place):
            text += f"\n{self.changed}"
        colour = _STATE_COLOURS.get(state, "inherit")
        link = (
            f' · <a href="{html.escape(self.console)}" target="_blank" rel="noopener">'
            "Flyte console</a>"
            if self.console
            else ""
        )
        markup = (
            f'<div class="flyte-jupyter-status" style="{_STATUS_STYLE}">'
            f'run <code title="{html.escape(self.run.spec.run_dir)}">{html.escape(self.run.id)}'
            f"</code> · {html.escape(facts)} · "
            f'<span style="color: {colour}">{html.escape(when)}</span>{link}'
            + (f"<br>{html.escape(self.changed)}" if self.changed else "")
            + "</div>"
        )
        self.state = state
        return {"text/plain": text, "text/html": markup}


def console_url(run: Run) -> str | None:
    """The Flyte console URL the flyte executor stored for the run (None for others)."""
    if run.spec.executor != "flyte":
        return None
    from ..core.executors.flyte import REMOTE_FILE

    try:
        info = json.loads(run.store.get_bytes(run.store.run_url(run.id, REMOTE_FILE)))
    except (FileNotFoundError, ValueError):
        return None
    url = info.get("url")
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None
