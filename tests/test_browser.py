"""The sidebar in a real JupyterLab, driven through Debian's chromium with Playwright. One lab
server and one browser for the module; the tests run in order on the same page: settings and
a quickstart run, a live run (state, elapsed time, log tail, focus, keyboard, busy preview),
the palette, the 250 px layout (nothing cut, export disabled, errors), the dark theme, and a
failed run's log (its traceback shown once).
Screenshots go to ARTIFACTS."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
from browser import ARTIFACTS, REPO, chromium, jupyter_lab, notebook, wait_for_kernel

pytestmark = pytest.mark.slow

TOKEN = "flyte-jupyter-test-token"
SIDEBAR = "#flyte-jupyter-sidebar"
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
RUNS_REQUESTS = {"n": 0}
"""Requests for the run list the page made: the poll's pace."""

LIVE_CELLS = [
    "%load_ext flyte_jupyter",
    "%%flyte_run --name ticker\nimport time\n"
    "for i in range(14):\n    print('step', i, flush=True)\n    time.sleep(1)\ni",
    "x = 1",
]
FAILING_CELLS = [
    "%load_ext flyte_jupyter",
    "%%flyte_run --name boom\nraise ValueError('boom-marker')",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(REPO / "notebooks" / "quickstart", root / "quickstart")
    (root / "quickstart" / ".flyte-jupyter.toml").write_text("# team note: keep me\n")
    (root / "quickstart" / "live.ipynb").write_text(notebook(LIVE_CELLS))
    (root / "quickstart" / "fails.ipynb").write_text(notebook(FAILING_CELLS))
    # export must say why it cannot build: no engine behind this socket
    no_docker = {"DOCKER_HOST": f"unix://{root}/no-docker-here.sock"}
    with jupyter_lab(root, TOKEN, no_docker) as url:
        yield url, root


@pytest.fixture(scope="module")
def page(lab: tuple[str, Path]) -> Iterator[Any]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()

        def count(request: Any) -> None:
            if "/flyte-jupyter/api/runs?" in request.url:
                RUNS_REQUESTS["n"] += 1

        page.on("request", count)
        yield page


@pytest.fixture(autouse=True)
def failure_screenshot(request: pytest.FixtureRequest, page: Any) -> Iterator[None]:
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        page.screenshot(path=str(ARTIFACTS / f"failure-{request.node.name}.png"))


def api(lab: tuple[str, Path], path: str) -> Any:
    return json.loads(urllib.request.urlopen(f"{lab[0]}/{path}?token={TOKEN}").read())


def open_notebook(page: Any, lab: tuple[str, Path], path: str) -> None:
    page.goto(f"{lab[0]}/lab/tree/{path}?token={TOKEN}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator, .jp-Toolbar", timeout=60_000)
    wait_for_kernel(page)


def ensure_notebook(page: Any, lab: tuple[str, Path]) -> None:
    """The live notebook, unless a notebook is open already (tests run in order, or alone)."""
    if not page.is_visible(NOTEBOOK):
        open_notebook(page, lab, "quickstart/live.ipynb")


def run_all_cells(page: Any) -> None:
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def open_sidebar(page: Any) -> None:
    if not page.is_visible(SIDEBAR):
        page.click('[data-id="flyte-jupyter-sidebar"]')
    page.wait_for_selector(f"{SIDEBAR} .fj-runs", state="attached", timeout=30_000)


def wait_runs_requests(page: Any, n: int, timeout: float = 30) -> None:
    target = RUNS_REQUESTS["n"] + n
    deadline = time.monotonic() + timeout
    while RUNS_REQUESTS["n"] < target:
        assert time.monotonic() < deadline, f"only {RUNS_REQUESTS['n']} run list requests"
        page.wait_for_timeout(200)
    page.wait_for_timeout(300)  # let the last answer render


def test_apply_saves_only_changes_and_quickstart_runs(page: Any, lab: tuple[str, Path]):
    open_notebook(page, lab, "quickstart/quickstart.ipynb")
    open_sidebar(page)
    page.wait_for_selector("#fj-setting-copy_style", timeout=30_000)
    apply = page.locator(f"{SIDEBAR} .fj-form button[type=submit]")
    assert apply.is_disabled()  # nothing changed yet
    page.select_option("#fj-setting-copy_style", "all")
    assert "every file" in page.text_content(".fj-help")
    apply.click()
    page.wait_for_selector(".jp-Notification-Toast-success", timeout=30_000)
    toast = page.text_content(".jp-Notification-Toast-success")
    print("notification:", toast)
    assert "copy_style" in toast
    text = (lab[1] / "quickstart" / ".flyte-jupyter.toml").read_text()
    print(text)
    assert text.startswith("# team note: keep me\n")
    assert tomllib.loads(text) == {"copy_style": "all"}  # only the key that changed
    stored = api(lab, "lab/api/settings/flyte-jupyter:sidebar")
    print("JupyterLab user settings:", stored["raw"])
    assert "copy_style" not in stored.get("settings", {})  # not every project's default
    # asked to: "use as my default" writes the JupyterLab default too
    page.wait_for_selector("#fj-setting-version", timeout=30_000)
    page.fill("#fj-setting-version", "v7")
    page.check("#fj-as-default")
    page.click(f"{SIDEBAR} .fj-form button[type=submit]")
    page.wait_for_function(
        "[...document.querySelectorAll('.jp-Notification-Toast-success')]"
        ".some(t => t.textContent.includes('as your default'))",
        timeout=30_000,
    )
    stored = api(lab, "lab/api/settings/flyte-jupyter:sidebar")
    assert "version" not in stored["settings"]  # not in the schema: never a global default
    page.fill("#fj-setting-version", "")
    page.click(f"{SIDEBAR} .fj-form button[type=submit]")
    page.wait_for_function(
        "[...document.querySelectorAll('.jp-Notification-Toast-success')]"
        ".some(t => t.textContent.includes('Saved version') && !t.textContent.includes('default'))",
        timeout=30_000,
    )
    assert "version" not in tomllib.loads((lab[1] / "quickstart/.flyte-jupyter.toml").read_text())
    page.wait_for_function(
        "document.querySelector('.fj-summary')?.textContent.includes('copy style all')",
        timeout=30_000,
    )
    assert "data/prices.json" in page.text_content(".fj-preview")
    # run the notebook: its %%flyte_run cells go through the kernel to a local run
    page.click(".jp-Notebook")
    run_all_cells(page)
    page.wait_for_selector(f"{SIDEBAR} li.fj-phase-succeeded", timeout=120_000)
    # the preview follows the active cell, sliced by the kernel, and says which cell
    page.click("text=summary = summarize(prices)")
    page.wait_for_function(
        "document.querySelector('.fj-preview-scope')?.textContent.startsWith('For cell ')",
        timeout=30_000,
    )
    scope = page.text_content(".fj-preview-scope")
    print("preview scope:", scope, "|", page.text_content(".fj-cell-line"))
    assert "In[" in scope and page.text_content(".fj-cell-line") == "%%flyte_run"
    assert "input value prices" in page.text_content(SIDEBAR)
    assert "_flyte_notebook/cell_" in page.text_content(".fj-preview")
    row = page.locator(f"{SIDEBAR} li.fj-phase-succeeded").first
    row.click()
    log = row.locator("pre.fj-logs")  # inline, under its own run
    log.wait_for(timeout=30_000)
    page.wait_for_function(
        "document.querySelector('li.fj-run pre.fj-logs')?.textContent.includes('result (')",
        timeout=30_000,
    )
    shipped = page.text_content(".fj-preview")
    assert "data/prices.json" in shipped and "shop/discounts.py" in shipped
    page.screenshot(path=str(ARTIFACTS / "lab.png"))


def test_live_run_is_running_with_elapsed_time_and_the_log_follows(
    page: Any, lab: tuple[str, Path]
):
    open_notebook(page, lab, "quickstart/live.ipynb")
    open_sidebar(page)
    page.click(f"{NOTEBOOK} .jp-Cell >> nth=0")
    run_all_cells(page)  # the %%flyte_run cell streams for 14 s
    running = page.locator(f"{SIDEBAR} li.fj-phase-running", has_text="ticker").first
    running.wait_for(timeout=60_000)
    run_id = running.get_attribute("data-run")
    row = page.locator(f"{SIDEBAR} li[data-run='{run_id}']")
    durations = []
    for _ in range(3):
        rest = next(r for r in api(lab, "flyte-jupyter/api/runs")["runs"] if r["id"] == run_id)
        durations.append(
            (rest["status"], rest["duration"], row.locator(".fj-run-time").text_content())
        )
        page.wait_for_timeout(1100)
    print("REST status/duration and list duration while it goes:", durations)
    assert all(status == "running" and d != "-" for status, d, _ in durations)
    seconds = [float(shown.rstrip("s")) for _, _, shown in durations]
    assert seconds[-1] > seconds[0]
    assert "running" in row.locator(".fj-run-meta").text_content()
    # the log opens inline under its run and follows the tail
    row.locator(".fj-log-button").click()
    log = row.locator("pre.fj-logs")
    page.wait_for_function(
        "document.querySelector('li.fj-run pre.fj-logs')?.textContent.includes('step 2')",
        timeout=30_000,
    )
    first = log.text_content()
    page.wait_for_function(
        f"document.querySelector('li.fj-run pre.fj-logs').textContent.length > {len(first)}",
        timeout=30_000,
    )
    tail = log.evaluate("p => p.scrollTop + p.clientHeight >= p.scrollHeight - 8")
    print("log lines then:", first.count("step"), "now:", log.text_content().count("step"))
    assert tail
    # the preview says the kernel is busy (the cell runs) rather than show a stale preview
    page.click(f"{NOTEBOOK} .jp-Cell >> nth=0")
    page.wait_for_function(
        f"document.querySelector('{SIDEBAR} .fj-loading')?.textContent.includes('busy')",
        timeout=30_000,
    )
    print("busy preview:", page.text_content(f"{SIDEBAR} .fj-loading"))
    assert page.get_attribute(f"{SIDEBAR} .fj-preview-body", "aria-busy") == "true"
    # focus stays on a row across refreshes; arrows move it; listbox semantics
    row.focus()
    wait_runs_requests(page, 2)
    focused = page.evaluate("document.activeElement.dataset.run || document.activeElement.tagName")
    print("focused after two refreshes:", focused)
    assert focused == run_id
    ring = row.evaluate("n => getComputedStyle(n).boxShadow")
    print("focus ring:", ring)
    assert ring != "none"
    row.locator("button[title='Copy the run id']").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    print("copied:", copied)
    assert copied == run_id
    assert page.get_attribute(f"{SIDEBAR} .fj-runs", "role") == "listbox"
    assert row.get_attribute("role") == "option" and row.get_attribute("aria-selected") == "true"
    page.screenshot(path=str(ARTIFACTS / "sidebar-live-run.png"))
    page.locator(f"{SIDEBAR} li.fj-phase-succeeded[data-run='{run_id}']").wait_for(timeout=60_000)
    # the icon per phase has the theme's colour for it
    colour = row.locator(".fj-state svg .jp-icon3").first.evaluate("n => getComputedStyle(n).fill")
    success = page.evaluate(
        "getComputedStyle(document.body).getPropertyValue('--jp-success-color1').trim()"
    )
    print("succeeded icon fill:", colour, "theme success colour:", success)
    assert colour == "rgb({}, {}, {})".format(*bytes.fromhex(success.lstrip("#")))
    # Re-run gives feedback, and the new run shows at the top of this notebook's runs
    row.click()
    row.locator("button[title^='Re-run']").click()
    page.wait_for_function(
        "[...document.querySelectorAll('.jp-Notification-Toast-success')]"
        ".some(t => t.textContent.includes('Re-running ticker'))",
        timeout=30_000,
    )
    page.wait_for_function(
        f"document.querySelectorAll('{SIDEBAR} li.fj-run').length === 2", timeout=30_000
    )
    # arrow keys move the selection and the focus along the listbox
    row.focus()
    page.keyboard.press("ArrowUp")
    moved = page.evaluate(
        "[document.activeElement.dataset.run, document.activeElement.getAttribute('aria-selected')]"
    )
    print("ArrowUp moved focus from", run_id, "to", moved)
    assert moved[0] != run_id and moved[1] == "true"
    assert row.get_attribute("aria-selected") == "false" and row.get_attribute("tabindex") == "-1"
    # "all notebooks": this notebook's runs first, then the others'
    page.click(f"{SIDEBAR} [title='Show the runs of every notebook']")
    page.wait_for_selector(f"{SIDEBAR} [title='Show only the runs of this notebook']")
    page.wait_for_timeout(500)
    notebooks = page.eval_on_selector_all(
        f"{SIDEBAR} li.fj-run .fj-run-meta", "ms => ms.map(m => m.textContent.split(' · ')[2])"
    )
    print("notebooks of the rows (none: this one), all notebooks shown:", notebooks)
    mine = [n is None for n in notebooks]
    assert mine[:2] == [True, True] and sorted(mine, reverse=True) == mine
    page.click(f"{SIDEBAR} [title='Show only the runs of this notebook']")


def test_palette_moves_focus_into_the_panel_and_polls_pause_when_hidden(
    page: Any, lab: tuple[str, Path]
):
    ensure_notebook(page, lab)
    page.click(f"{NOTEBOOK} .jp-Cell >> nth=2")
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+c")
    page.keyboard.type("flyte-jupyter: Open Sidebar")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "document.querySelector('#flyte-jupyter-sidebar').contains(document.activeElement)",
        timeout=10_000,
    )
    assert page.evaluate("document.activeElement.getAttribute('role')") == "option"
    # hidden (another sidebar shown): the run list is not polled
    page.click('[data-id="filebrowser"]')
    page.wait_for_timeout(1000)
    before = RUNS_REQUESTS["n"]
    page.wait_for_timeout(6000)
    hidden = RUNS_REQUESTS["n"] - before
    open_sidebar(page)
    wait_runs_requests(page, 2)
    print("run list requests in 6 s while hidden:", hidden)
    assert hidden == 0
    # clear finished: ended runs leave the list (not the history), a live one stays
    page.click(f"{SIDEBAR} [title='Show the runs of every notebook']")
    before = page.locator(f"{SIDEBAR} li.fj-run").count()
    page.click(f"{SIDEBAR} [title^='Clear finished runs']")
    page.wait_for_timeout(500)
    left = page.eval_on_selector_all(f"{SIDEBAR} li.fj-run", "ls => ls.map(l => l.className)")
    kept = len(api(lab, "flyte-jupyter/api/runs")["runs"])
    print(f"rows before clear: {before}, after: {len(left)} {left}, runs in the history: {kept}")
    assert before > len(left) and all("succeeded" not in c and "failed" not in c for c in left)
    assert kept >= before
    page.evaluate("localStorage.removeItem('flyte-jupyter:runs-cleared-before')")
    page.click(f"{SIDEBAR} [title='Show only the runs of this notebook']")


