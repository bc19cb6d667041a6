"""File selection on real trees: copy styles, the seed's project layouts, ignores, secrets,
symlinks, root_dir detection and the guards."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest
from conftest import write_tree

from flyte_jupyter.core import ignore as ig
from flyte_jupyter.core.errors import BundleError, UsageError
from flyte_jupyter.core.selection import Selection, detect_root_dir, select_files


def paths(selection: Selection) -> set[str]:
    return {f.path for f in selection.files}


def reasons(selection: Selection) -> dict[str, str]:
    return {f.path: f.reason for f in selection.files}


SHOP = {
    "pyproject.toml": "[project]\nname='shop'\n",
    "app.py": """
        import json
        from shop.pricing import total
        print(total([1.0]))
        """,
    "shop/__init__.py": "",
    "shop/pricing.py": """
        from shop.rates import rate

        def total(prices):
            from shop.discounts import discount  # lazy
            return sum(prices) * rate() * discount()
        """,
    "shop/rates.py": "def rate():\n    return 1.2\n",
    "shop/discounts.py": "def discount():\n    return 0.9\n",
    "shop/unused.py": "X = 1\n",
    "data/prices.csv": "a,b\n1,2\n",
    "notes.md": "hello\n",
}


def test_auto_ships_the_import_closure_with_reasons(tree):
    root = tree(SHOP)
    sel = select_files(root, entries=[root / "app.py"])
    assert paths(sel) == {
        "app.py",
        "shop/__init__.py",
        "shop/pricing.py",
        "shop/rates.py",
        "shop/discounts.py",
    }
    why = reasons(sel)
    assert why["app.py"] == "entry"
    assert why["shop/pricing.py"] == "import in app.py:2"
    assert why["shop/rates.py"] == "import in shop/pricing.py:1"
    assert why["shop/discounts.py"] == "lazy import in shop/pricing.py:4"
    assert sel.warnings == []
    assert sel.copy_style == "auto" and sel.root_dir == root.resolve()


def test_lazy_imports_can_be_turned_off_like_flyte(tree):
    root = tree(SHOP)
    sel = select_files(root, entries=[root / "app.py"], lazy_imports=False)
    assert "shop/discounts.py" not in paths(sel)
    assert "shop/rates.py" in paths(sel)


def test_loaded_modules_from_a_live_interpreter_are_shipped(tree):
    root = tree({**SHOP, ".venv/lib/python3.11/site-packages/dep.py": "", "extra.py": ""})
    sel = select_files(
        root,
        entries=[root / "app.py"],
        loaded_modules=[root / "extra.py", root / ".venv/lib/python3.11/site-packages/dep.py"],
    )
    assert reasons(sel)["extra.py"] == "loaded module"
    assert not any(p.startswith(".venv") for p in paths(sel))


def test_all_ships_everything_not_ignored(tree):
    root = tree(
        {
            **SHOP,
            ".gitignore": "*.log\nout/\n",
            ".flyteignore": "notes.md\n",
            "run.log": "x",
            "out/result.txt": "x",
            "sub/.gitignore": "*.tmp\n!keep.tmp\n",
            "sub/a.tmp": "x",
            "sub/keep.tmp": "x",
            "sub/b.txt": "x",
            "sub/deeper/c.tmp": "x",
            ".git/config": "x",
            "__pycache__/app.cpython-311.pyc": "x",
            "shop/__pycache__/x.pyc": "x",
            ".venv/bin/python": "x",
            "node_modules/m/index.js": "x",
            "pkg.egg-info/PKG-INFO": "x",
            ".ipynb_checkpoints/nb-checkpoint.ipynb": "x",
            ".DS_Store": "x",
        }
    )
    sel = select_files(root, copy_style="all")
    assert paths(sel) == {
        ".flyteignore",
        ".gitignore",
        "app.py",
        "data/prices.csv",
        "pyproject.toml",
        "shop/__init__.py",
        "shop/discounts.py",
        "shop/pricing.py",
        "shop/rates.py",
        "shop/unused.py",
        "sub/.gitignore",
        "sub/b.txt",
        "sub/keep.tmp",
    }
    assert set(reasons(sel).values()) == {"all"}


def test_none_needs_an_explicit_version(tree):
    root = tree(SHOP)
    with pytest.raises(UsageError, match="explicit version"):
        select_files(root, copy_style="none")
    sel = select_files(root, copy_style="none", version="v1.0.0")
    assert sel.files == [] and sel.version == "v1.0.0"
    # include still works with none: config next to code baked into the image
    sel = select_files(root, copy_style="none", version="v1", include=["data/*.csv"])
    assert paths(sel) == {"data/prices.csv"}


def test_unknown_copy_style_and_flyte_alias(tree):
    root = tree(SHOP)
    with pytest.raises(UsageError, match="unknown copy_style 'everything'"):
        select_files(root, copy_style="everything")
    sel = select_files(root, entries=[root / "app.py"], copy_style="loaded_modules")
    assert sel.copy_style == "auto"


def test_include_adds_data_files_even_if_gitignored_and_exclude_removes(tree):
    root = tree({**SHOP, ".gitignore": "data/\n"})
    sel = select_files(
        root,
        entries=[root / "app.py"],
        include=["data/*.csv", "nothing/*.bin"],
        exclude=["shop/rates.py"],
    )
    why = reasons(sel)
    assert why["data/prices.csv"] == "include pattern 'data/*.csv'"
    assert "shop/rates.py" not in why
    assert any("'nothing/*.bin' matched no files" in w for w in sel.warnings)


def test_secrets_are_never_shipped_unless_named_exactly(tree):
    root = tree(
        {
            "app.py": "",
            ".env": "TOKEN=x",
            ".env.prod": "TOKEN=y",
            "certs/server.pem": "x",
            "certs/server.key": "x",
            ".ssh/id_rsa": "x",
            "deploy/.aws/credentials": "x",
            ".netrc": "x",
            "store.p12": "x",
            "credentials-prod.json": "{}",
            "config.json": "{}",
        }
    )
    sel = select_files(root, copy_style="all")
    assert paths(sel) == {"app.py", "config.json"}
    assert sorted(sel.excluded_secrets) == [
        ".env",
        ".env.prod",
        ".netrc",
        ".ssh/id_rsa",
        "certs/server.key",
        "certs/server.pem",
        "credentials-prod.json",
        "deploy/.aws/credentials",
        "store.p12",
    ]
    assert sum("looks like a secret" in w for w in sel.warnings) == 9
    sel = select_files(root, copy_style="all", include=[".env", "*.pem"])
    assert ".env" in paths(sel)
    assert "certs/server.pem" not in paths(sel)  # a glob is not naming it


def test_symlinks_inside_root_ship_as_files_and_others_are_skipped(tree, tmp_path):
    root = tree({"app.py": "", "real/data.txt": "payload", "real/dir/x.txt": "x"})
    outside = write_tree(tmp_path / "outside", {"secret.txt": "nope"})
    (root / "link.txt").symlink_to(root / "real/data.txt")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "dangling.txt").symlink_to(root / "missing.txt")
    (root / "linkdir").symlink_to(root / "real/dir", target_is_directory=True)
    sel = select_files(root, copy_style="all")
    assert paths(sel) == {"app.py", "link.txt", "real/data.txt", "real/dir/x.txt"}
    link = next(f for f in sel.files if f.path == "link.txt")
    assert link.source == str((root / "real/data.txt").resolve())
    text = "\n".join(sel.warnings)
    assert "skipped escape.txt: symlink points outside root_dir" in text
    assert "skipped dangling.txt: dangling symlink" in text
    assert "skipped linkdir/: symlinked directories are not followed" in text


# --- the seed's project layouts ------------------------------------------------------------


def test_multi_module_project_with_root_above_src(tree):
    root = tree(
        {
            "src/workflows/pipeline.py": "from utils.helpers import process\n",
            "src/utils/__init__.py": "",
            "src/utils/helpers.py": "def process():\n    return 1\n",
            "config.yaml": "a: 1\n",
        }
    )
    sel = select_files(root, entries=[root / "src/workflows/pipeline.py"])
    assert paths(sel) == {
        "src/workflows/pipeline.py",
        "src/utils/__init__.py",
        "src/utils/helpers.py",
    }
    assert sel.python_path == [".", "src"]
    assert sel.warnings == []


def test_shared_utilities_in_a_parent_directory(tree):
    root = tree(
        {
            "shared/__init__.py": "",
            "shared/common.py": "def shared_function():\n    return 1\n",
            "project/app.py": "from shared.common import shared_function\n",
        },
        name="workspace",
    )
    sel = select_files(root, entries=[root / "project/app.py"])
    assert paths(sel) == {"project/app.py", "shared/__init__.py", "shared/common.py"}
    # the seed's "wrong root_dir" case: told which import and which root_dir fixes it
    wrong = select_files(root / "project", entries=[root / "project/app.py"])
    assert paths(wrong) == {"app.py"}
    (warning,) = wrong.warnings
    assert "cannot resolve import 'shared.common' (app.py:1)" in warning
    assert f"it resolves with root_dir {root.resolve()}" in warning


def test_monorepo_libs_and_services(tree):
    root = tree(
        {
            ".git/HEAD": "ref: refs/heads/main\n",
            "libs/data/__init__.py": "",
            "libs/data/loader.py": "def load():\n    return []\n",
            "libs/models/__init__.py": "",
            "libs/models/predictor.py": "from libs.data import loader\n",
            "services/ml_service/workflows.py": """
                from libs.data import loader
                from libs.models import predictor
                """,
            "services/other/unrelated.py": "",
        },
        name="monorepo",
    )
    entry = root / "services/ml_service/workflows.py"
    assert detect_root_dir(entry.parent) == root.resolve()  # found by the .git marker
    sel = select_files(entries=[entry])
    assert sel.root_dir == root.resolve()
    assert paths(sel) == {
        "services/ml_service/workflows.py",
        "libs/data/__init__.py",
        "libs/data/loader.py",
        "libs/models/__init__.py",
        "libs/models/predictor.py",
    }


def test_src_layout_package_detected_from_pyproject(tree):
    root = tree(
        {
            "pyproject.toml": "[project]\nname='my_package'\n",
            "src/my_package/__init__.py": "",
            "src/my_package/main.py": """
                from my_package.data.loader import fetch_data
                from my_package.data.processor import clean_data
                from my_package.models.analyzer import analyze
                """,
            "src/my_package/data/__init__.py": "",
            "src/my_package/data/loader.py": "",
            "src/my_package/data/processor.py": "from .loader import fetch_data\n",
            "src/my_package/models/__init__.py": "",
            "src/my_package/models/analyzer.py": "from ..data import processor\n",
        },
        name="my_package",
    )
    sel = select_files(entries=[root / "src/my_package/main.py"])
    assert sel.root_dir == root.resolve()
    assert paths(sel) == {
        "src/my_package/__init__.py",
        "src/my_package/main.py",
        "src/my_package/data/__init__.py",
        "src/my_package/data/loader.py",
        "src/my_package/data/processor.py",
        "src/my_package/models/__init__.py",
        "src/my_package/models/analyzer.py",
    }
    assert sel.python_path == [".", "src"]
    assert sel.warnings == []


# --- import edge cases ---------------------------------------------------------------------


def test_import_edge_cases(tree):
    root = tree(
        {
            "app.py": """
                import typing
                import json
                import nspkg.tool
                import pytest
                import importlib
                if typing.TYPE_CHECKING:
                    import types_only_missing
                try:
                    import optional_missing
                except ImportError:
                    optional_missing = None
                import really_missing
                plugin = importlib.import_module("plug" + "in")
                import broken
                """,
            "json.py": "# shadows the standard library\n",
            "nspkg/tool.py": "",
            "broken.py": "def oops(:\n",
        }
    )
    sel = select_files(root, entries=[root / "app.py"])
    assert paths(sel) == {"app.py", "json.py", "nspkg/tool.py", "broken.py"}
    text = "\n".join(sel.warnings)
    assert "local json.py shadows the standard-library module 'json'" in text
    assert "cannot resolve import 'really_missing' (app.py:12)" in text
    assert "neither under root_dir nor installed" in text
    assert "app.py:13: dynamic import with a computed name cannot be followed" in text
    assert "could not parse broken.py (line 1" in text
    assert "types_only_missing" not in text and "optional_missing" not in text
    assert len(sel.warnings) == 4
    assert sel.third_party == ["pytest"]


# --- root_dir and guards -------------------------------------------------------------------


def test_root_dir_detection_and_entry_checks(tree, tmp_path):
    root = tree({"setup.cfg": "", "pkg/deep/app.py": ""})
    assert detect_root_dir(root / "pkg/deep") == root.resolve()
    bare = write_tree(tmp_path / "bare", {"app.py": ""})
    assert detect_root_dir(bare) == bare.resolve()
    with pytest.raises(UsageError, match="is outside root_dir"):
        select_files(root / "pkg", entries=[bare / "app.py"])
    with pytest.raises(UsageError, match="does not exist"):
        select_files(root, entries=[root / "nope.py"])
    with pytest.raises(UsageError, match="is not a directory"):
        select_files(root / "missing")
    with pytest.raises(UsageError, match="name at least one entry"):
        select_files(root)


def test_home_directory_as_root_is_refused_unless_forced(tmp_path, monkeypatch):
    home = write_tree(tmp_path / "home", {"app.py": "", "Documents/x.txt": "x"})
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(BundleError, match="your home directory"):
        select_files(home, entries=[home / "app.py"])
    sel = select_files(home, entries=[home / "app.py"], force_root=True)
    assert paths(sel) == {"app.py"}
    with pytest.raises(BundleError, match="filesystem root"):
        select_files("/", copy_style="all")


def test_size_limit_names_the_largest_files_and_the_fix(tree):
    root = tree({"app.py": "", "data/big.bin": b"\0" * 3_000_000, "data/small.bin": b"x"})
    with pytest.raises(BundleError) as err:
        select_files(root, copy_style="all", max_bytes=1_000_000)
    message = str(err.value)
    assert "over the 976.6 KB limit" in message  # 1_000_000 bytes, in human units
    assert "data/big.bin (2.9 MB)" in message
    assert "data/ (2.9 MB)" in message
    assert "exclude" in message and "`max_size_mb`" in message  # each front door: its flag


def test_large_single_file_is_a_warning(tree):
    root = tree({"app.py": "", "model.bin": b"\0" * (10 * 1024 * 1024 + 1)})
    sel = select_files(root, copy_style="all")
    assert any(w.startswith("model.bin is 10.0 MB") for w in sel.warnings)


def test_fifo_in_tree_is_skipped(tree):
    root = tree({"app.py": ""})
    os.mkfifo(root / "pipe")
    sel = select_files(root, copy_style="all")
    assert paths(sel) == {"app.py"}
    assert "skipped pipe: not a regular file" in sel.warnings


def test_unreadable_source_is_one_clear_error():
    # Root reads anything, so drop to 'nobody' around the read when running as root.
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"fj-unreadable-{os.getpid()}"
    root = write_tree(base, {"app.py": "import secretmod\n", "secretmod.py": "X = 1\n"})
    os.chmod(base, 0o755)
    os.chmod(root / "secretmod.py", 0o000)
    try:
        with _as_nobody(), pytest.raises(BundleError) as err:
            select_files(root, entries=[root / "app.py"])
        assert str(err.value).startswith("cannot read secretmod.py: Permission denied")
    finally:
        os.chmod(root / "secretmod.py", 0o644)
        shutil.rmtree(base)


class _as_nobody:
    def __enter__(self) -> None:
        if os.geteuid() == 0:
            os.setegid(65534)
            os.seteuid(65534)

    def __exit__(self, *exc: object) -> None:
        if os.getuid() == 0:
            os.seteuid(0)
            os.setegid(0)


def test_all_walk_records_each_file_as_it_is_on_disk(tree):
    """The `all` walk keeps each file's lstat for the selection (one stat per file): sizes,
    modes, mtimes and inodes are the file's own, a symlink's are its target's, and a module
    generated under a walked path replaces the file on disk."""
    root = tree(
        {"app.py": "X = 1\n", "tool.sh": "echo hi\n", "data/a.csv": "a,b\n1,2\n", "cell.py": ""}
    )
    (root / "tool.sh").chmod(0o755)
    (root / "link.csv").symlink_to("data/a.csv")
    generated = {"cell.py": ("import data\nY = 2\n", "the cell")}
    sel = select_files(root, copy_style="all", generated=generated)
    wrong = []
    for f in sel.files:
        st = os.stat(f.source)
        seen = (f.size, f.mtime_ns, f.inode, f.mode)
        real = (st.st_size, st.st_mtime_ns, st.st_ino, 0o755 if st.st_mode & 0o111 else 0o644)
        if seen != real:
            wrong.append((f.path, seen, real))
    cell = next(f for f in sel.files if f.path == "cell.py")
    print(f"files: {len(sel.files)}; records that differ from the disk: {len(wrong)} {wrong}")
    assert paths(sel) == {"app.py", "cell.py", "data/a.csv", "link.csv", "tool.sh"}
    assert wrong == []
    assert cell.reason == "all" and Path(cell.source).read_text() == "import data\nY = 2\n"
    assert next(f for f in sel.files if f.path == "link.csv").source == str(root / "data/a.csv")


def test_selection_loads_no_module_it_does_not_use(tree):
    """`importlib.metadata` (~15 ms to import) is for runs and exports that pin versions, and
    pathspec (~10 ms) for trees with ignore files or globs: selecting a tree without either
    loads neither."""
    root = tree(SHOP)
    code = (
        "import sys\n"
        "from flyte_jupyter.core.selection import select_files\n"
        f"select_files({str(root)!r}, copy_style='all')\n"
        f"select_files({str(root)!r}, entries=[{str(root / 'app.py')!r}])\n"
        "print(sorted({'importlib.metadata', 'pathspec'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    print(f"unused modules loaded by selection: {done.stdout.strip()}")
    assert done.stdout.strip() == "[]"


GITIGNORE_KINDS = {
    "app.py": "",
    ".gitignore": """
        # every kind of pattern: names, globs, folders, anchored, **, classes, negations
        *.log
        !keep.log
        out/
        /top.txt
        docs/_build/
        a/**/deep.txt
        *.py[cod]
        [Tt]emp*
        \\#hash
        data/*.csv
        !data/keep.csv
        cache
        """,
    "run.log": "",
    "keep.log": "",
    "out.txt": "",
    "out/x.txt": "",
    "top.txt": "",
    "docs/index.md": "",
    "docs/_build/index.html": "",
    "a/deep.txt": "",
    "a/b/c/deep.txt": "",
    "b/deep.txt": "",
    "mod.pyd": "",
    "Temp1.txt": "",
    "temp2.txt": "",
    "xTemp.txt": "",
    "#hash": "",
    "data/a.csv": "",
    "data/keep.csv": "",
    "data/sub/b.csv": "",
    "cache/x.py": "",
    "sub/.gitignore": "!x.log\n*.txt\n!important.txt\n",
    "sub/x.log": "",
    "sub/y.log": "",
    "sub/keep.log": "",
    "sub/notes.txt": "",
    "sub/important.txt": "",
    "sub/top.txt": "",
    "sub/out/y.py": "",
    "sub/cache": "",
    "sub/deep/more.py": "",
    "sub2/.gitignore": "!out/\n",
    "sub2/out/x.txt": "",
}


def test_gitignore_patterns_of_every_kind_keep_their_meaning(tree):
    root = tree(GITIGNORE_KINDS)
    sel = select_files(root, copy_style="all")
    print(f"shipped {len(sel.files)} of {len(GITIGNORE_KINDS)} files")
    assert paths(sel) == {
        ".gitignore",
        "app.py",
        "b/deep.txt",  # a/**/deep.txt is anchored under a/
        "data/keep.csv",  # negated after data/*.csv
        "data/sub/b.csv",  # data/*.csv does not cross a folder
        "docs/index.md",
        "keep.log",
        "out.txt",  # out/ names folders only
        "sub/.gitignore",
        "sub/deep/more.py",
        "sub/important.txt",  # the deeper file negates its own *.txt
        "sub/keep.log",
        "sub/x.log",  # the deeper file negates the root's *.log
        "sub2/.gitignore",
        "sub2/out/x.txt",  # the deeper file re-includes the folder the root left out
        "xTemp.txt",  # [Tt]emp* names must start with it
    }


