"""What the sidebar needs from the REST API: Apply changes only the keys sent (comments stay),
the run list names each run's notebook, and export says when no Docker engine answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tomllib
from conftest import write_tree

pytest_plugins = ["pytest_jupyter.jupyter_server"]

NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"flyte_jupyter.server": True}}}


async def test_apply_changes_only_the_sent_keys_and_keeps_comments(jp_fetch, jp_root_dir):
    project = write_tree(
        jp_root_dir / "p",
        {
            "pyproject.toml": "",
            "a.ipynb": json.dumps(NOTEBOOK),
            ".flyte-jupyter.toml": '# our team store\nstore = "file:///tmp/s"\nversion = "v1"\n',
        },
    )
    for settings in ({"copy_style": "all"}, {"version": ""}):
        await jp_fetch(
            "flyte-jupyter", "api", "settings", method="PUT",
            body=json.dumps({"settings": settings}), params={"path": "p/a.ipynb"},
        )  # fmt: skip
    text = (project / ".flyte-jupyter.toml").read_text()
    print(text)
    assert text.startswith("# our team store\n")
    assert tomllib.loads(text) == {"store": "file:///tmp/s", "copy_style": "all"}


async def test_runs_list_names_the_notebook_and_export_reports_no_engine(
    jp_fetch, jp_root_dir, monkeypatch
):
    notebook = jp_root_dir / "nb" / "analysis.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(json.dumps(NOTEBOOK))
    # a run submitted from a kernel of that notebook (Jupyter names it in JPY_SESSION_NAME)
    code = (
        "from flyte_jupyter.core.submit import submit\n"
        "print(submit(None, 'json:dumps', args=[1], name='In[3]', version='v1').id)"
    )
    env = {**os.environ, "JPY_SESSION_NAME": str(notebook)}
    run_id = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    rows = json.loads((await jp_fetch("flyte-jupyter", "api", "runs")).body)["runs"]
    row = next(r for r in rows if r["id"] == run_id)
    print("row:", row)
    assert row["notebook"] == "nb/analysis.ipynb" and row["name"] == "In[3]"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{jp_root_dir}/no-docker.sock")
    doc = json.loads((await jp_fetch("flyte-jupyter", "api", "export")).body)
    print("export:", doc)
    assert doc["available"] is False and "Docker" in doc["reason"]


async def test_preview_of_a_notebook_with_a_bare_flyte_run_cell(jp_fetch, jp_root_dir):
    cell = {"cell_type": "code", "execution_count": None, "id": "a", "metadata": {}, "outputs": []}
    book = {**NOTEBOOK, "cells": [{**cell, "source": "%%flyte_run\nx = 1"}]}
    write_tree(jp_root_dir / "q", {"pyproject.toml": "", "b.ipynb": json.dumps(book)})
    response = await jp_fetch("flyte-jupyter", "api", "preview", params={"path": "q/b.ipynb"})
    doc = json.loads(response.body)
    print("files:", [f["path"] for f in doc["files"]])
    assert doc["digest"].startswith("sha256:")
