"""Building a bundle holds a bounded amount of file data in memory, whatever the tree's size:
each file is read once, hashed and compressed in the same pass, fed a bounded window ahead of
the writer, and big files are hashed and compressed in chunks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flyte_jupyter.core import bundle as bundle_mod
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.selection import select_files

MB = 1024 * 1024

BUILD = """
import json, resource, sys
from flyte_jupyter.core import bundle
from flyte_jupyter.core.selection import select_files

selection = select_files(sys.argv[1], copy_style="all", max_bytes=10**10)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
built = bundle.build_bundle(selection)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
after = max(after, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # forked workers
print(json.dumps({"before_kb": before, "after_kb": after, "bytes": built.total_bytes}))
"""


def make_tree(root: Path, small: int, big_mb: int) -> int:
    """`small` files of 1 MB and one file of `big_mb` MB of hex text (compresses ~2:1)."""
    total = 0
    for i in range(small):
        path = root / f"pkg_{i % 7}" / f"part_{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(os.urandom(MB // 2).hex())
        total += MB
    with open(root / "big.bin", "w") as f:
        for _ in range(big_mb):
            f.write(os.urandom(MB // 2).hex())
    return total + big_mb * MB


def test_peak_memory_of_a_build_does_not_grow_with_the_tree(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    total = make_tree(root, small=120, big_mb=60)
    env = {**os.environ, "FLYTE_JUPYTER_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(root)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    growth = (doc["after_kb"] - doc["before_kb"]) / 1024
    print(f"tree: {total / MB:.0f} MB; peak RSS (any process) grew {growth:.0f} MB while building")
    assert doc["bytes"] == total
    # before: every file's contents were kept from hashing to compressing (>= 180 MB)
    assert growth < 80


def test_streamed_big_files_give_the_same_archive_bytes(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    root.mkdir()
    make_tree(root, small=2, big_mb=6)
    (root / "empty.txt").write_bytes(b"")
    selection = select_files(root, copy_style="all")
    streamed = build_bundle(selection)
    assert any(f.size > bundle_mod.STREAM_BYTES for f in selection.files)
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(tmp_path / "other-cache"))
    monkeypatch.setattr(bundle_mod, "STREAM_BYTES", 10**12)  # every file read whole
    whole = build_bundle(selection)
    assert whole.digest == streamed.digest
    assert whole.archive.read_bytes() == streamed.archive.read_bytes()
    with tarfile.open(streamed.archive) as tar:
        big = tar.extractfile("big.bin").read()
    assert big == (root / "big.bin").read_bytes()


def test_a_big_file_that_changes_while_bundled_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    root.mkdir()
    make_tree(root, small=1, big_mb=6)
    selection = select_files(root, copy_style="all")
    (root / "big.bin").write_text("shorter now")
    try:
        build_bundle(selection)
    except bundle_mod.BundleError as exc:
        message = str(exc)
    else:
        message = ""
    print("error:", message)
    assert message == "big.bin changed while it was being bundled: run again"


def test_hashing_keeps_a_bounded_number_of_tasks_ahead():
    """Files are handed to the hashing threads a window at a time, in order, however many."""
    started, consumed, most_ahead = [0], 0, 0

    def work(item: int) -> int:
        started[0] += 1
        return item * 2

    with ThreadPoolExecutor(2) as pool:
        results = []
        for result in bundle_mod._ordered_map(pool, work, list(range(5000)), window=16):
            consumed += 1
            most_ahead = max(most_ahead, started[0] - consumed)
            results.append(result)
    print(f"tasks: 5000, most started ahead of the consumer: {most_ahead}")
    assert results == [i * 2 for i in range(5000)]
    assert most_ahead <= 16


POOLS = """
import json, sys
from concurrent.futures import ProcessPoolExecutor
from flyte_jupyter.core import bundle
from flyte_jupyter.core.selection import select_files

bundle.PROCESS_BYTES = int(sys.argv[2])
chosen = []
make_pool = bundle._compressing_pool
bundle._compressing_pool = lambda *a: chosen.append(make_pool(*a)) or chosen[-1]
selection = select_files(sys.argv[1], copy_style="all")
try:
    built = bundle.build_bundle(selection)
except bundle.BundleError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({
        "processes": isinstance(chosen[0], ProcessPoolExecutor),
        "digest": built.digest,
        "archive": str(built.archive),
    }))
"""


def _build_in_process(root: Path, cache: Path, process_bytes: int) -> dict:
    env = {**os.environ, "FLYTE_JUPYTER_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", POOLS, str(root), str(process_bytes)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_worker_processes_and_threads_write_the_same_archive(tmp_path):
    """Big builds compress in forked processes (one thread per file costs GIL hand-offs);
    the archive is the same bytes as the threads' one."""
    root = tmp_path / "tree"
    root.mkdir()
    make_tree(root, small=6, big_mb=5)
    for i in range(300):  # many small files: several batches per worker
        (root / "src" / f"m{i}.py").parent.mkdir(exist_ok=True)
        (root / "src" / f"m{i}.py").write_text(f"X = {i}\n" * (i % 40))
    threads = _build_in_process(root, tmp_path / "a", 10**15)
    processes = _build_in_process(root, tmp_path / "b", 0)
    print("threads:", threads, "processes:", processes)
    assert (threads["processes"], processes["processes"]) == (False, True)
    assert threads["digest"] == processes["digest"]
    assert Path(threads["archive"]).read_bytes() == Path(processes["archive"]).read_bytes()


def test_a_file_changed_under_a_worker_process_is_one_clear_error(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    make_tree(root, small=3, big_mb=0)
    shrink = "(selection.root_dir / 'pkg_1' / 'part_1.txt').write_text('x')\n"
    script = POOLS.replace("try:\n", shrink + "try:\n")
    env = {**os.environ, "FLYTE_JUPYTER_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(root), "0"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    print(doc)
    assert doc == {"error": "pkg_1/part_1.txt changed while it was being bundled: run again"}
