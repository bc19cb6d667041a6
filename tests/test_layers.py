"""The layers and the run history's provenance: core never imports the kernel or the server,
the runtime never imports core; each run records the notebook and cell it came from, and every
run listing (CLI, %flyte_runs, REST) shows it, older histories included."""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tree
from kernel import Kernel, extension_kernel

import flyte_jupyter
from flyte_jupyter.core import history
from flyte_jupyter.core.submit import recent_runs

pytest_plugins = ["pytest_jupyter.jupyter_server"]

PACKAGE = Path(flyte_jupyter.__file__).parent
NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _imported(path: Path) -> set[str]:
    """Absolute names of the modules `path` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("core", ("flyte_jupyter.kernel", "flyte_jupyter.server", "flyte_jupyter.cli")),
        ("runtime", ("flyte_jupyter.core", "flyte_jupyter.kernel", "flyte_jupyter.server")),
    ],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]):
    files = sorted((PACKAGE / layer).rglob("*.py"))
    crossing = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in files
        for name in sorted(_imported(path))
        if name.startswith(forbidden)
    ]
    print(f"{layer}: {len(files)} modules scanned, imports across layers: {len(crossing)}")
    assert len(files) > 5 and crossing == []


OLD_SCHEMA = (  # the history before notebooks and cells were recorded
    "CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, entry TEXT, digest TEXT, "
    "version TEXT, image TEXT, executor TEXT, store TEXT, status TEXT, created TEXT, "
    "started TEXT, finished TEXT, exit_code INTEGER, error TEXT, pid INTEGER, spec TEXT, "
    "pid_start TEXT)"
)


def test_an_older_history_gains_notebook_and_cell_and_listings_show_them(tmp_path: Path):
    path = history.history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = json.dumps({"client": {"notebook": "/home/ana/work/analysis.ipynb"}})
    with sqlite3.connect(path) as db:
        db.execute(OLD_SCHEMA)
        insert = (
            "INSERT INTO runs (id, name, entry, version, executor, store, status, created, spec) "
            "VALUES (?, 'In[4]', 'e:f', 'v', 'local', 'file:///s', 'succeeded', ?, ?)"
        )
        db.execute(insert, ["from-notebook", "2026-01-02T00:00:00+00:00", spec])
        db.execute(insert, ["from-cli", "2026-01-01T00:00:00+00:00", "not json {"])
    db.close()
    records = {r.id: r for r in recent_runs(10)}
    print({i: (r.notebook, r.cell, r.origin()) for i, r in records.items()})
    assert records["from-notebook"].notebook == "/home/ana/work/analysis.ipynb"
    assert records["from-notebook"].origin() == "analysis.ipynb"
    assert (records["from-cli"].notebook, records["from-cli"].origin()) == (None, "-")
    listing = subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", "runs"], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    print(listing.stdout)
    header, *rows = listing.stdout.splitlines()
    assert header.split()[-1] == "from"
    assert next(r for r in rows if "from-notebook" in r).endswith("analysis.ipynb")
    assert next(r for r in rows if "from-cli" in r).endswith(" -")


def _in_cell(kernel: Kernel, cell_id: str) -> None:
    """Send executions as JupyterLab does: with the cell's id in the request's metadata."""
    msg = kernel.client.session.msg

    def with_cell_id(msg_type, content=None, parent=None, header=None, metadata=None):
        return msg(msg_type, content, parent, header, {**(metadata or {}), "cellId": cell_id})

    kernel.client.session.msg = with_cell_id


def test_a_cell_run_records_its_notebook_and_cell_and_every_listing_shows_them(tmp_path: Path):
    project = write_tree(
        tmp_path / "nb",
        {"pyproject.toml": "[project]\nname='p'\n", "analysis.ipynb": json.dumps(NOTEBOOK)},
    )
    notebook = project / "analysis.ipynb"
    with extension_kernel(project, env={"JPY_SESSION_NAME": str(notebook)}) as kernel:
        _in_cell(kernel, "c0ffee-1")
        kernel.ok("%%flyte_run\ntotal = 6 * 7")
        count = int(kernel.ok("print(get_ipython().execution_count)").stdout) - 1
        listed = kernel.ok("%flyte_runs 5")
    record = history.recent(1)[0]
    print("recorded:", record.notebook, record.cell, record.cell_id)
    assert (record.notebook, record.cell, record.cell_id) == (
        str(notebook),
        f"In[{count}]",
        "c0ffee-1",
    )
    text = listed.displays[0]["text/plain"]
    print(text)
    assert f"analysis.ipynb In[{count}]" in text.splitlines()[1]
    assert "analysis.ipynb" in listed.displays[0]["text/html"]
    cli = subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", "runs"], capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines()[1].endswith(f"analysis.ipynb In[{count}]"), cli.stdout


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"flyte_jupyter.server": True}}}


async def test_the_server_runs_list_sends_notebook_and_cell(jp_fetch, jp_root_dir):
    notebook = jp_root_dir / "nb" / "analysis.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(json.dumps(NOTEBOOK))
    code = (
        "from flyte_jupyter.core.submit import submit\n"
        "run = submit(None, 'json:dumps', args=[1], version='v1', cell='In[3]', cell_id='c-9')\n"
        "print(run.id)"
    )
    env = {**os.environ, "JPY_SESSION_NAME": str(notebook)}
    run_id = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    rows = json.loads((await jp_fetch("flyte-jupyter", "api", "runs")).body)["runs"]
    row = next(r for r in rows if r["id"] == run_id)
    print("row:", row)
    assert (row["notebook"], row["cell"], row["cell_id"]) == ("nb/analysis.ipynb", "In[3]", "c-9")


def test_the_runtime_ships_as_one_file_set_everywhere():
    """The local copy, the image layer and the Flyte pod's archive hold the same files."""
    import tarfile

    from flyte_jupyter.core.executors.flyte import runtime_archive
    from flyte_jupyter.core.image import Image, render
    from flyte_jupyter.core.runtime_files import runtime_copy, runtime_files

    wanted = {rel: Path(src).read_bytes() for rel, src in runtime_files().items()}
    copy = runtime_copy()
    copied = {p.relative_to(copy).as_posix(): p.read_bytes() for p in copy.rglob("*.py")}
    layer = render(Image.from_debian_base(python_version="3.11")).files
    in_image = {k.removeprefix("root/opt/flyte-jupyter/"): v for k, v in layer.items()}
    in_image = {k: v for k, v in in_image.items() if k.startswith("flyte_jupyter/")}
    with tarfile.open(runtime_archive()[0]) as tar:
        archived = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    print(f"runtime files: {len(wanted)}; copy {len(copied)}, image {len(in_image)}, "
          f"archive {len(archived)}")  # fmt: skip
    assert "flyte_jupyter/runtime/execute.py" in wanted
    assert copied == in_image == archived == wanted


@pytest.mark.parametrize("warm", ["1", "0"])
def test_another_interpreter_boots_the_runtime_copy_and_user_code_never_sees_it(
    tree, tmp_path: Path, monkeypatch, warm: str
):
    """An ordinary venv lacks flyte_jupyter: the boot line imports the runtime's copy, then
    takes it off sys.path before the user's function runs (warm worker and cold start)."""
    monkeypatch.setenv("FLYTE_JUPYTER_WARM_WORKERS", warm)
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    app = tree(
        {
            "pyproject.toml": "[project]\nname='shop'\n",
            "paths.py": "import sys\n\ndef main():\n    return sys.path\n",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", "run", "paths.py:main", "--image", f"python={env}"],
        capture_output=True, text=True, cwd=app, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout)
    copies = [p for p in paths if "runtime" in Path(p).parts]
    print(f"warm={warm}: sys.path entries {len(paths)}, runtime copies on it: {len(copies)}")
    assert copies == []
