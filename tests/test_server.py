"""The server extension's REST API in a real Jupyter server (pytest-jupyter's jp_fetch)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import tornado.httpclient
from conftest import write_tree

pytest_plugins = ["pytest_jupyter.jupyter_server"]

NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "c1",
            "metadata": {},
            "outputs": [],
            "source": "from shop.pricing import total\nresult = total([1, 2])",
        }
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"flyte_jupyter.server": True}}}


@pytest.fixture
def project(jp_root_dir):
    return write_tree(
        jp_root_dir / "project",
        {
            "pyproject.toml": "[project]\nname='p'\n\n[tool.flyte-jupyter]\ninclude = ['data/*']\n",
            "shop/__init__.py": "",
            "shop/pricing.py": (
                "def total(xs):\n    from shop.tax import rate\n    return sum(xs) * rate()\n"
            ),
            "shop/tax.py": "def rate():\n    return 2\n",
            "data/a.csv": "1\n",
            "analysis.ipynb": json.dumps(NOTEBOOK),
        },
    )


async def get_json(jp_fetch, *parts, **params):
    response = await jp_fetch("flyte-jupyter", "api", *parts, params=params)
    return json.loads(response.body)


async def test_api_requires_authentication(jp_fetch, project):
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await jp_fetch("flyte-jupyter", "api", "runs", headers={"Authorization": "token wrong"})
    assert err.value.code == 403


async def test_paths_outside_the_server_root_are_refused(jp_fetch, project):
    for bad in ("../etc/passwd", "/etc/passwd", "project/../../x.ipynb"):
        with pytest.raises(tornado.httpclient.HTTPClientError) as err:
            await jp_fetch("flyte-jupyter", "api", "preview", params={"path": bad})
        assert err.value.code in (400, 403), bad


async def test_settings_round_trip_through_the_project_file(jp_fetch, project):
    doc = await get_json(jp_fetch, "settings", path="project/analysis.ipynb")
    assert doc["root_dir"] == str(project.resolve())
    assert doc["settings"]["include"] == {"value": ["data/*"], "source": "project (pyproject.toml)"}
    assert doc["settings"]["copy_style"]["source"] == "default"
    assert "copy_style" in doc["fields"]
    body = json.dumps({"settings": {"copy_style": "all", "images": {"app": "registry/app:1"}}})
    await jp_fetch(
        "flyte-jupyter", "api", "settings", method="PUT", body=body,
        params={"path": "project/analysis.ipynb"},
    )  # fmt: skip
    assert 'copy_style = "all"' in (project / ".flyte-jupyter.toml").read_text()
    doc = await get_json(jp_fetch, "settings", path="project/analysis.ipynb")
    assert doc["settings"]["copy_style"] == {
        "value": "all",
        "source": "project (.flyte-jupyter.toml)",
    }
    assert doc["settings"]["images"]["value"] == {"app": "registry/app:1"}
    bad = json.dumps({"settings": {"copy_style": 3}})
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await jp_fetch(
            "flyte-jupyter", "api", "settings", method="PUT", body=bad,
            params={"path": "project/analysis.ipynb"},
        )  # fmt: skip
    assert err.value.code == 400


async def test_preview_matches_the_cli(jp_fetch, project):
    doc = await get_json(jp_fetch, "preview", path="project/analysis.ipynb")
    cli = subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", "bundle", str(project / "analysis.ipynb"),
         "--include", "data/*", "--dry-run", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    expected = json.loads(cli.stdout)
    assert doc["digest"] == expected["digest"]
    assert doc["files"] == expected["files"]
    reasons = {f["path"]: f["reason"] for f in doc["files"]}
    assert reasons["shop/tax.py"] == "lazy import in shop/pricing.py:2"
    assert reasons["data/a.csv"] == "include pattern 'data/*'"


async def test_runs_list_detail_logs_rerun_and_cancel(jp_fetch, project):
    from flyte_jupyter.core.bundle import build_bundle
    from flyte_jupyter.core.select import select_files
    from flyte_jupyter.core.submit import submit

    (project / "job.py").write_text(
        "import time\n\ndef hi():\n    print('hello')\n    return 5\n\n"
        "def slow():\n    print('started')\n    time.sleep(60)\n"
    )
    bundle = build_bundle(select_files(project, entries=[project / "job.py"]))
    done = submit(bundle, "job:hi", name="greeting")
    done.wait(60)
    runs = (await get_json(jp_fetch, "runs"))["runs"]
    assert runs[0]["id"] == done.id and runs[0]["status"] == "succeeded"
    assert runs[0]["name"] == "greeting"
    detail = await get_json(jp_fetch, "runs", done.id)
    assert detail["status"] == "succeeded" and detail["outcome"]["repr"] == "5"
    logs = await get_json(jp_fetch, "runs", done.id, "logs")
    assert "hello" in logs["logs"]
    response = await jp_fetch(
        "flyte-jupyter", "api", "runs", done.id, "rerun", method="POST", body=""
    )
    again = json.loads(response.body)["id"]
    assert again != done.id
    deadline = time.monotonic() + 60
    while (await get_json(jp_fetch, "runs", again))["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    slow = submit(bundle, "job:slow")
    deadline = time.monotonic() + 30
    while "started" not in (live := await get_json(jp_fetch, "runs", slow.id, "logs"))["logs"]:
        assert time.monotonic() < deadline, live
        time.sleep(0.2)
    assert live["final"] is False  # output of a run that is still going
    response = await jp_fetch(
        "flyte-jupyter", "api", "runs", slow.id, "cancel", method="POST", body=""
    )
    assert json.loads(response.body)["status"] == "cancelled"


async def test_export_context_only_is_refused_outside_root_and_runs_in_background(
    jp_fetch, project
):
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await jp_fetch(
            "flyte-jupyter", "api", "export", method="POST", body=json.dumps({"path": "../x.ipynb"})
        )
    assert err.value.code == 403
    response = await jp_fetch(
        "flyte-jupyter", "api", "export", method="POST",
        body=json.dumps({"path": "project/notebook-that-is-missing.ipynb"}),
    )  # fmt: skip
    job = json.loads(response.body)["id"]
    deadline = time.monotonic() + 30
    while (status := await get_json(jp_fetch, "export", job))["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status["status"] == "failed" and "is not a notebook file" in status["error"]


def test_both_extensions_are_enabled_after_install():
    server = subprocess.run(
        ["jupyter", "server", "extension", "list"], capture_output=True, text=True, check=True
    )
    text = server.stdout + server.stderr
    assert "flyte_jupyter.server" in text and "enabled" in text
    lab = subprocess.run(
        ["jupyter", "labextension", "list"], capture_output=True, text=True, check=True
    )
    line = next(x for x in (lab.stdout + lab.stderr).splitlines() if "flyte-jupyter" in x)
    assert "enabled" in line and "OK" in line


async def test_run_detail_never_unpickles_run_data_nor_imports_project_code(jp_fetch, tmp_path):
    import os

    from test_trust_runtime import submit_bomb

    run_id, markers = submit_bomb(tmp_path)  # a result whose unpickling runs project code
    detail = await get_json(jp_fetch, "runs", run_id)
    server_made = {"unpickled", f"imported-{os.getpid()}"}  # the server runs in this process
    created = [p.name for p in markers.iterdir() if p.name in server_made]
    print("files created by the result's __reduce__ in the server:", len(created))
    assert created == [] and "bomb_job" not in sys.modules
    outcome = detail["outcome"]
    assert (outcome["type"], outcome["module"]) == ("Bomb", "bomb_job")
    assert outcome["repr"].startswith("<bomb_job.Bomb object at")
