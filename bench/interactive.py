"""Interactive speed as users meet it: whole processes, each paired with its reference in the
same run, printed as a ratio against the target.

    python bench/interactive.py [--only NAME ...] [--repeat 5] [--big]

Rows (issue "Interactive speed where users feel it"):
  startup   `flyte-jupyter --help`, `import flyte_jupyter.cli` (minus `python -c pass`) and
            the imports of `%load_ext flyte_jupyter` (minus `import IPython`); target <= 0.25 s
  bundle    `flyte-jupyter bundle` of 2,000 x 20 KB files as a whole process, cold and warm,
            vs flyte's `build_code_bundle(copy_style="all", dryrun=True)` in-process
            (targets: cold >= 5x faster; warm <= 10 % of our cold); peak RSS. Warm rows
            also print their ratio without `python -c pass` (measured in the same run)
  big       (--big) 20,000 files / ~390 MB, `--copy-style all`: cold vs `tar czf`, warm, one
            file changed, peak RSS (targets >= 3x faster than tar; <= 5 % / <= 10 %; <= 200 MB)
  run       trivial `flyte-jupyter run` on the local executor, whole process (target <= 0.35 s)
  output    a `%%flyte_run` cell printing 200,000 lines vs the same loop in a plain cell
            (target <= 2x)
  cell      a trivial `%%flyte_run` cell in a warm kernel, best of runs 3-5 (target <= 60 ms)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bundle import make_tree

CLI = [sys.executable, "-m", "flyte_jupyter"]


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
    """Wall seconds, peak RSS (MB) and CPU seconds (user + system) of one whole process. CPU
    seconds stay comparable when other work shares the machine; wall seconds do not."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def median(repeat: int, fn: Callable[[], tuple[float, float, float]]) -> tuple[float, float, float]:
    """Median wall seconds, largest peak RSS, median CPU seconds."""
    results = [fn() for _ in range(repeat)]
    return (
        statistics.median(r[0] for r in results),
        max(r[1] for r in results),
        statistics.median(r[2] for r in results),
    )


def row(label: str, value: str, verdict: str = "") -> None:
    print(f"{label:58s} {value:>22s}  {verdict}")


def compile_package() -> None:
    """Byte-compile flyte_jupyter as `pip install` leaves it: with PYTHONDONTWRITEBYTECODE set
    (some sandboxes and CI images set it) an editable checkout would otherwise be compiled
    again by every measured process, ~70 ms that no installed copy pays."""
    import compileall

    import flyte_jupyter

    compileall.compile_dir(Path(flyte_jupyter.__file__).parent, quiet=1)


def checked_out(tree: Path) -> None:
    """Date every path a minute back, as a checkout's are: stats younger than two seconds are
    deliberately not trusted by the hash cache and the warm records."""
    when = time.time() - 60
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (when, when))
    os.sync()  # nor is a checkout still being written to disk while it is built


def bench_startup(work: Path, repeat: int) -> None:
    """Each command against its baseline, interleaved and best of `repeat`: start-up costs of
    tens of milliseconds drown in the machine's noise otherwise."""
    bare = [sys.executable, "-c", "pass"]
    ipython = [sys.executable, "-c", "import IPython"]
    for label, argv, base in [
        ("flyte-jupyter --help", [*CLI, "--help"], bare),
        ("import flyte_jupyter.cli", [sys.executable, "-c", "import flyte_jupyter.cli"], bare),
        (
            "%load_ext flyte_jupyter (its imports, IPython excluded)",
            [sys.executable, "-c", "import IPython; import flyte_jupyter.kernel.magics"],
            ipython,
        ),
    ]:
        ours, theirs = [], []
        for _ in range(repeat):
            ours.append(timed(argv)[0])
            theirs.append(timed(base)[0])
        row(label, f"{min(ours) - min(theirs):.3f} s", "(target <= 0.25 s)")


