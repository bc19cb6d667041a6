"""Big values without a second full copy: the runtime unpickles inputs from the file as it is
read and pickles results straight into the output file (peak memory read from the real
runtime process with os.wait4, against the same process moving a tiny value); a kernel
pickles a cell's inputs straight into the store and loads its values straight from the
outputs file (its peak read from /proc after a reset)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest
import servers
from kernel import Kernel, Reply

from flyte_jupyter.core import history
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.errors import RunError
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.submit import pickle_inputs, submit

MB = 1024 * 1024
SIZE = 150 * MB
APP = (
    "def make(n):\n    return bytes(range(256)) * (n // 256)\n\ndef echo(data):\n    return data\n"
)

LAUNCHER = (
    "import os, subprocess, sys\n"
    "proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(proc.pid, 0)\n"
    "print(usage.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_runtime(tmp_path: Path, name: str, entry: str, kwargs: dict) -> tuple[float, Path]:
    """Peak RSS (MB) of one runtime process and its run directory."""
    root = tmp_path / "project"
    if not root.exists():
        root.mkdir()
        (root / "app.py").write_text(APP)
    built = build_bundle(select_files(root, entries=[root / "app.py"]))
    run_dir = tmp_path / name
    run_dir.mkdir()
    inputs = run_dir / "inputs.pkl"
    with open(inputs, "wb") as f:
        pickle.dump({"args": [], "kwargs": kwargs}, f, protocol=pickle.DEFAULT_PROTOCOL)
    del kwargs
    argv = [
        sys.executable, "-I", "-m", "flyte_jupyter.runtime",
        "--bundle", built.archive.as_uri(), "--digest", built.digest, "--entry", entry,
        "--inputs", inputs.as_uri(), "--outputs", (run_dir / "outputs.pkl").as_uri(),
        "--run-dir", run_dir.as_uri(),
    ]  # fmt: skip
    # A forked child's peak counts the parent's pages at the fork: start the runtime from a
    # small launcher process, which reports the runtime's own peak.
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *argv], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1]) / 1024, run_dir


def test_a_big_result_is_written_without_a_second_copy(tmp_path):
    base, _ = run_runtime(tmp_path, "tiny", "app:make", {"n": 256})
    peak, run_dir = run_runtime(tmp_path, "big", "app:make", {"n": SIZE})
    extra = (peak - base) / (SIZE / MB)
    print(f"runtime peak: {base:.0f} MB for a tiny result, {peak:.0f} MB for 150 MB ({extra:.2f}x)")
    outputs = run_dir / "outputs.pkl"
    summary = json.loads((run_dir / "outputs.json").read_text())
    assert summary["size"] == outputs.stat().st_size
    with open(outputs, "rb") as f:
        value = pickle.load(f)
    assert len(value) == SIZE and value[:3] == b"\x00\x01\x02"
    assert extra < 1.4  # the value once; before, pickled bytes beside it (>= 2x)


def test_a_big_input_is_read_without_a_second_copy(tmp_path):
    base, _ = run_runtime(tmp_path, "tiny", "app:echo", {"data": b"x"})
    peak, run_dir = run_runtime(tmp_path, "big", "app:echo", {"data": b"y" * SIZE})
    extra = (peak - base) / (SIZE / MB)
    print(f"runtime peak: {base:.0f} MB for a tiny input, {peak:.0f} MB for 150 MB ({extra:.2f}x)")
    assert (run_dir / "outputs.pkl").stat().st_size > SIZE
    assert extra < 1.4  # the value once; before, the file's bytes beside it (>= 2x)


def test_arguments_are_pickled_once_and_a_bad_one_is_still_named(tmp_path):
    pickled: list[str] = []

    def dump(value, file):
        pickled.append(type(value).__name__)
        cloudpickle.dump(value, file)

    with open(tmp_path / "inputs.pkl", "w+b") as f:
        pickle_inputs([b"z" * MB], {"n": 3}, f, dump)
        f.seek(0)
        loaded = pickle.load(f)
    print("pickling passes for two good arguments:", len(pickled))
    assert len(pickled) == 1 and loaded["kwargs"] == {"n": 3} and len(loaded["args"][0]) == MB
    with (
        open(tmp_path / "bad.pkl", "wb") as f,
        pytest.raises(RunError, match=r"argument 'gen' \(generator\) cannot be sent"),
    ):
        pickle_inputs([1], {"gen": (x for x in ())}, f, dump)


CLIENT = """
import json, sys
from pathlib import Path
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.submit import submit

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024

