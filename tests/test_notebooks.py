"""Every example notebook, executed top to bottom by nbclient in a real kernel."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, tmp_path: Path) -> list[dict]:
    """Run a copy of notebooks/<name>/ (so the checkout stays clean); the executed cells."""
    folder = shutil.copytree(NOTEBOOKS / name, tmp_path / name)
    book = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    NotebookClient(
        book, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return book.cells


def cell(cells: list[dict], marker: str) -> dict:
    return next(c for c in cells if c.cell_type == "code" and marker in c.source)


def text(c: dict, kind: str = "") -> str:
    """All output text of a cell (streams, results, displays, errors)."""
    parts = []
    for out in c.outputs:
        if out.output_type == "stream" and (not kind or out.name == kind):
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data") and not kind:
            parts.append(out.data.get("text/plain", "") + out.data.get("text/html", ""))
        elif out.output_type == "error" and not kind:
            parts.append("\n".join([out.ename, out.evalue, *out.traceback]))
    return "".join(parts)


def errors(cells: list[dict]) -> list[str]:
    """Error outputs of cells not tagged as expected to raise."""
    return [
        text(c)
        for c in cells
        if c.cell_type == "code"
        and "raises-exception" not in c.metadata.get("tags", [])
        and any(o.output_type == "error" for o in c.outputs)
    ]


def test_quickstart(tmp_path):
    cells = execute("quickstart", tmp_path)
    assert errors(cells) == []
    run = cell(cells, "summary = summarize(prices)")
    assert "{'items': 3, 'total': 38.34}" in text(run)
    assert "computed in process" in text(run, "stdout")
    assert "flyte-jupyter run" in text(run) and text(run, "stderr") == ""  # a status display
    preview = text(cell(cells, "%%flyte_bundle"))
    assert "shop/discounts.py" in preview and "lazy import in shop/pricing.py" in preview
    assert "prices" in preview  # the data value and its pickled size
    assert "{'items': 3, 'total': 34.18}" in text(cell(cells, "%flyte_run summarize"))
    assert text(cell(cells, "%flyte_runs")).count("succeeded") >= 4


def test_lazy_imports(tmp_path):
    cells = execute("lazy_imports", tmp_path)
    assert errors(cells) == []
    preview = text(cell(cells, "%%flyte_bundle"))
    assert "reports/formats.py" in preview and "lazy import in reports/render.py:9" in preview
    assert "accuracy |     0.93" in text(cell(cells, "table = render(metrics)"), "stdout")
    assert "ACCURACY" in text(cell(cells, "%flyte_run render_upper"))


def test_data_files(tmp_path):
    cells = execute("data_files", tmp_path)
    assert errors(cells) == []
    assert "150.5" in text(cell(cells, "eu_total = total"))
    assert "'EUR 80" in text(cell(cells, "--copy-style all"))
    config = text(cell(cells, "%flyte_config include"))
    assert "['data/*.csv']" in config and "session" in config
    assert "80.25" in text(cell(cells, '%flyte_run total("us")'))


def test_images_and_versions(tmp_path):
    cells = execute("images_and_versions", tmp_path)
    assert errors(cells) == []
    assert "'spread': 2.681" in text(cell(cells, "--image analytics"))
    runs = text(cell(cells, "%flyte_runs 3"))
    assert "v1.0.0" in runs and "python=" in runs


def test_errors(tmp_path):
    cells = execute("errors", tmp_path)
    assert errors(cells) == []
    missing = text(cell(cells, '%%flyte_run\nload_plugin("plugin")'))
    assert "ModuleNotFoundError" in missing
    # the missing name is "scripts" or "scripts.plugin", depending on what else is installed
    assert "exists under root_dir (scripts/" in missing and "but was not shipped" in missing
    assert "include=['scripts/" in missing
    assert "'plugin loaded'" in text(cell(cells, "--include 'scripts/*.py'"))
    raised = re.sub(r"\x1b\[[0-9;]*m", "", text(cell(cells, "normalize([0, 0])")))
    assert "\nZeroDivisionError: division by zero" in raised
    assert "in normalize" in raised and "calc/__init__.py:5, in ratio" in raised
    assert "In[" in raised and "_flyte_notebook" not in raised
    usage = text(cell(cells, "--copy-style everything"), "stderr")
    assert usage.startswith("UsageError:") and "--copy-style 'everything' is not allowed" in usage
    assert "'squares' (generator) cannot be sent" in text(cell(cells, "sum(squares)"))


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.iterdir() if p.is_dir()))
def test_every_notebook_is_committed_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / name / f"{name}.ipynb", as_version=4)
    nbformat.validate(book)
    assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code")