def bench_bundle(
    work: Path, repeat: int, files: int, size_kb: int, label: str, cold_repeat: int
) -> None:
    tree = work / f"tree-{files}"
    if not tree.exists():
        tree.mkdir()
        make_tree(tree, files, size_kb, 50)
        checked_out(tree)
    cache = work / f"cache-{files}"
    env = {**os.environ, "FLYTE_JUPYTER_CACHE_DIR": str(cache)}
    argv = [*CLI, "bundle", str(tree), "--copy-style", "all", "--max-size", "2000"]

    def cold() -> tuple[float, float, float]:
        shutil.rmtree(cache, ignore_errors=True)
        return timed(argv, env)

    cold_t, cold_rss, cold_cpu = median(cold_repeat, cold)
    os.sync()  # the cold build's archive written back now, not during the warm runs
    warm_t, *_ = median(repeat, lambda: timed(argv, env))
    bare_t, *_ = median(repeat, lambda: timed([sys.executable, "-c", "pass"]))
    changed = tree / "mod_0.py"  # make_tree puts file 0 at the top

    def one_changed() -> tuple[float, float, float]:
        changed.write_text(changed.read_text() + "\n# edit\n")
        old = time.time() - 10
        os.utime(changed, (old, old))
        return timed(argv, env)

    one_t, *_ = median(repeat, one_changed)
    row(
        f"{label}: ours cold, whole process",
        f"{cold_t:.2f} s, {cold_rss:.0f} MB",
        f"CPU {cold_cpu:.2f} s; peak RSS target <= 200 MB",
    )
    warm_target = 0.10 if files <= 5000 else 0.05
    for what, took, target in [("warm", warm_t, warm_target), ("one file changed", one_t, 0.10)]:
        row(
            f"{label}: ours {what}",
            f"{took:.3f} s",
            f"{took / cold_t:.1%} of cold (target <= {target:.0%}); "
            f"{(took - bare_t) / (cold_t - bare_t):.1%} without the interpreter's start",
        )
    row("python -c pass (same run)", f"{bare_t:.3f} s")
    if files <= 5000:
        # flyte's bundler timed in-process (its import is not counted), as the issue states
        script = (
            "import asyncio, logging, sys, time, pathlib\n"
            "import flyte\n"
            "from flyte._code_bundle.bundle import build_code_bundle\n"
            "logging.getLogger('flyte').setLevel(logging.ERROR)\n"
            "start = time.perf_counter()\n"
            "asyncio.run(build_code_bundle(pathlib.Path(sys.argv[1]), copy_style='all',"
            " dryrun=True))\n"
            "print(time.perf_counter() - start)\n"
        )
        runs = []
        for _ in range(repeat):
            done = subprocess.run(
                [sys.executable, "-c", script, str(tree)], capture_output=True, text=True
            )
            if done.returncode != 0:
                row(f"{label}: flyte build_code_bundle", "unavailable (pip install flyte)")
                break
            runs.append(float(done.stdout.strip().splitlines()[-1]))
        if runs:
            ref_t = statistics.median(runs)
            row(
                f"{label}: flyte build_code_bundle (in-process)",
                f"{ref_t:.2f} s",
                f"ours {ref_t / cold_t:.1f}x faster (target >= 5x)",
            )
    else:
        out = work / "ref.tar.gz"
        ref_t, _, ref_cpu = median(1, lambda: timed(["tar", "czf", str(out), "-C", str(tree), "."]))
        row(
            f"{label}: tar czf",
            f"{ref_t:.2f} s",
            f"ours {ref_t / cold_t:.1f}x faster (target >= 3x); CPU {ref_cpu:.2f} s, "
            f"{ref_cpu / cold_cpu:.1f}x ours",
        )


def bench_run(work: Path, repeat: int) -> None:
    project = work / "runproj"
    project.mkdir(exist_ok=True)
    (project / "app.py").write_text("def f():\n    return 1\n")
    env = {
        **os.environ,
        "FLYTE_JUPYTER_CACHE_DIR": str(work / "run-cache"),
        "FLYTE_JUPYTER_DATA_DIR": str(work / "run-data"),
    }
    argv = [*CLI, "run", f"{project / 'app.py'}:f"]
    timed(argv, env)  # cold: build, upload, extract
    t, *_ = median(repeat, lambda: timed(argv, env))
    bare, *_ = median(repeat, lambda: timed([sys.executable, "-c", "pass"]))
    row("trivial `flyte-jupyter run`, local, whole process", f"{t:.3f} s", "(target <= 0.35 s)")
    row("python -c pass (same run)", f"{bare:.3f} s")


def _kernel(work: Path):
    from jupyter_client.manager import KernelManager

    env = {
        **os.environ,
        "FLYTE_JUPYTER_CACHE_DIR": str(work / "k-cache"),
        "FLYTE_JUPYTER_DATA_DIR": str(work / "k-data"),
    }
    (work / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(work), env=env)
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return manager, client


def _cell(client, code: str) -> float:
    start = time.perf_counter()
    msg_id = client.execute(code)
    while True:
        msg = client.get_iopub_msg(timeout=600)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            raise RuntimeError("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return time.perf_counter() - start


def bench_kernel(work: Path, repeat: int, output: bool, cell: bool) -> None:
    manager, client = _kernel(work)
    try:
        _cell(client, "%load_ext flyte_jupyter")
        if output:
            loop = "for i in range(200_000):\n    print('line', i)\n"
            plain = _cell(client, loop)
            remote = _cell(client, "%%flyte_run\n" + loop)
            row("200,000 lines: plain cell", f"{plain:.2f} s")
            row(
                "200,000 lines: %%flyte_run cell",
                f"{remote:.2f} s",
                f"{remote / plain:.1f}x plain (target <= 2x)",
            )
        if cell:
            code = "%%flyte_run\nx = 1 + 1\nx"
            times = [_cell(client, code) for _ in range(max(5, repeat))]
            best = min(times[2:5])
            row(
                "trivial %%flyte_run cell, warm, best of runs 3-5",
                f"{best * 1000:.0f} ms",
                "(target <= 60 ms)",
            )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ["startup", "bundle", "big", "run", "output", "cell"]
    parser.add_argument("--only", nargs="+", choices=names)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--big", action="store_true", help="include the 20,000-file tree")
    args = parser.parse_args()
    chosen = set(args.only or [n for n in names if n != "big" or args.big])
    work = Path(tempfile.mkdtemp(prefix="fj-bench-interactive-"))
    compile_package()
    try:
        if "startup" in chosen:
            bench_startup(work, args.repeat)
        if "bundle" in chosen:
            bench_bundle(work, args.repeat, 2000, 20, "2,000 x 20 KB", min(args.repeat, 3))
        if "big" in chosen:
            bench_bundle(work, args.repeat, 20000, 20, "20,000 x 20 KB", min(args.repeat, 3))
        if "run" in chosen:
            bench_run(work, args.repeat)
        if chosen & {"output", "cell"}:
            bench_kernel(work, args.repeat, "output" in chosen, "cell" in chosen)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
