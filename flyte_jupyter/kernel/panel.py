"""`%flyte_panel`: the sidebar's settings, preview and runs as ipywidgets, for front ends
without the JupyterLab extension (classic Notebook, VS Code). It edits the same session
settings as `%flyte_config` and the sidebar."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from IPython.display import HTML, display

from ..core import config
from ..core.submit import recent_runs
from . import display as views
from .session import KernelSession


def panel(session: KernelSession, preview: Callable[[], dict[str, str]]) -> widgets.Widget:
    settings, _root = session.effective({})
    value = {k: s.value for k, s in settings.items()}
    fields = config.FIELDS  # allowed values and help: the declaration every front door uses
    copy_style = widgets.Dropdown(
        options=fields["copy_style"].allowed(),
        value=value["copy_style"],
        description="copy style",
        tooltip=fields["copy_style"].help,
    )
    root_dir = widgets.Text(value=value["root_dir"] or "", description="root dir")
    include = widgets.Text(
        value=", ".join(value["include"]), description="include", placeholder="data/*.csv"
    )
    executor = widgets.Dropdown(
        options=fields["executor"].allowed(), value=value["executor"], description="executor"
    )
    store = widgets.Text(
        value=value["store"] or "",
        description="store",
        placeholder="file:// store in the cache dir",
    )
    image = widgets.Text(value=value["image"] or "", description="image")
    images = widgets.Textarea(
        value="\n".join(f"{k}={v}" for k, v in value["images"].items()),
        description="images",
        placeholder="reference=image URI, one per line",
    )
    version = widgets.Text(value=value["version"] or "", description="version")
    status = widgets.HTML()
    apply = widgets.Button(description="Apply", button_style="primary")
    preview_button = widgets.Button(description="Preview bundle")
    runs_button = widgets.Button(description="Refresh runs")
    out = widgets.Output()

    def on_apply(_: Any) -> None:
        if copy_style.value == "none" and not version.value.strip():
            status.value = "<b>copy style none ships no code: give a version</b>"
            return
        mapping = dict(line.split("=", 1) for line in images.value.splitlines() if "=" in line)
        try:
            session.update_settings(
                {
                    "copy_style": copy_style.value,
                    "root_dir": root_dir.value.strip(),
                    "include": [p.strip() for p in include.value.split(",") if p.strip()],
                    "executor": executor.value,
                    "store": store.value.strip(),
                    "image": image.value.strip(),
                    "images": {k.strip(): v.strip() for k, v in mapping.items()},
                    "version": version.value.strip(),
                }
            )
        except Exception as exc:  # shown in the panel, one line
            status.value = f"<b>{exc}</b>"
            return
        status.value = "settings applied to this kernel's session"

    def on_preview(_: Any) -> None:
        out.clear_output()
        with out:
            display(preview(), raw=True)

    def on_runs(_: Any) -> None:
        out.clear_output()
        with out:
            bundle = views.runs_table(recent_runs(20))
            display(HTML(bundle["text/html"]))

    apply.on_click(on_apply)
    preview_button.on_click(on_preview)
    runs_button.on_click(on_runs)
    form = widgets.VBox([copy_style, root_dir, include, executor, store, image, images, version])
    return widgets.VBox([form, widgets.HBox([apply, preview_button, runs_button]), status, out])
