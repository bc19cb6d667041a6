"""Warm workers: runs forked from a prepared interpreter are as clean as cold ones, cancel
stops exactly one run, and a crashed, stale or tampered worker is replaced, never reused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import process_alive
from kernel import Kernel

from flyte_jupyter.core import history, workers
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.executors.local import process_identity
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.submit import Run, submit

PROJECT = {
    "app.py": """
        import atexit
        import os
        import sys
        import threading
        import time
        from pathlib import Path

        import counter


        def probe(mark=None):
            counter.COUNT += 1
            if mark:  # what a run leaves behind must not reach the next one
                os.environ["LEAKED"] = mark
                sys.modules["leaked_module"] = type(sys)("leaked_module")
                Path("private.txt").write_text(mark)
            return {
                "parent": os.getppid(),
                "pid": os.getpid(),
                "pgid": os.getpgid(0),
                "sid": os.getsid(0),
                "cwd": os.getcwd(),
                "env": dict(os.environ),
                "argv": sys.argv,
                "path": sys.path,
                "modules": sorted(sys.modules),
                "count": counter.COUNT,
                "private_exists": Path("private.txt").exists(),
                "stdin": sys.stdin.read(),
            }


        def finish_late(folder):
            def later():
                time.sleep(0.3)
                Path(folder, "thread.txt").write_text("joined")

            threading.Thread(target=later).start()
            atexit.register(lambda: Path(folder, "atexit.txt").write_text("ran"))
            print("no newline at the end", end="")


        def slow(pid_file):
            import subprocess
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            Path(pid_file).write_text(f"{child.pid}")
            time.sleep(60)
        """,
    "counter.py": "COUNT = 0\n",
}


def bundle_of(root: Path):
    return build_bundle(select_files(root, entries=[root / "app.py"]))


def only_worker() -> dict:
    found = workers.list_workers()
    assert len(found) == 1, found
    return found[0]


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_warm_runs_are_as_clean_as_a_cold_one(tree, monkeypatch):
    root = tree(PROJECT)
    bundle = bundle_of(root)
    monkeypatch.setenv(workers.ENABLE_ENV, "0")
    submit(bundle, "app:probe").result(timeout=60)  # extracts the bundle (imports gzip)
    cold = submit(bundle, "app:probe").result(timeout=60)
    assert cold["parent"] == os.getpid() and workers.list_workers() == []
    monkeypatch.setenv(workers.ENABLE_ENV, "1")
    first = submit(bundle, "app:probe", args=["first"]).result(timeout=60)
    second = submit(bundle, "app:probe").result(timeout=60)
    worker = only_worker()
    assert first["parent"] == second["parent"] == worker["pid"]  # both forked by the worker
    assert first["pid"] != second["pid"]
    for run in (first, second):
        assert run["pid"] == run["pgid"] == run["sid"]  # own session and process group
    leaks = [second["count"] != 1, "LEAKED" in second["env"], second["private_exists"]]
    leaks.append("leaked_module" in second["modules"])
    print(f"state leaked from the first warm run into the second: {sum(leaks)}")
    assert sum(leaks) == 0
    assert len({cold["cwd"], first["cwd"], second["cwd"]}) == 3
    for key in ("path", "stdin"):
        assert second[key] == cold[key], key
    assert second["argv"][0] == cold["argv"][0] and len(second["argv"]) == len(cold["argv"])
    differing = {k for k in cold["env"].keys() | second["env"].keys() if k != workers.ENABLE_ENV}
    differing = {k for k in differing if cold["env"].get(k) != second["env"].get(k)}
    extra = set(second["modules"]) ^ set(cold["modules"])
    print(f"environment variables differing from a cold run: {len(differing)}")
    print(f"modules loaded in only one of a warm and a cold run: {sorted(extra)}")
    assert differing == set()
    assert extra == set()


def test_a_run_ends_as_a_fresh_interpreter_does(tree, tmp_path):
    root = tree(PROJECT)
    run = submit(bundle_of(root), "app:finish_late", args=[str(tmp_path)])
    assert run.result(timeout=60) is None
    assert only_worker()["pid"] != os.getpid()
    assert (tmp_path / "thread.txt").read_text() == "joined"  # non-daemon thread joined
    assert (tmp_path / "atexit.txt").read_text() == "ran"  # atexit callbacks ran
    assert run.output_so_far().startswith("no newline at the end")


def test_cancel_stops_exactly_one_run_tree(tree, tmp_path):
    root = tree(PROJECT)
    bundle = bundle_of(root)
    runs = [submit(bundle, "app:slow", args=[str(tmp_path / f"{i}.pid")]) for i in range(2)]
    assert wait_for(lambda: all((tmp_path / f"{i}.pid").exists() for i in range(2)), 30)
    leaders = [history.get(run.id).pid for run in runs]
    children = [int((tmp_path / f"{i}.pid").read_text()) for i in range(2)]
    worker = only_worker()
    for leader in leaders:
        assert history.get(runs[0].id).pid_start is not None
        assert process_alive(leader)
    assert history.get(runs[0].id).pid_start == process_identity(leaders[0])
    Run.from_history(runs[0].id).cancel()  # from the history, as another process would
    assert runs[0].wait(timeout=30) == "cancelled"
    survivors = [pid for pid in (leaders[0], children[0]) if process_alive(pid)]
    print(f"processes of the cancelled run still alive: {len(survivors)}")
    assert survivors == []
    assert process_alive(leaders[1]) and process_alive(children[1])
    assert process_alive(worker["pid"])
    runs[1].cancel()
    assert not process_alive(leaders[1]) and not process_alive(children[1])


def test_a_crashed_worker_is_replaced(tree):
    root = tree(PROJECT)
    bundle = bundle_of(root)
    submit(bundle, "app:probe").result(timeout=60)
    old = only_worker()["pid"]
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: not process_alive(old))
    again = submit(bundle, "app:probe").result(timeout=60)
    assert again["parent"] != old and again["parent"] == only_worker()["pid"]


def _info_file() -> Path:
    (path,) = (Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "workers").glob("*/info.json")
    return path


@pytest.mark.parametrize("tamper", ["runtime hash", "readable by others", "impostor socket"])
def test_a_tampered_worker_is_never_used(tree, tamper):
    root = tree(PROJECT)
    bundle = bundle_of(root)
    submit(bundle, "app:probe").result(timeout=60)
    old = only_worker()["pid"]
    info = _info_file()
    impostor = None
    if tamper == "runtime hash":
        doc = json.loads(info.read_text())
        info.write_text(json.dumps({**doc, "runtime": "0" * 16}))
    elif tamper == "readable by others":
        info.chmod(0o644)
    else:
        sock = info.with_name("sock")
        sock.unlink()
        impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        impostor.bind(str(sock))
        impostor.listen(4)
    try:
        run = submit(bundle, "app:probe").result(timeout=60)
        assert run["parent"] != old
        assert wait_for(lambda: not process_alive(old))  # the old worker was stopped
        if impostor is not None:
            impostor.setblocking(False)
            conn, _ = impostor.accept()
            conn.settimeout(2)
            received = conn.recv(65536)
            conn.close()
            print(f"bytes the impostor socket received: {len(received)}")
            assert received == b""
    finally:
        if impostor is not None:
            impostor.close()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_reach_a_worker(tree):
    root = tree(PROJECT)
    submit(bundle_of(root), "app:probe").result(timeout=60)
    sock = str(_info_file().with_name("sock"))
    pid = os.fork()
    if pid == 0:
        os.setuid(65534)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(sock)
        except PermissionError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    print(f"connections another user made to the worker: {os.waitstatus_to_exitcode(status)}")
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_idle_worker_stops_and_cleans_up(tree, monkeypatch):
    monkeypatch.setenv(workers.IDLE_ENV, "0.5")
    root = tree(PROJECT)
    submit(bundle_of(root), "app:probe").result(timeout=60)
    pid = only_worker()["pid"]
    assert wait_for(lambda: not process_alive(pid), 15)
    folder = Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "workers"
    assert [p for p in folder.glob("*/*") if p.name in ("info.json", "sock")] == []


def test_cli_workers_outlive_the_cli_and_are_listed_and_stopped(tree):
    root = tree(PROJECT)
    cli = [sys.executable, "-m", "flyte_jupyter"]
    done = subprocess.run([*cli, "run", f"{root / 'app.py'}:probe"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([*cli, "workers"], capture_output=True, text=True, check=True).stdout
    pid = only_worker()["pid"]
    assert process_alive(pid)  # the CLI ended, its worker waits for the next run
    assert f" {pid} " in listed and "shared" in listed
    stop = subprocess.run([*cli, "workers", "stop"], capture_output=True, text=True, check=True)
    assert stop.stdout.strip() == "stopped 1 worker"
    assert wait_for(lambda: not process_alive(pid))
    assert subprocess.run([*cli, "workers"], capture_output=True, text=True).stdout.strip() == (
        "no warm workers"
    )


def test_a_kernels_workers_stop_with_the_kernel(tree):
    root = tree({**PROJECT, "pyproject.toml": "[project]\nname = 'k'\n"})
    kernel = Kernel(root)
    try:
        kernel.ok("%load_ext flyte_jupyter")
        reply = kernel.ok("%%flyte_run\nimport os\nparent = os.getppid()\nparent")
        worker = only_worker()
        assert worker["label"].startswith("kernel ")
        assert reply.result == str(worker["pid"])
        kernel.ok("%flyte_config warm_workers=false")  # the session setting turns them off
        kernel_pid = kernel.ok("import os\nos.getpid()").result
        assert kernel.ok("%%flyte_run\nimport os\nos.getppid()").result == kernel_pid
    finally:
        kernel.shutdown()  # SIGKILL: no atexit, the worker notices its owner is gone
    assert wait_for(lambda: not process_alive(worker["pid"]), 15)


def test_the_project_file_turns_warm_workers_off(tree, monkeypatch):
    root = tree({**PROJECT, ".flyte-jupyter.toml": "warm_workers = false\n"})
    monkeypatch.chdir(root)
    run = submit(bundle_of(root), "app:probe").result(timeout=60)
    assert run["parent"] == os.getpid() and workers.list_workers() == []


def test_another_interpreter_gets_its_own_worker(tree, tmp_path):
    import venv

    venv.EnvBuilder(with_pip=False).create(tmp_path / "venv")
    root = tree(PROJECT)
    bundle = bundle_of(root)
    ours = submit(bundle, "app:probe").result(timeout=60)
    theirs = submit(bundle, "app:probe", image=f"python={tmp_path / 'venv'}").result(timeout=60)
    pids = sorted(w["pid"] for w in workers.list_workers())
    assert sorted([ours["parent"], theirs["parent"]]) == pids and len(set(pids)) == 2
    assert theirs["argv"][0] == "-c" and str(tmp_path / "venv") in theirs["path"][-1]


# --- docker: a long-lived container per image, each run a fresh process in it --------------

BASE = "python:3.11-slim-bookworm"
DOCKER_APP = {
    "app.py": """
        import os
        import sys
        import time
        from pathlib import Path


        def where():
            return {"pid": os.getpid(), "parent": os.getppid(), "env": sorted(os.environ),
                    "container": os.path.exists("/.dockerenv"), "cwd": os.getcwd()}


        def write_outside(store_root):
            for target in (Path(store_root) / "intruder.txt", Path(store_root) / "runs" / "x"):
                try:
                    target.write_text("no")
                except OSError:
                    continue
            print("tried")


        def slow():
            time.sleep(60)
        """,
}


@pytest.fixture(scope="module")
def engine():
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
        client.images.get(BASE)
    except Exception as exc:
        pytest.skip(f"no Docker engine with {BASE} here ({exc}); scripts/docker-engine.sh")
    return client


@pytest.mark.slow
def test_docker_runs_share_a_container_not_a_process(engine, tree, monkeypatch):
    root = tree(DOCKER_APP)
    bundle = bundle_of(root)
    monkeypatch.setenv(workers.ENABLE_ENV, "0")
    cold = submit(bundle, "app:where", executor="docker", image=BASE).result(timeout=300)
    monkeypatch.setenv(workers.ENABLE_ENV, "1")
    first = submit(bundle, "app:where", executor="docker", image=BASE).result(timeout=300)
    second = submit(bundle, "app:where", executor="docker", image=BASE).result(timeout=300)
    (worker,) = workers.list_workers()
    labelled = engine.containers.list(filters={"label": f"{workers.LABEL_WORKER}={worker['name']}"})
    assert len(labelled) == 1 and first["container"] and second["container"]
    assert first["parent"] == second["parent"] == worker["pid"] and first["pid"] != second["pid"]
    assert first["env"] == second["env"] == cold["env"] and first["cwd"] != second["cwd"]
    store_root = Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "store"
    before = sorted(p.name for p in (store_root / "runs").iterdir())
    run = submit(bundle, "app:write_outside", args=[str(store_root)], executor="docker", image=BASE)
    run.result(timeout=300)
    written = [p for p in (store_root / "intruder.txt", store_root / "runs" / "x") if p.exists()]
    print(f"files a warm docker run wrote outside its run directory: {len(written)}")
    assert written == [] and len(list((store_root / "runs").iterdir())) == len(before) + 1
    slow = submit(bundle, "app:slow", executor="docker", image=BASE)
    assert wait_for(lambda: slow.status() == "running", 60)
    Run.from_history(slow.id).cancel()  # from the history, as `runs cancel` does
    assert slow.wait(timeout=30) == "cancelled"
    host_pid = json.loads((Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "docker-runs" /
                           slow.id / "worker.json").read_text())["host_pid"]  # fmt: skip
    assert host_pid and wait_for(lambda: not process_alive(host_pid))
    assert workers.stop_workers() == [worker["name"]]
    assert wait_for(lambda: not engine.containers.list(filters={"label": workers.LABEL_WORKER}), 60)
