"""End to end in a real JupyterLab, driven through Debian's chromium with Playwright: open the
sidebar, switch the copy style, run the quickstart notebook, see the run succeed and the
preview list the data file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port, stop, wait_http

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("FLYTE_JUPYTER_ARTIFACTS", REPO / ".ci-artifacts"))
TOKEN = "flyte-jupyter-test-token"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    shutil.copytree(REPO / "notebooks" / "quickstart", tmp_path / "quickstart")
    port = free_port()
    with open(tmp_path / "lab.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                f"--port={port}", "--ip=127.0.0.1", f"--ServerApp.token={TOKEN}",
                f"--ServerApp.root_dir={tmp_path}",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=os.environ.copy(),
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/api/status?token={TOKEN}", proc, timeout=60)
        except RuntimeError as exc:
            raise RuntimeError((tmp_path / "lab.log").read_text()) from exc
        yield url
    finally:
        stop(proc)


def test_sidebar_end_to_end(lab: str):
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        try:
            page.goto(f"{lab}/lab/tree/quickstart/quickstart.ipynb?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator, .jp-Toolbar", timeout=60_000)
            page.click('[data-id="flyte-jupyter-sidebar"]')
            page.wait_for_selector("#fj-setting-copy_style", timeout=30_000)
            page.select_option("#fj-setting-copy_style", "all")
            page.click(".fj-form button[type=submit]")
            page.wait_for_function(
                "document.querySelector('.fj-status').textContent.startsWith('Settings saved')",
                timeout=30_000,
            )
            stored = json.loads(
                urllib.request.urlopen(
                    f"{lab}/lab/api/settings/flyte-jupyter:sidebar?token={TOKEN}"
                ).read()
            )
            assert stored["settings"]["copy_style"] == "all"  # kept as a JupyterLab default
            page.wait_for_selector(".fj-preview", timeout=30_000)
            page.wait_for_function(
                "document.querySelector('.fj-preview') && "
                "document.querySelector('.fj-preview').textContent.includes('data/prices.json')",
                timeout=30_000,
            )
            assert "all" in page.text_content(".fj-summary")
            # run the notebook: its %%flyte_run cells go through the kernel to a local run
            page.click(".jp-Notebook")
            page.click("text=Run >> nth=0")
            page.click("text=Run All Cells")
            page.wait_for_function(
                "[...document.querySelectorAll('.fj-runs .fj-status-cell')]"
                ".some(td => td.textContent === 'succeeded')",
                timeout=120_000,
            )
            # with the extension loaded, the preview follows the active cell, sliced by the kernel
            page.click("text=summary = summarize(prices)")
            page.wait_for_function(
                "document.querySelector('.fj-summary').textContent"
                ".startsWith('For the active cell')",
                timeout=30_000,
            )
            assert "input value prices" in page.text_content("#flyte-jupyter-sidebar")
            assert "_flyte_notebook/cell_" in page.text_content(".fj-preview")
            row = page.query_selector(".fj-runs li.fj-succeeded")
            row.click()
            page.wait_for_function(
                "document.querySelector('.fj-logs').textContent.includes('result (')",
                timeout=30_000,
            )
            assert "succeeded" in page.text_content(".fj-logs")
            sidebar = page.query_selector("#flyte-jupyter-sidebar")
            sidebar.screenshot(path=str(ARTIFACTS / "sidebar.png"))
            page.screenshot(path=str(ARTIFACTS / "lab.png"))
            shipped = page.text_content(".fj-preview")
            assert "data/prices.json" in shipped and "shop/discounts.py" in shipped
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        finally:
            browser.close()