OVERFLOW_JS = """
() => {
  const side = document.querySelector('#flyte-jupyter-sidebar');
  const box = side.getBoundingClientRect();
  const cut = [];
  let checked = 0;
  for (const node of side.querySelectorAll('*')) {
    if (['PRE', 'TEXTAREA', 'INPUT', 'SELECT', 'OPTION', 'svg', 'path', 'g'].includes(node.tagName)
        || node.closest('pre, svg') || !node.offsetParent) continue;
    const own = [...node.childNodes].some(c => c.nodeType === 3 && c.textContent.trim());
    if (!own) continue;
    checked += 1;
    const style = getComputedStyle(node);
    const ellipsis = style.textOverflow === 'ellipsis' && !!node.title;
    const rect = node.getBoundingClientRect();
    if ((node.scrollWidth > node.clientWidth + 1 && !ellipsis && style.display !== 'inline')
        || (rect.right > box.right + 1 && !ellipsis)) {
      cut.push(node.className + ': ' + node.textContent.slice(0, 40));
    }
  }
  // selects and placeholders: their text must fit the field
  const ctx = document.createElement('canvas').getContext('2d');
  for (const field of side.querySelectorAll('input[placeholder], textarea[placeholder], select')) {
    if (!field.offsetParent) continue;
    const style = getComputedStyle(field);
    ctx.font = `${style.fontSize} ${style.fontFamily}`;
    const lines = field.tagName === 'SELECT'
      ? [field.selectedOptions[0]?.textContent ?? '']
      : field.placeholder.split('\\n');
    const room = field.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)
      - (field.tagName === 'SELECT' ? 16 : 0);
    checked += 1;
    if (Math.max(...lines.map(l => ctx.measureText(l).width)) > room) {
      cut.push(field.id + ': ' + lines[0]);
    }
  }
  return { checked, cut, width: box.width };
}
"""


