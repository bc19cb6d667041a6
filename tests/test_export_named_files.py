"""An exported notebook whose code names a data file that would not be in the image is warned
about before the build, with the include that ships it (the README's quickstart export reads
data/prices.json). Real CLI processes, real file trees, no engine (--context-only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from conftest import write_tree

CELLS = [
    "import json\nfrom pathlib import Path",
    "prices = json.loads(Path('data/prices.json').read_text())",
    "note = 'data/not_there.json'  # names no file: nothing to say\nlabel = 'a.b'",
    "%%flyte_run\ntotal = sum(prices)",
]


def export(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", "export", "shop.ipynb", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_export_warns_about_a_named_data_file_the_image_lacks(tmp_path: Path):
    project = write_tree(tmp_path / "p", {"data/prices.json": "[1, 2]\n"})
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nbformat.write(book, project / "shop.ipynb")
    done = export(project, "--context-only", str(tmp_path / "ctx"))
    print(done.stderr)
    assert done.returncode == 0
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    print("warnings:", len(warnings))
    assert len(warnings) == 1
    assert "'data/prices.json'" in warnings[0] and "--include 'data/prices.json'" in warnings[0]
    shipped = export(project, "--context-only", str(tmp_path / "c2"), "--include", "data/*")
    print(shipped.stderr)
    assert "warning:" not in shipped.stderr
    assert (tmp_path / "c2/root/app/data/prices.json").read_text() == "[1, 2]\n"
