"""A data file the remote code opens but that did not ship: the error names the include that
ships it, as a missing module's does. Real CLI processes and a real ipykernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import write_tree
from kernel import Kernel

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
    return subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", "run", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


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
    kernel = Kernel(project)
    try:
        kernel.ok("%load_ext flyte_jupyter")
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
    finally:
        kernel.shutdown()


def test_cell_in_a_subfolder_of_root_dir_is_told_where_relative_paths_start(tmp_path: Path):
    workspace = write_tree(tmp_path / "ws", {"nbs/data/x.json": "[1]\n"})
    kernel = Kernel(workspace / "nbs")
    try:
        kernel.ok("%load_ext flyte_jupyter")
        reply = kernel.execute(
            f"%%flyte_run --root-dir {workspace} --include 'nbs/data/*.json'\n"
            "open('data/x.json').read()"
        )
    finally:
        kernel.shutdown()
    shown = reply.error["traceback"][-1]
    print(shown)
    assert "relative paths start there: that file is 'nbs/data/x.json' from root_dir" in shown
