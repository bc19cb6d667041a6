"""The cell of a remote run in a real JupyterLab, through Debian's chromium with Playwright: a
successful run shows a quiet status line (no stderr band) above its output, and a raising run
shows one error box, IPython's traceback of the remote exception under its own type; a run
cancelled through the sidebar's REST call ends its cell cancelled with its output kept.
Screenshots go to ARTIFACTS: cell-status-line.png, cell-remote-error.png, cell-cancelled.png."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import ARTIFACTS, chromium, jupyter_lab, notebook, wait_for_kernel

pytestmark = pytest.mark.slow

TOKEN = "flyte-jupyter-cell-test-token"
CELLS = [
    "%load_ext flyte_jupyter",
    "def ratio(a, b):\n    return a / b",
    "%%flyte_run\nprint('computing on the remote side')\nanswer = ratio(84, 2)\nanswer",
    "%%flyte_run\nprint('about to divide')\nratio(1, 0)",
]
TICKER = [
    "%load_ext flyte_jupyter",
    "%%flyte_run\nimport time\nfor i in range(300):\n    print('step', i, flush=True)\n"
    "    time.sleep(0.1)",
    "after_the_cancel = True",
]
STDERR = "[data-mime-type='application/vnd.jupyter.stderr']"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
NOTEBOOK = f"{PANEL} .jp-Notebook"
"""The notebook on show (others stay in the page, hidden)."""
"""JupyterLab draws stderr streams and errors alike: the red boxes."""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("lab")
    project = root / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'cell-demo'\n")
    (project / "cells.ipynb").write_text(notebook(CELLS))
    (project / "ticker.ipynb").write_text(notebook(TICKER))
    with jupyter_lab(root, TOKEN) as url:
        yield url, root


@pytest.fixture(scope="module")
def page(lab: tuple[str, Path]) -> Iterator[Any]:
    with chromium() as browser:
        yield browser.new_context(viewport={"width": 1200, "height": 900}).new_page()


@pytest.fixture(autouse=True)
def failure_screenshot(request: pytest.FixtureRequest, page: Any) -> Iterator[None]:
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        page.screenshot(path=str(ARTIFACTS / f"failure-{request.node.name}.png"))


def open_and_run_all(page: Any, lab: tuple[str, Path], path: str) -> None:
    """Open the notebook, wait for its kernel (JupyterLab may ask which kernel first: the
    notebook's own), then run all its cells."""
    page.goto(f"{lab[0]}/lab/tree/{path}?token={TOKEN}")
    page.wait_for_selector(f"{NOTEBOOK} .jp-CodeCell", timeout=60_000)
    wait_for_kernel(page)
    run_all(page)


def run_all(page: Any) -> None:
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")


def cell(page: Any, index: int) -> Any:
    return page.locator(f"{NOTEBOOK} .jp-CodeCell").nth(index)


def test_status_line_is_quiet_and_a_remote_error_is_one_ipython_traceback(
    page: Any, lab: tuple[str, Path]
):
    open_and_run_all(page, lab, "project/cells.ipynb")
    error_box = cell(page, 3).locator(f".jp-OutputArea-output{STDERR}")
    error_box.first.wait_for(timeout=60_000)
    page.wait_for_selector(
        f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000
    )

    ok = cell(page, 2)
    status = ok.locator(".flyte-jupyter-status")
    status.wait_for(timeout=30_000)
    status_text = status.inner_text()
    print("status line:", status_text)
    assert "succeeded after" in status_text and "files" in status_text
    print("red boxes in the successful cell:", ok.locator(STDERR).count())
    assert ok.locator(STDERR).count() == 0
    outputs = ok.locator(".jp-OutputArea-output")
    assert "flyte-jupyter-status" in outputs.nth(0).inner_html()  # above the run's output
    assert "computing on the remote side" in outputs.nth(1).inner_text()
    assert ok.locator(".jp-OutputArea-output").last.inner_text().strip() == "42.0"
    ok.screenshot(path=str(ARTIFACTS / "cell-status-line.png"))

    failed = cell(page, 3)
    print("red boxes in the raising cell:", failed.locator(STDERR).count())
    assert failed.locator(STDERR).count() == 1
    shown = error_box.inner_text()
    print(shown)
    assert "ZeroDivisionError" in shown and "Traceback (most recent call last)" in shown
    assert "Cell In[4], line 3" in shown and "----> 3 ratio(1, 0)" in shown
    assert "Cell In[2], line 2, in ratio" in shown and "return a / b" in shown
    assert "Remote traceback" not in shown and "_flyte_notebook" not in shown
    assert "failed after" in failed.locator(".flyte-jupyter-status").inner_text()
    # IPython's colours reach the page: the exception name is drawn in the error colour
    coloured = failed.locator(f"{STDERR} span[class*='ansi-red']")
    print("coloured spans:", coloured.count())
    assert coloured.count() > 0
    failed.screenshot(path=str(ARTIFACTS / "cell-remote-error.png"))


def test_a_run_cancelled_through_the_sidebars_api_ends_its_cell_cancelled(
    page: Any, lab: tuple[str, Path]
):
    open_and_run_all(page, lab, "project/ticker.ipynb")
    ticker = cell(page, 1)
    ticker.locator("text=step 5").first.wait_for(timeout=60_000)
    run_id = ticker.locator(".flyte-jupyter-status code").inner_text().strip()
    request = urllib.request.Request(
        f"{lab[0]}/flyte-jupyter/api/runs/{run_id}/cancel",
        data=b"",
        method="POST",
        headers={"Authorization": f"token {TOKEN}"},
    )
    print("cancel:", urllib.request.urlopen(request, timeout=60).read().decode())
    status = ticker.locator(".flyte-jupyter-status")
    status.locator("text=cancelled").wait_for(timeout=30_000)
    page.wait_for_selector(
        f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000
    )
    boxes = ticker.locator(f".jp-OutputArea-output{STDERR}")
    print("status:", status.inner_text(), "| red boxes:", boxes.count())
    assert boxes.count() == 1
    shown = boxes.inner_text()
    assert shown.startswith(f"run {run_id} was cancelled; its output so far is kept")
    assert "ProcessDied" not in ticker.inner_text() and "Traceback" not in ticker.inner_text()
    assert "step 5" in ticker.inner_text()
    assert cell(page, 2).locator(".jp-OutputArea-output").count() == 0  # Run All stopped
    ticker.screenshot(path=str(ARTIFACTS / "cell-cancelled.png"))
