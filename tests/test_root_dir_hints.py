"""A root_dir set above the folder a local package is imported from (as after following the
`set root_dir to /ws` hint for a sibling package): the warning before the run and the hint
after it name the folder it is imported from, instead of saying it is not there. Real kernel."""

from __future__ import annotations

from pathlib import Path

from conftest import write_tree
from kernel import extension_kernel


def test_root_dir_above_the_import_folder_names_that_folder(tmp_path: Path):
    project = write_tree(
        tmp_path / "ws" / "project",
        {"mylib/__init__.py": "", "mylib/calc.py": "def double(x):\n    return 2 * x\n"},
    )
    with extension_kernel(project) as kernel:
        kernel.ok("import mylib.calc")
        reply = kernel.execute(f"%%flyte_run --root-dir {tmp_path / 'ws'}\nmylib.calc.double(2)")
    print(reply.stderr)
    assert "neither under root_dir" not in reply.stderr
    assert f"imported here from {project}, below root_dir" in reply.stderr
    hint = reply.error["traceback"][-1]
    print(hint)
    assert "not found locally either" not in hint
    assert f"imported here from {project}, below root_dir {tmp_path / 'ws'}" in hint
    assert f"set root_dir to {project}" in hint
