"""Hostile and careless input to the surfaces added since b7cdf6e: the run's start folder
(RunSpec.workdir), the exported job's start folder, the cell-body import scan, the missing-file
hint, magic options and settings messages, and warm records named by checksums. Real runtime
and CLI processes, a real ipykernel, real file trees."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from cli_process import cli
from conftest import write_tree
from kernel import extension_kernel

from flyte_jupyter.core import config
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.errors import UsageError
from flyte_jupyter.core.export import _job_code, _read, notebook_selection
from flyte_jupyter.core.import_graph import _cell_body_imports
from flyte_jupyter.core.notebook import _module_text
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.submit import RunSpec, relative_workdir
from flyte_jupyter.core.troubleshoot import missing_file_hint
from flyte_jupyter.core.warm import bundle_tree
from flyte_jupyter.runtime.execute import linked_workdir

APP = """
import os

def main():
    here = os.getcwd()
    return here, sorted(os.listdir("."))
"""


def _snapshot(*folders: Path) -> set[Path]:
    return {p for folder in folders for p in folder.rglob("*")}


def _run_runtime(tmp_path: Path, root: Path, workdir: object, name: str) -> tuple[int, dict, Path]:
    """The runtime in its own process, with a spec.json whose workdir was tampered with."""
    built = build_bundle(select_files(root, copy_style="all"))
    run_dir = tmp_path / f"run-{name}"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(json.dumps({"workdir": workdir}))
    private = tmp_path / f"tmp-{name}"
    private.mkdir()
    env = {**os.environ, "TMPDIR": str(private)}
    proc = subprocess.run(
        [
            sys.executable, "-I", "-m", "flyte_jupyter.runtime",
            "--bundle", built.archive.as_uri(), "--digest", built.digest, "--entry", "app:main",
            "--outputs", (run_dir / "outputs.pkl").as_uri(), "--run-dir", run_dir.as_uri(),
        ],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    error = run_dir / "error.json"
    return proc.returncode, json.loads(error.read_text()) if error.exists() else {}, private


BAD_WORKDIRS = {
    "nul": "a\x00b",
    "long": "x" * 300,
    "surrogate": "\ud800",
    "number": 5,
    "list": ["a"],
    "absolute": "/etc",
    "dotdot": "a/../..",
}


@pytest.mark.parametrize("name", sorted(BAD_WORKDIRS))
def test_a_tampered_workdir_is_one_error_and_leaves_nothing(tmp_path, tree, name):
    root = tree({"app.py": APP, "data/x.csv": "1\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    before = _snapshot(root, outside)
    code, error, private = _run_runtime(tmp_path, root, BAD_WORKDIRS[name], name)
    made = _snapshot(root, outside) - before
    leftover = list(private.iterdir())
    print(f"{name}: exit {code}, paths made outside: {len(made)}, temp left: {len(leftover)}")
    print("  error:", error.get("type"), error.get("message", "")[:120])
    assert code == 1 and error["type"] == "ValueError"
    assert "is not a folder under root_dir" in error["message"]
    assert "\n" not in error["message"]
    assert made == set() and leftover == []


@pytest.mark.parametrize("name", sorted(BAD_WORKDIRS))
def test_a_tampered_workdir_in_process_leaves_no_temp_folder(tmp_path, monkeypatch, name):
    """The same values straight to linked_workdir: the error, and the temp folder it made gone."""
    root = write_tree(tmp_path / "ext", {"app.py": "", "data/x.csv": "1\n"})
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    here = os.getcwd()
    try:
        with pytest.raises(ValueError, match="is not a folder under root_dir"):
            linked_workdir(root, BAD_WORKDIRS[name])
    finally:
        os.chdir(here)
    leftover = list(private.iterdir())
    print(f"{name}: temp folders left: {len(leftover)}")
    assert leftover == []


@pytest.mark.parametrize("sub", ["app.py", "__pycache__", "données/ü"])
def test_an_odd_but_harmless_workdir_starts_in_a_private_folder(tmp_path, tree, sub):
    root = tree({"app.py": APP, "données/ü/x.txt": "x"})
    before = _snapshot(root)
    code, error, private = _run_runtime(tmp_path, root, sub, "odd")
    import pickle

    here, listed = pickle.loads((tmp_path / "run-odd/outputs.pkl").read_bytes())
    made = _snapshot(root) - before
    print(f"{sub!r}: exit {code}, started in {here}, entries {listed}, made in root: {len(made)}")
    assert code == 0, error
    assert here.startswith(str(private)) and here.endswith(sub)
    assert made == set() and list(private.iterdir()) == []


def test_a_symlink_planted_in_the_extraction_is_not_followed(tmp_path):
    """A bundle holds no links; one planted in the extraction (or a folder under it) must not
    lead the run's folder to link, or enter, what lies outside."""
    root = write_tree(tmp_path / "ext", {"app.py": "", "pkg/x.py": ""})
    outside = write_tree(tmp_path / "outside", {"inner/secret.txt": "s", "top.txt": "t"})
    os.symlink(outside, root / "pkg" / "out")
    here = os.getcwd()
    try:
        for sub in ("pkg/out", "pkg/out/inner"):
            workdir = Path(linked_workdir(root, sub))
            links = [p for p in workdir.rglob("*") if p.is_symlink()]
            escaping = [p for p in links if not p.resolve().is_relative_to(root.resolve())]
            print(f"{sub}: links {len(links)}, links leading outside root: {len(escaping)}")
            assert escaping == [] and Path.cwd() == workdir / sub
            os.chdir(here)
            shutil.rmtree(workdir)
    finally:
        os.chdir(here)


