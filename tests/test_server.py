"""The server extension's REST API in a real Jupyter server (pytest-jupyter's jp_fetch)."""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
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
    from flyte_jupyter.core.selection import select_files
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
    assert runs[0]["final"] is True  # the sidebar keeps no list of phases
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
    listed = {r["id"]: r for r in (await get_json(jp_fetch, "runs"))["runs"]}
    assert listed[slow.id]["final"] is False and listed[slow.id]["status"] == "running"
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
    assert status["status"] == "failed"
    assert "notebook-that-is-missing.ipynb does not exist" in status["error"]


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


# --- trust and failure (issue 9 items 7-8): root confinement, a free event loop, input checks


async def api_error(jp_fetch, *parts, method="GET", body=None, params=None):
    """The HTTP status and the JSON error document of a request that must fail."""
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await jp_fetch("flyte-jupyter", "api", *parts, method=method, body=body, params=params)
    return err.value.code, json.loads(err.value.response.body)


def files_outside(root, top):
    """Every file under `top` that is not under `root`, with its size and mtime."""
    return {
        p: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in top.rglob("*")
        if p.is_file() and not p.is_relative_to(root)
    }


async def test_settings_are_never_written_above_the_server_root(jp_fetch, jp_root_dir):
    outer = jp_root_dir.parent
    (outer / "pyproject.toml").write_text("[tool.flyte-jupyter]\ncopy_style = 'none'\n")
    write_tree(jp_root_dir / "loose", {"analysis.ipynb": json.dumps(NOTEBOOK)})
    before = files_outside(jp_root_dir, outer)
    params = {"path": "loose/analysis.ipynb"}
    doc = await get_json(jp_fetch, "settings", **params)
    assert doc["root_dir"] == str((jp_root_dir / "loose").resolve())
    assert doc["settings"]["copy_style"]["source"] == "default"  # the pyproject above is not read
    body = json.dumps({"settings": {"copy_style": "all"}})
    response = await jp_fetch(
        "flyte-jupyter", "api", "settings", method="PUT", body=body, params=params
    )
    saved = json.loads(response.body)["saved"]
    assert saved == str((jp_root_dir / "loose/.flyte-jupyter.toml").resolve())
    # a settings file that links out of the root is refused, and the target is left alone
    target = outer / "elsewhere.toml"
    target.write_text("# not yours\n")
    write_tree(jp_root_dir / "linked", {"pyproject.toml": "", "a.ipynb": json.dumps(NOTEBOOK)})
    (jp_root_dir / "linked/.flyte-jupyter.toml").symlink_to(target)
    before[target] = (target.stat().st_size, target.stat().st_mtime_ns)
    code, err = await api_error(
        jp_fetch, "settings", method="PUT", body=body, params={"path": "linked/a.ipynb"}
    )
    assert code == 403 and "links outside the server root" in err["message"]
    code, err = await api_error(jp_fetch, "preview", params={"path": "linked/a.ipynb"})
    assert code == 403
    after = files_outside(jp_root_dir, outer)
    written = [p for p in after if before.get(p) != after[p]]
    print("files written outside root:", len(written))
    assert written == []


async def test_root_dir_setting_outside_the_server_root_is_refused(jp_fetch, jp_root_dir):
    project = write_tree(
        jp_root_dir / "p",
        {"pyproject.toml": "", "analysis.ipynb": json.dumps(NOTEBOOK), "shop/__init__.py": ""},
    )
    (jp_root_dir / "etc-link").symlink_to("/etc")
    params = {"path": "p/analysis.ipynb"}
    for value in ("/etc", "../..", "../etc-link"):
        (project / ".flyte-jupyter.toml").write_text(f"root_dir = {json.dumps(value)}\n")
        code, err = await api_error(jp_fetch, "preview", params=params)
        assert code == 400 and "outside the server root" in err["message"], err
        assert "passwd" not in json.dumps(err)
        code, err = await api_error(
            jp_fetch, "export", method="POST", body=json.dumps({"path": "p/analysis.ipynb"})
        )
        assert code == 400 and "outside the server root" in err["message"], err
    (project / ".flyte-jupyter.toml").unlink()
    body = json.dumps({"settings": {"root_dir": "/etc"}})
    code, err = await api_error(jp_fetch, "settings", method="PUT", body=body, params=params)
    assert code == 400 and "root_dir /etc is outside the server root" in err["message"]
    assert not (project / ".flyte-jupyter.toml").exists()
    # a root_dir inside the root still works, relative to the notebook's folder as in the kernel
    body = json.dumps({"settings": {"root_dir": "."}})
    await jp_fetch("flyte-jupyter", "api", "settings", method="PUT", body=body, params=params)
    doc = await get_json(jp_fetch, "preview", **params)
    listed = [f["path"] for f in doc["files"]]
    print("files listed from outside root:", sum(p.startswith("/") for p in listed))
    assert doc["root_dir"] == str(project.resolve()) and "_flyte_notebook/__init__.py" in listed


