"""A `%%flyte_run` cell's own imports ship their local modules, in a real ipykernel: the cell
body travels as a string the runtime executes, so the import scan must read that string too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_tree
from kernel import Kernel, extension_kernel

PROJECT = {
    "pyproject.toml": "[project]\nname='nb-project'\n",
    "mylib/__init__.py": "",
    "mylib/calc.py": "def double(x):\n    return 2 * x\n",
    "mylib/stats.py": "def mean(xs):\n    return sum(xs) / len(xs)\n",
    "mylib/unused.py": "raise RuntimeError('never imported')\n",
}


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    with extension_kernel(write_tree(tmp_path / "nb", PROJECT)) as k:
        yield k


def test_modules_imported_in_the_run_cell_itself_ship(kernel: Kernel):
    reply = kernel.ok("%%flyte_run\nimport mylib.calc as c\nc.double(3)")
    assert reply.result == "6", reply.error_text
    reply = kernel.ok("%%flyte_run\nfrom mylib.calc import double\ndouble(4)")
    assert reply.result == "8", reply.error_text
    lazy = "def avg(xs):\n    from mylib.stats import mean\n    return mean(xs)\n"
    assert kernel.ok(f"%%flyte_run\n{lazy}avg([1, 3])").result == "2.0"
    reply = kernel.ok("%%flyte_bundle\nimport mylib.calc\nmylib.calc.double(1)")
    preview = "\n".join(d.get("text/plain", "") for d in reply.displays)
    print(preview)
    shipped = [line for line in preview.splitlines() if "import in _flyte_notebook/" in line]
    print("files the cell's import ships:", len(shipped))
    assert len(shipped) == 2 and "calc.py" in shipped[1] and "unused.py" not in preview


def test_an_unresolvable_import_in_the_run_cell_is_warned_before_the_run(kernel: Kernel):
    reply = kernel.execute("%%flyte_run\nimport nosuchmodule_xyz\n1")
    print(reply.stderr)
    assert "cannot resolve import 'nosuchmodule_xyz'" in reply.stderr


def test_an_exported_notebook_assigning_cell_source_exports(tmp_path: Path):
    """The export's job module is generated too; a notebook's own `CELL_SOURCE = ...` that is no
    string of Python is its business, not an import to follow."""
    import nbformat

    from flyte_jupyter.core.export import notebook_selection

    project = write_tree(tmp_path / "nb", PROJECT)
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_code_cell("import mylib.calc"),
        nbformat.v4.new_code_cell("CELL_SOURCE = 'this is not python ('\nx = 1"),
        nbformat.v4.new_code_cell("CELL_SOURCE = compute()"),
    ]
    nbformat.write(book, project / "job.ipynb")
    selection, _, _ = notebook_selection(project / "job.ipynb")
    shipped = sorted(f.path for f in selection.files)
    print("shipped:", shipped)
    assert "mylib/calc.py" in shipped and "mylib/unused.py" not in shipped


def test_a_lazy_import_left_out_by_no_lazy_imports_is_named_as_the_cause(kernel: Kernel):
    kernel.ok("def avg(xs):\n    from mylib.stats import mean\n    return mean(xs)\n")
    reply = kernel.execute("%%flyte_run --no-lazy-imports\navg([1, 3])")
    assert reply.error and reply.error["ename"] == "ModuleNotFoundError"
    hint = reply.error["traceback"][-1]
    print(hint)
    assert "inside a function while lazy_imports is off" in hint and "mylib/**" in hint