from flyte_jupyter.core.storage import Store

root = Path(sys.argv[1])
bundle = build_bundle(select_files(root, entries=[root / "app.py"]))
store = Store(sys.argv[3], json.loads(sys.argv[4])) if len(sys.argv) > 3 else None
run = submit(bundle, "app:make", kwargs={"n": int(sys.argv[2])}, store=store)
run.wait(120)
base = status("VmRSS:")
Path("/proc/self/clear_refs").write_text("5")  # the peak from now on
value = run.result(120)
print(json.dumps({"growth": status("VmHWM:") - base, "size": len(value)}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux peak RSS reset")
@pytest.mark.parametrize("store", ["file", "s3"], indirect=True)
def test_a_big_result_is_loaded_once_by_the_client(tmp_path, store, request):
    """From a file store the pickle is read as it is unpickled; from S3 it is downloaded to a
    private temporary file first, never held as bytes beside the value."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text(APP)
    argv = [sys.executable, "-c", CLIENT, str(root), str(SIZE)]
    if not store.local:
        s3_url = request.getfixturevalue("s3_server").url
        argv += [store.url, json.dumps(servers.s3_options(s3_url))]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    scheme = store.url.split(":")[0]
    print(f"{scheme}: client peak grew {doc['growth']:.0f} MB loading a 150 MB result")
    assert doc["size"] == SIZE
    assert doc["growth"] < 1.4 * SIZE / MB  # before: the object's bytes beside the value (2x)


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} for {pid}")


def _cell_growth(kernel: Kernel, pid: int, code: str) -> tuple[float, Reply]:
    """The kernel's peak RSS growth (MB) while it runs `code`: Linux's VmHWM, reset first."""
    base = _status_mb(pid, "VmRSS:")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS
    reply = kernel.ok(code)
    return _status_mb(pid, "VmHWM:") - base, reply


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux peak RSS reset")
def test_a_cell_sends_and_gets_a_big_value_without_a_copy_in_the_kernel(tree):
    project = tree({"pyproject.toml": "[project]\nname = 'nb'\n"}, name="nb")
    kernel = Kernel(project)
    try:
        pid = kernel.manager.provisioner.process.pid
        kernel.ok("%load_ext flyte_jupyter")
        kernel.ok("%%flyte_run\nwarm = 1")  # the bundle is built and stored once
        kernel.ok(f"data = bytes(range(256)) * {SIZE // 256}")
        sent, reply = _cell_growth(kernel, pid, "%%flyte_run\nlen(data), data[-1]")
        assert reply.result == f"({SIZE}, 255)"
        kernel.ok("del data")
        got, _ = _cell_growth(kernel, pid, f"%%flyte_run\nback = b'\\x07' * {SIZE}")
        assert kernel.ok("len(back), back[:2]").result == f"({SIZE}, b'\\x07\\x07')"
    finally:
        kernel.shutdown()
    mb = SIZE / MB
    print(f"kernel peak growth: sending {mb:.0f} MB {sent:.0f} MB ({sent / mb:.2f}x), "
          f"getting it back {got:.0f} MB ({got / mb:.2f}x)")  # fmt: skip
    assert sent < 0.3 * mb  # pickled straight into the store; before: 2x (pickle in a pickle)
    assert got < 1.3 * mb  # the value itself, loaded from the file; before: 2x


def test_an_argument_that_cannot_travel_leaves_nothing_in_the_store(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text(APP)
    bundle = build_bundle(select_files(root, entries=[root / "app.py"]))
    store = tmp_path / "store"
    with pytest.raises(RunError, match=r"argument 'data' \(generator\) cannot be sent"):
        submit(bundle, "app:echo", kwargs={"data": (x for x in ())}, store=str(store))
    left = list((store / "runs").rglob("*")) if (store / "runs").exists() else []
    print("files or folders left under runs/:", len(left))
    assert left == [] and history.recent() == []
