"""Failures end clearly and secrets do not persist: real CLI processes, a real kernel, a real
Jupyter server and a real moto S3 server (issue 9 items 6, 10, 11, 13, 15)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import servers
from cli_process import cli
from conftest import process_alive, write_tree
from kernel import extension_kernel

from flyte_jupyter.core import history
from flyte_jupyter.core.errors import RunError
from flyte_jupyter.core.storage import Store
from flyte_jupyter.core.submit import Run
from flyte_jupyter.runtime import blobs

pytest_plugins = ["pytest_jupyter.jupyter_server"]

APP = {
    "pyproject.toml": "[project]\nname='app'\n",
    "app.py": """
        import os
        import time

        def secret(name="MY_SECRET"):
            return os.environ.get(name, "")[::-1]  # reversed: the value itself shows nowhere

        def sleepy(seconds=20):
            print("started", flush=True)
            time.sleep(seconds)
            return seconds

        def quiet():
            return 1
    """,
}


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"flyte_jupyter.server": True}}}


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "app", APP)


def one_line(stderr: str) -> str:
    """Bad input or a failed run: one line on stderr, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


def history_files() -> dict[Path, bytes]:
    """The history database with its WAL and shared-memory files."""
    folder = history.history_path().parent
    return {p: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def store_files(store_dir: Path) -> list[Path]:
    return [p for p in store_dir.rglob("*") if p.is_file()] if store_dir.exists() else []


# --- 6: environment values never persist ------------------------------------------------------


def test_env_values_reach_the_run_but_never_the_history_specs_or_show(app: Path, tmp_path: Path):
    value = "s3cr3t-" + secrets.token_hex(8)
    store = tmp_path / "store"
    done = cli(
        "run", "app.py:secret", "--env", f"MY_SECRET={value}", "--store", str(store), cwd=app
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == value[::-1]  # the run saw it
    run_id = history.recent(1)[0].id
    shown = cli("runs", "show", run_id, cwd=app)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["spec"]["env_names"] == ["MY_SECRET"]
    places = history_files()
    places[store / "runs" / run_id / "spec.json"] = (
        store / "runs" / run_id / "spec.json"
    ).read_bytes()
    places[Path("runs show")] = shown.stdout.encode()
    places[Path("describe")] = json.dumps(Run.from_history(run_id).describe()).encode()
    found = sum(data.count(value.encode()) for data in places.values())
    print(f"places checked: {len(places)}, secret occurrences: {found}")
    assert found == 0


def test_rerun_takes_env_values_from_this_process_or_names_the_missing_ones(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    done = cli(
        "run", "app.py:secret", "--env", "MY_SECRET=first", "--store", str(tmp_path / "s"), cwd=app
    )
    assert done.returncode == 0, done.stderr
    run = Run.from_history(history.recent(1)[0].id)
    monkeypatch.delenv("MY_SECRET", raising=False)
    before = len(history.recent())
    with pytest.raises(RunError, match="set MY_SECRET in this process's environment"):
        run.rerun()
    assert len(history.recent()) == before  # nothing recorded for the refused re-run
    monkeypatch.setenv("MY_SECRET", "from-here")
    assert run.rerun().result(timeout=60) == "from-here"[::-1]


async def test_sidebar_rerun_needs_the_env_values_in_the_server_environment(
    jp_fetch, jp_root_dir, monkeypatch: pytest.MonkeyPatch
):
    import tornado.httpclient

    app = write_tree(jp_root_dir / "app", APP)
    done = cli(
        "run", "app.py:secret", "--env", "MY_SECRET=first", "--store", str(app / "s"), cwd=app
    )
    assert done.returncode == 0, done.stderr
    run_id = history.recent(1)[0].id
    detail = json.loads((await jp_fetch("flyte-jupyter", "api", "runs", run_id)).body)
    assert "first" not in json.dumps(detail) and detail["spec"]["env_names"] == ["MY_SECRET"]
    monkeypatch.delenv("MY_SECRET", raising=False)
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await jp_fetch("flyte-jupyter", "api", "runs", run_id, "rerun", method="POST", body="")
    assert "MY_SECRET" in refused.value.response.body.decode()
    monkeypatch.setenv("MY_SECRET", "server-side")
    response = await jp_fetch(
        "flyte-jupyter", "api", "runs", run_id, "rerun", method="POST", body=""
    )
    again = Run.from_history(json.loads(response.body)["id"])
    again.wait(60)
    assert again.result() == "server-side"[::-1]


# --- 10: --timeout ends the run -------------------------------------------------------------------


def test_cli_timeout_cancels_the_run_and_says_so(app: Path, tmp_path: Path):
    started = time.monotonic()
    done = cli("run", "app.py:sleepy", "--timeout", "3", "--store", str(tmp_path / "s"), cwd=app)
    elapsed = time.monotonic() - started
    record = history.recent(1)[0]
    print(f"returned after {elapsed:.1f}s (sleep 20, timeout 3)")
    assert done.returncode == 1 and elapsed < 15
    assert one_line(done.stderr.split("\n", 1)[1]) == (
        f"flyte-jupyter run: run {record.id} timed out after 3s and was cancelled"
    )
    assert record.status == "cancelled" and not process_alive(record.pid)


@pytest.mark.parametrize("value", ["-3", "0", "abc", "nan"])
def test_cli_timeout_must_be_a_positive_number(app: Path, value: str):
    done = cli("run", "app.py:sleepy", f"--timeout={value}", cwd=app)
    assert done.returncode == 2
    assert "--timeout" in one_line(done.stderr)
    assert history.recent() == []  # no run started


def test_magic_timeout_cancels_the_run_and_bad_values_are_usage_errors(app: Path):
    with extension_kernel(app) as kernel:
        kernel.ok("import time")
        started = time.monotonic()
        reply = kernel.execute("%%flyte_run --timeout 3\nprint('go', flush=True)\ntime.sleep(20)")
        elapsed = time.monotonic() - started
        print(f"magic returned after {elapsed:.1f}s (sleep 20, timeout 3)")
        assert elapsed < 15 and reply.error is not None
        record = history.recent(1)[0]
        assert f"run {record.id} timed out after 3s and was cancelled" in reply.error_text
        assert record.status == "cancelled" and not process_alive(record.pid)
        for value in ("-1", "0", "soon"):
            bad = kernel.execute(f"%%flyte_run --timeout {value}\nx = 1")
            assert bad.error is None and bad.stderr.startswith("UsageError: "), bad
            assert "--timeout" in bad.stderr and bad.stderr.count("\n") == 1
        assert len(history.recent()) == 1


# --- 11: runs refused before start never stay `submitted` ---------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [("nosuchref", "not image 'nosuchref'"), ("python=/nonexistent", "/nonexistent not found")],
)
def test_a_refused_image_is_refused_before_upload_and_record(
    app: Path, tmp_path: Path, image: str, message: str
):
    store = tmp_path / "store"
    done = cli("run", "app.py:quiet", "--image", image, "--store", str(store), cwd=app)
    assert done.returncode == 2 and message in one_line(done.stderr)
    stuck = [r for r in history.recent() if r.status == "submitted"]
    print(f"history rows: {len(history.recent())}, stuck submitted: {len(stuck)}, "
          f"store files: {len(store_files(store))}")  # fmt: skip
    assert history.recent() == [] and store_files(store) == []


def test_docker_refuses_an_image_it_cannot_find_before_upload_and_record(app: Path, tmp_path: Path):
    docker = pytest.importorskip("docker")
    try:
        docker.from_env().ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers here ({exc}); scripts/docker-engine.sh starts one")
    store = tmp_path / "store"
    done = cli("run", "app.py:quiet", "--executor", "docker", "--image", "nosuchref:v0",
               "--store", str(store), cwd=app)  # fmt: skip
    assert done.returncode == 2
    assert "image 'nosuchref:v0' is not on the Docker engine" in one_line(done.stderr)
    print(f"history rows: {len(history.recent())}, store files: {len(store_files(store))}")
    assert history.recent() == [] and store_files(store) == []


def test_a_launch_that_fails_is_recorded_failed_and_result_returns_at_once(
    app: Path, tmp_path: Path
):
    fake = tmp_path / "fake-python"
    fake.write_bytes(b"\x00\x01 not a program")
    fake.chmod(0o755)
    done = cli("run", "app.py:quiet", "--image", f"python={fake}", cwd=app)
    assert done.returncode == 1 and "could not start on local" in one_line(done.stderr)
    (record,) = history.recent()
    assert record.status == "failed" and record.error.startswith("not started: ")
    started = time.monotonic()
    with pytest.raises(RunError, match="not started"):
        Run.from_history(record.id).result()
    assert time.monotonic() - started < 5


# --- 13: runs show/logs/code --------------------------------------------------------------------


def test_runs_commands_keep_the_store_endpoint_but_never_its_keys(
    app: Path, s3_server: servers.Server
):
    bucket = f"b{uuid.uuid4().hex[:12]}"
    options = {**servers.s3_options(s3_server.url), "key": "testing", "secret": "testing"}
    fs, _ = blobs.filesystem(f"s3://{bucket}", options)
    fs.mkdir(bucket)
    flags = [f"--storage-option={k}={v}" for k, v in options.items()]
    done = cli("run", "app.py:sleepy", "--arg", "seconds=0", "--store", f"s3://{bucket}/p",
               *flags, cwd=app)  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = history.recent(1)[0].id
    # later commands are given no storage options: the spec's (without keys) are enough
    shown = cli("runs", "show", run_id, cwd=app)
    assert shown.returncode == 0, shown.stderr
    kept = json.loads(shown.stdout)["spec"]["storage_options"]
    assert kept["endpoint_url"] == s3_server.url and not {"key", "secret"} & set(kept)
    assert json.loads(shown.stdout)["phases"]  # read from moto, not from AWS
    logs = cli("runs", "logs", run_id, cwd=app)
    assert logs.returncode == 0 and "started" in logs.stdout, logs.stderr
    code = cli("runs", "code", run_id, str(app.parent / "code"), cwd=app)
    assert code.returncode == 0 and (app.parent / "code" / "app.py").is_file(), code.stderr
    spec = Store(f"s3://{bucket}/p", options).get_bytes(f"s3://{bucket}/p/runs/{run_id}/spec.json")
    stored = {"spec.json": spec, **history_files()}
    leaks = sum(b'"secret"' in data or b'"key"' in data for data in stored.values())
    print(f"storage keys found in spec.json and history: {leaks}")
    assert leaks == 0


def test_a_deleted_store_and_missing_logs_are_one_line_each(app: Path, tmp_path: Path):
    store = tmp_path / "store"
    assert cli("run", "app.py:quiet", "--store", str(store), cwd=app).returncode == 0
    run_id = history.recent(1)[0].id
    logs = cli("runs", "logs", run_id, cwd=app)
    assert logs.returncode == 1 and logs.stdout == ""
    assert one_line(logs.stderr) == f"run {run_id} printed nothing (its log is empty)"
    shutil.rmtree(store)
    shown = cli("runs", "show", run_id, cwd=app)
    assert shown.returncode == 0 and "are gone from its store" in one_line(shown.stderr)
    logs = cli("runs", "logs", run_id, cwd=app)
    assert logs.returncode == 1 and "are gone from its store" in one_line(logs.stderr)
    code = cli("runs", "code", run_id, str(tmp_path / "code"), cwd=app)
    assert code.returncode == 1 and "are gone from its store" in one_line(code.stderr)


def test_runs_into_a_closed_pipe_exits_quietly(app: Path, tmp_path: Path):
    for _ in range(3):
        assert cli("run", "app.py:quiet", "--store", str(tmp_path / "s"), cwd=app).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyte_jupyter", "runs"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=app,
    )
    proc.stdout.close()  # the reader is gone before anything is written, as with `| head -0`
    stderr = proc.stderr.read().decode()
    proc.wait(60)
    print(f"exit {proc.returncode}, stderr bytes: {len(stderr)}")
    assert stderr == "" and proc.returncode == 1


# --- 15: history and notebook damage --------------------------------------------------------------


def test_a_damaged_history_is_one_line_naming_the_file_and_nothing_is_uploaded(
    app: Path, tmp_path: Path
):
    path = history.history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a database " * 200)
    listed = cli("runs", cwd=app)
    assert listed.returncode == 1
    line = one_line(listed.stderr)
    assert f"the run history {path} is damaged" in line and "move it away" in line
    store = tmp_path / "store"
    ran = cli("run", "app.py:quiet", "--store", str(store), cwd=app)
    assert ran.returncode == 1 and f"the run history {path} is damaged" in one_line(ran.stderr)
    print(f"store files written: {len(store_files(store))}")
    assert store_files(store) == []


def test_a_data_dir_that_is_a_file_is_one_line(app: Path, tmp_path: Path):
    blocker = tmp_path / "data-file"
    blocker.write_text("not a folder")
    done = cli("runs", cwd=app, env={"FLYTE_JUPYTER_DATA_DIR": str(blocker)})
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert f"cannot create the data folder {blocker}" in line and "FLYTE_JUPYTER_DATA_DIR" in line


def test_a_notebook_cell_without_source_is_one_line_naming_notebook_and_cell(app: Path):
    cell = {"cell_type": "code", "id": "a", "metadata": {}, "outputs": [], "execution_count": None}
    book = {
        "cells": [{**cell, "source": "x = 1"}, {**cell, "id": "b"}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (app / "hand.ipynb").write_text(json.dumps(book))
    done = cli("bundle", "hand.ipynb", "--dry-run", cwd=app)
    assert done.returncode == 2
    line = one_line("\n".join(x for x in done.stderr.splitlines() if "Warning" not in x
                              and not x.startswith("  _validate")))  # fmt: skip
    assert f'notebook {app / "hand.ipynb"}: cell 2 has no "source"' in line
