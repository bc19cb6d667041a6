"""What a new user met on a first trial, each as a test: real venvs, real CLI subprocesses,
real notebooks and a real kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_process import cli

from flyte_jupyter.core import history


def one_line(stderr: str) -> str:
    """Bad input: one line on stderr, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


# --- --image python=/path/to/venv -------------------------------------------------------------


def test_an_ordinary_venv_is_another_environment(tree, tmp_path):
    """`python -m venv` (symlinks, not --copies): the venv's python resolves to ours, but its
    site-packages lack flyte_jupyter and the project's packages."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    assert (env / "bin" / "python").is_symlink()
    assert os.path.realpath(env / "bin" / "python") == os.path.realpath(sys.executable)
    app = tree(
        {
            "pyproject.toml": "[project]\nname='shop'\n",
            "app.py": "import pathspec\n\ndef main():\n    return pathspec.__name__\n",
            "plain.py": "import sys\n\ndef main():\n    return sys.prefix\n",
        }
    )
    done = cli("run", "app.py:main", "--image", f"python={env}", cwd=app)
    print(done.stderr)
    assert done.returncode == 1
    assert "EnvironmentMismatch" in done.stderr and "not installed here: pathspec==" in done.stderr
    assert "No module named 'flyte_jupyter'" not in done.stderr
    done = cli("run", "plain.py:main", "--image", f"python={env}", cwd=app)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'"{env}"'


# --- FILE.py:FUNCTION and --arg are checked before a run starts ---------------------------------

APP = {
    "pyproject.toml": "[project]\nname='shop'\n",
    "app.py": """
        from helpers import imported_main


        def main(region="eu", *, rate=1.0):
            return region


        def needs(count):
            return count


        def anything(**kwargs):
            return sorted(kwargs)
        """,
    "helpers.py": "def imported_main():\n    return 'ok'\n",
}


@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        ("app.py:nosuch", [], "app.py defines no function 'nosuch' (its functions: anything, main"),
        ("app.py:main", ["--arg", "zzz=1"], "main() takes no argument 'zzz' (its parameters: "),
        ("app.py:needs", [], "needs() needs argument 'count': add --arg count=JSON"),
    ],
)
def test_a_wrong_function_or_argument_fails_before_any_run(tree, target, args, message):
    app = tree(APP)
    done = cli("run", target, *args, cwd=app)
    assert done.returncode == 2
    assert message in one_line(done.stderr)
    runs = history.recent()
    print(f"runs recorded: {len(runs)}")
    assert runs == []


def test_functions_the_check_cannot_see_still_run(tree):
    app = tree(APP)
    for target, args, expected in [
        ("app.py:imported_main", [], '"ok"'),
        ("app.py:anything", ["--arg", "zzz=1"], '[\n  "zzz"\n]'),
        ("app.py:main", ["--arg", "rate=2"], '"eu"'),
    ]:
        done = cli("run", target, *args, cwd=app)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected


def test_runs_limit_zero_is_refused_not_reported_as_no_runs(tree):
    app = tree(APP)
    assert cli("run", "app.py:main", cwd=app).returncode == 0
    done = cli("runs", "--limit", "0", cwd=app)
    assert done.returncode == 2 and "no runs yet" not in done.stdout
    assert "--limit: '0' is not a whole number of at least 1" in one_line(done.stderr)
    listed = cli("runs", "--limit", "1", cwd=app)
    assert listed.returncode == 0 and "app:main" in listed.stdout, listed.stdout


# --- export ----------------------------------------------------------------------------------


def test_export_ships_cell_includes_runs_timed_statements_and_pins_once(tmp_path):
    """`%%flyte_run --include` data ships in the image, `%time x = ...` defines x, and a
    `%pip install requests` next to the installed pin lists requests once, pinned."""
    from importlib.metadata import version as installed

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from flyte_jupyter.core.export import export_notebook

    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname='p'\n")
    (root / "data").mkdir()
    (root / "data" / "prices.json").write_text("[1, 2]\n")
    (root / "data" / "notes.txt").write_text("not asked for\n")
    book = new_notebook(
        cells=[
            new_code_cell("%pip install pathspec -q"),
            new_code_cell(
                "%%flyte_run --include 'data/*.json'\nimport json, pathspec\n"
                "prices = json.load(open('data/prices.json'))"
            ),
            new_code_cell("%time total = sum(prices)\n%timeit -n 3 -r 1 again = total + 1"),
        ]
    )
    nbformat.write(book, root / "shop.ipynb")
    out = tmp_path / "context"
    result = export_notebook(root / "shop.ipynb", context_only=out)
    shipped = sorted(f.path for f in result.selection.files)
    print(f"shipped: {shipped}")
    assert "data/prices.json" in shipped and "data/notes.txt" not in shipped
    assert (out / "root/app/data/prices.json").is_file()
    job = (out / "root/app/_flyte_notebook/shop_job.py").read_text()
    assert "\ntotal = sum(prices)\n" in job and "\nagain = total + 1\n" in job
    version = installed("pathspec")
    names = [r for r in result.requirements if r.lower().startswith("pathspec")]
    print(f"pathspec requirements: {names}")
    assert names == [f"pathspec=={version}"]
    requirements_txt = (out / "build/requirements.txt").read_text().split()
    assert (
        requirements_txt.count(f"pathspec=={version}") == 1 and "pathspec" not in requirements_txt
    )
    # the job runs: a real interpreter, in the exported layout, with x defined
    done = subprocess.run(
        [sys.executable, "-c", (out / "root/app/_flyte_notebook/shop_job.py").read_text()],
        cwd=out / "root/app",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert '"again": 4' in done.stdout and '"total": 3' in done.stdout


def test_export_of_a_missing_notebook_says_it_does_not_exist(tmp_path):
    done = cli("export", "nosuch.ipynb", "--context-only", str(tmp_path / "ctx"), cwd=tmp_path)
    assert done.returncode == 2
    assert "nosuch.ipynb does not exist" in one_line(done.stderr)


def test_an_airgapped_build_reads_requirements_files_as_pip_does(tmp_path):
    """Comment and blank lines of a requirements file are not package names for pip download."""
    from flyte_jupyter.core.image import Image, render_for_build

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# pinned for the job\n\npathspec  # walks trees\n")
    image = Image.from_debian_base(None, "airgapped").with_requirements(requirements)
    context = render_for_build(image, airgapped=True)
    wheels = [name for name in context.files if name.startswith("build/wheels/")]
    print(f"wheels: {wheels}")
    assert len(wheels) == 1 and wheels[0].startswith("build/wheels/pathspec-")


# --- %reload_ext / %unload_ext ---------------------------------------------------------------

HOOKS = (
    "cbs = get_ipython().events.callbacks['post_run_cell']\n"
    "print(sum('KernelSession' in getattr(cb, '__qualname__', '') for cb in cbs))"
)


def test_reload_ext_leaves_one_recording_hook_and_unload_removes_the_magics(tree):
    from kernel import extension_kernel

    project = tree({"pyproject.toml": "[project]\nname='nb'\n"})
    with extension_kernel(project) as kernel:
        kernel.ok("def double(x):\n    return x * 2\n")
        counts = [kernel.ok(HOOKS).stdout.strip()]
        for _ in range(2):
            kernel.ok("%reload_ext flyte_jupyter")
            counts.append(kernel.ok(HOOKS).stdout.strip())
        print(f"recording hooks after load, reload, reload: {counts}")
        assert counts == ["1", "1", "1"]
        reply = kernel.ok("%%flyte_run\nvalue = double(21)\nvalue")  # recorded before reload
        assert reply.result == "42"
        kernel.ok("%unload_ext flyte_jupyter")
        assert kernel.ok(HOOKS).stdout.strip() == "0"
        gone = kernel.execute("%%flyte_run\n1")
        assert "Cell magic `%%flyte_run` not found" in (gone.error_text + gone.stderr)
        kernel.ok("%load_ext flyte_jupyter")
        assert kernel.ok("%%flyte_run\ndouble(5)").result == "10"


# --- missing-module advice -------------------------------------------------------------------


def test_a_package_imported_by_computed_name_is_included_whole_in_one_hint(tree):
    app = tree(
        {
            "pyproject.toml": "[project]\nname='shop'\n",
            "app.py": """
                import importlib


                def main(n=1):
                    return importlib.import_module(f"plugins.p{n}").NAME
                """,
            "plugins/__init__.py": "",
            "plugins/p1.py": "NAME = 'one'\n",
            "plugins/p2.py": "NAME = 'two'\n",
        }
    )
    done = cli("run", "app.py:main", cwd=app)
    assert done.returncode == 1
    assert "Add include=['plugins/**'] (--include)" in done.stderr, done.stderr
    runs = []
    for n in ("1", "2"):
        again = cli("run", "app.py:main", "--include", "plugins/**", "--arg", f"n={n}", cwd=app)
        assert again.returncode == 0, again.stderr
        runs.append(again.stdout.strip())
    print(f"runs after following the one hint: {runs}")
    assert runs == ['"one"', '"two"']


def test_a_module_above_root_dir_is_named_before_and_after_the_run(tmp_path):
    """`shared/` (a folder without __init__.py) beside the project: the warning before the run,
    for a file and for a notebook cell, and the hint after it name the same root_dir."""
    from conftest import write_tree

    from flyte_jupyter.core.selection import select_files

    ws = write_tree(
        tmp_path / "ws",
        {
            "project/pyproject.toml": "[project]\nname='p'\n",
            "project/app.py": "from shared.common import f\n\ndef main():\n    return f()\n",
            "shared/common.py": "def f():\n    return 1\n",
        },
    )
    project = ws / "project"
    cell = select_files(
        project,
        generated={
            "_flyte_notebook/__init__.py": ("", "notebook package"),
            "_flyte_notebook/cell_0.py": ("from shared.common import f\n", "In[1]"),
        },
    )
    print(f"cell warnings: {cell.warnings}")
    assert any(f"it resolves with root_dir {ws}" in w for w in cell.warnings)
    done = cli("run", "app.py:main", cwd=project)
    assert done.returncode == 1
    assert (
        f"warning: cannot resolve import 'shared.common' (app.py:1) under root_dir {project}: "
        f"it resolves with root_dir {ws}" in done.stderr
    )
    assert (
        f"Hint: 'shared' is under {ws}, outside root_dir {project}: set root_dir to {ws}"
        in done.stderr
    )
    fixed = cli("run", "project/app.py:main", "--root-dir", str(ws), cwd=ws)
    assert fixed.returncode == 0 and fixed.stdout.strip() == "1", fixed.stderr


# --- smaller -------------------------------------------------------------------------------


def test_home_and_filesystem_root_are_named_plainly(tmp_path, monkeypatch):
    from flyte_jupyter.core.errors import BundleError
    from flyte_jupyter.core.selection import select_files

    monkeypatch.setenv("HOME", str(tmp_path))
    messages = []
    for root in (tmp_path, Path("/")):
        with pytest.raises(BundleError) as err:
            select_files(root, copy_style="all")
        messages.append(str(err.value))
    print(messages)
    assert f"root_dir {tmp_path} is your home directory: everything in it" in messages[0]
    assert "root_dir / is the filesystem root: everything in it" in messages[1]


def test_a_symlink_loop_is_not_called_dangling_and_sizes_are_human(tree):
    from flyte_jupyter.core.errors import BundleError
    from flyte_jupyter.core.selection import select_files

    root = tree({"pyproject.toml": "[project]\nname='p'\n", "notes.txt": "x" * 20_480})
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    (root / "gone").symlink_to(root / "nothing-here")
    warnings = select_files(root, copy_style="all").warnings
    print(f"warnings: {warnings}")
    assert "skipped loop_a: symlink loop" in warnings and "skipped loop_b: symlink loop" in warnings
    assert "skipped gone: dangling symlink" in warnings
    with pytest.raises(BundleError) as err:
        select_files(root, copy_style="all", max_bytes=10_000)
    assert "Largest files: notes.txt (20.0 KB)" in str(err.value)
    assert "over the 9.8 KB limit" in str(err.value) and "0.0 MB" not in str(err.value)


def test_flyte_bundle_shows_a_large_file_warning_once(tree):
    from kernel import extension_kernel

    project = tree({"pyproject.toml": "[project]\nname='nb'\n", "data/big.bin": b"\0" * 11 * 2**20})
    with extension_kernel(project) as kernel:
        reply = kernel.ok("%%flyte_bundle --include 'data/*'\nx = 1")
        # what a notebook shows: the streams and each display's richest form (its HTML)
        shown = reply.stdout + reply.stderr + "".join(d["text/html"] for d in reply.displays)
        count = shown.count("data/big.bin is 11.0 MB: large files slow every upload")
        print(f"large-file warnings shown: {count}")
        assert count == 1


# --- packaging -------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_the_version_has_one_source_package_json(tmp_path):
    """pyproject reads package.json's version (hatchling, as the real build does): a project
    with pyproject's [tool.hatch.version] and a package.json saying 9.9.9 builds as 9.9.9."""
    import json
    import re
    from importlib.metadata import version

    import tomllib

    import flyte_jupyter

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    source = pyproject["tool"]["hatch"]["version"]
    assert source["path"] == "package.json" and "'" not in source["pattern"]
    package_json = (REPO / "package.json").read_text()
    assert flyte_jupyter.__version__ == version("flyte-jupyter")
    assert flyte_jupyter.__version__ == json.loads(package_json)["version"]
    (tmp_path / "package.json").write_text(
        re.sub(r'^  "version": "[^"]+",$', '  "version": "9.9.9",', package_json, flags=re.M)
    )
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling>=1.21"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "flyte-jupyter"\ndynamic = ["version"]\n\n'
        f"[tool.hatch.version]\npath = \"package.json\"\npattern = '{source['pattern']}'\n\n"
        "[tool.hatch.build.targets.wheel]\nbypass-selection = true\n"
    )
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
         "--quiet", "--report", str(report), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (built,) = json.loads(report.read_text())["install"]
    print(f"version built from package.json: {built['metadata']['version']}")
    assert built["metadata"]["version"] == "9.9.9"