def test_the_clients_folder_relative_to_root_dir(tmp_path):
    root = write_tree(tmp_path / "root", {"sub/deep/x.txt": "x"})
    os.symlink(root / "sub", tmp_path / "alias")
    gone = tmp_path / "gone"
    gone.mkdir()
    here = os.getcwd()
    seen = {}
    try:
        os.chdir(tmp_path / "alias" / "deep")
        seen["symlinked cwd"] = relative_workdir(root)
        os.chdir(tmp_path)
        seen["outside"] = relative_workdir(root)
        seen["root /"] = relative_workdir(Path("/"))
        os.chdir(gone)
        gone.rmdir()
        seen["deleted cwd"] = relative_workdir(root)
    finally:
        os.chdir(here)
    print(seen)
    assert seen == {
        "symlinked cwd": "sub/deep",
        "outside": "",
        "root /": tmp_path.resolve().as_posix().lstrip("/"),
        "deleted cwd": "",
    }


HOSTILE_FOLDERS = [
    "it's",
    'say "hi"',
    "x'); import os; os.system('touch PWNED'); ('",
    "a\nb",
    "é\\n",
]


@pytest.mark.parametrize("folder", HOSTILE_FOLDERS)
def test_an_exported_notebook_folder_name_stays_a_literal(tmp_path, folder):
    project = write_tree(tmp_path / "p", {"pyproject.toml": "[project]\nname = 'p'\n"})
    (project / folder).mkdir()
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell("open('here.txt', 'w').write('1')")]
    nbformat.write(book, project / folder / "nb.ipynb")
    selection, job, _ = notebook_selection(project / folder / "nb.ipynb")
    code = Path(next(f.source for f in selection.files if f.path == job)).read_text()
    calls = [
        n for n in ast.walk(ast.parse(code))
        if isinstance(n, ast.Call)
        and getattr(n.func, "attr", "") in ("makedirs", "chdir", "system")
    ]  # fmt: skip
    args = [n.args[0].value for n in calls if isinstance(n.args[0], ast.Constant)]
    image = tmp_path / "image"
    image.mkdir()
    (image / "job.py").write_text(code)
    done = subprocess.run([sys.executable, "job.py"], cwd=image, capture_output=True, text=True)
    made = sorted(str(p.relative_to(image)) for p in image.rglob("*") if p.is_file())
    print(f"{folder!r}: calls {len(calls)}, literal args {len(args)}, files {made}")
    assert done.returncode == 0, done.stderr
    assert len(calls) == 2 and args == [folder, folder]
    assert made == sorted(["job.py", str(Path(folder) / "here.txt")])
    assert not (tmp_path / "PWNED").exists() and not (image / "PWNED").exists()


