"""Round-trip cost of a run: a trivial function on the local executor, warm (bundle built,
uploaded and extracted before), against a bare `python -c pass`, measured in one run.

    python bench/run.py [--repeat 10]

Prints the median of each, the ratio (target < 4x) and the bytes uploaded by an unchanged
re-run (target 0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def median_time(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fj-bench-run-"))
    os.environ["FLYTE_JUPYTER_CACHE_DIR"] = str(work / "cache")
    os.environ["FLYTE_JUPYTER_DATA_DIR"] = str(work / "data")
    project = work / "project"
    (project / "lib").mkdir(parents=True)
    (project / "lib" / "__init__.py").write_text("def one():\n    return 1\n")
    (project / "app.py").write_text("from lib import one\n\ndef f():\n    return one()\n")
    old = time.time() - 3600
    for path in project.rglob("*.py"):
        os.utime(path, (old, old))

    from flyte_jupyter.core.bundle import build_bundle
    from flyte_jupyter.core.selection import select_files
    from flyte_jupyter.core.submit import submit

    uploads: list[int] = []

    def round_trip() -> None:
        bundle = build_bundle(select_files(project, entries=[project / "app.py"]))
        run = submit(bundle, "app:f")
        assert run.result(timeout=60) == 1
        uploads.append(run.upload.uploaded_bytes if run.upload else 0)

    round_trip()  # cold: build, upload, extract
    first_upload = uploads[0]

    def bare() -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    python = median_time(args.repeat, bare)
    ours = median_time(args.repeat, round_trip)
    print(f"python -c pass (median of {args.repeat}):    {python * 1000:7.1f} ms")
    print(f"warm trivial run, local executor:     {ours * 1000:7.1f} ms")
    print(f"ratio:                                {ours / python:7.2f}x  (target < 4x)")
    print(
        f"first upload: {first_upload} bytes; unchanged re-runs uploaded {sum(uploads[1:])} bytes"
        "  (target 0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
