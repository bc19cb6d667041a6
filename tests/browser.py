"""What the browser tests share: Debian's chromium driven by Playwright, a real `jupyter lab`
on a free loopback port with its own settings and data folders, and notebooks made from cell
sources."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import free_port, stop, wait_http

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("FLYTE_JUPYTER_ARTIFACTS", REPO / ".ci-artifacts"))
_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def notebook(cells: list[str]) -> str:
    """An nbformat 4.5 notebook (JSON) of code cells with these sources, not yet run."""
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"c{i}",
                    "metadata": {},
                    "outputs": [],
                    "source": source,
                }
                for i, source in enumerate(cells)
            ],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


@contextlib.contextmanager
def jupyter_lab(root: Path, token: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`jupyter lab` serving `root`, with flyte-jupyter's and JupyterLab's state kept under it
    (never the user's); its URL. Skips where chromium is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    port = free_port()
    env = {
        **os.environ,
        "FLYTE_JUPYTER_DATA_DIR": str(root / ".data"),
        "FLYTE_JUPYTER_CACHE_DIR": str(root / ".cache"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / ".lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / ".lab-workspaces"),
        **(env or {}),
    }
    with open(root / "lab.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                f"--port={port}", "--ip=127.0.0.1", f"--ServerApp.token={token}",
                f"--ServerApp.root_dir={root}",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/api/status?token={token}", proc, timeout=60)
        except RuntimeError as exc:
            raise RuntimeError((root / "lab.log").read_text()) from exc
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium browser (Playwright's sync API)."""
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_for_kernel(page: Any) -> None:
    """Until the open notebook's kernel is idle for a moment: the status bar reads
    "Python 3 (ipykernel) | Idle". JupyterLab may ask which kernel first: the notebook's own."""
    idle = (
        "[...document.querySelectorAll('#jp-main-statusbar span')]"
        ".some(s => s.textContent.endsWith('| Idle'))"
    )
    deadline = time.monotonic() + 60
    settled = 0
    while settled < 3:
        assert time.monotonic() < deadline, "the notebook's kernel did not start"
        if page.is_visible(".jp-Dialog .jp-mod-accept"):
            page.click(".jp-Dialog .jp-mod-accept")
            settled = 0
        settled = settled + 1 if page.evaluate(idle) else 0
        page.wait_for_timeout(500)