def test_gitignore_patterns_are_tried_one_by_one_only_on_paths_they_can_match(tree, monkeypatch):
    """A 100-line `.gitignore` checked pattern by pattern on each of 20,000 files took 0.45 s;
    a combined first pass rules out the paths no pattern can match, so pathspec only checks
    (and decides) the few others."""
    lines = [f"*.ext{i}" for i in range(40)] + [f"dir{i}/" for i in range(40)] + ["/top.log"]
    files = {f"pkg{i % 7}/mod_{i}.py": "" for i in range(300)}
    root = tree({**files, ".gitignore": "\n".join([*lines, "*.log", "!keep.log"]), "top.log": ""})
    write_tree(root, {"pkg1/a.log": "", "pkg2/keep.log": "", "dir3/x.py": "", "pkg4/y.ext7": ""})
    checked: list[str] = []
    real_check = pathspec.GitIgnoreSpec.check_file

    def counting_check(self, file, separators=None):  # the real check, counted
        checked.append(str(file))
        return real_check(self, file, separators)

    monkeypatch.setattr(pathspec.GitIgnoreSpec, "check_file", counting_check)
    sel = select_files(root, copy_style="all")
    walked = len(files) + 6 + 7  # files + the .gitignore, the extra files and folders
    print(f"paths walked: ~{walked}; checked pattern by pattern: {len(checked)} {checked}")
    assert paths(sel) == {".gitignore", "pkg2/keep.log", *files}
    assert sorted(checked) == ["dir3/", "pkg1/a.log", "pkg2/keep.log", "pkg4/y.ext7", "top.log"]


