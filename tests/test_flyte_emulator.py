"""The Flyte control-plane emulator answers the real flyte SDK (not our package): a client in its
own process runs `flyte.run` against it, the emulator starts `a0` as a process or a container,
and the client sees outputs, failures and aborts the way it would from a Flyte cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_tree
from flyte_emulator import FlyteEmulator

PROJECT = {
    "tasks.py": """
        import os
        import sys
        import time

        import flyte

        env = flyte.TaskEnvironment("t")


        @env.task
        def add(a: int, b: int) -> int:
            print(f"adding {a} and {b} with the python in {sys.prefix}")
            return a + b


        @env.task
        def boom(a: int) -> int:
            raise ValueError(f"boom {a}")


        @env.task
        def crash(code: int) -> int:
            print("crashing", flush=True)
            os._exit(code)


        @env.task
        def sleepy(seconds: int) -> int:
            print("sleeping", flush=True)
            time.sleep(seconds)
            return seconds
        """,
    # argv: config path, task name, JSON list of arguments. Prints one JSON line when the run
    # is created and one with the result. For `sleepy` it waits for RUNNING and the task's
    # first line in the live log, prints, reads a line from stdin (the test looks at the pod
    # meanwhile) and aborts the run.
    "client.py": """
        import json
        import sys
        from pathlib import Path

        import flyte
        import tasks

        flyte.init_from_config(sys.argv[1], root_dir=Path.cwd())
        task = getattr(tasks, sys.argv[2])
        run = flyte.with_runcontext(copy_style="loaded_modules").run(task, *json.loads(sys.argv[3]))
        print(json.dumps({"run": run.name}), flush=True)
        if task is tasks.sleepy:
            run.wait(quiet=True, wait_for="running")
            live = next(line for line in run.get_logs() if "sleeping" in line)
            print(json.dumps({"running": run.phase.name, "live": live.strip()}), flush=True)
            sys.stdin.readline()
            run.abort()
        run.wait(quiet=True)
        result = {"phase": run.phase.name}
        try:
            run.raise_for_status()
            result["outputs"] = list(run.outputs())
            result["logs"] = list(run.get_logs())
        except Exception as exc:
            result["error"] = [type(exc).__name__, str(exc)]
        print(json.dumps(result), flush=True)
        """,
}


def start_client(
    emulator: FlyteEmulator, project: Path, task: str, *args: object
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "client.py", str(emulator.config_path), task, json.dumps(args)],
        cwd=project,
        env={**os.environ, **emulator.client_env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_json(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"client exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
    return json.loads(line)


def run_client(emulator: FlyteEmulator, project: Path, task: str, *args: object) -> dict:
    """Run `task(*args)` through the emulator from a client process; the run's result."""
    proc = start_client(emulator, project, task, *args)
    try:
        name = read_json(proc)["run"]
        result = read_json(proc)
        proc.wait(30)
    finally:
        proc.kill()
    return {"run": name, **result}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "project", PROJECT)


def check_add(emulator: FlyteEmulator, project: Path) -> dict:
    started = time.monotonic()
    result = run_client(emulator, project, "add", 1, 2)
    print(f"add(1, 2) through the emulator: {time.monotonic() - started:.1f} s")
    assert result["phase"] == "SUCCEEDED", result
    assert result["outputs"] == [3]
    assert any("adding 1 and 2" in line for line in result["logs"]), result["logs"]
    assert emulator.run_phase(result["run"]) == "SUCCEEDED"
    assert emulator.run_names == [result["run"]]
    assert not emulator.pod_alive(result["run"])
    # One bundle upload, one run, and the pod ran exactly the TaskSpec's args, filled in.
    assert [u["filename"][:4] for u in emulator.uploads] == ["fast"]
    assert emulator.calls.count("CreateRun") == 1
    (request,) = emulator.create_run_requests
    spec_args = list(request.task_spec.task_template.container.args)
    argv = emulator.pod_argv(result["run"])
    print("templates left in the pod's argv:", sum("{{" in a for a in argv))
    assert not any("{{" in a for a in argv)
    assert argv[0] == spec_args[0] == "a0" and len(argv) == len(spec_args)
    assert argv[argv.index("--tgz") + 1] == emulator.uploads[0]["native_url"]
    assert argv[argv.index("--run-name") + 1] == result["run"]
    return result


def test_add_runs_in_a_process_pod(flyte_emulator: FlyteEmulator, project: Path):
    result = check_add(flyte_emulator, project)
    assert any(f"python in {sys.prefix}" in line for line in result["logs"])
    for rpc in ("SelectCluster", "UploadInputs", "WatchActionDetails", "GetActionData"):
        assert rpc in flyte_emulator.calls


