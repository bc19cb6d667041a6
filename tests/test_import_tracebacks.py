"""A remote error raised while the runtime imports the entry module (a CLI run's file, a
cell's generated module) shows the user's frames only, not importlib's machinery, as a local
`import` would: real CLI processes and a real ipykernel."""

from __future__ import annotations

import re
from pathlib import Path

from cli_process import cli
from conftest import write_tree
from kernel import extension_kernel

MACHINERY = ("importlib", "<frozen", "Could not get source")


def test_cli_run_of_a_module_failing_at_import_shows_its_frames_only(tmp_path: Path):
    project = write_tree(
        tmp_path / "p",
        {
            "app.py": "import helper\n\ndef main():\n    return helper.f()\n",
            "helper.py": "raise ValueError('bad config at import')\n",
        },
    )
    done = cli("run", "app.py:main", cwd=project)
    print(done.stderr)
    assert done.returncode == 1
    assert 'File "app.py", line 1' in done.stderr and 'File "helper.py", line 1' in done.stderr
    noise = [line for line in done.stderr.splitlines() if any(m in line for m in MACHINERY)]
    print("machinery lines:", len(noise))
    assert noise == []


def test_cell_whose_definitions_fail_to_import_remotely_shows_the_cell_frames(tmp_path: Path):
    project = write_tree(tmp_path / "nb", {"mylib/__init__.py": "", "mylib/calc.py": "X = 1\n"})
    with extension_kernel(project) as kernel:
        kernel.ok("from mylib.calc import X")
        reply = kernel.execute("%%flyte_run --copy-style none --version v1\nX + 1")
    assert reply.error and reply.error["ename"] == "ModuleNotFoundError"
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(reply.error["traceback"]))
    print(text)
    assert "Cell In[2], line 1" in text and "copy_style 'none' ships no code" in text
    assert "must be importable by the run's interpreter" in text  # no image: the local executor
    noise = [line for line in text.splitlines() if any(m in line for m in MACHINERY)]
    print("machinery lines:", len(noise))
    assert noise == []
