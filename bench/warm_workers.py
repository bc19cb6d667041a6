"""Warm workers against cold starts, in one run: a trivial `flyte-jupyter run` (whole CLI
process) and a trivial `%%flyte_run` cell (warm kernel, best of runs 3-5), on the local
executor and, when a Docker engine has the image, the docker executor.

    python bench/warm_workers.py [--repeat 3] [--image python:3.11-slim-bookworm] [--no-docker]

Targets (issue 13): local cell <= 60 ms, CLI run <= 0.35 s; docker cell <= 500 ms, CLI run
warm <= 0.7 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from interactive import _cell, _kernel  # a sibling script, not a package

TARGETS = {"local": (0.35, 60), "docker": (0.7, 500)}


def cli_run(work: Path, executor: list[str], warm: bool, repeat: int) -> float:
    """The best whole-process time of a trivial run after a first one (which starts the
    worker or, cold, extracts the bundle)."""
    project = work / "runproj"
    project.mkdir(exist_ok=True)
    (project / "app.py").write_text("def f():\n    return 1\n")
    env = {
        **os.environ,
        "FLYTE_JUPYTER_CACHE_DIR": str(work / "cache"),
        "FLYTE_JUPYTER_DATA_DIR": str(work / "data"),
        "FLYTE_JUPYTER_WARM_WORKERS": "1" if warm else "0",
    }
    argv = [sys.executable, "-m", "flyte_jupyter", "run", f"{project / 'app.py'}:f", *executor]
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    stop = [sys.executable, "-m", "flyte_jupyter", "workers", "stop"]
    subprocess.run(stop, env=env, check=True, capture_output=True)
    return min(times[1:])


def cell(work: Path, executor: str, warm: bool) -> float:
    os.environ["FLYTE_JUPYTER_WARM_WORKERS"] = "1" if warm else "0"
    manager, client = _kernel(work)
    try:
        _cell(client, "%load_ext flyte_jupyter")
        code = f"%%flyte_run {executor}\nx = 1 + 1\nx"
        times = [_cell(client, code) for _ in range(5)]
        return min(times[2:5])
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)  # a kernel's workers stop with it


def docker_ready(image: str) -> bool:
    try:
        import docker

        client = docker.from_env()
        client.images.get(image)
    except Exception:  # no SDK, no engine or no image: the docker rows are skipped
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--image", default="python:3.11-slim-bookworm")
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    executors = {"local": ([], "")}
    if not args.no_docker and docker_ready(args.image):
        docker = ["--executor", "docker", "--image", args.image]
        executors["docker"] = (docker, " ".join(docker))
    for name, (cli_flags, magic_flags) in executors.items():
        cli_target, cell_target = TARGETS[name]
        for warm in (False, True):
            work = Path(tempfile.mkdtemp(prefix=f"fj-bench-warm-{name}-"))
            label = f"{name}, {'warm workers' if warm else 'cold'}"
            run = cli_run(work, cli_flags, warm, args.repeat)
            ms = cell(work, magic_flags, warm) * 1000
            print(f"trivial `flyte-jupyter run`, {label}: {run:.3f} s (target <= {cli_target} s)")
            print(f"trivial %%flyte_run cell, {label}: {ms:.0f} ms (target <= {cell_target} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
