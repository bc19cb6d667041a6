"""Big values in and out of a `%%flyte_run` cell: seconds and peak memory on both sides.

    python bench/big_values.py [--mb 200] [--mb 1024]

For each size, in a fresh kernel each time (local executor, file store):
  in    a `bytes` value of that size defined in the notebook, used by a remote cell
  out   a remote cell that makes a `bytes` value of that size, which comes back
Prints the cell's wall seconds, the kernel's peak RSS growth during the cell (Linux VmHWM,
reset before the cell) and the remote process's peak RSS, each also as a multiple of the
value's size: 1.0x is the value itself, so anything near 2x is a second full copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).parent))
from interactive import _cell


def status_mb(pid: int | str, key: str) -> float:
    """A /proc/PID/status memory field (VmHWM, VmRSS) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key}")


class PeakSampler:
    """Largest VmHWM seen of any process with `marker` in its command line, sampled every
    `interval` seconds: runs and pods are not waited-for children whose rusage could be
    read."""

    def __init__(self, marker: bytes, interval: float) -> None:
        self.marker = marker
        self.interval = interval
        self.peak = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.wait(self.interval):
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if self.marker in (proc / "cmdline").read_bytes():
                        self.peak = max(self.peak, status_mb(proc.name, "VmHWM"))
                except (OSError, RuntimeError):
                    continue

    def close(self) -> float:
        self.stop.set()
        self.thread.join()
        return self.peak


def _reset_hwm(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: peak RSS := current RSS


def measure(work: Path, mb: int, direction: str) -> tuple[float, float, float]:
    """(seconds, kernel peak growth MB, remote peak MB) of one cell moving `mb` MB."""
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
        pid = manager.provisioner.process.pid
        _cell(client, "%load_ext flyte_jupyter")
        _cell(client, "%%flyte_run\nwarm = 1")  # bundle built and uploaded once
        size = mb * 1024 * 1024
        if direction == "in":
            _cell(client, f"data = bytes(range(256)) * {size // 256}")
            code = "%%flyte_run\nn = len(data)"
        else:
            code = f"%%flyte_run\ndata = bytes(range(256)) * {size // 256}"
        base = status_mb(pid, "VmRSS")
        _reset_hwm(pid)
        sampler = PeakSampler(b"flyte_jupyter.runtime", 0.01)
        try:
            seconds = _cell(client, code)
        finally:
            remote_peak = sampler.close()
        kernel_peak = status_mb(pid, "VmHWM") - base
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return seconds, kernel_peak, remote_peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, action="append", help="value size (default 200)")
    args = parser.parse_args()
    print(f"{'value':>8s} {'dir':>4s} {'seconds':>8s} {'kernel +MB':>16s} {'remote MB':>16s}")
    for mb in args.mb or [200]:
        for direction in ("in", "out"):
            work = Path(tempfile.mkdtemp(prefix="fj-bench-values-"))
            try:
                seconds, kernel, remote = measure(work, mb, direction)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(
                f"{mb:>5d} MB {direction:>4s} {seconds:>7.2f}s "
                f"{kernel:>7.0f} ({kernel / mb:.1f}x) {remote:>7.0f} ({remote / mb:.1f}x)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
