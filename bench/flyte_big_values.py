"""A big value into and out of a `--executor flyte` run, through the local Flyte control-plane
emulator of tests/ (moto for storage, pods as local `a0` processes).

    python bench/flyte_big_values.py [--mb 200] [--mb 1024]

For each size: `submit()` of `echo(value)` (returns its argument) with a `bytes` value of that
size, then `result()`. Prints the submit seconds (pickling into the store + the inputs File's
upload), the seconds until the value is back in this process, this process's peak RSS growth
after the value existed (Linux VmHWM, reset first) and the pod's peak RSS, each also as a
multiple of the value's size (1.0x is the value itself). Values over 1 MiB travel as Flyte
Files, streamed; inline (base64 in the task's inputs/outputs) they were held ~5 times.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from big_values import PeakSampler, status_mb  # sibling scripts, not a package
from flyte_submit import emulated_flyte


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, action="append")
    args = parser.parse_args()
    sizes = args.mb or [200]
    work = Path(tempfile.mkdtemp(prefix="flyte-big-bench-"))
    source = "def echo(value):\n    return value\n"
    with emulated_flyte(work, "echo.py", source) as (_, bundle):
        from flyte_jupyter.core.submit import submit  # after the dirs are set

        submit(bundle, "echo:echo", [b"warm-up"], executor="flyte").result(timeout=300)
        print(f"{'value':>8s} {'submit':>7s} {'back':>7s} {'client +MB':>16s} {'pod MB':>16s}")
        for mb in sizes:
            value = os.urandom(1 << 20) * mb  # cheap to make; compresses no better than random
            pid = os.getpid()
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS
            before = status_mb(pid, "VmHWM")
            pod = PeakSampler(b"flyte._bin.runtime", 0.02)
            started = time.perf_counter()
            run = submit(bundle, "echo:echo", [value], executor="flyte")
            submitted = time.perf_counter() - started
            back = run.result(timeout=3600)
            took = time.perf_counter() - started
            growth = status_mb(pid, "VmHWM") - before
            pod_peak = pod.close()
            assert back == value, "the value came back changed"
            del back
            print(
                f"{mb:>5d} MB {submitted:>6.1f}s {took:>6.1f}s "
                f"{growth:>7.0f} ({growth / mb:.1f}x) {pod_peak:>7.0f} ({pod_peak / mb:.1f}x)"
            )
            del value


if __name__ == "__main__":
    main()
