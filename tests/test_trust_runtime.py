"""Trust at run time: run data is only unpickled by the process that asked for it, a run cannot
change what later runs of the same bundle execute, extraction is bounded, and cancel only stops
our own processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import write_tree
from kernel import Kernel

from flyte_jupyter.core import history
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.select import select_files
from flyte_jupyter.core.submit import submit


def bomb_project(root: Path, markers: Path) -> Path:
    """A project whose result, when unpickled, imports the project (leaving imported-<pid>)
    and calls a project function (leaving `unpickled`)."""
    markers.mkdir(parents=True, exist_ok=True)
    return write_tree(
        root,
        {
            "bomb_job.py": f"""
                import os
                from pathlib import Path

                MARKERS = Path({str(markers)!r})
                (MARKERS / f"imported-{{os.getpid()}}").touch()

                def detonate(path):
                    Path(path).touch()
                    return "boom"

                class Bomb:
                    def __reduce__(self):
                        return (detonate, (str(MARKERS / "unpickled"),))

                def make():
                    return Bomb()
                """,
        },
    )


def submit_bomb(tmp_path: Path) -> tuple[str, Path]:
    markers = tmp_path / "markers"
    root = bomb_project(tmp_path / "project", markers)
    run = submit(build_bundle(select_files(root, entries=[root / "bomb_job.py"])), "bomb_job:make")
    assert run.wait(60) == "succeeded"
    return run.id, markers


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", *args], capture_output=True, text=True, timeout=60
    )


def test_runs_show_reads_the_runtime_summary_and_never_unpickles(tmp_path):
    run_id, markers = submit_bomb(tmp_path)
    shown = cli("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    outcome = json.loads(shown.stdout)["outcome"]
    assert outcome["type"] == "Bomb" and outcome["module"] == "bomb_job"
    assert outcome["repr"].startswith("<bomb_job.Bomb object at")
    assert outcome["output_bytes"] > 0
    created = sorted(p.name for p in markers.iterdir() if p.name != f"imported-{run_pid(run_id)}")
    print("files created by unpickling in `runs show`:", len(created))
    assert created == []
    # the process that asked for the value does unpickle it: the bomb is real
    asked = subprocess.run(
        [sys.executable, "-c", f"from flyte_jupyter.core.submit import Run; "
         f"print(Run.from_history({run_id!r}).result())"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert asked.stdout.strip() == "boom", asked.stderr
    assert (markers / "unpickled").exists()


def test_a_run_without_a_summary_is_shown_without_unpickling(tmp_path):
    run_id, markers = submit_bomb(tmp_path)
    run_dir = Path(json.loads(history.get(run_id).spec)["run_dir"].removeprefix("file://"))
    (run_dir / "outputs.json").unlink()  # as an older runtime left it
    shown = cli("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "no summary recorded" in json.loads(shown.stdout)["outcome"]["note"]
    assert not (markers / "unpickled").exists()


def run_pid(run_id: str) -> int | None:
    """The pid the run's own process recorded (its import of the project leaves a marker)."""
    run_dir = Path(json.loads(history.get(run_id).spec)["run_dir"].removeprefix("file://"))
    return json.loads((run_dir / "status.json").read_text())["pid"]


def test_cell_run_summary_lists_assigned_names_and_the_cells_value(tmp_path):
    kernel = Kernel(tmp_path)
    try:
        kernel.ok("%load_ext flyte_jupyter")
        reply = kernel.ok("%%flyte_run\nprices = [1.5, 2.5]\nlabel = 'x' * 5000\nsum(prices)")
        assert reply.result == "4.0"
    finally:
        kernel.shutdown()
    shown = cli("runs", "show", history.recent()[0].id)
    assert shown.returncode == 0, shown.stderr
    outcome = json.loads(shown.stdout)["outcome"]
    assert (outcome["type"], outcome["repr"]) == ("float", "4.0")
    assert outcome["assigned"] == ["label", "prices"]
    assert outcome["values"]["prices"]["repr"] == "[1.5, 2.5]"
    assert outcome["values"]["label"]["type"] == "str"
    assert len(outcome["values"]["label"]["repr"].encode()) <= 1024  # bounded
    assert outcome["values"]["label"]["size"] > 5000  # the pickled size is the real one