def test_at_250_px_nothing_is_cut_export_says_why_and_errors_look_like_errors(
    page: Any, lab: tuple[str, Path]
):
    ensure_notebook(page, lab)
    open_sidebar(page)
    width = page.evaluate(f"document.querySelector('{SIDEBAR}').getBoundingClientRect().width")
    if abs(width - 250) > 2:  # drag the sidebar's edge to the default 250 px
        handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
        box = handle.bounding_box()
        page.mouse.move(box["x"] + 1, box["y"] + 100)
        page.mouse.down()
        page.mouse.move(box["x"] + 1 + (250 - width), box["y"] + 100, steps=5)
        page.mouse.up()
    # unfold every section
    for title in page.locator(f"{SIDEBAR} .lm-AccordionPanel-title[aria-expanded=false]").all():
        title.click()
    page.wait_for_selector("#fj-export-reason", timeout=10_000)
    page.wait_for_function(
        "document.querySelector('#fj-export-reason').textContent.includes('Docker')",
        timeout=30_000,
    )
    result = page.evaluate(OVERFLOW_JS)
    print(f"panel width {result['width']:.0f} px, text elements checked: {result['checked']}, "
          f"cut without ellipsis: {len(result['cut'])}", result["cut"])  # fmt: skip
    assert abs(result["width"] - 250) <= 2
    assert result["checked"] > 20 and result["cut"] == []
    export = page.locator(f"{SIDEBAR} .fj-export-view button")
    assert export.is_disabled()
    opacity = float(export.evaluate("b => getComputedStyle(b).opacity"))
    print("export:", page.text_content("#fj-export-reason"), "| opacity", opacity)
    assert opacity < 0.7
    page.locator(SIDEBAR).screenshot(path=str(ARTIFACTS / "sidebar-250-light.png"))
    # an error looks like one: the server's message, in the theme's error colour
    page.fill("#fj-setting-root_dir", "/etc")
    page.click(f"{SIDEBAR} .fj-form button[type=submit]")
    page.wait_for_selector(f"{SIDEBAR} .fj-apply-error", timeout=30_000)
    error = page.locator(f"{SIDEBAR} .fj-apply-error")
    colours = error.evaluate(
        "n => [getComputedStyle(n).color, getComputedStyle(document.body)"
        ".getPropertyValue('--jp-error-color1').trim()]"
    )
    print("error:", error.text_content(), colours)
    assert "outside the server root" in error.text_content()
    page.wait_for_selector(".jp-Notification-Toast-error", timeout=10_000)
    assert colours[0] != page.evaluate(
        f"getComputedStyle(document.querySelector('{SIDEBAR} .fj-status')).color"
    )


