"""Hostile review of warm rebuilds (core/warm.py): every change below happens between two
builds, and the warm answer must equal a cold build's from an empty cache, byte for byte.
Changes that a folder's mtime would show are also hidden by restoring that mtime (ctime still
moves, as it must)."""

from __future__ import annotations

import json
import marshal
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from cli_process import cli
from conftest import write_tree
from test_warm import FILES, age, assert_same, records

from flyte_jupyter.core import bundle as bundle_module
from flyte_jupyter.core.bundle import Bundle, build_bundle
from flyte_jupyter.core.errors import BundleError
from flyte_jupyter.core.ignore import IgnoreTree
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.warm import bundle_tree


def _token(record: Path) -> str:
    """A record's token: its head is marshalled after an 8-byte length (marshal reads one
    value and leaves the rest)."""
    return marshal.loads(record.read_bytes()[8:])[1]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    root = write_tree(tmp_path / "proj", {**FILES, "config.txt": "debug = false\n"})
    age(root)
    return root


def cold(root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, **options) -> Bundle:
    """The same build from an empty cache (`cache` must not exist yet)."""
    assert not cache.exists()
    with monkeypatch.context() as m:
        m.setenv("FLYTE_JUPYTER_CACHE_DIR", str(cache))
        bundle = bundle_tree(root, **options)
        if bundle.archive is not None:
            bundle.archive = Path(shutil.copy(bundle.archive, cache.parent / f"{cache.name}.tgz"))
        return bundle


def hidden(path: Path):
    """Restore `path`'s mtime after the change made in the `with` block: a filesystem with a
    coarse clock would show no mtime change either. ctime cannot be restored."""

    class _Restore:
        def __enter__(self) -> None:
            self.st = os.lstat(path)

        def __exit__(self, *exc: object) -> None:
            os.utime(path, ns=(self.st.st_atime_ns, self.st.st_mtime_ns), follow_symlinks=False)

    return _Restore()


def past(*paths: Path, seconds: float = 30) -> None:
    when = time.time() - seconds
    for path in paths:
        os.utime(path, (when, when), follow_symlinks=False)


def shipped(bundle: Bundle) -> dict[str, str]:
    return {e.path: e.sha256 for e in bundle.entries}


def check(name: str, warm: Bundle, reference: Bundle) -> None:
    assert_same(warm, reference)
    for attr in ("python_path", "third_party", "version", "copy_style"):
        assert getattr(warm.selection, attr) == getattr(reference.selection, attr), attr
    print(
        f"{name}: warm == cold ({len(warm.entries)} files, {len(warm.selection.warnings)} "
        f"warnings, {len(warm.selection.excluded_secrets)} secrets, digest {warm.digest[:19]})"
    )


def first_build(root: Path, cache: Path, **options) -> Bundle:
    bundle = bundle_tree(root, **options)
    assert records(cache), "the first build must leave a record to attack"
    return bundle


