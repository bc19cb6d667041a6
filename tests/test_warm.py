"""Warm rebuilds of a `copy_style all` tree (core/warm.py): whatever changed, the bundle must
equal a cold build's, byte for byte; what did not change is not walked or hashed again."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from cli_process import cli
from conftest import write_tree

from flyte_jupyter.core.bundle import Bundle
from flyte_jupyter.core.warm import bundle_tree

FILES = {
    "pyproject.toml": "[project]\nname='demo'\n",
    "app.py": "from pkg import mod\n",
    "pkg/__init__.py": "",
    "pkg/mod.py": "VALUE = 42\n",
    "pkg/sub/deep.py": "X = 'deep'\n",
    "data/table.csv": "a,b\n1,2\n",
    "logs/old.log": "noise\n",
    ".gitignore": "*.log\n",
    "nb.ipynb": (
        '{"cells": [{"cell_type": "code", "execution_count": 3, "id": "c1", "metadata": {},'
        ' "outputs": [{"name": "stdout", "output_type": "stream", "text": "hi\\n"}],'
        ' "source": "print(1)"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    ),
}


def age(root: Path, seconds: float = 60) -> None:
    """Every path under (and including) root last modified a minute ago, as in a checkout:
    stats younger than two seconds are not trusted, so a fresh tree is never recorded."""
    when = time.time() - seconds
    for path in [root, *root.rglob("*")]:
        os.utime(path, (when, when), follow_symlinks=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = write_tree(tmp_path / "proj", FILES)
    age(root)
    return root


def cold(root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Bundle:
    """The same build from an empty cache, for comparison."""
    with monkeypatch.context() as m:
        m.setenv("FLYTE_JUPYTER_CACHE_DIR", str(cache))
        bundle = bundle_tree(root)
        assert bundle.archive is not None
        bundle.archive = Path(shutil.copy(bundle.archive, cache.parent / "cold.tar.gz"))
        return bundle


def assert_same(warm: Bundle, reference: Bundle) -> None:
    assert warm.digest == reference.digest
    assert warm.entries == reference.entries

    def shipped(b: Bundle) -> list[tuple]:  # stripped notebooks live in each cache
        return [(f.path, f.size, f.mode, f.reason) for f in b.selection.files]

    assert shipped(warm) == shipped(reference)
    assert warm.selection.warnings == reference.selection.warnings
    assert warm.selection.excluded_secrets == reference.selection.excluded_secrets
    assert warm.archive is not None and reference.archive is not None
    assert warm.archive.read_bytes() == reference.archive.read_bytes()


def records(cache: Path) -> list[Path]:
    return sorted((cache / "warm").glob("*.marshal"))


def test_an_unchanged_tree_is_answered_from_its_record(tree, isolated_cache):
    first = bundle_tree(tree)
    assert len(records(isolated_cache)) == 1
    # Same size, mtime and inode, different bytes: only a walk and a hash could tell. The
    # record trusts stats exactly as the hash cache does, so the answer is the recorded one:
    # proof that nothing was walked or read.
    mod = tree / "pkg" / "mod.py"
    st = mod.stat()
    mod.write_text("VALUE = 43\n")
    os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = bundle_tree(tree)
    assert again.digest == first.digest
    assert again.archive == first.archive and again.archive.is_file()
    assert again.selection.warnings == first.selection.warnings


@pytest.mark.parametrize(
    "change",
    ["edit", "edit_notebook", "add", "remove", "rename", "chmod", "ignore_more", "unignore"],
)
def test_any_change_gives_the_cold_build(tree, isolated_cache, tmp_path, monkeypatch, change):
    bundle_tree(tree)
    assert records(isolated_cache)
    old = time.time() - 30  # edits in the past, so the rebuild may be recorded too
    if change == "edit":
        (tree / "pkg" / "mod.py").write_text("VALUE = 4242\n")
        os.utime(tree / "pkg" / "mod.py", (old, old))
    elif change == "edit_notebook":
        text = (tree / "nb.ipynb").read_text().replace("print(1)", "print(22)")
        (tree / "nb.ipynb").write_text(text)
        os.utime(tree / "nb.ipynb", (old, old))
    elif change == "add":
        (tree / "pkg" / "sub" / "new.py").write_text("NEW = 1\n")
    elif change == "remove":
        (tree / "pkg" / "sub" / "deep.py").unlink()
    elif change == "rename":
        (tree / "data" / "table.csv").rename(tree / "data" / "renamed.csv")
    elif change == "chmod":
        (tree / "app.py").chmod(0o755)
    elif change == "ignore_more":
        (tree / ".gitignore").write_text("*.log\n*.csv\n")
    elif change == "unignore":
        (tree / ".gitignore").write_text("")
    warm = bundle_tree(tree)
    reference = cold(tree, tmp_path / "cold-cache", monkeypatch)
    assert_same(warm, reference)
    paths = [e.path for e in warm.entries]
    expected = {
        "add": "pkg/sub/new.py" in paths,
        "remove": "pkg/sub/deep.py" not in paths,
        "rename": "data/renamed.csv" in paths,
        "chmod": dict((e.path, e.mode) for e in warm.entries)["app.py"] == 0o755,
        "ignore_more": "data/table.csv" not in paths,
        "unignore": "logs/old.log" in paths,
    }
    assert expected.get(change, True)
    print(f"{change}: digest {warm.digest[:19]} equals the cold build's")


def test_an_edit_rebuilds_only_that_file_and_stays_correct_over_many_rounds(
    tree, isolated_cache, tmp_path, monkeypatch
):
    bundle_tree(tree)
    (record,) = records(isolated_cache)
    whole = record.read_bytes()
    edits = ["pkg/mod.py", "app.py", "pkg/mod.py", "data/table.csv", "nb.ipynb"]
    for round_, rel in enumerate(edits):
        path = tree / rel
        text = path.read_text()
        if rel.endswith(".ipynb"):  # stays a notebook: its outputs are still stripped
            path.write_text(text.replace("print(1", "print(11"))
        else:
            path.write_text(text + f"# round {round_}\n")
        old = time.time() - 30
        os.utime(path, (old, old))
        warm = bundle_tree(tree)
        assert warm.member_lengths is not None  # the archive was written from the recorded one
        assert_same(warm, cold(tree, tmp_path / f"cold-{round_}", monkeypatch))
    # the edits went to a small delta beside the untouched record
    assert record.read_bytes() == whole
    delta = record.with_suffix(".delta")
    print(f"record {len(whole)} bytes, delta after {len(edits)} edits {delta.stat().st_size}")
    assert delta.stat().st_size < len(whole)
    # the last rebuild was recorded: the next run is answered without rebuilding
    again = bundle_tree(tree)
    assert again.digest == warm.digest and again.member_lengths is None
    # a new walk (a file added) writes a whole record and drops the delta
    (tree / "pkg" / "more.py").write_text("M = 1\n")
    age(tree)
    assert_same(bundle_tree(tree), cold(tree, tmp_path / "cold-last", monkeypatch))
    assert not delta.exists() and record.read_bytes() != whole


def test_an_edit_reads_only_the_edited_file(tree, isolated_cache):
    first = bundle_tree(tree)
    (isolated_cache / "index.sqlite3").unlink()  # no hash cache to fall back on
    deep = tree / "pkg" / "sub" / "deep.py"  # changed behind the stats' back, as above
    st = deep.stat()
    deep.write_text("X = 'DEEP'\n")
    os.utime(deep, ns=(st.st_atime_ns, st.st_mtime_ns))
    mod = tree / "pkg" / "mod.py"
    mod.write_text("VALUE = 4242\n")
    old = time.time() - 30
    os.utime(mod, (old, old))
    warm = bundle_tree(tree)
    hashes = {e.path: e.sha256 for e in warm.entries}
    before = {e.path: e.sha256 for e in first.entries}
    assert hashes["pkg/mod.py"] != before["pkg/mod.py"]
    assert hashes["pkg/sub/deep.py"] == before["pkg/sub/deep.py"]  # not read again


def test_a_symlinked_file_follows_its_target(tree, isolated_cache, tmp_path, monkeypatch):
    (tree / "logs" / "real.log").write_text("one\n")  # ignored folder content, not walked
    (tree / "current.txt").symlink_to(tree / "logs" / "real.log")
    age(tree)
    first = bundle_tree(tree)
    (tree / "logs" / "real.log").write_text("two, longer\n")
    warm = bundle_tree(tree)
    assert warm.digest != first.digest
    assert_same(warm, cold(tree, tmp_path / "cold-cache", monkeypatch))


def test_a_fresh_tree_is_not_recorded_but_still_correct(tmp_path, isolated_cache, monkeypatch):
    root = write_tree(tmp_path / "fresh", FILES)  # written just now: stats not yet trusted
    first = bundle_tree(root)
    assert records(isolated_cache) == []
    (root / "pkg" / "mod.py").write_text("VALUE = 7\n")  # same size, same second
    second = bundle_tree(root)
    assert second.digest != first.digest
    assert_same(second, cold(root, tmp_path / "cold-cache", monkeypatch))


def test_a_file_that_draws_a_warning_is_reselected_in_full(
    tree, isolated_cache, tmp_path, monkeypatch
):
    big = tree / "data" / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    age(tree)
    first = bundle_tree(tree)
    assert any("big.bin is 11.0 MB" in w for w in first.selection.warnings)
    big.write_bytes(b"small now")
    old = time.time() - 30
    os.utime(big, (old, old))
    warm = bundle_tree(tree)
    assert not any("big.bin" in w for w in warm.selection.warnings)
    assert_same(warm, cold(tree, tmp_path / "cold-cache", monkeypatch))


@pytest.mark.parametrize("damage", [b"", b"garbage", b"\xe3" + b"\x00" * 40])
@pytest.mark.parametrize("which", ["record", "delta"])
def test_a_damaged_record_means_a_cold_build(
    tree, isolated_cache, tmp_path, monkeypatch, damage, which
):
    bundle_tree(tree)
    (record,) = records(isolated_cache)
    if which == "delta":
        mod = tree / "pkg" / "mod.py"
        mod.write_text("VALUE = 1\n")
        old = time.time() - 30
        os.utime(mod, (old, old))
        bundle_tree(tree)
        record = record.with_suffix(".delta")
        assert record.exists()
    record.write_bytes(damage)
    (tree / "app.py").write_text("changed = True\n")
    warm = bundle_tree(tree)
    assert_same(warm, cold(tree, tmp_path / "cold-cache", monkeypatch))
    print(f"{which} {damage[:8]!r}: rebuilt cold, digest {warm.digest[:19]}")


def test_a_record_whose_body_is_damaged_is_not_used(tree, isolated_cache, tmp_path, monkeypatch):
    """The files part of a record is decoded only when asked for (`--json`, a small tree's
    listing), so its checksum is checked on load: a flipped byte there means a cold build,
    not a failure later."""
    bundle_tree(tree)
    (record,) = records(isolated_cache)
    data = bytearray(record.read_bytes())
    body = 8 + int.from_bytes(data[:8], "little")  # the head's length comes first
    for at in range(body + 1, len(data), 7):  # through the file names, kinds and lengths
        data[at] ^= 0x01
    record.write_bytes(bytes(data))
    done = cli("bundle", str(tree), "--copy-style", "all", "--json")
    assert done.returncode == 0, done.stderr
    reference = cold(tree, tmp_path / "cold-cache", monkeypatch)
    listed = json.loads(done.stdout)
    assert listed["digest"] == reference.digest
    assert [f["path"] for f in listed["files"]] == [f.path for f in reference.selection.files]


def test_a_pruned_archive_is_written_again(tree, isolated_cache):
    first = bundle_tree(tree)
    first.archive.unlink()
    again = bundle_tree(tree)
    assert again.digest == first.digest and again.archive.is_file()


def test_the_cli_gives_the_same_answer_warm(tree, isolated_cache):
    args = ["bundle", str(tree), "--copy-style", "all", "--json"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert records(isolated_cache)
    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def test_a_big_tree_is_checked_in_two_processes_and_misses_no_edit(
    tmp_path, isolated_cache, monkeypatch
):
    """Past 4,096 files the stat pass of a single-threaded process (the CLI, run here as a
    whole process) is split with a forked child: an edit in either half, and a file removed
    from the child's half, must each be seen."""
    files = {f"pkg/m{i:05d}.py": f"X = {i}\n" for i in range(4200)}
    root = write_tree(tmp_path / "big", files)
    age(root)

    def warm_digest() -> str:
        done = cli("bundle", str(root), "--copy-style", "all", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["digest"]

    warm_digest()
    assert records(isolated_cache)
    first, last = root / "pkg" / "m00000.py", root / "pkg" / "m04199.py"
    for round_, path in enumerate([first, last, last]):
        path.write_text(f"X = 'edit {round_}'\n")
        old = time.time() - 30 + round_
        os.utime(path, (old, old))
        assert warm_digest() == cold(root, tmp_path / f"cold-{round_}", monkeypatch).digest
    (root / "pkg" / "m04000.py").unlink()
    assert warm_digest() == cold(root, tmp_path / "cold-removed", monkeypatch).digest
    print("4,200 files: edits in both halves and a removal all matched the cold builds")
