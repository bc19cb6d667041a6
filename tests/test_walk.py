"""The `all` / include walk on hostile real trees: any depth, names that are not UTF-8,
folders nobody may read and kernel filesystems end in a warning that names them, never in a
traceback and never silently."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.selection import select_files

DEPTH = 10_000


def make_deep(root: Path, depth: int, files_at: dict[int, str]) -> None:
    """`depth` nested folders `d/` under root/deep, made through directory descriptors (their
    paths are far longer than the OS accepts), with a file at the given depths."""
    fd = os.open(root, os.O_RDONLY)
    os.mkdir("deep", dir_fd=fd)
    current = os.open("deep", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    for level in range(1, depth + 1):
        os.mkdir("d", dir_fd=current)
        child = os.open("d", os.O_RDONLY, dir_fd=current)
        os.close(current)
        current = child
        if level in files_at:
            out = os.open(files_at[level], os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=current)
            os.write(out, b"X = 1\n")
            os.close(out)
    os.close(current)


def remove_deep(root: Path) -> None:
    """Delete the deep tree from the top, one level at a time, with short paths and no open
    descriptors (rmtree recurses, and holding a descriptor per level would need 10,000)."""
    top, spare = root / "deep", root / "deep-next"
    while top.exists():
        for name in os.listdir(top):
            if name != "d":
                os.unlink(top / name)
        if (top / "d").exists():
            os.rename(top / "d", spare)
            os.rmdir(top)
            os.rename(spare, top)
        else:
            os.rmdir(top)


def test_ten_thousand_deep_folders_are_walked_without_recursion(tree):
    root = tree({"pyproject.toml": "[project]\nname='deep'\n", "app.py": "X = 1\n"})
    make_deep(root, DEPTH, {5: "five.py", DEPTH: "bottom.py"})
    try:
        selection = select_files(root, copy_style="all")
        bundle = build_bundle(selection, dry_run=True)
    finally:
        remove_deep(root)
    paths = [f.path for f in selection.files]
    too_long = [w for w in selection.warnings if "longer than the OS allows" in w]
    print(f"files: {len(paths)}, deepest shipped: {max(p.count('/') for p in paths)} levels")
    print(f"warnings about too-long paths: {len(too_long)}: {too_long}")
    assert "deep/" + "d/" * 5 + "five.py" in paths and "app.py" in paths
    assert len(too_long) == 1 and len(too_long[0]) < 300
    assert len(bundle.entries) == len(paths)


def test_file_name_that_is_not_utf8_is_skipped_and_named(tree):
    root = tree({"pyproject.toml": "[project]\nname='names'\n", "app.py": "X = 1\n"})
    (root / "data").mkdir()
    Path(os.fsdecode(os.fsencode(root / "data") + b"/caf\xe9.csv")).write_bytes(b"a,b\n")
    os.mkdir(os.fsencode(root) + b"/r\xe9sum\xe9s")
    Path(os.fsdecode(os.fsencode(root) + b"/r\xe9sum\xe9s/one.txt")).write_bytes(b"cv\n")
    (root / "data" / "ok.csv").write_text("a,b\n")

    selection = select_files(root, copy_style="all", include=["data/*.csv"])
    bundle = build_bundle(selection)
    named = [w for w in selection.warnings if "not valid UTF-8" in w]
    print(f"files shipped: {len(bundle.entries)}; warnings naming bad names: {named}")
    assert sorted(f.path for f in selection.files) == ["app.py", "data/ok.csv", "pyproject.toml"]
    assert any(w.startswith("skipped data/caf\\xe9.csv:") for w in named)
    assert any(w.startswith("skipped r\\xe9sum\\xe9s/:") for w in named)


def _cli_as_unprivileged(args: list[str], cwd: Path) -> list[str]:
    """The command, run without the capabilities that let root read any folder."""
    command = [sys.executable, "-m", "flyte_jupyter", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: cannot make a folder unreadable")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    return command


def test_unreadable_folder_is_left_out_with_a_warning(tree):
    root = tree({"pyproject.toml": "[project]\nname='locked'\n", "app.py": "X = 1\n"})
    (root / "private").mkdir()
    (root / "private" / "notes.py").write_text("SECRET_PLAN = 1\n")
    (root / "private").chmod(0)
    try:
        proc = subprocess.run(
            _cli_as_unprivileged(["bundle", ".", "--copy-style", "all", "--json"], root),
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        (root / "private").chmod(0o755)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    shipped = [f["path"] for f in report["files"]]
    print(f"exit {proc.returncode}; shipped {shipped}; warnings {report['warnings']}")
    assert "left out private/: cannot read it (Permission denied)" in report["warnings"]
    assert shipped == ["app.py", "pyproject.toml"]


def test_kernel_filesystem_under_root_is_skipped(tree):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("mounting a proc filesystem needs root and unshare")
    root = tree({"pyproject.toml": "[project]\nname='mounts'\n", "app.py": "X = 1\n"})
    (root / "proc").mkdir()
    bundle = [sys.executable, "-m", "flyte_jupyter", "bundle", ".", "--copy-style", "all"]
    script = f"mount -t proc proc proc && exec {' '.join(bundle)} --dry-run --json"
    proc = subprocess.run(  # a private mount namespace: the mount ends with the process
        ["unshare", "-m", "sh", "-c", script],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "mount:" in proc.stderr:
        pytest.skip(f"cannot mount proc here: {proc.stderr.strip()}")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    from_proc = [f["path"] for f in report["files"] if f["path"].startswith("proc/")]
    print(f"exit {proc.returncode}; files shipped from proc/: {len(from_proc)}")
    print(f"warnings: {report['warnings']}")
    assert "left out proc/: proc is a kernel filesystem, not files" in report["warnings"]
    assert from_proc == []


def test_project_inside_a_folder_named_with_non_utf8_bytes_bundles_and_caches(tmp_path):
    from flyte_jupyter.core.hashcache import HashCache
    from flyte_jupyter.runtime.locations import cache_dir

    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")) / "proj"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname='cafe'\n")
    (root / "app.py").write_text("X = 1\n")
    for path in root.iterdir():  # old enough for the hash cache to record
        os.utime(path, (1_600_000_000, 1_600_000_000))
    first = build_bundle(select_files(root, copy_style="all"))
    again = build_bundle(select_files(root, copy_style="all"))
    with HashCache(cache_dir() / "index.sqlite3") as cache:
        keys = [
            (
                os.fsencode(p).decode("utf-8", "backslashreplace"),
                st.st_size,
                st.st_mtime_ns,
                st.st_ino,
            )
            for p in (str(root / "app.py"), str(root / "pyproject.toml"))
            for st in [os.stat(p)]
        ]
        cached = cache.file_hashes(keys)
    print(f"files: {len(first.entries)}; hashes cached: {len(cached)}")
    assert first.digest == again.digest and len(first.entries) == 2 and len(cached) == 2
