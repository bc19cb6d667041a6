"""The magics in a real ipykernel: what ships, what comes back, and every trap in between."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import process_alive, write_tree
from kernel import Kernel, extension_kernel

from flyte_jupyter.core import history

PROJECT = {
    "pyproject.toml": "[project]\nname='nb-project'\n",
    "shop/__init__.py": "",
    "shop/pricing.py": "def with_tax(x):\n    return round(x * 1.2, 2)\n",
    "shop/discounts.py": "def best(prices):\n    return 0.5 if len(prices) > 2 else 0.0\n",
    "data/prices.csv": "1,2,3\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "nb", PROJECT)


@pytest.fixture
def kernel(project: Path) -> Iterator[Kernel]:
    with extension_kernel(project) as k:
        yield k


def usage_error(reply) -> str:
    """IPython prints a UsageError as one stderr line, with no traceback."""
    assert reply.error is None and reply.stderr.startswith("UsageError: "), reply
    assert reply.stderr.count("\n") == 1, reply.stderr
    return reply.stderr.removeprefix("UsageError: ").strip()


def test_cell_runs_remotely_with_notebook_code_as_source_and_values_come_back(kernel: Kernel):
    kernel.ok(
        "from shop.pricing import with_tax\nRATE = 2\n\n"
        "def double(x):\n    return with_tax(x) * RATE\n"
    )
    kernel.ok("prices = [1.0, 2.0, 3.0]")
    reply = kernel.ok(
        "%%flyte_run\n"
        "import os, sys\n"
        "total = round(sum(double(p) for p in prices), 2)\n"
        "print('computed', total)\n"
        "print('careful', file=sys.stderr)\n"
        "where = os.getpid()\n"
        "total"
    )
    assert reply.result == "14.4"
    assert "computed 14.4" in reply.stdout and "careful" in reply.stderr
    assert "careful" not in reply.stdout  # streams stay separate
    back = kernel.ok("import os\nprint(total, where != os.getpid())")
    assert back.stdout.split() == ["14.4", "True"]  # assigned names came back; it ran elsewhere
    record = history.recent()[0]
    assert record.status == "succeeded" and record.name.startswith("In[")


def test_lazy_import_inside_a_notebook_function_ships(kernel: Kernel):
    kernel.ok(
        "def discount(prices):\n"
        "    from shop.discounts import best  # lazy: Flyte would not ship shop/discounts.py\n"
        "    return best(prices)\n"
    )
    reply = kernel.ok("%%flyte_run\ndiscount([1, 2, 3])")
    assert reply.result == "0.5"
    preview = kernel.ok("%%flyte_bundle\ndiscount([1])").displays[0]["text/html"]
    assert "shop/discounts.py" in preview and "lazy import in _flyte_notebook/cell_" in preview


def test_latest_definition_wins_even_out_of_order(kernel: Kernel):
    kernel.ok("def helper():\n    return 'first'\n")  # cell 1
    kernel.ok("x = 1")
    kernel.ok("def helper():\n    return 'third'\n")  # redefined in cell 3
    assert kernel.ok("%flyte_run helper()").result == "'third'"
    kernel.ok("def helper():\n    return 'first'\n")  # cell 1 executed again, out of order
    assert kernel.ok("%flyte_run helper()").result == "'first'"


def test_stale_module_is_flagged_and_the_file_on_disk_ships(kernel: Kernel, project: Path):
    kernel.ok("from shop import pricing")
    first = kernel.ok("%flyte_run pricing.with_tax(10)")
    assert first.result == "12.0"
    time.sleep(0.01)
    (project / "shop/pricing.py").write_text("def with_tax(x):\n    return round(x * 1.5, 2)\n")
    second = kernel.ok("%flyte_run pricing.with_tax(10)")
    assert second.result == "15.0"  # the remote run sees the new code, no kernel restart
    assert "shop/pricing.py changed on disk after this kernel imported it" in second.stderr
    assert kernel.ok("pricing.with_tax(10)").result == "12.0"  # the kernel still has the old
    digests = {r.digest for r in history.recent()}
    assert len(digests) == 2


def test_notebook_classes_round_trip_as_the_notebook_class(kernel: Kernel):
    kernel.ok(
        "class Basket:\n"
        "    def __init__(self, items):\n"
        "        self.items = items\n"
        "    def total(self):\n"
        "        return sum(self.items)\n"
    )
    kernel.ok("basket = Basket([1, 2])")
    kernel.ok(
        "%%flyte_run\n"
        "assert type(basket).__module__.startswith('_flyte_notebook')\n"
        "bigger = Basket(basket.items + [3])"
    )
    reply = kernel.ok("print(isinstance(bigger, Basket), bigger.total())")
    assert reply.stdout.split() == ["True", "6"]


def test_unpicklable_input_is_a_one_line_error(kernel: Kernel):
    kernel.ok("numbers = (i * i for i in range(3))")
    error = usage_error(kernel.execute("%%flyte_run\nsum(numbers)"))
    assert "'numbers' (generator) cannot be sent to the run" in error
    assert "Recreate it inside the cell" in error
    assert history.recent() == []


def test_magics_inside_remote_code_are_refused_clearly(kernel: Kernel):
    error = usage_error(kernel.execute("%%flyte_run\n!ls\nx = 1"))
    assert "uses an IPython magic or shell command" in error
    kernel.ok("def listing():\n    return get_ipython().getoutput('ls')\n")
    error = usage_error(kernel.execute("%flyte_run listing()"))
    assert "function 'listing'" in error and "magic" in error
    kernel.ok("files = !ls")  # shell output is data: it ships as a value
    assert kernel.ok("%flyte_run len(files) > 0").result == "True"


def test_bad_options_are_one_line(kernel: Kernel):
    error = usage_error(kernel.execute("%%flyte_run --copy-style everything\nx = 1"))
    assert "--copy-style 'everything' is not allowed: use one of auto, all, none" in error
    error = usage_error(kernel.execute("%%flyte_run --bogus\nx = 1"))
    assert "unrecognized arguments: --bogus" in error
    error = usage_error(kernel.execute("%%flyte_run --copy-style none\nx = 1"))
    assert "explicit version" in error


def test_remote_exception_maps_to_notebook_cells(kernel: Kernel):
    kernel.ok(
        "def check(x):\n    if x < 0:\n        raise ValueError(f'negative: {x}')\n    return x\n"
    )
    reply = kernel.execute("%%flyte_run\ny = 1\ncheck(-y)")
    assert reply.error and reply.error["ename"] == "ValueError"  # the remote type, as raised
    assert reply.error["evalue"] == "negative: -1"
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(reply.error["traceback"]))
    assert "Cell In[3], line 3" in text  # the run cell (line 1 is %%flyte_run)
    assert "Cell In[2], line 3, in check" in text  # the earlier cell that defined check
    assert "_flyte_notebook" not in text and "flyte_jupyter" not in text


def test_dry_run_and_bundle_preview_run_nothing(kernel: Kernel):
    kernel.ok("from shop.pricing import with_tax\nvalues = list(range(1000))")
    reply = kernel.ok("%%flyte_run --dry-run --include 'data/*.csv'\nwith_tax(sum(values))")
    shown = reply.displays[0]
    assert "shop/pricing.py" in shown["text/html"] and "data/prices.csv" in shown["text/html"]
    assert "pricing.py" in shown["text/plain"] and "prices.csv" in shown["text/plain"]
    assert "values" in shown["text/plain"] and "digest sha256:" in shown["text/plain"]
    assert (
        "<table" in shown["text/html"] and "from shop.pricing import with_tax" in shown["text/html"]
    )
    assert history.recent() == []
    line = kernel.ok("%flyte_bundle").displays[0]["text/plain"]
    assert "generated module _flyte_notebook/cell_" in line and "pricing.py" in line


def test_detach_then_fetch_the_result(kernel: Kernel):
    kernel.ok("import time")
    kernel.ok("run = %flyte_run --detach time.sleep(0.5) or 41 + 1")
    run_id = kernel.ok("print(run.id)").stdout.strip()
    assert kernel.ok(f"%flyte_result {run_id}").result == "42"
    runs = kernel.ok("%flyte_runs").displays[0]
    assert run_id in runs["text/plain"] and "succeeded" in runs["text/plain"]


def test_config_precedence_is_shown_with_sources(project: Path, monkeypatch):
    (project / "pyproject.toml").write_text(
        "[project]\nname='nb'\n\n"
        "[tool.flyte-jupyter]\ncopy_style = 'all'\ninclude = ['data/*.csv']\n"
    )
    monkeypatch.setenv("FLYTE_JUPYTER_EXECUTOR", "local")
    monkeypatch.setenv("FLYTE_JUPYTER_MAX_SIZE_MB", "50")
    with extension_kernel(project) as k:
        k.ok("%flyte_config max_size_mb=20 copy_style=auto")
        table = k.ok("%flyte_config").displays[0]["text/plain"]
        rows = {line.split()[0]: line.split()[-1] for line in table.splitlines()[1:]}
        assert rows["copy_style"] == "session" and rows["max_size_mb"] == "session"
        assert rows["include"] == "(pyproject.toml)" and rows["executor"] == "environment"
        assert rows["version"] == "default" and rows["root_dir"] == "detected"
        k.ok("%flyte_config copy_style=")  # unset: the project file's value shows again
        table = k.ok("%flyte_config").displays[0]["text/plain"]
        assert "'all'" in next(line for line in table.splitlines() if line.startswith("copy_"))
        assert "unknown setting 'colour'" in usage_error(k.execute("%flyte_config colour=blue"))
        preview = k.ok("%%flyte_bundle --copy-style auto\n1").displays[0]["text/plain"]
        assert "(copy_style auto)" in preview  # the magic option beats everything else


def test_interrupt_cancels_the_run(kernel: Kernel, project: Path):
    pid_file = project / "remote.pid"
    msg = kernel.client.execute(
        "%%flyte_run\nimport os, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(120)"
    )
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    remote_pid = int(pid_file.read_text())
    kernel.interrupt()
    while kernel.client.get_shell_msg(timeout=60)["parent_header"]["msg_id"] != msg:
        pass  # replies to earlier cells
    deadline = time.monotonic() + 10
    while process_alive(remote_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(remote_pid), "the remote process survived the interrupt"
    assert history.recent()[0].status == "cancelled"
    assert kernel.ok("1 + 1").result == "2"  # the kernel is fine


def test_copy_style_none_hint_when_the_image_lacks_the_code(kernel: Kernel):
    kernel.ok("from shop.pricing import with_tax")
    reply = kernel.execute("%%flyte_run --copy-style none --version v1\nwith_tax(1)")
    assert reply.error["ename"] == "ModuleNotFoundError"
    text = "\n".join(reply.error["traceback"])
    assert "copy_style 'none' ships no code" in text


def test_extension_outside_ipython_says_what_to_do():
    proc = subprocess.run(
        [sys.executable, "-c", "import flyte_jupyter; flyte_jupyter.load_ipython_extension(None)"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "flyte-jupyter's magics need IPython" in last and "flyte-jupyter run" in last


def test_export_magic_writes_a_build_context(kernel: Kernel, project: Path):
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from shop import pricing")]),
        project / "job.ipynb",
    )
    reply = kernel.ok(f"%flyte_export job.ipynb --context-only {project / 'ctx'}")
    assert "wrote the build context" in reply.stdout
    assert (project / "ctx/root/app/shop/pricing.py").is_file()
    assert "needs the notebook path" in usage_error(kernel.execute("%flyte_export"))


def test_sidebar_comm_and_widgets_panel_share_the_session_settings(kernel: Kernel):
    code = (
        "from comm import create_comm\n"
        "session = get_ipython()._flyte_session\n"
        "sent = []\n"
        "class FakeComm:\n"
        "    def send(self, data):\n"
        "        sent.append(data)\n"
        "session.open_comm(FakeComm(), {'content': {'data': {'settings': "
        "{'copy_style': 'all', 'include': ['data/*.csv'], 'version': ''}}}})\n"
        "print(sent[0]['ok'], sent[0]['settings']['copy_style'], sent[0]['settings']['include'])"
    )
    assert kernel.ok(code).stdout.split() == ["True", "all", "['data/*.csv']"]
    table = kernel.ok("%flyte_config").displays[0]["text/plain"]
    assert "'all'" in next(line for line in table.splitlines() if line.startswith("copy_style"))
    bad = kernel.ok(
        "session.open_comm(FakeComm(), {'content': {'data': {'settings': {'copy_style': 5}}}})\n"
        "print(sent[-1])"
    )
    assert "'ok': False" in bad.stdout and "copy_style" in bad.stdout
    kernel.ok("from shop.pricing import with_tax")
    widget = kernel.ok("panel = %flyte_panel\nprint(type(panel).__name__, len(panel.children))")
    assert widget.stdout.split() == ["VBox", "4"]
    preview = kernel.ok("print(get_ipython().__class__.__name__)\n"
                        "p = [m for m in get_ipython().magics_manager.registry.values() "
                        "if hasattr(m, 'preview_notebook')][0].preview_notebook()\n"
                        "print('shop/pricing.py' in p['text/html'])")  # fmt: skip
    assert preview.stdout.split()[-1] == "True"
    kernel.ok("values = [float(v) for v in range(2)]  # computed: ships as data")
    kernel.ok("def taxed():\n    return [with_tax(v) for v in values]")
    ask = "{'content': {'data': {'preview': '%%flyte_run\\ntaxed()'}}}"
    preview = kernel.ok(
        f"session.open_comm(FakeComm(), {ask})\n"
        "doc = sent[-1]['preview']\n"
        "print(sorted(doc['values']), [f['path'] for f in doc['files'] if 'shop' in f['path']])"
    )
    names, shipped = preview.stdout.strip().split(" ", 1)
    assert names == "['values']" and "'shop/pricing.py'" in shipped


def test_big_uploads_show_a_progress_bar(kernel: Kernel, project: Path):
    (project / "blob.bin").write_bytes(os.urandom(600_000))  # random: does not compress away
    reply = kernel.ok("%%flyte_run --include blob.bin\nlen(open('blob.bin', 'rb').read())")
    assert reply.result == "600000"
    bars = [d for d in reply.displays if "application/vnd.jupyter.widget-view+json" in d]
    assert bars, reply.displays  # an ipywidgets FloatProgress was displayed


def test_a_cell_reads_the_notebook_value_of_a_name_it_rebinds(kernel: Kernel):
    """`rows = sorted(rows)`, `n += 1`: the statement reads the notebook's value before it binds
    the name, so the value travels. A name the cell only binds (`with ... as handle`) is sent
    when the notebook has it and it pickles; one that cannot (an open file) stays behind."""
    kernel.ok("import io\nrows = [3, 1, 2]\nn = 10\nhandle = io.StringIO('not picklable')")
    code = "rows = sorted(rows)\nn += 1\nwith open('out.txt', 'w') as handle:\n    pass\n(rows, n)"
    reply = kernel.ok("%%flyte_run\n" + code)
    back = kernel.ok("(rows, n, type(handle).__name__)")
    print("remote:", reply.result, "notebook after:", back.result)
    assert reply.result == "([1, 2, 3], 11)", reply.error_text
    assert back.result == "([1, 2, 3], 11, 'StringIO')"  # the remote file cannot come back