def test_install_json_ships_with_the_labextension():
    """JupyterLab's extension manager reads install.json to say how to uninstall."""
    import json

    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    shared = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    labext = shared["flyte_jupyter/labextension"]
    assert shared["install.json"] == f"{labext}/install.json"
    info = json.loads((REPO / "install.json").read_text())
    assert info["packageManager"] == "python"
    assert info["packageName"] == pyproject["project"]["name"]


def test_the_hint_never_moves_root_dir_onto_a_folder_shadowing_an_installed_package(tmp_path):
    """An example folder named like an installed package (`pathspec/` beside the project) is
    not a reason to move root_dir up: the package is missing from the image, so say that."""
    from conftest import write_tree

    from flyte_jupyter.core.submit import RunSpec
    from flyte_jupyter.core.troubleshoot import missing_module_hint

    ws = write_tree(
        tmp_path / "ws",
        {
            "project/pyproject.toml": "[project]\nname='p'\n",
            "pathspec/__init__.py": "EXAMPLE = True\n",
            "shared/common.py": "X = 1\n",
        },
    )
    spec = RunSpec(
        run_id="r", entry="app:main", store="file:///s", run_dir="file:///s/runs/r", digest=None,
        bundle_url=None, version="v", executor="local", python_path=["."],
        root_dir=str(ws / "project"), copy_style="auto", client={}, created="now",
    )  # fmt: skip
    installed = missing_module_hint("pathspec", spec)
    above = missing_module_hint("shared", spec)
    print(installed, above, sep="\n")
    assert installed.startswith("Hint: 'pathspec' is installed here but not in the execution")
    assert str(ws) not in installed
    assert above.startswith(f"Hint: 'shared' is under {ws}, outside root_dir {ws / 'project'}")