# --- folder listings -----------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["file_to_dir", "dir_to_file"])
def test_a_file_replaced_by_a_folder_of_the_same_name(
    proj, isolated_cache, tmp_path, monkeypatch, direction
):
    first_build(proj, isolated_cache)
    with hidden(proj / "pkg"):
        if direction == "file_to_dir":
            (proj / "pkg" / "mod.py").unlink()
            (proj / "pkg" / "mod.py").mkdir()
            (proj / "pkg" / "mod.py" / "inner.py").write_text("I = 1\n")
        else:
            shutil.rmtree(proj / "pkg" / "sub")
            (proj / "pkg" / "sub").write_text("now a file\n")
    warm = bundle_tree(proj)
    check(direction, warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert ("pkg/mod.py/inner.py" in shipped(warm)) == (direction == "file_to_dir")


def test_two_folders_swapped_by_rename(proj, isolated_cache, tmp_path, monkeypatch):
    (proj / "other").mkdir()
    (proj / "other" / "table.csv").write_text("x,y\n9,9\n")
    age(proj)
    first = first_build(proj, isolated_cache)
    with hidden(proj):  # same names, same listing, different inodes
        (proj / "data").rename(proj / "swap")
        (proj / "other").rename(proj / "data")
        (proj / "swap").rename(proj / "other")
    warm = bundle_tree(proj)
    check("folders swapped", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert shipped(warm)["data/table.csv"] == shipped(first)["other/table.csv"]


def test_a_rename_hidden_by_restoring_the_folder_mtime(proj, isolated_cache, tmp_path, monkeypatch):
    first_build(proj, isolated_cache)
    with hidden(proj / "data"):
        (proj / "data" / "table.csv").rename(proj / "data" / "moved.csv")
    assert (proj / "data").stat().st_mtime_ns == (proj / "data").stat().st_mtime_ns
    warm = bundle_tree(proj)
    check("rename, mtime restored", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert "data/moved.csv" in shipped(warm) and "data/table.csv" not in shipped(warm)


def test_two_files_swapped_with_os_replace(proj, isolated_cache, tmp_path, monkeypatch):
    first = first_build(proj, isolated_cache)
    with hidden(proj / "pkg"):
        os.link(proj / "pkg" / "mod.py", proj / "pkg" / "tmp")
        os.replace(proj / "pkg" / "__init__.py", proj / "pkg" / "mod.py")
        os.replace(proj / "pkg" / "tmp", proj / "pkg" / "__init__.py")
    warm = bundle_tree(proj)
    check("contents swapped", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert shipped(warm)["pkg/mod.py"] == shipped(first)["pkg/__init__.py"]


def test_a_hard_link_to_a_secret_under_a_shipped_name(proj, isolated_cache, tmp_path, monkeypatch):
    (proj / ".env").write_text("TOKEN=hunter2\n")
    age(proj)
    first = first_build(proj, isolated_cache)
    assert "config.txt" in shipped(first)
    with hidden(proj):
        os.link(proj / ".env", proj / "tmp-link")
        os.replace(proj / "tmp-link", proj / "config.txt")
    warm = bundle_tree(proj)
    check("hard link to .env", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert "config.txt" not in shipped(warm)
    print(f"secret bytes shipped: {int('config.txt' in shipped(warm))}")


def test_a_flyteignore_added_in_a_subfolder(proj, isolated_cache, tmp_path, monkeypatch):
    first_build(proj, isolated_cache)
    with hidden(proj / "pkg"):
        (proj / "pkg" / ".flyteignore").write_text("sub/\n")
    warm = bundle_tree(proj)
    check(".flyteignore added", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert "pkg/sub/deep.py" not in shipped(warm)


def _cli_bundle(root: Path, cache: Path) -> tuple[dict, bytes]:
    """`flyte-jupyter bundle ROOT --copy-style all --json` in a process that folder
    permissions bind (as root: without the capabilities that bypass them)."""
    args = [sys.executable, "-m", "flyte_jupyter", "bundle", str(root), "--copy-style", "all"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root reads any folder, and setpriv is missing")
        args = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *args]
    env = {**os.environ, "FLYTE_JUPYTER_CACHE_DIR": str(cache)}
    done = subprocess.run([*args, "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    return data, Path(data.pop("archive")).read_bytes()


def test_an_unreadable_subfolder_and_back(proj, isolated_cache, tmp_path):
    (proj / "nb.ipynb").unlink()  # six processes: spare each the nbformat import
    age(proj)
    _cli_bundle(proj, isolated_cache)
    assert records(isolated_cache)
    sub = proj / "pkg" / "sub"
    sub.chmod(0)
    try:
        for round_ in range(2):  # the second: no record of a walk that left a folder out
            warm = _cli_bundle(proj, isolated_cache)
            assert any("left out pkg/sub/" in w for w in warm[0]["warnings"])
            assert warm == _cli_bundle(proj, tmp_path / f"cold-{round_}")
            print(f"chmod 000, round {round_}: warm == cold, {len(warm[0]['files'])} files")
    finally:
        sub.chmod(0o755)
    past(sub)
    back = _cli_bundle(proj, isolated_cache)
    assert back == _cli_bundle(proj, tmp_path / "cold-back")
    assert "pkg/sub/deep.py" in [f["path"] for f in back[0]["files"]]
    print(f"chmod back: warm == cold, {len(back[0]['files'])} files")


# --- symlinks and ignore files ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["other_file", "outside_root", "dangling", "folder"])
def test_a_retargeted_symlink(proj, isolated_cache, tmp_path, monkeypatch, target):
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    (proj / "link.txt").symlink_to("config.txt")
    age(proj)
    first_build(proj, isolated_cache)
    new = {
        "other_file": "data/table.csv",
        "outside_root": str(outside),
        "dangling": "missing.txt",
        "folder": "pkg",
    }[target]
    with hidden(proj):
        (proj / "tmp-link").symlink_to(new)
        os.replace(proj / "tmp-link", proj / "link.txt")
    warm = bundle_tree(proj)
    check(f"symlink -> {target}", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert ("link.txt" in shipped(warm)) == (target == "other_file")


def test_a_symlink_chain_whose_middle_link_changes(proj, isolated_cache, tmp_path, monkeypatch):
    (proj / "build").mkdir()  # never walked (standard ignore)
    (proj / "build" / "hop").symlink_to("../config.txt")
    (proj / "current.txt").symlink_to("build/hop")
    age(proj)
    first = first_build(proj, isolated_cache)
    (proj / "build" / "hop").unlink()
    (proj / "build" / "hop").symlink_to("../pkg/mod.py")
    warm = bundle_tree(proj)
    check("middle link", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert shipped(warm)["current.txt"] == shipped(first)["pkg/mod.py"]


def test_a_symlinked_gitignore_whose_target_changes(proj, isolated_cache, tmp_path, monkeypatch):
    (proj / "build").mkdir()
    (proj / "build" / "ignore-a").write_text("*.log\n")
    (proj / "build" / "ignore-b").write_text("*.log\n*.csv\n")
    (proj / ".gitignore").unlink()
    (proj / ".gitignore").symlink_to("build/ignore-a")
    age(proj)
    first_build(proj, isolated_cache)
    with hidden(proj):
        (proj / "tmp-link").symlink_to("build/ignore-b")
        os.replace(proj / "tmp-link", proj / ".gitignore")
    warm = bundle_tree(proj)
    check("gitignore retargeted", warm, cold(proj, tmp_path / "cold-1", monkeypatch))
    assert "data/table.csv" not in shipped(warm)
    (proj / "build" / "ignore-b").write_text("*.log\n")  # the target edited, same link
    past(proj / "build" / "ignore-b")
    again = bundle_tree(proj)
    check("gitignore target edited", again, cold(proj, tmp_path / "cold-2", monkeypatch))
    assert "data/table.csv" in shipped(again)


@pytest.mark.parametrize("name", ["current", "dist"])
def test_a_symlinked_folder_that_becomes_a_file(proj, isolated_cache, tmp_path, monkeypatch, name):
    """`current -> build/out` is skipped while build/out is a folder (`dist`, a standard
    folder name, is not even looked at); once build/out (never walked) is a file, the link
    ships its bytes, though no walked folder changed."""
    (proj / "build" / "out").mkdir(parents=True)
    (proj / name).symlink_to("build/out")
    age(proj)
    first = first_build(proj, isolated_cache)
    assert name not in shipped(first)
    (proj / "build" / "out").rmdir()
    (proj / "build" / "out").write_text("RESULT = 1\n")
    past(proj / "build" / "out", proj / "build")
    warm = bundle_tree(proj)
    check(f"symlinked folder {name} -> file", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert name in shipped(warm)


def test_a_secret_symlink_whose_target_changes_out_of_sight(
    proj, isolated_cache, tmp_path, monkeypatch
):
    """`.env -> build/hop -> ../config.txt` keeps config.txt out (the secret's bytes under
    another name); when the unwalked hop moves to data/table.csv, table.csv must stay out."""
    (proj / "build").mkdir()
    (proj / "build" / "hop").symlink_to("../config.txt")
    (proj / ".env").symlink_to("build/hop")
    age(proj)
    first = first_build(proj, isolated_cache)
    assert "config.txt" not in shipped(first)
    (proj / "build" / "hop").unlink()
    (proj / "build" / "hop").symlink_to("../data/table.csv")
    warm = bundle_tree(proj)
    check("secret retargeted", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert "data/table.csv" not in shipped(warm) and "config.txt" in shipped(warm)
    print(f"secret bytes shipped: {int('data/table.csv' in shipped(warm))}")


# --- edits in place --------------------------------------------------------------------------


def test_a_notebook_that_stops_being_json_and_back(proj, isolated_cache, tmp_path, monkeypatch):
    first_build(proj, isolated_cache)
    nb = proj / "nb.ipynb"
    good = nb.read_text()
    nb.write_text(good[:-5])
    past(nb)
    broken = bundle_tree(proj)
    assert any("nb.ipynb is not a notebook" in w for w in broken.selection.warnings)
    check("notebook broken", broken, cold(proj, tmp_path / "cold-1", monkeypatch))
    nb.write_text(good)
    past(nb, seconds=20)
    fixed = bundle_tree(proj)
    check("notebook fixed", fixed, cold(proj, tmp_path / "cold-2", monkeypatch))
    assert not any("nb.ipynb" in w for w in fixed.selection.warnings)


def test_a_small_file_that_grows_large_and_shrinks(proj, isolated_cache, tmp_path, monkeypatch):
    first_build(proj, isolated_cache)
    table = proj / "data" / "table.csv"
    small = table.read_bytes()
    table.write_bytes(os.urandom(11 * 1024 * 1024))
    past(table)
    large = bundle_tree(proj)
    assert any("table.csv is 11.0 MB" in w for w in large.selection.warnings)
    check("grown large", large, cold(proj, tmp_path / "cold-1", monkeypatch))
    table.write_bytes(small)
    past(table, seconds=20)
    check("shrunk", bundle_tree(proj), cold(proj, tmp_path / "cold-2", monkeypatch))
    table.write_bytes(os.urandom(12 * 1024 * 1024))
    past(table, seconds=10)
    check("large again", bundle_tree(proj), cold(proj, tmp_path / "cold-3", monkeypatch))


@pytest.mark.parametrize("included", [False, True])
def test_a_secret_edited_in_place(proj, isolated_cache, tmp_path, monkeypatch, included):
    (proj / ".env").write_text("TOKEN=one\n")
    age(proj)
    options = {"include": [".env"]} if included else {}
    first_build(proj, isolated_cache, **options)
    (proj / ".env").write_text("TOKEN=two, longer\n")
    past(proj / ".env")
    warm = bundle_tree(proj, **options)
    reference = cold(proj, tmp_path / "cold", monkeypatch, **options)
    check(f"secret edited (include={included})", warm, reference)
    assert (".env" in shipped(warm)) == included


def test_same_size_edit_with_an_older_mtime(proj, isolated_cache, tmp_path, monkeypatch):
    first_build(proj, isolated_cache)
    mod = proj / "pkg" / "mod.py"
    mod.write_text("VALUE = 43\n")  # same size
    past(mod, seconds=3600)  # older than the recorded mtime
    warm = bundle_tree(proj)
    check("same size, older mtime", warm, cold(proj, tmp_path / "cold", monkeypatch))


def test_a_src_layout_appearing_and_disappearing(proj, isolated_cache, tmp_path, monkeypatch):
    first = first_build(proj, isolated_cache)
    assert first.selection.python_path == ["."]
    (proj / "src" / "lib").mkdir(parents=True)
    (proj / "src" / "lib" / "__init__.py").write_text("")
    age(proj)
    with_src = bundle_tree(proj)
    assert with_src.selection.python_path == [".", "src"]
    check("src appears", with_src, cold(proj, tmp_path / "cold-1", monkeypatch))
    with hidden(proj / "src"):  # src/__init__.py makes src a package, not a search root
        (proj / "src" / "__init__.py").write_text("")
    package = bundle_tree(proj)
    check("src a package", package, cold(proj, tmp_path / "cold-2", monkeypatch))
    assert package.selection.python_path == ["."]
    shutil.rmtree(proj / "src")
    check("src gone", bundle_tree(proj), cold(proj, tmp_path / "cold-3", monkeypatch))


# --- options, outputs and the cache itself ---------------------------------------------------


def test_options_changed_between_builds(proj, isolated_cache, tmp_path, monkeypatch):
    first_build(proj, isolated_cache)
    runs = [
        {"exclude": ["data/"]},
        {"include": ["logs/old.log"]},
        {"keep_notebook_outputs": True},
        {"version": "v9"},
        {},
    ]
    for i, options in enumerate(runs):
        warm = bundle_tree(proj, **options)
        reference = cold(proj, tmp_path / f"cold-{i}", monkeypatch, **options)
        check(f"options {options}", warm, reference)
    print(f"records: {len(records(isolated_cache))} (one per set of options)")
    assert len(records(isolated_cache)) == len(runs)


def test_a_cache_inside_the_tree_is_never_trusted_stale(proj, monkeypatch):
    cache = proj / "cache-here"
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(cache))
    first = bundle_tree(proj)
    age(proj)
    second = bundle_tree(proj)  # the walk now sees the first build's archive and record
    assert f"cache-here/archives/{first.hex}.tar.gz" in shipped(second)
    age(proj)
    third = bundle_tree(proj)
    assert f"cache-here/archives/{second.hex}.tar.gz" in shipped(third)
    print(f"in-tree cache files shipped by the third build: {len(third.entries)}")


def test_a_tree_inside_the_cache_dir(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    root = write_tree(cache / "proj", FILES)
    age(root)
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(cache))
    bundle_tree(root)
    assert records(cache)
    (root / "pkg" / "mod.py").write_text("VALUE = 1\n")
    past(root / "pkg" / "mod.py")
    check("tree in cache", bundle_tree(root), cold(root, tmp_path / "cold", monkeypatch))


def test_dry_runs_and_outputs(proj, isolated_cache, tmp_path, monkeypatch):
    dry = bundle_tree(proj, dry_run=True)
    assert dry.archive is None and records(isolated_cache)
    real = bundle_tree(proj)  # answered from a dry run's record: the archive must exist
    assert real.archive is not None and real.archive.is_file()
    check("dry run, then real", real, cold(proj, tmp_path / "cold-1", monkeypatch))
    out = tmp_path / "out" / "b.tar.gz"
    to_out = bundle_tree(proj, output=out)
    assert to_out.archive == out
    assert out.read_bytes() == real.archive.read_bytes()
    mod = proj / "pkg" / "mod.py"
    mod.write_text("VALUE = 'dry edit'\n")
    past(mod)
    dry_edit = bundle_tree(proj, dry_run=True, output=tmp_path / "never.tar.gz")
    assert dry_edit.archive is None and not (tmp_path / "never.tar.gz").exists()
    after = bundle_tree(proj)  # the dry edit must not leave a record without its archive
    check("dry edit, then real", after, cold(proj, tmp_path / "cold-2", monkeypatch))
    assert after.digest == dry_edit.digest


@pytest.mark.parametrize("damage", ["deleted", "truncated", "emptied"])
def test_the_archive_damaged_between_builds(proj, isolated_cache, tmp_path, monkeypatch, damage):
    first = first_build(proj, isolated_cache)
    if damage == "deleted":
        first.archive.unlink()
    else:
        size = first.archive.stat().st_size
        with open(first.archive, "r+b") as f:
            f.truncate(0 if damage == "emptied" else size // 2)
    warm = bundle_tree(proj)
    check(f"archive {damage}", warm, cold(proj, tmp_path / "cold", monkeypatch))


def test_a_cut_archive_is_not_reused_when_every_hash_is_cached(
    tmp_path, isolated_cache, monkeypatch
):
    """No notebook (a stripped copy is too new for the hash cache): every hash is cached, so
    only the archive's own tail can tell that it was cut short."""
    root = write_tree(tmp_path / "proj", {k: v for k, v in FILES.items() if k != "nb.ipynb"})
    age(root)
    first = first_build(root, isolated_cache)
    for attempt in ("warm", "plain"):
        size = first.archive.stat().st_size
        with open(first.archive, "r+b") as f:
            f.truncate(size - 7)
        if attempt == "warm":
            again = bundle_tree(root)
        else:
            again = build_bundle(select_files(root, copy_style="all"))
        check(f"cut archive, {attempt}", again, cold(root, tmp_path / attempt, monkeypatch))


def test_the_archive_damaged_before_an_edit(proj, isolated_cache, tmp_path, monkeypatch):
    first = first_build(proj, isolated_cache)
    size = first.archive.stat().st_size
    with open(first.archive, "r+b") as f:
        f.truncate(size // 2)
    mod = proj / "pkg" / "mod.py"
    mod.write_text("VALUE = 'edited'\n")
    past(mod)
    check("archive cut, then edit", bundle_tree(proj), cold(proj, tmp_path / "c", monkeypatch))


@pytest.mark.parametrize("source", ["other_root", "other_options"])
def test_a_record_copied_over_this_ones(tmp_path, isolated_cache, monkeypatch, source):
    """A record written for another root, or for this root with other options, placed at
    this build's record path, must not be trusted."""
    mine = write_tree(tmp_path / "mine", FILES)
    age(mine)
    if source == "other_root":
        theirs = write_tree(tmp_path / "theirs", {**FILES, "extra.py": "E = 1\n"})
        age(theirs)
        bundle_tree(theirs)
        bundle_tree(mine)
    else:
        bundle_tree(mine, exclude=["pkg/"])
        bundle_tree(mine)
    # the record the other build wrote, copied over this build's record
    mine_record = max(records(isolated_cache), key=lambda p: p.stat().st_mtime_ns)
    (other,) = [p for p in records(isolated_cache) if p != mine_record]
    shutil.copy(other, mine_record)
    warm = bundle_tree(mine)
    check(f"record of {source}", warm, cold(mine, tmp_path / "cold", monkeypatch))


def test_a_delta_whose_token_does_not_match(proj, isolated_cache, tmp_path, monkeypatch):
    first_build(proj, isolated_cache)
    (record,) = records(isolated_cache)
    mod = proj / "pkg" / "mod.py"
    mod.write_text("VALUE = 'one'\n")
    past(mod)
    bundle_tree(proj)
    delta = record.with_suffix(".delta")
    fields = list(marshal.loads(delta.read_bytes()))
    fields[1] = "0" * 16  # written against some other record
    delta.write_bytes(marshal.dumps(tuple(fields)))
    check("foreign delta", bundle_tree(proj), cold(proj, tmp_path / "cold-1", monkeypatch))
    # a delta that names the record but lies about an index beyond it
    fields = list(marshal.loads(delta.read_bytes()))
    fields[1] = _token(record)
    fields[2] = {10**6: fields[2][next(iter(fields[2]))]}
    delta.write_bytes(marshal.dumps(tuple(fields)))
    check("bad index", bundle_tree(proj), cold(proj, tmp_path / "cold-2", monkeypatch))


def test_concurrent_cli_builds_of_a_changing_tree(proj, isolated_cache, tmp_path, monkeypatch):
    args = [sys.executable, "-m", "flyte_jupyter", "bundle", str(proj), "--copy-style", "all"]
    args += ["--json"]
    env = {**os.environ, "FLYTE_JUPYTER_CACHE_DIR": str(isolated_cache)}
    mod = proj / "pkg" / "mod.py"
    for round_ in range(4):
        mod.write_text(f"VALUE = {round_ * 1111}\n")
        past(mod, seconds=30 - round_)
        procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        assert outs[0] == outs[1]
        reference = cold(proj, tmp_path / f"cold-{round_}", monkeypatch)
        after = cli(*args[3:], env={"FLYTE_JUPYTER_CACHE_DIR": str(isolated_cache)})
        assert after.stdout == outs[0]
        warm = bundle_tree(proj)
        check(f"round {round_}, two processes", warm, reference)


# --- limits, pruned copies and changes during a build ---------------------------------------


def test_an_edit_that_crosses_the_size_limit(proj, isolated_cache, tmp_path, monkeypatch):
    limit = sum(p.stat().st_size for p in proj.rglob("*") if p.is_file()) + 100
    first_build(proj, isolated_cache, max_bytes=limit)
    table = proj / "data" / "table.csv"
    table.write_text("a,b\n" + "1,2\n" * 100)  # in place: only its stat changes
    past(table)
    with pytest.raises(BundleError, match="over the") as warm:
        bundle_tree(proj, max_bytes=limit)
    with pytest.raises(BundleError, match="over the") as reference:
        cold(proj, tmp_path / "cold", monkeypatch, max_bytes=limit)
    assert str(warm.value) == str(reference.value)
    print(f"over-limit bundles built: 0 ({str(warm.value)[:40]}...)")


def test_an_edit_after_the_cache_lost_archives_and_stripped_notebooks(
    proj, isolated_cache, tmp_path, monkeypatch
):
    """A cache cleaner (tmpfiles, a user) removed old archives and stripped notebook copies,
    but not the records: rebuilding after an edit must not need either."""
    first = first_build(proj, isolated_cache)
    first.archive.unlink()
    shutil.rmtree(isolated_cache / "generated")
    mod = proj / "pkg" / "mod.py"
    mod.write_text("VALUE = 'after the purge'\n")
    past(mod)
    check("cache purged, then edit", bundle_tree(proj), cold(proj, tmp_path / "c", monkeypatch))


def _during_walk(monkeypatch: pytest.MonkeyPatch, folder: str, change) -> None:
    """Run `change` once, right after the walk read the ignore files of `folder`: an edit
    made while a long build runs (its mtime set back, as it is once the build took > 2 s)."""
    original = IgnoreTree.load_dir
    done = []

    def load_dir(self: IgnoreTree, rel_dir: str) -> None:
        original(self, rel_dir)
        if rel_dir == folder and not done:
            done.append(rel_dir)
            change()

    monkeypatch.setattr(IgnoreTree, "load_dir", load_dir)


def test_an_ignore_file_edited_while_the_tree_is_walked(
    proj, isolated_cache, tmp_path, monkeypatch
):
    ignore = proj / ".gitignore"

    def edit() -> None:
        ignore.write_text("*.log\n*.csv\n")
        past(ignore)

    with monkeypatch.context() as m:
        _during_walk(m, "", edit)
        during = bundle_tree(proj)
    assert "data/table.csv" in shipped(during)  # read before the edit
    warm = bundle_tree(proj)
    check("ignore file edited during the walk", warm, cold(proj, tmp_path / "c", monkeypatch))
    assert "data/table.csv" not in shipped(warm)


def test_a_src_layout_made_while_the_tree_is_walked(proj, isolated_cache, tmp_path, monkeypatch):
    (proj / "src" / "lib").mkdir(parents=True)
    (proj / "src" / "lib" / "__init__.py").write_text("")
    age(proj)

    def make_package() -> None:
        (proj / "src" / "__init__.py").write_text("")
        past(proj / "src" / "__init__.py", proj / "src")

    with monkeypatch.context() as m:
        _during_walk(m, "", make_package)
        during = bundle_tree(proj)
    # decided once the walk is done (after the change): either way, the record holds src's
    # stat from before, so the next build sees the change
    assert during.selection.python_path == ["."]
    warm = bundle_tree(proj)
    check("src made a package during the walk", warm, cold(proj, tmp_path / "c", monkeypatch))
    assert warm.selection.python_path == ["."]


def test_an_edit_of_the_code_that_decides_modes(tmp_path, isolated_cache):
    """A checkout whose files.py (the modes a bundle holds) is edited between two builds:
    the record of the old code must not answer for the new one."""
    code = tmp_path / "code"
    shutil.copytree(
        Path(sys.modules["flyte_jupyter"].__file__).parent,
        code / "flyte_jupyter",
        ignore=shutil.ignore_patterns("__pycache__", "labextension", "static"),
    )
    root = write_tree(tmp_path / "proj", {k: v for k, v in FILES.items() if k != "nb.ipynb"})
    age(root)
    script = "from flyte_jupyter.core.warm import bundle_tree as b; print(b(__import__('sys')"
    script += ".argv[1]).entries)"

    def build(cache: Path) -> str:
        env = {**os.environ, "PYTHONPATH": str(code), "FLYTE_JUPYTER_CACHE_DIR": str(cache)}
        done = subprocess.run(
            [sys.executable, "-c", script, str(root)],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,  # not the checkout: the copy is imported
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    before = build(isolated_cache)
    assert "mode=420" in before and "mode=416" not in before
    files_py = code / "flyte_jupyter" / "core" / "files.py"
    files_py.write_text(files_py.read_text().replace("else 0o644", "else 0o640"))
    after = build(isolated_cache)
    assert after == build(tmp_path / "cold-cache")
    assert after != before
    print(f"files with mode 0o640 after the edit: {after.count('mode=416')}")


def test_an_ignored_src_whose_init_is_a_symlink(proj, isolated_cache, tmp_path, monkeypatch):
    """python_path asks whether src/__init__.py exists; in an ignored src (never walked) it
    can be a symlink whose target comes and goes without src itself changing."""
    (proj / "build").mkdir()
    (proj / "build" / "init.py").write_text("")
    (proj / "src").mkdir()
    (proj / "src" / "__init__.py").symlink_to("../build/init.py")
    (proj / ".gitignore").write_text("*.log\nsrc/\n")
    age(proj)
    first = first_build(proj, isolated_cache)
    assert first.selection.python_path == ["."]
    (proj / "build" / "init.py").unlink()
    warm = bundle_tree(proj)
    check("src/__init__.py target gone", warm, cold(proj, tmp_path / "cold", monkeypatch))
    assert warm.selection.python_path == [".", "src"]


def test_an_empty_tree_then_a_file(tmp_path, isolated_cache, monkeypatch):
    root = tmp_path / "empty"
    root.mkdir()
    age(root)
    first = first_build(root, isolated_cache)
    assert first.entries == [] and first.archive is None
    again = bundle_tree(root)
    assert again.digest == first.digest and again.archive is None
    (root / "a.py").write_text("A = 1\n")
    check("empty, then a file", bundle_tree(root), cold(root, tmp_path / "cold", monkeypatch))


def test_the_recorded_archive_pruned_while_members_are_copied(
    proj, isolated_cache, tmp_path, monkeypatch
):
    """Another process prunes the archive between the check that it holds the members and
    their copy: the build must still succeed, with the cold build's bytes (the archive is
    held open from the check to the last copy)."""
    first = first_build(proj, isolated_cache)
    original = bundle_module._check_runs

    def checked_then_pruned(*args: object) -> None:
        original(*args)
        first.archive.unlink()

    mod = proj / "pkg" / "mod.py"
    mod.write_text("VALUE = 'pruned meanwhile'\n")
    past(mod)
    with monkeypatch.context() as m:
        m.setattr(bundle_module, "_check_runs", checked_then_pruned)
        warm = bundle_tree(proj)
    assert not first.archive.exists() and warm.member_lengths is not None  # spliced
    check("archive pruned mid-copy", warm, cold(proj, tmp_path / "cold", monkeypatch))


def test_edits_after_a_dry_run_record_and_a_file_past_the_stream_size(
    proj, isolated_cache, tmp_path, monkeypatch
):
    bundle_tree(proj, dry_run=True)  # a record without member places
    table = proj / "data" / "table.csv"
    steps = [
        ("pkg/mod.py", b"VALUE = 'after dry run'\n"),
        ("data/table.csv", os.urandom(5 * 1024 * 1024)),  # streamed, no warning yet
        ("pkg/mod.py", b"VALUE = 'again'\n"),
        ("data/table.csv", b"a,b\n"),
    ]
    for i, (rel, data) in enumerate(steps):
        (proj / rel).write_bytes(data)
        past(proj / rel, seconds=30 - i)
        warm = bundle_tree(proj)
        reference = cold(proj, tmp_path / f"cold-{i}", monkeypatch)
        check(f"step {i}: {rel} is {len(data)} bytes", warm, reference)
    assert table.stat().st_size == 4


def test_an_output_inside_the_tree(proj, isolated_cache, tmp_path, monkeypatch):
    """`bundle DIR --output DIR/bundle.tar.gz`: each build ships the previous one's output,
    which each build then rewrites in place."""
    out = proj / "bundle.tar.gz"
    for round_ in range(3):
        reference = cold(proj, tmp_path / f"cold-{round_}", monkeypatch)  # sees it as it is
        warm = bundle_tree(proj, output=out)
        check(f"round {round_}, output in the tree", warm, reference)
        assert ("bundle.tar.gz" in shipped(warm)) == (round_ > 0)
        assert out.read_bytes() == reference.archive.read_bytes()
        past(out, seconds=30 - round_)


def test_a_file_added_where_only_include_reaches(proj, isolated_cache, tmp_path, monkeypatch):
    """`gen/` is ignored, but include names gen/*.py: a file added there ships, although the
    `all` walk never lists gen/."""
    (proj / ".gitignore").write_text("*.log\ngen/\n")
    (proj / "gen").mkdir()
    (proj / "gen" / "one.py").write_text("ONE = 1\n")
    age(proj)
    options = {"include": ["gen/*.py"]}
    first = first_build(proj, isolated_cache, **options)
    assert "gen/one.py" in shipped(first)
    with hidden(proj / "gen"):
        (proj / "gen" / "two.py").write_text("TWO = 2\n")
    warm = bundle_tree(proj, **options)
    check("added under an ignored folder", warm, cold(proj, tmp_path / "c", monkeypatch, **options))
    assert "gen/two.py" in shipped(warm)


# --- splices, deltas and big trees (since the splice replaced per-file reuse) ---------------


def _splice_tree(tmp_path: Path, count: int = 12) -> Path:
    """Files whose order in the archive is their name's: m00 first, m{count-1} last."""
    files: dict[str, str | bytes] = {f"m{i:02d}.py": f"X = {i}\n" * (i + 1) for i in range(count)}
    root = write_tree(tmp_path / "proj", files)
    age(root)
    return root


def _twin_build(tmp_path: Path, root: Path, files: dict[str, bytes], monkeypatch) -> Bundle:
    """A cold build, in a cache of its own, of a copy of `root` with `files` rewritten: an
    archive of another tree to rename over the recorded one."""
    twin = tmp_path / "twin"
    shutil.copytree(root, twin)
    for rel, data in files.items():
        (twin / rel).write_bytes(data)
    age(twin)
    return cold(twin, tmp_path / "twin-cache", monkeypatch)


def _edit(path: Path, data: bytes, seconds: float = 30) -> None:
    """Write `data` in place (same inode) and date it `seconds` ago: old enough to record."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)
    past(path, seconds=seconds)


def _delta(cache: Path) -> Path:
    (record,) = records(cache)
    return record.with_suffix(".delta")


@pytest.mark.parametrize(
    "which", [["m00.py"], ["m11.py"], ["m05.py", "m06.py"], ["m00.py", "m11.py"]]
)
def test_splices_at_the_ends_and_side_by_side(tmp_path, isolated_cache, monkeypatch, which):
    root = _splice_tree(tmp_path)
    first_build(root, isolated_cache)
    for round_ in range(3):
        for rel in which:
            _edit(root / rel, f"EDIT = {round_!r} * {len(rel)}\n".encode(), 30 - round_)
        warm = bundle_tree(root)
        check(
            f"{'+'.join(which)} round {round_}",
            warm,
            cold(root, tmp_path / f"c{round_}", monkeypatch),
        )
        assert _delta(isolated_cache).exists()  # spliced, not rebuilt from the tree
    print(
        f"delta files after 3 rounds: {len(marshal.loads(_delta(isolated_cache).read_bytes())[2])}"
    )


def test_every_file_edited_takes_the_whole_record_path(tmp_path, isolated_cache, monkeypatch):
    files = {f"d/f{i:04d}.txt": f"{i}\n" for i in range(1100)}
    root = write_tree(tmp_path / "proj", files)
    age(root)
    first_build(root, isolated_cache)
    (record,) = records(isolated_cache)
    token = _token(record)
    for i in range(1100):
        _edit(root / "d" / f"f{i:04d}.txt", f"edited {i}\n".encode())
    warm = bundle_tree(root)
    check("1,100 files edited", warm, cold(root, tmp_path / "c1", monkeypatch))
    assert not _delta(isolated_cache).exists()
    assert _token(record) != token  # a whole new record
    _edit(root / "d" / "f0500.txt", b"once more\n", 20)
    again = bundle_tree(root)
    check("then one more edit", again, cold(root, tmp_path / "c2", monkeypatch))
    assert _delta(isolated_cache).exists()
    check("then unchanged", bundle_tree(root), cold(root, tmp_path / "c3", monkeypatch))
    kept = len(marshal.loads(_delta(isolated_cache).read_bytes())[2])
    print(f"edits: 1100 -> whole record; 1 -> delta of {kept}")


def test_a_file_grown_past_the_stream_size_and_back(tmp_path, isolated_cache, monkeypatch):
    root = _splice_tree(tmp_path)
    first_build(root, isolated_cache)
    mid = root / "m06.py"
    small = mid.read_bytes()
    big = b"# " + os.urandom(2 * 1024 * 1024).hex().encode() + b"\n"  # 4 MB + 3 bytes
    assert len(big) > bundle_module.STREAM_BYTES
    for i, data in enumerate([big, small, big[:-1] + b"#\n"]):
        _edit(mid, data, 30 - i)
        warm = bundle_tree(root)
        check(f"m06.py at {len(data)} bytes", warm, cold(root, tmp_path / f"c{i}", monkeypatch))
        assert _delta(isolated_cache).exists()


def test_a_mode_change_only(tmp_path, isolated_cache, monkeypatch):
    root = _splice_tree(tmp_path)
    first = first_build(root, isolated_cache)
    script = root / "m03.py"
    for i, mode in enumerate([0o755, 0o644, 0o700]):
        with hidden(script):  # same bytes, same mtime: only the mode (and ctime) moves
            script.chmod(mode)
        warm = bundle_tree(root)
        check(f"chmod {mode:o}", warm, cold(root, tmp_path / f"c{i}", monkeypatch))
        assert {e.path: e.mode for e in warm.entries}["m03.py"] == (
            0o644 if mode == 0o644 else 0o755
        )
    assert warm.entries != first.entries


def test_a_notebook_edited_in_place(tmp_path, isolated_cache, monkeypatch):
    root = write_tree(tmp_path / "proj", {**FILES, "zz.py": "Z = 1\n"})
    age(root)
    first_build(root, isolated_cache)
    nb = root / "nb.ipynb"
    sources = ["print(2)", "print('two, longer')", "print(1)", "print(1)"]  # last: outputs only
    for i, source in enumerate(sources):
        data = json.loads(nb.read_text())
        data["cells"][0]["source"] = source
        data["cells"][0]["execution_count"] = i + 10  # stripped: must not ship
        data["cells"][0]["outputs"][0]["text"] = f"run {i}\n"
        _edit(nb, json.dumps(data).encode(), 30 - i)
        warm = bundle_tree(root)
        check(f"notebook source {source!r}", warm, cold(root, tmp_path / f"c{i}", monkeypatch))
        assert _delta(isolated_cache).exists()


def test_a_long_name_edited(tmp_path, isolated_cache, monkeypatch):
    long_rel = "deep/" + "d" * 60 + "/" + "n" * 70 + ".py"
    assert len(long_rel) > 100
    root = write_tree(tmp_path / "proj", {"a.py": "A = 1\n", long_rel: "L = 1\n", "z.py": "Z\n"})
    age(root)
    first_build(root, isolated_cache)
    for i, data in enumerate([b"L = 2\n", b"L = 'x' * 600\n" * 60, b"L = 3\n"]):
        _edit(root / long_rel, data, 30 - i)
        warm = bundle_tree(root)
        check(
            f"{len(long_rel)}-byte name, {len(data)} bytes",
            warm,
            cold(root, tmp_path / f"c{i}", monkeypatch),
        )
        assert _delta(isolated_cache).exists()


def test_an_edit_that_moves_the_end_of_archive_across_a_record(
    tmp_path, isolated_cache, monkeypatch
):
    root = _splice_tree(tmp_path)
    first = first_build(root, isolated_cache)
    raw = sum(bundle_module._entry_length(e.path, e.size) for e in first.entries)
    pad = -(raw + 1024) % 10240  # zeros after the last two blocks
    mid = root / "m04.py"
    grow = (pad // 512 + 1) * 512  # one block more than the padding holds
    sizes = [mid.stat().st_size + grow, mid.stat().st_size + grow + 10240, mid.stat().st_size]
    original = mid.read_bytes()
    for i, size in enumerate(sizes):
        _edit(mid, (original * (size // len(original) + 1))[:size], 30 - i)
        warm = bundle_tree(root)
        raw_now = sum(bundle_module._entry_length(e.path, e.size) for e in warm.entries)
        check(
            f"m04.py {size} bytes, padding {-(raw_now + 1024) % 10240}",
            warm,
            cold(root, tmp_path / f"c{i}", monkeypatch),
        )
        assert _delta(isolated_cache).exists()
    crossed = (raw + 1024 + grow) // 10240 - (raw + 1024) // 10240
    print(f"padding before: {pad}, records crossed by the first edit: {crossed}")


def test_dry_run_edits_then_a_real_build(tmp_path, isolated_cache, monkeypatch):
    root = _splice_tree(tmp_path)
    first_build(root, isolated_cache)
    for i, rel in enumerate(["m02.py", "m09.py", "m02.py"]):
        _edit(root / rel, f"DRY = {i}\n".encode(), 30 - i)
        dry = bundle_tree(root, dry_run=True)
        reference = cold(root, tmp_path / f"c{i}", monkeypatch)
        assert dry.archive is None and dry.digest == reference.digest
        assert dry.entries == reference.entries
        print(f"dry edit {i} ({rel}): digest == cold")
    check("real build after dry edits", bundle_tree(root), cold(root, tmp_path / "cr", monkeypatch))
    assert _delta(isolated_cache).exists()


def test_the_recorded_archive_replaced_by_another_of_the_same_length(
    tmp_path, isolated_cache, monkeypatch
):
    """Another tree with the same paths and sizes gives an archive of the same length with
    members at the same offsets, renamed over the recorded archive before an edit. Neither
    the splice nor the ordinary build can tell (the archive cache trusts the names in its
    private folder, as the hash cache's member rows do): the manifest must still be right,
    and the splice must give what the ordinary build from the same cache gives."""
    root = _splice_tree(tmp_path)
    first = first_build(root, isolated_cache)
    m01 = (root / "m01.py").read_bytes().replace(b"1", b"7")
    other = _twin_build(tmp_path, root, {"m01.py": m01}, monkeypatch)
    assert other.digest != first.digest and other.member_lengths == first.member_lengths
    os.replace(other.archive, first.archive)
    _edit(root / "m08.py", b"AFTER = 'replaced'\n")
    plain = build_bundle(select_files(root, copy_style="all"))
    plain_bytes = plain.archive.read_bytes()
    warm = bundle_tree(root)
    reference = cold(root, tmp_path / "c", monkeypatch)
    assert (warm.digest, warm.entries) == (reference.digest, reference.entries)
    assert warm.archive.read_bytes() == plain_bytes
    same = warm.archive.read_bytes() == reference.archive.read_bytes()
    print(
        f"archive replaced, then edit: manifest == cold, bytes == ordinary build's; "
        f"bytes == fresh cold: {same} (the cache trusts its names)"
    )


def test_many_rounds_of_deltas_then_a_full_rebuild(tmp_path, isolated_cache, monkeypatch):
    root = _splice_tree(tmp_path)
    first_build(root, isolated_cache)
    (record,) = records(isolated_cache)
    token = _token(record)
    names = ["m01.py", "m07.py", "m11.py", "m00.py"]
    for round_ in range(10):
        rel = names[round_ % len(names)]
        _edit(root / rel, f"R = {round_}\n".encode() * (round_ + 1), 40 - round_)
        warm = bundle_tree(root)
        check(f"round {round_}: {rel}", warm, cold(root, tmp_path / f"c{round_}", monkeypatch))
        assert _token(record) == token  # the record stays
    delta = marshal.loads(_delta(isolated_cache).read_bytes())
    assert sorted(delta[3]) == [0, 1, 7, 11] and delta[1] == token
    check("unchanged", bundle_tree(root), cold(root, tmp_path / "cu", monkeypatch))
    (root / "new.py").write_text("NEW = 1\n")
    past(root / "new.py", root)
    full = bundle_tree(root)
    check("file added", full, cold(root, tmp_path / "ca", monkeypatch))
    assert not _delta(isolated_cache).exists()
    assert _token(record) != token
    check("unchanged after", bundle_tree(root), cold(root, tmp_path / "cz", monkeypatch))
    print(f"delta entries before the full rebuild: {len(delta[3])}; after: 0")


def test_edits_within_the_racy_window(tmp_path, isolated_cache, monkeypatch):
    root = _splice_tree(tmp_path)
    first_build(root, isolated_cache)
    mod = root / "m05.py"
    with open(mod, "r+b") as f:  # edited just now: its mtime may still move unseen
        f.truncate(0)
        f.write(b"RACY = 1\n")
    racy = bundle_tree(root)
    check("racy edit", racy, cold(root, tmp_path / "c1", monkeypatch))
    assert not _delta(isolated_cache).exists()
    with open(mod, "r+b") as f:  # same size, same second: only a nanosecond mtime differs
        f.write(b"RACY = 2\n")
    again = bundle_tree(root)
    check("racy edit again", again, cold(root, tmp_path / "c2", monkeypatch))
    assert not _delta(isolated_cache).exists()
    past(mod)
    settled = bundle_tree(root)
    check("settled", settled, cold(root, tmp_path / "c3", monkeypatch))
    assert _delta(isolated_cache).exists()
    print("deltas written for racy edits: 0")


def test_a_delta_left_from_an_older_record(tmp_path, isolated_cache, monkeypatch):
    root = _splice_tree(tmp_path)
    first_build(root, isolated_cache)
    _edit(root / "m03.py", b"OLD = 1\n")
    bundle_tree(root)
    old_delta = _delta(isolated_cache).read_bytes()
    (root / "added.py").write_text("A = 1\n")
    past(root / "added.py", root, seconds=20)
    bundle_tree(root)  # a new record; its delta is gone
    _delta(isolated_cache).write_bytes(old_delta)  # a slow process writes the old one back
    check("older delta", bundle_tree(root), cold(root, tmp_path / "c1", monkeypatch))
    _edit(root / "m03.py", b"OLD = 2\n", 10)
    check("then an edit", bundle_tree(root), cold(root, tmp_path / "c2", monkeypatch))


def _big_tree(tmp_path: Path) -> Path:
    files = {f"pkg/m{i:05d}.py": f"X = {i}\n" for i in range(4200)}
    root = write_tree(tmp_path / "big", files)
    (root / "pkg" / "zz_link.py").symlink_to("m00001.py")  # in the second half
    age(root)
    return root


def _cli_json(root: Path, cache: Path) -> tuple[dict, bytes]:
    done = cli(
        "bundle",
        str(root),
        "--copy-style",
        "all",
        "--json",
        env={"FLYTE_JUPYTER_CACHE_DIR": str(cache)},
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    return data, Path(data.pop("archive")).read_bytes()


def test_a_big_tree_through_the_cli(tmp_path, isolated_cache):
    root = _big_tree(tmp_path)
    _cli_json(root, isolated_cache)
    assert records(isolated_cache)
    pkg = root / "pkg"
    changes = {
        "edit": lambda: _edit(pkg / "m03000.py", b"X = 'second half'\n"),
        "remove": lambda: (pkg / "m04100.py").unlink(),
        "retarget": lambda: os.replace(pkg / "tmp", pkg / "zz_link.py"),
    }
    for i, (name, change) in enumerate(changes.items()):
        if name == "retarget":
            (pkg / "tmp").symlink_to("m00002.py")
        if name == "edit":
            change()  # in place: pkg's stats stay as recorded
        else:
            with hidden(pkg):
                change()
        warm = _cli_json(root, isolated_cache)
        assert warm == _cli_json(root, tmp_path / f"cold-{i}")
        again = _cli_json(root, isolated_cache)
        assert again == warm
        assert _delta(isolated_cache).exists() == (name == "edit")  # spliced, or recorded anew
        print(f"{name}: warm --json == cold, {len(warm[0]['files'])} files, twice")


@pytest.mark.parametrize("thread", [True, False])
def test_a_big_tree_in_process(tmp_path, isolated_cache, monkeypatch, thread):
    """With a second thread alive the stat pass must not fork; without one (on two cores) it
    does. Either way the warm answers, unchanged and edited in the second half, equal the
    cold builds, down to each selected file's fields."""
    import threading

    root = _big_tree(tmp_path)
    forks = []
    real_fork = os.fork

    def counted() -> int:
        forks.append(1)
        return real_fork()

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    if thread:
        worker.start()
    try:
        monkeypatch.setattr(os, "fork", counted)
        first_build(root, isolated_cache)
        unchanged = bundle_tree(root)
        reference = cold(root, tmp_path / "c0", monkeypatch)
        check(f"unchanged, thread {thread}", unchanged, reference)
        assert unchanged.selection.files == reference.selection.files
        _edit(root / "pkg" / "m04199.py", b"X = 'last'\n")
        edited = bundle_tree(root)
        reference = cold(root, tmp_path / "c1", monkeypatch)
        check(f"edited, thread {thread}", edited, reference)
        assert edited.selection.files == reference.selection.files
        assert _delta(isolated_cache).exists()
        alive = threading.active_count()
    finally:
        stop.set()
        if thread:
            worker.join()
    if thread:
        assert forks == []
    elif (os.cpu_count() or 1) > 1 and sys.platform == "linux" and alive == 1:
        assert forks  # the warm stat passes (the first build and cold ones never fork)
    print(f"forks with a thread alive={thread}: {len(forks)}")


def test_a_touch_an_emptied_file_and_a_revert(tmp_path, isolated_cache, monkeypatch):
    """A touch gives the recorded digest again: the splice's output replaces the archive it
    copies from. Then a file emptied, and its bytes put back (the first digest once more)."""
    root = _splice_tree(tmp_path)
    first = first_build(root, isolated_cache)
    mod = root / "m05.py"
    original = mod.read_bytes()
    steps = [("touched", original), ("emptied", b""), ("reverted", original)]
    for i, (name, data) in enumerate(steps):
        _edit(mod, data, 30 - i)
        warm = bundle_tree(root)
        check(name, warm, cold(root, tmp_path / f"c{i}", monkeypatch))
        assert _delta(isolated_cache).exists()
        assert (warm.digest == first.digest) == (name != "emptied")
    check("unchanged", bundle_tree(root), cold(root, tmp_path / "cu", monkeypatch))


def test_odd_names_edited(tmp_path, isolated_cache, monkeypatch):
    """Names the tar header holds exactly (100 bytes), just not (101), in several UTF-8
    bytes per character, and not UTF-8 at all (skipped with a warning, edited or not)."""
    names = ["a" * 96 + ".txt", "b" * 97 + ".txt", "d/" + "é" * 60 + ".py"]
    root = write_tree(tmp_path / "proj", {n: f"{n[:3]}\n" for n in names})
    undecodable = os.fsdecode(b"caf\xe9.py")
    (root / undecodable).write_text("C = 1\n")
    age(root)
    first_build(root, isolated_cache)
    for i, name in enumerate([*names, undecodable]):
        _edit(root / name, f"EDITED = {i}\n".encode() * (i + 1), 30 - i)
        warm = bundle_tree(root)
        check(
            f"{len(os.fsencode(name))}-byte name", warm, cold(root, tmp_path / f"c{i}", monkeypatch)
        )
        assert _delta(isolated_cache).exists()
        assert any("not valid UTF-8" in w for w in warm.selection.warnings)


def test_a_one_file_tree_edited(tmp_path, isolated_cache, monkeypatch):
    root = write_tree(tmp_path / "proj", {"only.py": "O = 1\n"})
    age(root)
    first_build(root, isolated_cache)
    for i in range(3):
        _edit(root / "only.py", b"O = 2\n" * (i * 900 + 1), 30 - i)
        warm = bundle_tree(root)
        check(f"only file, round {i}", warm, cold(root, tmp_path / f"c{i}", monkeypatch))
        assert _delta(isolated_cache).exists()


def test_the_recorded_archive_replaced_by_one_of_another_layout(
    tmp_path, isolated_cache, monkeypatch
):
    """As above, but the other tree's m01.py is longer: the archive is longer and its members
    sit elsewhere after m01. The warm record sees the length; the ordinary build it falls back
    to must not copy the run of members that starts at offset 0 (a gzip header there, as in
    every archive) when it does not end where the next member starts."""
    root = _splice_tree(tmp_path)
    first = first_build(root, isolated_cache)
    m01 = (root / "m01.py").read_bytes().replace(b"1", b"777")
    other = _twin_build(tmp_path, root, {"m01.py": m01}, monkeypatch)
    assert other.member_lengths[1] != first.member_lengths[1]
    os.replace(other.archive, first.archive)
    _edit(root / "m08.py", b"AFTER = 'replaced'\n")
    warm = bundle_tree(root)
    check("archive of another layout, then edit", warm, cold(root, tmp_path / "c", monkeypatch))
    with tarfile.open(warm.archive) as tar:
        print(f"members readable: {len(tar.getmembers())} of {len(warm.entries)}")


def test_the_recorded_archive_replaced_by_one_of_the_same_length_shifted_inside(
    tmp_path, isolated_cache, monkeypatch
):
    """The other tree's m01.py compresses longer and its m05.py shorter by as much: the
    archive has the recorded length, and members line up again from m06 on, so the runs a
    splice of an edit to m05 copies start at gzip headers (offset 0 and m06's). The first run
    must still not be copied: it does not end where m05's member starts."""
    root = _splice_tree(tmp_path)
    first = first_build(root, isolated_cache)

    def member(rel: str, data: bytes) -> int:
        return len(bundle_module.gzip_member(bundle_module.tar_entry(rel, 0o644, data), 1))

    m01, m05 = (root / "m01.py").read_bytes(), (root / "m05.py").read_bytes()
    pairs = (
        (m01 + b"#" + os.urandom(k).hex().encode(), m05[:n])
        for k in range(1, 40)
        for n in range(len(m05))
    )
    longer, shorter = next(
        (a, b)
        for a, b in pairs
        if member("m01.py", a) > member("m01.py", m01)
        and member("m01.py", a) + member("m05.py", b)
        == member("m01.py", m01) + member("m05.py", m05)
    )
    other = _twin_build(tmp_path, root, {"m01.py": longer, "m05.py": shorter}, monkeypatch)
    assert other.archive.stat().st_size == first.archive.stat().st_size
    assert other.member_lengths[6:] == first.member_lengths[6:]
    assert other.member_lengths[1] != first.member_lengths[1]
    os.replace(other.archive, first.archive)
    _edit(root / "m05.py", b"EDITED = 5\n")
    warm = bundle_tree(root)
    check("same length, shifted inside, then edit", warm, cold(root, tmp_path / "c", monkeypatch))
    with tarfile.open(warm.archive) as tar:
        print(f"members readable: {len(tar.getmembers())} of {len(warm.entries)}")