def test_a_notebook_at_root_dir_gets_the_same_job_as_before(tmp_path):
    project = write_tree(tmp_path / "p", {"pyproject.toml": "[project]\nname = 'p'\n"})
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(book, project / "nb.ipynb")
    selection, job, _ = notebook_selection(project / "nb.ipynb")
    shipped = Path(next(f.source for f in selection.files if f.path == job)).read_text()
    before, _ = _job_code(_read(project / "nb.ipynb"), project / "nb.ipynb")  # no folder
    print("chdir in the root job:", shipped.count("chdir"), "same as before:", shipped == before)
    assert shipped == before and "_flyte_jupyter_os" not in shipped


MYLIB = {
    "pyproject.toml": "[project]\nname = 'p'\n",
    "mylib/__init__.py": "",
    "mylib/calc.py": "def double(x):\n    return 2 * x\n",
    "mylib/unused.py": "raise RuntimeError('never imported')\n",
}


def test_an_exported_notebook_assigning_a_cell_source_string_ships_no_module(tmp_path):
    """An exported job pastes the notebook's cells: its own `CELL_SOURCE = 'import ...'` is a
    string, not the cell body of a %%flyte_run module, and names no module to ship."""
    project = write_tree(tmp_path / "p", MYLIB)
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_code_cell("import mylib.calc"),
        nbformat.v4.new_code_cell("CELL_SOURCE = 'import mylib.unused'"),
    ]
    nbformat.write(book, project / "job.ipynb")
    selection, _, _ = notebook_selection(project / "job.ipynb")
    shipped = sorted(f.path for f in selection.files)
    print("shipped:", shipped, "unused shipped:", int("mylib/unused.py" in shipped))
    assert "mylib/calc.py" in shipped and "mylib/unused.py" not in shipped


CRAFTED_CELLS = {
    "triple quotes": "s = '''\nCELL_SOURCE = 'import mylib.unused'\n'''\nimport mylib.calc",
    "fake line": "x = \"\\nCELL_SOURCE = 'import mylib.unused'\"\nimport mylib.calc",
    "huge": "import mylib.calc\n" + "x = 1\n" * 20_000,
    "nested": "import mylib.calc\ny = " + "(" * 5000 + "1" + ")" * 5000,
    "code": "__import__('os').system('touch PWNED')\nimport mylib.calc",
}


