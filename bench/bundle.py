"""Bundle speed: flyte-jupyter vs the `flyte` SDK's own bundler, measured in one run.

    pip install -e ".[bench]"      # brings the flyte SDK
    python bench/bundle.py [--files 2000] [--size-kb 20] [--repeat 3]

Generates a tree of Python files (plus nested dirs), then times, best of --repeat:
flyte's `build_code_bundle(copy_style="all", dryrun=True)`; ours cold (empty cache),
warm (nothing changed) and after changing one file. Prints each time and the ratios
against the targets: cold >= 3x faster than flyte, warm <= 5% and one-file change <= 10%
of our cold time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def make_tree(root: Path, files: int, size_kb: int, dirs: int) -> None:
    rng = random.Random(42)
    folders = [root]
    for i in range(dirs):
        parent = rng.choice(folders)
        folder = parent / f"pkg_{i}"
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        folders.append(folder)
    old = time.time() - 3600  # edited an hour ago, like a real checkout
    for i in range(files):
        lines, size = [], 0
        while size < size_kb * 1024:
            line = (
                f"def func_{i}_{len(lines)}(x, y={rng.randint(0, 999)}):\n"
                f"    return x * {rng.random():.6f} + y  # {rng.getrandbits(64):x}\n"
            )
            lines.append(line)
            size += len(line)
        path = folders[i % len(folders)] / f"mod_{i}.py"
        path.write_text("".join(lines))
        os.utime(path, (old, old))


def best_of(
    repeat: int, fn: Callable[[], object], before: Callable[[], object] = lambda: None
) -> float:
    times = []
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size-kb", type=int, default=20)
    parser.add_argument("--dirs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fj-bench-"))
    tree = work / "project"
    tree.mkdir()
    cache = work / "cache"
    os.environ["FLYTE_JUPYTER_CACHE_DIR"] = str(cache)
    from flyte_jupyter.core.bundle import build_bundle
    from flyte_jupyter.core.selection import select_files

    make_tree(tree, args.files, args.size_kb, args.dirs)
    total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    mb = total / 1e6
    print(f"tree: {args.files} files, {mb:.1f} MB, {args.dirs} dirs, {os.cpu_count()} cores")

    def ours() -> None:
        build_bundle(select_files(tree, copy_style="all"))

    def clear_cache() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    results: dict[str, float] = {}
    try:
        import flyte  # noqa: F401
        from flyte._code_bundle.bundle import build_code_bundle

        logging.getLogger("flyte").setLevel(logging.ERROR)

        def theirs() -> None:
            asyncio.run(build_code_bundle(tree, copy_style="all", dryrun=True))

        results["flyte build_code_bundle (dryrun)"] = best_of(args.repeat, theirs)
    except ImportError:
        print("flyte SDK not installed (pip install -e '.[bench]'): no baseline", file=sys.stderr)

    results["ours cold"] = best_of(args.repeat, ours, before=clear_cache)
    ours()
    results["ours warm (unchanged)"] = best_of(args.repeat, ours)
    target = next(tree.rglob("mod_7.py"))
    counter = iter(range(10**6))

    def touch_one() -> None:
        with target.open("a") as f:
            f.write(f"# edit {next(counter)}\n")

    results["ours one file changed"] = best_of(args.repeat, ours, before=touch_one)

    for name, seconds in results.items():
        print(f"{name:34s} {seconds:8.3f} s")
    cold = results["ours cold"]
    warm = results["ours warm (unchanged)"] / cold
    one = results["ours one file changed"] / cold
    flyte_time = results.get("flyte build_code_bundle (dryrun)")
    if flyte_time:
        print(f"cold speed-up vs flyte:  {flyte_time / cold:6.1f}x  (target >= 3x)")
    print(f"warm / cold:             {warm:6.1%}  (target <= 5%)")
    print(f"one-file change / cold:  {one:6.1%}  (target <= 10%)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