def test_raising_task_fails_the_run(flyte_emulator: FlyteEmulator, project: Path):
    result = run_client(flyte_emulator, project, "boom", 5)
    assert result["phase"] == "FAILED"
    kind, message = result["error"]
    assert kind == "RuntimeUserError" and "boom 5" in message, result
    assert flyte_emulator.wait_terminal(result["run"]) == "FAILED"
    assert "ValueError" in flyte_emulator.pod_log(result["run"])


def test_pod_dying_without_error_file_fails_the_run(flyte_emulator: FlyteEmulator, project: Path):
    result = run_client(flyte_emulator, project, "crash", 3)
    assert result["phase"] == "FAILED"
    kind, message = result["error"]
    assert kind == "RuntimeSystemError" and "exited with code 3" in message, result
    assert "crashing" in message  # the pod's last lines travel with the error


def check_abort(emulator: FlyteEmulator, project: Path) -> None:
    proc = start_client(emulator, project, "sleepy", 120)
    try:
        name = read_json(proc)["run"]
        assert read_json(proc) == {"running": "RUNNING", "live": "sleeping"}
        assert emulator.run_phase(name) == "RUNNING"
        assert emulator.pod_alive(name)
        started = time.monotonic()
        proc.stdin.write("abort\n")
        proc.stdin.flush()
        result = read_json(proc)
        print(f"abort to terminal phase seen by the client: {time.monotonic() - started:.1f} s")
        proc.wait(30)
    finally:
        proc.kill()
    assert result["phase"] == "ABORTED"
    assert result["error"][0] == "ActionAbortedError", result
    assert emulator.run_phase(name) == "ABORTED"
    print("pods alive after the abort:", int(emulator.pod_alive(name)))
    assert not emulator.pod_alive(name)
    assert emulator.wait_pod_gone(name)
    assert "AbortRun" in emulator.calls


def test_abort_kills_the_process_pod(flyte_emulator: FlyteEmulator, project: Path):
    check_abort(flyte_emulator, project)


def test_a_run_name_is_taken_once(flyte_emulator: FlyteEmulator, project: Path):
    code = (
        "import sys, pathlib, flyte, tasks\n"
        "flyte.init_from_config(sys.argv[1], root_dir=pathlib.Path.cwd())\n"
        "ctx = flyte.with_runcontext(copy_style='loaded_modules', name='same-name')\n"
        "ctx.run(tasks.add, 1, 2).wait(quiet=True)\n"
        "try:\n"
        "    ctx.run(tasks.add, 3, 4)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(flyte_emulator.config_path)],
        cwd=project,
        env={**os.environ, **flyte_emulator.client_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "already exists" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert flyte_emulator.run_names == ["same-name"]
    assert flyte_emulator.run_phase("same-name") == "SUCCEEDED"
    print("runs created under one name:", len(flyte_emulator.run_names))


def test_unknown_run_is_not_found(flyte_emulator: FlyteEmulator):
    code = (
        "import sys, flyte, flyte.remote\n"
        "flyte.init_from_config(sys.argv[1])\n"
        "try:\n"
        "    flyte.remote.Run.get('nosuchrun')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(flyte_emulator.config_path)],
        env={**os.environ, **flyte_emulator.client_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "not found" in proc.stdout.lower(), proc.stdout + proc.stderr[-2000:]
    assert flyte_emulator.calls == ["GetRunDetails"]


@pytest.mark.slow
def test_add_runs_in_a_container_pod(flyte_emulator_docker: FlyteEmulator, project: Path):
    result = check_add(flyte_emulator_docker, project)
    # the pod image's virtualenv (tests/flyte_pod_image.py), not this interpreter
    assert any("python in /opt/flyte" in line for line in result["logs"]), result["logs"]


@pytest.mark.slow
def test_raising_task_fails_in_a_container(flyte_emulator_docker: FlyteEmulator, project: Path):
    result = run_client(flyte_emulator_docker, project, "boom", 7)
    assert result["phase"] == "FAILED" and "boom 7" in result["error"][1]


@pytest.mark.slow
def test_abort_removes_the_container(flyte_emulator_docker: FlyteEmulator, project: Path):
    check_abort(flyte_emulator_docker, project)
    left = flyte_emulator_docker._docker.containers.list(
        all=True, filters={"label": f"flyte-emulator={flyte_emulator_docker.bucket}"}
    )
    print("emulator containers left after the abort:", len(left))
    assert left == []
