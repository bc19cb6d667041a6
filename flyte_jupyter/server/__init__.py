"""The Jupyter server extension: REST endpoints the JupyterLab sidebar calls."""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "flyte_jupyter.server"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    from .handlers import API, setup_handlers

    setup_handlers(server_app.web_app)
    server_app.log.info("flyte-jupyter: API at /%s", API)
