"""`%%flyte_run` round trip in a live kernel, warm, against a plain cell and `python -c pass`,
measured in one run.

    python bench/magic.py [--repeat 10]

Target: the warm trivial `%%flyte_run` cell < 4x `python -c pass`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

from jupyter_client.manager import KernelManager


def run_cell(client, code: str) -> None:
    msg_id = client.execute(code)
    while True:
        try:
            msg = client.get_iopub_msg(timeout=120)
        except Empty as exc:
            raise TimeoutError(code) from exc
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            raise RuntimeError("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return


def median_ms(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fj-bench-magic-"))
    env = {
        **os.environ,
        "FLYTE_JUPYTER_CACHE_DIR": str(work / "cache"),
        "FLYTE_JUPYTER_DATA_DIR": str(work / "data"),
    }
    (work / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(work), env=env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        run_cell(client, "%load_ext flyte_jupyter")
        cell = "%%flyte_run\nx = 1 + 1\nx"
        run_cell(client, cell)  # cold: build, upload, extract
        plain = median_ms(args.repeat, lambda: run_cell(client, "x = 1 + 1\nx"))
        remote = median_ms(args.repeat, lambda: run_cell(client, cell))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    bare = median_ms(
        args.repeat, lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)
    )
    print(f"plain cell in the kernel:         {plain:7.1f} ms")
    print(f"python -c pass:                   {bare:7.1f} ms")
    print(f"warm trivial %%flyte_run cell:    {remote:7.1f} ms")
    print(f"ratio to python -c pass:          {remote / bare:7.2f}x  (target < 4x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
