"""The notebook cell of a remote run, in a real ipykernel: a quiet status line that updates in
place, remote exceptions shown (and catchable) as the local ones they are, and a run cancelled
from another process (the sidebar, `flyte-jupyter runs cancel`) ending the cell "cancelled"
with its output kept."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cli_process
import pytest
from conftest import write_tree
from kernel import Kernel, extension_kernel

from flyte_jupyter.core import history

pytest_plugins = ["pytest_jupyter.jupyter_server"]

PROJECT = {
    "pyproject.toml": "[project]\nname='nb-project'\n",
    "shop/__init__.py": "",
    "shop/pricing.py": """
        def price(items):
            total = sum(items)
            return total / len(items)
        """,
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "nb", PROJECT)


@pytest.fixture
def kernel(project: Path) -> Iterator[Kernel]:
    with extension_kernel(project) as k:
        yield k


@dataclass
class Cell:
    """Every iopub message of one cell, in order (tests/kernel.py's Reply drops updates)."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [content for k, content in self.messages if k == kind]

    def stream(self, name: str) -> str:
        return "".join(c["text"] for c in self.of("stream") if c["name"] == name)

    @property
    def status_texts(self) -> list[str]:
        """The status line's text/plain, first shown then each update."""
        shown = self.of("display_data") + self.of("update_display_data")
        return [c["data"]["text/plain"] for c in shown if "flyte-jupyter run" in str(c["data"])]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.of("error")


def cancelled_error(cell: Cell, run_id: str) -> None:
    """The cell ends with one line saying the run was cancelled, as a local cell's interrupt
    ends with an error (so "Run All" stops), and nothing about a failure."""
    assert len(cell.errors) == 1, cell.errors
    error = cell.errors[0]
    assert error["ename"] == "RunCancelled" and len(error["traceback"]) == 1
    assert error["traceback"][0].startswith(f"run {run_id} was cancelled; its output so far")
    assert "ProcessDied" not in str(cell.messages) and "Remote traceback" not in str(cell.messages)
    assert cell.stream("stderr") == ""


def start(kernel: Kernel, code: str) -> str:
    return kernel.client.execute(code, allow_stdin=False)


def collect(kernel: Kernel, msg_id: str, cell: Cell, until: Any = None, timeout: float = 50):
    """Gather the cell's messages until it is idle (or `until(cell)` holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = kernel.client.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status":
            if content["execution_state"] == "idle":
                return cell
            continue
        cell.messages.append((kind, content))
        if until is not None and until(cell):
            return cell
    raise TimeoutError(f"the cell did not finish in {timeout}s: {cell.messages[-3:]}")


def run_cell(kernel: Kernel, code: str) -> Cell:
    return collect(kernel, start(kernel, code), Cell())


cli = partial(cli_process.cli, timeout=60)


def test_a_successful_run_shows_a_status_display_above_its_output_and_nothing_on_stderr(
    kernel: Kernel,
):
    cell = run_cell(kernel, "%%flyte_run\nprint('hello from the run')\nanswer = 6 * 7")
    print("stderr:", repr(cell.stream("stderr")), "status lines:", cell.status_texts)
    assert cell.errors == [] and cell.stream("stderr") == ""
    assert cell.stream("stdout") == "hello from the run\n"
    kinds = [k for k, _ in cell.messages]
    assert kinds.index("display_data") < kinds.index("stream")  # the status line comes first
    first, *updates = cell.status_texts
    run_id = history.recent()[0].id
    assert run_id in first and "files" in first and "submitted" in first
    assert updates and "succeeded after" in updates[-1] and run_id in updates[-1]
    shown = cell.of("display_data")[0]
    display_id = shown["transient"]["display_id"]
    assert all(u["transient"]["display_id"] == display_id for u in cell.of("update_display_data"))
    assert "flyte-jupyter-status" in shown["data"]["text/html"]
    assert kernel.ok("answer").result == "42"


def test_a_remote_exception_is_one_local_looking_error_of_its_own_type(kernel: Kernel):
    kernel.ok("from shop.pricing import price\n\ndef ratio(a, b):\n    return a / b\n")
    cell = run_cell(kernel, "%%flyte_run\nx = 1\nratio(x, 0)")
    print("errors:", len(cell.errors), "stderr:", repr(cell.stream("stderr")))
    assert len(cell.errors) == 1 and cell.stream("stderr") == ""
    error = cell.errors[0]
    assert error["ename"] == "ZeroDivisionError" and error["evalue"] == "division by zero"
    text = ANSI.sub("", "\n".join(error["traceback"]))
    print(text)
    assert "Cell In[3], line 3" in text and "----> 3 ratio(x, 0)" in text  # the run cell
    assert "      1 %%flyte_run" in text  # context lines of the cell, as for a local error
    assert "Cell In[2], line 4, in ratio" in text and "----> 4     return a / b" in text
    assert "Remote traceback" not in text and "_flyte_notebook" not in text
    assert "flyte_jupyter" not in text and "run_cell_magic" not in text
    assert "failed after" in cell.status_texts[-1]

    # a project file's frame names the local file and shows its lines
    cell = run_cell(kernel, "%flyte_run price([])")
    error = cell.errors[0]
    text = ANSI.sub("", "\n".join(error["traceback"]))
    print(text)
    assert error["ename"] == "ZeroDivisionError" and len(cell.errors) == 1
    assert "Cell In[4], line 1" in text and "----> 1 %flyte_run price([])" in text
    pricing = kernel.ok("import shop.pricing; print(shop.pricing.__file__)").stdout.strip()
    assert f"File {pricing}:3, in price" in text and "----> 3     return total / len(items)" in text

    caught = kernel.ok(
        "from flyte_jupyter.core.errors import RemoteError\n"
        "try:\n    %flyte_run 1/0\n"
        "except ZeroDivisionError as exc:\n"
        "    print('caught', type(exc).__name__, isinstance(exc, RemoteError), exc.run_id[:8])"
    )
    print(caught.stdout)
    assert caught.stdout.startswith("caught ZeroDivisionError True 20")
    other = kernel.execute("%%flyte_run\nraise KeyError('sku')")
    assert other.error["ename"] == "KeyError"
    assert kernel.ok("import builtins; print(builtins.KeyError.__module__)").stdout == "builtins\n"


def test_cancel_from_another_process_ends_the_cell_cancelled_and_keeps_the_output(
    kernel: Kernel,
):
    msg_id = start(
        kernel,
        "%%flyte_run --name ticker\nimport time\n"
        "for i in range(200):\n    print('step', i, flush=True)\n    time.sleep(0.1)\n",
    )
    cell = collect(kernel, msg_id, Cell(), until=lambda c: "step 5\n" in c.stream("stdout"))
    run_id = history.recent()[0].id
    cancelled = cli("runs", "cancel", run_id)  # what the sidebar's cancel does
    assert cancelled.returncode == 0, cancelled.stderr
    collect(kernel, msg_id, cell)
    shown = cell.stream("stdout")
    everything = str(cell.messages)
    print(f"errors: {cell.errors}; last status: {cell.status_texts[-1]!r}")
    cancelled_error(cell, run_id)
    assert "ProcessDied" not in everything and "failed" not in everything
    assert "cancelled after" in cell.status_texts[-1] and "failed" not in cell.status_texts[-1]
    assert "step 0\n" in shown and "step 5\n" in shown
    assert history.get(run_id).status == "cancelled"
    logs = cli("runs", "logs", run_id)
    last = shown.strip().splitlines()[-1]
    logged = logs.stdout.splitlines()
    print(f"lines in the cell: {len(shown.splitlines())}; in runs logs: {len(logged)}")
    assert logs.returncode == 0 and "step 5\n" in logs.stdout and last + "\n" in logs.stdout
    assert logs.stdout.rstrip().endswith("the run was cancelled (SIGTERM)")  # by the runtime
    assert kernel.ok("1 + 1").result == "2"


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"flyte_jupyter.server": True}}}


async def test_the_sidebars_cancel_rest_call_ends_the_cell_cancelled(jp_fetch, kernel: Kernel):
    msg_id = start(
        kernel,
        "%%flyte_run\nimport time\nfor i in range(200):\n    print('row', i, flush=True)\n"
        "    time.sleep(0.1)\n",
    )
    cell = collect(kernel, msg_id, Cell(), until=lambda c: "row 4\n" in c.stream("stdout"))
    run_id = history.recent()[0].id
    response = await jp_fetch(
        "flyte-jupyter", "api", "runs", run_id, "cancel", method="POST", body=""
    )
    print("REST cancel answered:", response.body.decode())
    collect(kernel, msg_id, cell)
    print(f"errors: {cell.errors}; last status: {cell.status_texts[-1]!r}")
    cancelled_error(cell, run_id)
    assert "cancelled after" in cell.status_texts[-1]
    logs = await jp_fetch("flyte-jupyter", "api", "runs", run_id, "logs")
    assert "row 4\n" in logs.body.decode().replace("\\n", "\n")


def test_stop_button_and_sidebar_cancel_end_the_cell_the_same_way(kernel: Kernel):
    msg_id = start(
        kernel,
        "%%flyte_run\nimport time\nfor i in range(200):\n    print('tick', i, flush=True)\n"
        "    time.sleep(0.1)\n",
    )
    queued = start(kernel, "ran_after_the_cancel = True")  # "Run All": the next cell waits
    cell = collect(kernel, msg_id, Cell(), until=lambda c: "tick 3\n" in c.stream("stdout"))
    kernel.interrupt()
    collect(kernel, msg_id, cell)
    run_id = history.recent()[0].id
    cancelled_error(cell, run_id)
    assert "cancelled after" in cell.status_texts[-1]
    replies = {}
    while queued not in replies:
        reply = kernel.client.get_shell_msg(timeout=30)
        replies[reply["parent_header"]["msg_id"]] = reply["content"]["status"]
    print("the queued cell:", replies[queued])
    assert replies[queued] == "aborted"  # as after a local cell's interrupt
    assert kernel.execute("ran_after_the_cancel").error["ename"] == "NameError"
    assert history.get(run_id).status == "cancelled"
    assert "tick 3\n" in cli("runs", "logs", run_id).stdout


def test_terminal_ipython_prints_the_status_as_text_and_the_error_as_ipython_does(
    project: Path,
):
    session = (
        "%load_ext flyte_jupyter\n"
        "def ratio(a, b):\n    return a / b\n\n"
        "%flyte_run print('hi') or 6 * 7\n"
        "%flyte_run ratio(1, 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--simple-prompt", "--colors=NoColor"],
        input=session, capture_output=True, text=True, cwd=project, timeout=60,
    )  # fmt: skip
    print(done.stdout)
    ok_id, failed_id = (r.id for r in reversed(history.recent()))
    ok_lines = [line for line in done.stdout.splitlines() if f"run {ok_id}" in line]
    assert len(ok_lines) == 2 and "files" in ok_lines[0] and "succeeded after" in ok_lines[1]
    assert "hi\n" in done.stdout and "Out[3]: 42" in done.stdout and "<div" not in done.stdout
    assert f"run {failed_id} · failed after" in done.stdout
    assert "Cell In[4], line 1\n----> 1 %flyte_run ratio(1, 0)" in done.stdout
    assert "Cell In[2], line 2, in ratio" in done.stdout
    assert "ZeroDivisionError: division by zero" in done.stdout


def test_a_result_fetched_in_another_kernel_shows_project_files_with_their_lines(
    kernel: Kernel, project: Path
):
    kernel.ok("from shop.pricing import price")
    kernel.ok("run = %flyte_run --detach price([])")
    run_id = kernel.ok("print(run.id)").stdout.strip()
    with extension_kernel(project) as other:
        reply = other.execute(f"%flyte_result {run_id}")
    text = ANSI.sub("", reply.error_text)
    print(text)
    assert reply.error["ename"] == "ZeroDivisionError"
    pricing = project.resolve() / "shop" / "pricing.py"
    assert f"File {pricing}:3, in price" in text and "----> 3     return total / len(items)" in text


def test_a_run_that_dies_is_one_line_without_its_output_again(kernel: Kernel):
    cell = run_cell(
        kernel,
        "%%flyte_run\nimport os, signal\nprint('before the crash', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)",
    )
    print(cell.errors)
    assert len(cell.errors) == 1 and cell.errors[0]["ename"] == "RemoteError"
    shown = "\n".join(cell.errors[0]["traceback"])
    assert "before the crash" not in shown + cell.errors[0]["evalue"] and "runs logs" in shown
    assert "ProcessDied" in shown
    assert cell.stream("stdout") == "before the crash\n"
    assert "failed after" in cell.status_texts[-1]


def test_a_flyte_runs_status_line_links_to_the_flyte_console(project: Path, flyte_emulator):
    with extension_kernel(project, flyte_emulator.client_env) as k:
        k.ok(f"%flyte_config flyte_config={flyte_emulator.config_path} executor=flyte")
        msg_id = start(k, "%%flyte_run\nprint('on flyte')\n6 * 7")
        cell = collect(k, msg_id, Cell())
    shown = cell.of("display_data") + cell.of("update_display_data")
    final = [c["data"] for c in shown if "flyte-jupyter-status" in c["data"].get("text/html", "")]
    print(final[-1]["text/plain"])
    assert "succeeded after" in final[-1]["text/plain"]
    link = re.search(r'<a href="(https?://[^"]+)"[^>]*>Flyte console</a>', final[-1]["text/html"])
    assert link is not None and link.group(1) in final[-1]["text/plain"]
    assert history.recent()[0].name.split()[-1] in link.group(1)  # the Flyte run's name


def test_a_run_that_ignores_sigterm_is_killed_and_still_keeps_its_log(kernel: Kernel):
    msg_id = start(
        kernel,
        "%%flyte_run\nimport signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "for i in range(300):\n    print('beat', i, flush=True)\n    time.sleep(0.1)\n",
    )
    cell = collect(kernel, msg_id, Cell(), until=lambda c: "beat 3\n" in c.stream("stdout"))
    run_id = history.recent()[0].id
    started = time.monotonic()
    assert cli("runs", "cancel", run_id).returncode == 0
    print(f"cancel took {time.monotonic() - started:.1f}s (SIGTERM ignored, then SIGKILL)")
    collect(kernel, msg_id, cell)
    cancelled_error(cell, run_id)
    logs = cli("runs", "logs", run_id).stdout
    print(f"log lines kept by the client: {len(logs.splitlines())}")
    assert "beat 3\n" in logs and "SIGTERM" not in logs  # copied by `runs cancel`