def test_include_and_exclude_globs_are_checked_only_on_paths_they_can_match(tree, monkeypatch):
    files = {f"pkg{i % 5}/mod_{i}.py": "" for i in range(200)}
    root = tree({**files, "data/a.csv": "", "data/b.csv": "", "notes/x.md": "", "app.py": ""})
    checked: list[str] = []
    for method in ("check_file", "match_file"):
        real = getattr(pathspec.GitIgnoreSpec, method)

        def counting(self, file, separators=None, real=real):  # the real check, counted
            checked.append(str(file))
            return real(self, file, separators)

        monkeypatch.setattr(pathspec.GitIgnoreSpec, method, counting)
    sel = select_files(root, copy_style="all", exclude=["*.csv", "notes/"])
    excluded_checks = sorted(checked)
    checked.clear()
    included = select_files(root, copy_style="none", version="v1", include=["data/*.csv"])
    print(f"files: {len(files) + 4}; exclude checks: {excluded_checks}; include checks: {checked}")
    assert paths(sel) == {"app.py", *files}
    assert paths(included) == {"data/a.csv", "data/b.csv"}
    assert excluded_checks == ["data/a.csv", "data/b.csv", "notes/x.md"]
    assert sorted(checked) == ["data/a.csv", "data/b.csv"]


