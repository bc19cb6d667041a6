"""An exported notebook whose code names a data file that would not be in the image is warned
about before the build, with the include that ships it (the README's quickstart export reads
data/prices.json). Real CLI processes, real file trees, no engine (--context-only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from cli_process import cli
from conftest import write_tree

CELLS = [
    "import json\nfrom pathlib import Path",
    "prices = json.loads(Path('data/prices.json').read_text())",
    "note = 'data/not_there.json'  # names no file: nothing to say\nlabel = 'a.b'",
    "%%flyte_run\ntotal = sum(prices)",
]


def export(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("export", "shop.ipynb", *args, cwd=project)


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


def test_an_exported_notebook_in_a_subfolder_starts_in_that_folder(tmp_path: Path):
    """`project/nbs/shop.ipynb` reading `data/x.json` (next to it) and `../shared/y.json`: the
    job starts in nbs/ of the image's tree, as a cell's run does. The job module from the build
    context runs here with plain Python, from the image's workdir, as its entrypoint would."""
    project = write_tree(
        tmp_path / "p",
        {
            "pyproject.toml": "[project]\nname = 'p'\n",
            "nbs/data/x.json": "[1]\n",
            "shared/y.json": "[2]\n",
        },
    )
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_code_cell("import json\nx = json.load(open('data/x.json'))"),
        nbformat.v4.new_code_cell("both = x + json.load(open('../shared/y.json'))"),
    ]
    nbformat.write(book, project / "nbs" / "shop.ipynb")
    warned = export(project / "nbs", "--context-only", str(tmp_path / "c1"))
    print(warned.stderr)
    assert "--include 'nbs/data/x.json' if the job reads it" in warned.stderr
    assert "--include 'shared/y.json' if the job reads it" in warned.stderr
    includes = ["--include", "nbs/data/*.json", "--include", "shared/*.json"]
    done = export(project / "nbs", "--context-only", str(tmp_path / "c2"), *includes)
    assert done.returncode == 0 and "warning:" not in done.stderr, done.stderr
    app = tmp_path / "c2/root/app"
    job = subprocess.run(
        [sys.executable, str(app / "_flyte_notebook/shop_job.py")],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(job.stdout, job.stderr)
    assert 'flyte-jupyter results: {"both": [1, 2], "x": [1]}' in job.stdout