async def test_status_answers_while_a_big_preview_runs(jp_fetch, jp_root_dir):
    big = jp_root_dir / "big"
    write_tree(big, {"pyproject.toml": "[tool.flyte-jupyter]\ncopy_style = 'all'\n"})
    write_tree(big, {"analysis.ipynb": json.dumps(NOTEBOOK)})
    for d in range(40):
        folder = big / f"data/d{d}"
        folder.mkdir(parents=True)
        for i in range(500):
            (folder / f"f{i}.txt").write_text(f"{d} {i}\n")
    preview = asyncio.ensure_future(
        jp_fetch("flyte-jupyter", "api", "preview", params={"path": "big/analysis.ipynb"})
    )
    await asyncio.sleep(0.2)
    latencies = []  # of the status answers that came while the preview was still running
    while not preview.done() and len(latencies) < 10:
        start = time.monotonic()
        await jp_fetch("api", "status")
        if not preview.done():
            latencies.append(time.monotonic() - start)
        await asyncio.sleep(0.05)
    doc = json.loads((await preview).body)
    rounded = [round(t, 3) for t in latencies]
    print(f"status latencies (s) during a {len(doc['files'])}-file preview: {rounded}")
    assert len(latencies) >= 3  # answered while the preview was still running
    assert statistics.median(latencies) < 0.2 and max(latencies) < 1.0
    assert len(doc["files"]) > 20000


async def test_oversize_bodies_are_refused_unread(jp_fetch, project):
    params = {"path": "project/analysis.ipynb"}
    huge = json.dumps({"settings": {"copy_style": "x" * (2 * 1024 * 1024)}})
    code, err = await api_error(jp_fetch, "settings", method="PUT", body=huge, params=params)
    assert code == 413 and "over 1024 KB" in err["message"]
    written = project / ".flyte-jupyter.toml"
    print("bytes written by an oversize PUT:", written.stat().st_size if written.exists() else 0)
    assert not written.exists()
    code, err = await api_error(jp_fetch, "export", method="POST", body=huge)
    assert code == 413

    async def chunked(write):  # no Content-Length: counted while it streams, never kept
        for _ in range(48):
            await write(b"x" * 65536)

    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await jp_fetch(
            "flyte-jupyter", "api", "settings", method="PUT", body_producer=chunked, params=params
        )
    assert err.value.code == 413 and not written.exists()


async def test_bad_input_is_a_400_with_a_message(jp_fetch, project):
    params = {"path": "project/analysis.ipynb"}
    cases = [
        (("runs",), "GET", None, {"limit": "abc"}, "limit must be a whole number"),
        (("runs",), "GET", None, {"limit": "-3"}, "limit must be a whole number"),
        (("settings",), "PUT", '{"settings": null}', params, '"settings" as a JSON object'),
        (("settings",), "PUT", "[1, 2]", params, "must be a JSON object"),
        (("settings",), "PUT", "{not json", params, "not JSON"),
        (("settings",), "PUT", '{"settings": {"nosuch": 1}}', params, "unknown setting"),
        (("export",), "POST", '{"path": "project/analysis.ipynb", "include": 5}', None,
         "include must be a list of globs"),
        (("export",), "POST", '{"path": "project/analysis.ipynb", "version": [1]}', None,
         "version must be a string"),
        (("export",), "POST", '{"path": 7}', None, "relative to the server root"),
    ]  # fmt: skip
    for parts, method, body, query, expected in cases:
        code, err = await api_error(jp_fetch, *parts, method=method, body=body, params=query)
        assert code == 400 and expected in err["message"], (parts, body, query, err)
        assert set(err) == {"message"}
    broken = dict(NOTEBOOK, cells=[{"cell_type": "code", "metadata": {}, "outputs": []}])
    (project / "broken.ipynb").write_text(json.dumps(broken))
    code, err = await api_error(jp_fetch, "preview", params={"path": "project/broken.ipynb"})
    assert code == 400 and "broken.ipynb" in err["message"], err


async def test_a_failing_export_job_ends_failed_with_its_error(jp_fetch, project):
    # a glob that compiles to a bad regex fails inside the job with a non-flyte-jupyter error
    response = await jp_fetch(
        "flyte-jupyter", "api", "export", method="POST",
        body=json.dumps({"path": "project/analysis.ipynb", "include": ["data/[z-a]"]}),
    )  # fmt: skip
    job = json.loads(response.body)["id"]
    deadline = time.monotonic() + 30
    while (status := await get_json(jp_fetch, "export", job))["status"] == "running":
        assert time.monotonic() < deadline, "the export job never ended"
        await asyncio.sleep(0.1)
    assert status["status"] == "failed" and "bad character range" in status["error"], status


async def test_errors_share_one_shape_404_400_5xx(jp_fetch, project, tmp_path):
    from flyte_jupyter.core.bundle import build_bundle
    from flyte_jupyter.core.selection import select_files
    from flyte_jupyter.core.submit import submit

    code, err = await api_error(jp_fetch, "runs", "nosuchrun")
    assert (code, set(err)) == (404, {"message"}) and "no run 'nosuchrun'" in err["message"]
    code, err = await api_error(jp_fetch, "runs", "nosuchrun", "logs")
    assert code == 404
    code, err = await api_error(jp_fetch, "export", "0123456789ab")
    assert (code, set(err)) == (404, {"message"})
    code, err = await api_error(jp_fetch, "preview", params={"path": "project/missing.ipynb"})
    assert (code, set(err)) == (404, {"message"})
    code, err = await api_error(jp_fetch, "preview", params={"path": ""})
    assert (code, set(err)) == (400, {"message"})
    # a run whose store is broken: a server-side failure (5xx), not "no such run"
    (project / "job.py").write_text("def hi():\n    return 5\n")
    store = tmp_path / "store"
    bundle = build_bundle(select_files(project, entries=[project / "job.py"]))
    run = submit(bundle, "job:hi", store=str(store))
    assert run.wait(60) == "succeeded"
    shutil.rmtree(store)
    store.write_text("not a directory")
    code, err = await api_error(jp_fetch, "runs", run.id)
    print("broken store ->", code, err["message"])
    assert 500 <= code < 600 and set(err) == {"message"} and str(store) in err["message"]
    assert "Traceback" not in err["message"]