IGNORE_LINES = [
    *("*.pyc", "*.log", "!keep.log", "out/", "/out", "out", "doc/*.txt", "doc/_build/", "**/x.py"),
    *("a/**/b", "a/**", "**/a", "*", "!*", "!*/", "*/", "lib", "!lib/", "/q", "!b/", "b", "!a"),
    *("a/", "*.txt", "!c.txt", "!/out", "node/", "!node/x.py", "**/", "**", "a/*", "*/b", "[ab]*"),
    *("[!a]b", "[a-c].py", "x?y", "\\#x", "\\!x", "a\\ b", "*~", ".*", "*.*", "ä*", "a[]]b", "#c"),
]
IGNORE_NAMES = ["a", "b", "out", "x.py", "x.pyc", "keep.log", "doc", "_build", "lib", "c.txt"]
IGNORE_NAMES += ["node", "q", "xay", "#x", "!x", "a b", "x~", ".hid", "ä", "[a]", "ab", "x\ny"]


def test_ignore_files_decide_every_path_as_pathspec_does(tmp_path):
    """The first pass that rules paths out is only a shortcut: over many ignore files (names,
    globs, classes, anchors, **, negations, odd characters) at several depths, every path is
    decided exactly as checking each ignore file above it with pathspec, deepest last."""
    rng = random.Random(13)
    checks = differing = 0
    for trial in range(150):
        root = tmp_path / str(trial)
        specs = {}
        for folder in ("", "a", "a/b", rng.choice(IGNORE_NAMES)):
            lines = rng.sample(IGNORE_LINES, rng.randint(1, 8))
            write_tree(root, {f"{folder}/.gitignore".lstrip("/"): "\n".join(lines) + "\n"})
            specs[folder] = pathspec.GitIgnoreSpec.from_lines(
                (root / folder / ".gitignore").read_text().splitlines()
            )
        tree = ig.IgnoreTree(root)
        for folder in specs:
            tree.load_dir(folder)
        for _ in range(60):
            parts = [rng.choice(IGNORE_NAMES) for _ in range(rng.randint(1, 5))]
            for is_dir in (False, True):
                expected = False
                for depth in range(len(parts)):
                    spec = specs.get("/".join(parts[:depth]))
                    sub = "/".join(parts[depth:]) + ("/" if is_dir else "")
                    if spec is not None and spec.check_file(sub).include is not None:
                        expected = spec.check_file(sub).include
                checks += 1
                differing += tree.is_ignored("/".join(parts), is_dir) != expected
    print(f"paths decided: {checks}; decided differently from pathspec: {differing}")
    assert checks == 150 * 60 * 2 and differing == 0


def test_a_pattern_pathspec_cannot_read_is_one_clear_line_not_a_traceback(tree):
    """An ignore file's unreadable line is left out with a warning (git never fails on one);
    an unreadable --include/--exclude glob is a usage error naming it."""
    root = tree({"app.py": "X = 1\n", "a/b": "x", "skip.log": "x", ".gitignore": "a\\/b\n*.log\n"})
    sel = select_files(root, copy_style="all")
    print("warnings:", sel.warnings)
    assert "skip.log" not in paths(sel)  # the readable lines still apply
    assert "app.py" in paths(sel)
    assert sel.warnings == ["ignored a line that is not a valid pattern in .gitignore: 'a\\\\/b'"]
    for option in ("include", "exclude"):
        with pytest.raises(UsageError) as caught:
            select_files(root, copy_style="all", **{option: ["x\\/y"]})
        print(caught.value)
        assert str(caught.value) == (
            f"--{option} 'x\\\\/y' is not a valid glob (gitignore syntax): fix or drop it"
        )