@pytest.mark.parametrize("name", sorted(CRAFTED_CELLS))
def test_crafted_cell_text_is_read_as_data(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    text, _ = _module_text([], CRAFTED_CELLS[name], ["y"])  # the generated cell module
    start = time.perf_counter()
    refs, _ = _cell_body_imports(text.encode())
    took = time.perf_counter() - start
    modules = sorted({r.module for r in refs})
    ran = int(Path("PWNED").exists())
    print(f"{name}: modules {modules}, {took * 1000:.0f} ms, ran code: {ran}")
    assert not Path("PWNED").exists() and took < 5
    assert "mylib.unused" not in modules
    if name != "nested":  # too deep for the scanner is nothing found, not a crash
        assert "mylib.calc" in modules  # __import__('os') is an import too


def test_a_cell_assigning_cell_source_in_a_real_kernel(tmp_path):
    with extension_kernel(write_tree(tmp_path / "nb", MYLIB)) as kernel:
        kernel.ok("CELL_SOURCE = 'import mylib.unused'")
        reply = kernel.ok(
            "%%flyte_run\nimport mylib.calc\ny = '''\nCELL_SOURCE = 'x'\n'''\nmylib.calc.double(1)"
        )
    print("result:", reply.result, reply.error_text)
    assert reply.result == "2", reply.error_text


P = "[Errno 2] No such file or directory: "
MESSAGES = {
    "long name": P + repr("x" * 5000),
    "nul": P + repr("a\x00b"),
    "deep unary": P + "'a', " + "-" * 100_000 + "1, 'b'",
    "deep not": P + "'a', " + "not " * 100_000 + "1, 'b'",
    "many quotes": P + "'" * 200_000,
    "huge": P + repr("y" * 2_000_000),
    "escape": P + repr("../../etc/passwd"),
    "absolute": P + repr("/etc/passwd"),
    "tuple": P + "'a', 'b'",
    "concat": P + "'da' + 'ta'",
}


def test_a_crafted_remote_error_message_gives_no_hint_and_no_crash(tmp_path):
    root = write_tree(tmp_path / "root", {"data/x.csv": "1\n"})
    (tmp_path / "passwd").write_text("secret\n")
    spec = RunSpec(
        "r", "m:f", "s", "d", None, None, "v", "local", ["."], str(root), "auto", {}, "now"
    )
    crashes, hints, slow = [], [], []
    for name, message in MESSAGES.items():
        start = time.perf_counter()
        try:
            hint = missing_file_hint("FileNotFoundError", message, spec)
        except BaseException as exc:
            crashes.append((name, type(exc).__name__))
            continue
        if time.perf_counter() - start > 1:
            slow.append(name)
        if hint:
            hints.append(name)
    print(f"crashes: {len(crashes)} {crashes}, hints: {len(hints)}, slow: {len(slow)}")
    assert crashes == [] and hints == [] and slow == []
    real = missing_file_hint("FileNotFoundError", P + repr("data/x.csv"), spec)
    assert "include=['data/x.csv']" in real


def test_a_remote_error_with_a_name_too_long_is_still_the_remote_error(tmp_path):
    """The run's own code raises the message: the client shows it, not an OSError of its own."""
    project = write_tree(
        tmp_path / "p",
        {
            "pyproject.toml": "[project]\nname = 'p'\n",
            "app.py": "def main():\n    raise FileNotFoundError(2, 'No such file or directory', '"
            + "x" * 5000
            + "')\n",
        },
    )
    done = cli("run", "app.py:main", cwd=project)
    tail = done.stderr.strip().splitlines()[-3:]
    print(
        "exit:", done.returncode, "client tracebacks:", done.stderr.count("Traceback (most recent")
    )
    print("\n".join(line[:120] for line in tail))
    assert done.returncode == 1 and "FileNotFoundError" in done.stderr
    assert "File name too long" not in done.stderr


def test_an_exported_notebook_naming_odd_strings_exports(tmp_path):
    project = write_tree(tmp_path / "p", {"pyproject.toml": "[project]\nname = 'p'\n"})
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_code_cell(
            "sep = 'a\\x00b.csv'\nodd = '\\ud800.txt'\nesc = '../../etc/passwd'\nlong = '"
            + "z/" * 120 + ".txt'"
        )
    ]  # fmt: skip
    nbformat.write(book, project / "nb.ipynb")
    selection, _, _ = notebook_selection(project / "nb.ipynb")
    named = [w for w in selection.warnings if "the notebook names" in w]
    print("warnings about named files:", len(named))
    assert named == []


HOSTILE_MAGICS = {
    "%flyte_runs 1 \x00": "UsageError: ",
    "%flyte_bundle --nosuch " + "y" * 10_000: "(see %flyte_bundle --help)",
    "%%flyte_run --copy-style 'all; rm -rf /'\n1": "is not allowed: use one of auto, all, none",
    "%%flyte_run --include\n1": "(see %%flyte_run --help)",
    "%flyte_runs -1": "UsageError: ",
    "%%flyte_bundle --exclude \"é'\n1": "close the quote",
    "%%flyte_run --include x\\\n1": "No escaped character: double the backslash",
    "%flyte_run --include x\\": "No escaped character: double the backslash",
}


