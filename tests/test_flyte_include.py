"""Files Flyte programs declare with `include=` on their environments ship with the code, found
statically like imports (flyte anchors relative paths at the declaring file's folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flyte_jupyter.core.imports import scan
from flyte_jupyter.core.selection import select_files

TASKS = {
    "pyproject.toml": "[project]\nname = 'shop'\n",
    "wf/__init__.py": "",
    "wf/tasks.py": (
        "from pathlib import Path\n"
        "import flyte\n\n"
        "env = flyte.TaskEnvironment(\n"
        "    name='shop',\n"
        "    include=('utils/*.py', 'static/index.html', 'static/missing.css'),\n"
        ")\n\n\n"
        "def main():\n"
        "    import importlib\n"
        "    here = Path(__file__).parent\n"
        "    fmt = importlib.import_module('wf.utils.' + 'fmt')  # computed: include= ships it\n"
        "    return fmt.title((here / 'static/index.html').read_text().strip())\n"
    ),
    "wf/utils/__init__.py": "",
    "wf/utils/fmt.py": "from wf.shared import PREFIX\n\n\ndef title(s):\n    return PREFIX + s\n",
    "wf/utils/notes.txt": "not a .py file: the glob does not match it\n",
    "wf/shared.py": "PREFIX = '>> '\n",
    "wf/static/index.html": "<h1>shop</h1>\n",
    "utils/decoy.py": "# root-level utils/: not the folder the declaration names\n",
}

APP = {
    "pyproject.toml": "[project]\nname = 'dash'\n",
    "app.py": (
        "import flyte.app as fa\n\n"
        "app = fa.AppEnvironment(name='dash', include=['pages/', 'server.py'])\n"
    ),
    "pages/__init__.py": "",
    "pages/home.py": "import layout\n",
    "pages/__pycache__/home.cpython-311.pyc": b"\x00cache",
    "layout.py": "HEADER = 'dash'\n",
    "server.py": "from flyte.app import AppEnvironment as AE\n\nAE(name='s', include=tuple(X))\n",
    "unused.py": "# not declared, not imported\n",
}


def _reasons(selection) -> dict[str, str]:
    return {f.path: f.reason for f in selection.files}


def test_scanner_resolves_flyte_environment_classes_only():
    src = (
        "import flyte\nimport flyte.app as fa\nfrom flyte.app import AppEnvironment as AE\n"
        "from flyte.app.extras import FastAPIAppEnvironment\n"
        "a = flyte.TaskEnvironment(name='a', include=('x.py',))\n"
        "b = fa.ConnectorEnvironment(name='b', include=['conn'])\n"
        "c = AE(name='c', include=computed)\n"
        "d = FastAPIAppEnvironment(name='d', include=('static/*.html',))\n"
        "e = a.clone_with(name='e', include=('e.txt',))\n"
        "f = mylib.TaskEnvironment(name='f', include=('no.py',))\n"
        "g = dict(include=('no.py',))\n"
    )
    found = [(d.lineno, d.call, d.paths) for d in scan(src)[1]]
    print("declarations:", found)
    assert found == [
        (5, "flyte.TaskEnvironment", ("x.py",)),
        (6, "fa.ConnectorEnvironment", ("conn",)),
        (7, "AE", None),
        (8, "FastAPIAppEnvironment", ("static/*.html",)),
        (9, "a.clone_with", ("e.txt",)),
    ]


def test_task_declared_files_ship_with_reasons_and_a_missing_one_is_named(tree):
    root = tree(TASKS)
    selection = select_files(root, entries=[root / "wf/tasks.py"], copy_style="auto")
    reasons = _reasons(selection)
    print(json.dumps(reasons, indent=1))
    assert reasons["wf/utils/fmt.py"] == "include= in wf/tasks.py:6"
    assert reasons["wf/utils/__init__.py"] == "include= in wf/tasks.py:6"
    assert reasons["wf/static/index.html"] == "include= in wf/tasks.py:6"
    assert reasons["wf/shared.py"] == "import in wf/utils/fmt.py:1"  # its imports followed
    assert "utils/decoy.py" not in reasons and "wf/utils/notes.txt" not in reasons
    missing = [w for w in selection.warnings if "static/missing.css" in w]
    print("warnings:", selection.warnings)
    assert missing == [
        f"include= in wf/tasks.py:6 declares 'static/missing.css', which matches no file in "
        f"{root / 'wf'}: it will be missing remotely"
    ]


def test_entry_only_app_ships_the_modules_it_declares(tree):
    root = tree(APP)
    selection = select_files(root, entries=[root / "app.py"], copy_style="auto")
    reasons = _reasons(selection)
    print(json.dumps(reasons, indent=1), selection.warnings)
    assert reasons == {
        "app.py": "entry",
        "pages/__init__.py": "include= in app.py:3",
        "pages/home.py": "include= in app.py:3",
        "server.py": "include= in app.py:3",
        "layout.py": "import in pages/home.py:1",
    }
    print(f"cache files shipped: {sum('__pycache__' in p for p in reasons)}")
    assert selection.warnings == [
        "include= in server.py:3 is not a literal list of strings, so its files cannot be "
        "found before the run: name them with the include setting"
    ]


def test_declared_files_reach_the_bundle_command_and_a_local_run(tree, tmp_path):
    root = tree(TASKS)
    env = {**os.environ, "FLYTE_JUPYTER_WARM_WORKERS": "0"}
    cmd = [sys.executable, "-m", "flyte_jupyter"]
    out = subprocess.run(
        [*cmd, "bundle", str(root / "wf/tasks.py"), "--json", "--dry-run"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    shipped = {f["path"]: f["reason"] for f in doc["files"]}
    assert shipped["wf/static/index.html"] == "include= in wf/tasks.py:6"
    assert any("static/missing.css" in w for w in doc["warnings"])
    run = subprocess.run(
        [*cmd, "run", f"{root}/wf/tasks.py:main"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    print("local run returned:", run.stdout.strip().splitlines()[-1])
    assert run.stdout.strip().splitlines()[-1] == '">> <h1>shop</h1>"'
    assert "warning: include= in wf/tasks.py:6 declares 'static/missing.css'" in run.stderr


def test_declarations_outside_root_are_refused_with_the_fix(tree):
    root = tree(
        {
            "proj/pyproject.toml": "",
            "proj/app.py": (
                "import flyte\nflyte.TaskEnvironment(name='x', include=('../shared.txt',))\n"
            ),
            "shared.txt": "outside\n",
        }
    )
    selection = select_files(root / "proj", entries=[root / "proj/app.py"])
    print("warnings:", selection.warnings)
    assert [f.path for f in selection.files] == ["app.py"]
    assert selection.warnings == [
        f"include= in app.py:2 declares {Path(root, 'shared.txt')}, outside root_dir "
        f"{root / 'proj'}: set root_dir to a folder that contains it"
    ]


def test_a_notebook_cell_declares_files_relative_to_the_notebook_folder(tree, monkeypatch):
    root = tree(
        {"pyproject.toml": "", "nb/static/page.html": "<p>shop</p>\n", "static/page.html": "decoy"}
    )
    monkeypatch.chdir(root / "nb")  # a kernel runs in its notebook's folder
    cell = "import flyte\nenv = flyte.TaskEnvironment(name='c', include=['static/page.html'])\n"
    generated = {"_flyte_notebook/cell_1.py": (cell, "In[1]")}
    selection = select_files(root, generated=generated)
    reasons = _reasons(selection)
    print(json.dumps(reasons, indent=1), selection.warnings)
    assert reasons["nb/static/page.html"] == "include= in _flyte_notebook/cell_1.py:2"
    assert "static/page.html" not in reasons and selection.warnings == []


def test_declared_files_reach_a_flyte_pod(tree, flyte_emulator, tmp_path):
    from test_flyte import cli, cli_env

    root = tree(TASKS)
    run = cli(cli_env(flyte_emulator), tmp_path, "run", f"{root}/wf/tasks.py:main",
              "--executor", "flyte")  # fmt: skip
    assert run.returncode == 0, run.stderr
    print("flyte run returned:", run.stdout.strip().splitlines()[-1])
    assert run.stdout.strip().splitlines()[-1] == '">> <h1>shop</h1>"'