GREY_BLOCKS_JS = """
() => {
  const side = document.querySelector('#flyte-jupyter-sidebar');
  const lum = c => { const m = c.match(/[\\d.]+/g).map(Number);
    return m.length > 3 && m[3] === 0 ? null : 0.2126*m[0] + 0.7152*m[1] + 0.0722*m[2]; };
  let base = null;
  for (let n = side; n && base === null; n = n.parentElement) {
    base = lum(getComputedStyle(n).backgroundColor);
  }
  const blocks = [];
  for (const node of side.querySelectorAll('*')) {
    const r = node.getBoundingClientRect();
    if (r.width * r.height < 4000 || ['INPUT','SELECT','TEXTAREA','BUTTON'].includes(node.tagName))
      continue;
    const l = lum(getComputedStyle(node).backgroundColor);
    if (l !== null && Math.abs(l - base) > 40) blocks.push(node.className);
  }
  return { blocks, base };
}
"""


def test_dark_theme_has_no_heavy_grey_blocks(page: Any, lab: tuple[str, Path]):
    request = urllib.request.Request(
        f"{lab[0]}/lab/api/settings/@jupyterlab/apputils-extension:themes?token={TOKEN}",
        data=json.dumps({"raw": '{"theme": "JupyterLab Dark"}'}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).read()
    open_notebook(page, lab, "quickstart/quickstart.ipynb")
    page.wait_for_function(
        "document.body.dataset.jpThemeName === 'JupyterLab Dark'", timeout=30_000
    )
    open_sidebar(page)
    page.locator(f"{SIDEBAR} li.fj-run").first.wait_for(timeout=30_000)
    page.locator(f"{SIDEBAR} li.fj-run").first.click()
    page.locator(f"{SIDEBAR} li.fj-run pre.fj-logs").wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    result = page.evaluate(GREY_BLOCKS_JS)
    print("dark theme: blocks far from the panel background:", len(result["blocks"]), result)
    page.locator(SIDEBAR).screenshot(path=str(ARTIFACTS / "sidebar-250-dark.png"))
    assert result["blocks"] == []
    # no notebook open: each section says what to do
    page.goto(f"{lab[0]}/lab?reset&token={TOKEN}")
    page.wait_for_selector('[data-id="flyte-jupyter-sidebar"]', timeout=60_000)
    open_sidebar(page)
    page.wait_for_function(
        f"document.querySelector('{SIDEBAR} .fj-status').textContent.startsWith('Open a notebook')",
        timeout=30_000,
    )
    empty = page.eval_on_selector_all(f"{SIDEBAR} .fj-empty", "ps => ps.map(p => p.textContent)")
    print("empty states:", empty)
    assert any("Open a notebook" in text for text in empty)
    page.locator(SIDEBAR).screenshot(path=str(ARTIFACTS / "sidebar-250-dark-no-notebook.png"))


def test_a_failed_run_shows_its_traceback_once(page: Any, lab: tuple[str, Path]):
    # last: the dark theme test left no notebook open, so this one is the only one
    open_notebook(page, lab, "quickstart/fails.ipynb")
    open_sidebar(page)
    page.click(f"{NOTEBOOK} .jp-Cell >> nth=0")
    run_all_cells(page)
    row = page.locator(f"{SIDEBAR} li.fj-phase-failed", has_text="boom").first
    row.wait_for(timeout=60_000)
    row.click()
    row.locator("pre.fj-logs").wait_for(timeout=30_000)
    page.wait_for_function(
        "document.querySelector('li.fj-phase-failed pre.fj-logs')?.dataset.final === 'true'",
        timeout=30_000,
    )
    text = row.locator("pre.fj-logs").text_content()
    shown = text.count("Traceback (most recent call last)")
    print(f"tracebacks in the failed run's log view: {shown}")
    assert shown == 1 and "ValueError: boom-marker" in text
