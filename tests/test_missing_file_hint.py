"""A data file the remote code opens but that did not ship: the error names the include that
ships it, as a missing module's does. Real CLI processes and a real ipykernel."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_process import cli
from conftest import write_tree
from kernel import extension_kernel

PROJECT = {
    "app.py": (
        "import json\nfrom pathlib import Path\n\n"
        "def main():\n    return json.loads(Path('data/prices.json').read_text())\n\n"
        "def elsewhere():\n    return open('nowhere/at_all.txt').read()\n\n"
        "def outside():\n    return open('../secret.txt').read()\n"
    ),
    "data/prices.json": "[1, 2]\n",
    ".flyteignore": "data/\n",
}


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("run", *args, cwd=project)


def test_cli_run_missing_data_file_names_the_include(tmp_path: Path):
    project = write_tree(tmp_path / "p", PROJECT)
    (tmp_path / "secret.txt").write_text("outside the tree\n")
    done = run(project, "app.py:main")
    print(done.stderr)
    assert done.returncode == 1 and "FileNotFoundError" in done.stderr
    assert "Add include=['data/prices.json'] (--include 'data/prices.json')" in done.stderr
    shipped = run(project, "app.py:main", "--include", "data/prices.json")
    assert json.loads(shipped.stdout) == [1, 2]
    ignored = run(project, "app.py:main", "--copy-style", "all")
    print(ignored.stderr)
    assert "copy_style 'all' left it out" in ignored.stderr and ".flyteignore" in ignored.stderr
    for entry in ("app.py:elsewhere", "app.py:outside"):  # not here either, or not under root
        other = run(project, entry)
        hints = [line for line in other.stderr.splitlines() if line.startswith("Hint:")]
        print(entry, "hints:", len(hints))
        assert other.returncode == 1 and hints == []


def test_cell_missing_data_file_names_the_include(tmp_path: Path):
    project = write_tree(tmp_path / "nb", {"data/conf.json": '{"a": 1}\n'})
    with extension_kernel(project) as kernel:
        reply = kernel.execute("%%flyte_run\nimport json\njson.load(open('data/conf.json'))")
        assert reply.error and reply.error["ename"] == "FileNotFoundError"
        shown = reply.error["traceback"][-1]
        print(shown)
        assert "Add include=['data/conf.json'] (--include 'data/conf.json')" in shown
        reply = kernel.execute(
            "%%flyte_run --copy-style none --version v1\nopen('data/conf.json').read()"
        )
        shown = reply.error["traceback"][-1]
        print(shown)
        assert "'none' ships no files, so 'data/conf.json' is not in the run's working" in shown


def test_cell_in_a_subfolder_of_root_dir_opens_files_from_the_same_folder(tmp_path: Path):
    """A notebook in a subfolder of root_dir (`project/notebooks/`, `pyproject.toml` above):
    the run starts in the same folder of the shipped tree, so relative paths, `..` included,
    mean what they mean in the kernel; a file that did not ship is named from root_dir."""
    workspace = write_tree(
        tmp_path / "ws",
        {
            "pyproject.toml": "[project]\nname = 'ws'\n",
            "nbs/data/x.json": "[1]\n",
            "shared/y.json": "[2]\n",
            "shared/z.json": "[3]\n",
        },
    )
    with extension_kernel(workspace / "nbs") as kernel:
        local = kernel.ok("open('data/x.json').read() + open('../shared/y.json').read()")
        include = "--include 'nbs/data/*.json' --include 'shared/y.json'"
        remote = kernel.ok(
            f"%%flyte_run {include}\n"
            "import os\nopen('data/x.json').read() + open('../shared/y.json').read()"
        )
        print("local:", local.result, "remote:", remote.result)
        assert remote.result == local.result == repr("[1]\n[2]\n")
        where = kernel.ok(f"%%flyte_run {include}\nimport os\nos.path.basename(os.getcwd())")
        assert where.result == "'nbs'"
        reply = kernel.execute(f"%%flyte_run {include}\nopen('../shared/z.json').read()")
    shown = reply.error["traceback"][-1]
    print(shown)
    assert "Add include=['shared/z.json'] (--include 'shared/z.json')" in shown
