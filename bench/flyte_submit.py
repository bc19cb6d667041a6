"""Client-side submit overhead of a trivial cell: `--executor flyte` (through the local Flyte
control-plane emulator of tests/) vs the local executor, warm.

    python bench/flyte_submit.py [--repeat 5]

Each sample is `submit()` of the same small bundle (built once, as a re-run of an unchanged
cell is): for flyte, settings + config + the data-plane dedup check + task spec + SelectCluster,
UploadInputs and CreateRun; for local, the store writes and the process start. Every run is
cancelled right after it was submitted, so pods do not compete for the CPU. Prints the medians,
the ratio (target <= 2x) and the code bytes the warm flyte submits uploaded (target 0).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


@contextlib.contextmanager
def emulated_flyte(work: Path, filename: str, source: str) -> Iterator[tuple[Any, Any]]:
    """The Flyte control-plane emulator of tests/ on a moto S3 server, this process's
    flyte-jupyter dirs and Flyte config pointed into `work`, and the bundle of a one-file
    project: yields (emulator, bundle)."""
    os.environ["FLYTE_JUPYTER_CACHE_DIR"] = str(work / "cache")
    os.environ["FLYTE_JUPYTER_DATA_DIR"] = str(work / "data")
    import servers

    servers.setup_env()
    from flyte_emulator import FlyteEmulator

    from flyte_jupyter.core.bundle import build_bundle
    from flyte_jupyter.core.selection import select_files

    project = work / "project"
    project.mkdir()
    (project / filename).write_text(source)
    (work / "moto").mkdir()
    with servers.moto_server(work / "moto") as s3, FlyteEmulator(work / "emu", s3) as emu:
        os.environ.update(emu.client_env)
        os.environ["FLYTE_JUPYTER_FLYTE_CONFIG"] = str(emu.config_path)
        yield emu, build_bundle(select_files(project, entries=[project / filename]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flyte-submit-bench-"))
    with emulated_flyte(work, "cell.py", "def run():\n    return 41 + 1\n") as (emu, bundle):
        from flyte_jupyter.core.submit import submit  # after the dirs are set

        times: dict[str, list[float]] = {"local": [], "flyte": []}
        for executor in ("local", "flyte"):
            for i in range(args.repeat + 1):  # the first is the warm-up
                started = time.perf_counter()
                run = submit(bundle, "cell:run", executor=executor)
                took = time.perf_counter() - started
                run.cancel()
                if i:
                    times[executor].append(took)
                elif executor == "flyte":
                    uploads, calls = len(emu.uploads), len(emu.calls)
        warm_uploads = len(emu.uploads) - uploads
        rpcs = [c for c in emu.calls[calls:] if c not in ("AbortRun", "GetRunDetails")]
        local, flyte = (statistics.median(times[k]) for k in ("local", "flyte"))
        print(f"local executor, client side: {local * 1000:.0f} ms (median of {args.repeat})")
        print(f"flyte executor, client side: {flyte * 1000:.0f} ms (median of {args.repeat})")
        print(f"ratio flyte/local: {flyte / local:.2f}x (target <= 2x)")
        print(f"uploads by the warm flyte submits: {warm_uploads} (target 0)")
        print(f"RPCs per warm flyte submit: {len(rpcs) / args.repeat:.1f} ({sorted(set(rpcs))})")


if __name__ == "__main__":
    main()