def test_hostile_magic_options_are_one_line(tmp_path):
    with extension_kernel(tmp_path) as kernel:
        replies = {code: kernel.execute(code) for code in HOSTILE_MAGICS}
    tracebacks = [code[:30] for code, reply in replies.items() if reply.error]
    print("tracebacks:", len(tracebacks), tracebacks)
    for code in HOSTILE_MAGICS:
        print(repr(code[:40]), "->", replies[code].stderr.strip()[:160])
    assert tracebacks == []
    for code, wanted in HOSTILE_MAGICS.items():
        stderr = replies[code].stderr
        assert stderr.startswith("UsageError: ") and stderr.count("\n") == 1, stderr[:300]
        assert wanted in stderr, (code[:40], stderr[:300])


@pytest.mark.parametrize("value", ["a`all`b", "`none`", "x\u202ey"])
def test_a_bad_setting_is_named_with_its_value_as_written(tmp_path, monkeypatch, value):
    project = tmp_path / "p"
    project.mkdir()
    (project / ".flyte-jupyter.toml").write_text(f"copy_style = {json.dumps(value)}\n")
    with pytest.raises(UsageError) as file_error:
        config.from_project(project)
    monkeypatch.setenv("FLYTE_JUPYTER_COPY_STYLE", value)
    with pytest.raises(UsageError) as env_error:
        config.from_environment()
    shown = [str(file_error.value), str(env_error.value)]
    print("\n".join(shown))
    assert all(f"copy_style {value!r} is not allowed" in s and "\n" not in s for s in shown)


def test_a_warm_record_copied_under_another_name_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(tmp_path / "cache"))
    one = write_tree(tmp_path / "one", {"a.py": "A = 1\n", "secret_one.txt": "1"})
    two = write_tree(tmp_path / "two", {"b.py": "B = 2\n"})
    old = time.time() - 60  # a record is kept only for a tree older than the racy window
    for path in [one, two, *one.rglob("*"), *two.rglob("*")]:
        os.utime(path, (old, old))
    warm = tmp_path / "cache" / "warm"
    first = bundle_tree(one, force_root=True, include=["*.txt"])
    record_one = set(warm.glob("*.marshal"))
    fresh_two = bundle_tree(two, force_root=True, include=["*.txt"])
    (record_two,) = set(warm.glob("*.marshal")) - record_one
    (record_one,) = record_one
    shutil.copyfile(record_one, record_two)  # as a collision of the two names would leave it
    again = bundle_tree(two, force_root=True, include=["*.txt"])
    odd = bundle_tree(two, force_root=True, include=["\ud800", "\udcff"])
    print(
        "digest as fresh:", again.digest == fresh_two.digest,
        "one's digest reused:", again.digest == first.digest,
        "surrogate key records:", len(list(warm.glob("*.marshal"))),
    )  # fmt: skip
    assert again.digest == fresh_two.digest != first.digest
    assert odd.digest == bundle_tree(two, force_root=True, include=["\ud800", "\udcff"]).digest


def test_notebook_variables_named_like_the_generated_module_s_own_travel(tmp_path):
    """`CELL_SOURCE` and `ASSIGNED` were the generated module's names for the cell and what it
    assigns: a notebook's own variables so named replaced them remotely. Now they are plain
    inputs and outputs."""
    with extension_kernel(write_tree(tmp_path / "nb", MYLIB)) as kernel:
        kernel.ok("CELL_SOURCE = 'mine'\nASSIGNED = ['a', 'b']")
        reply = kernel.ok("%%flyte_run\nASSIGNED = CELL_SOURCE + '!'\nlen(ASSIGNED)")
        back = kernel.ok("ASSIGNED")
    print("out:", reply.result, "ASSIGNED back:", back.result)
    assert reply.result == "5", reply.error_text
    assert back.result == "'mine!'"
