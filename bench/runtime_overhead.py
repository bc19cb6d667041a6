"""Per-run cost of guarding the shared extraction: the pre-run check against the snapshot, the
snapshot the import checks use, the linked working directory and the post-run check, for
bundles of N files, next to what the private copy of the tree it replaced cost.

    python bench/runtime_overhead.py [--files 2000 100000] [--repeat 5] [--no-copy]

Prints milliseconds (median of --repeat) per bundle size. Each simulated run starts without
the snapshot in memory, as a run's fresh process does; "one check" includes reading it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def median_ms(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def make_project(root: Path, files: int) -> None:
    """`files` small modules in packages of 100, plus the entry module."""
    for i in range(files):
        package = root / f"pkg{i // 100}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"m{i}.py").write_text(f"VALUE = {i}\n" + "# padding\n" * 20)
    (root / "app.py").write_text("def main():\n    return 1\n")


def measure(work: Path, count: int, repeat: int, copy: bool) -> str:
    from flyte_jupyter.core.bundle import build_bundle
    from flyte_jupyter.core.selection import select_files
    from flyte_jupyter.runtime import extract
    from flyte_jupyter.runtime.execute import linked_workdir
    from flyte_jupyter.runtime.extract import (
        changes,
        discard_if_changed,
        fetch_bundle,
        recorded_snapshot,
    )

    project = work / f"project{count}"
    make_project(project, count)
    built = build_bundle(select_files(project, copy_style="all", max_bytes=1 << 40))
    url = built.archive.as_uri()
    start = time.perf_counter()
    tree = fetch_bundle(url, built.digest)
    first = (time.perf_counter() - start) * 1000
    here = os.getcwd()

    def new_process() -> None:
        extract._loaded.clear()

    def one_check() -> None:
        new_process()
        assert changes(tree) == []

    def guarded_run() -> None:
        new_process()
        assert fetch_bundle(url, built.digest) == tree
        assert recorded_snapshot(tree) is not None  # what the import checks compare with
        workdir = linked_workdir(tree)
        os.chdir(here)
        shutil.rmtree(workdir)
        assert discard_if_changed(tree) == []

    def private_copy() -> None:
        copy = tempfile.mkdtemp(dir=work)
        shutil.copytree(tree, copy, dirs_exist_ok=True)
        shutil.rmtree(copy)

    entries = sum(len(dirs) + len(files) for _, dirs, files in os.walk(tree))
    snapshot_bytes = tree.with_name(tree.name + ".files").stat().st_size
    check = median_ms(repeat, one_check)
    guarded = median_ms(repeat, guarded_run)
    copied = f"{median_ms(max(1, repeat // 2), private_copy):.0f} ms" if copy else "not measured"
    return (
        f"{count} files ({entries} entries, snapshot {snapshot_bytes / 1e6:.1f} MB): first "
        f"fetch+extract+snapshot {first:.0f} ms; per run: one check {check:.1f} ms, both checks "
        f"+ import-check snapshot + linked workdir {guarded:.1f} ms (the private copy it "
        f"replaces: {copied})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[2000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-copy", action="store_true", help="skip timing the private copy")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fj-bench-overhead-"))
    os.environ["FLYTE_JUPYTER_CACHE_DIR"] = str(work / "cache")
    try:
        for count in args.files:
            print(measure(work, count, args.repeat, not args.no_copy), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
