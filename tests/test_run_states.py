"""The history reports a live run truly: `running` (with its start and elapsed time) once the
runtime says so in status.json, not `submitted` for its whole life."""

from __future__ import annotations

import time
from pathlib import Path

from flyte_jupyter.core import history
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.submit import Run, submit

APP = """
import time


def tick(n):
    for i in range(n):
        print("step", i, flush=True)
        time.sleep(0.5)
    return n
"""


def test_live_run_is_running_with_elapsed_time_then_succeeded(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname='ticks'\n")
    (tmp_path / "app.py").write_text(APP)
    bundle = build_bundle(select_files(tmp_path, entries=[tmp_path / "app.py"]))
    run = submit(bundle, "app:tick", args=[8])
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record = Run.refresh(history.get(run.id))
        seen.append((record.status, history.duration(record)))
        if record.status == "running" and len([s for s in seen if s[0] == "running"]) >= 3:
            break
        time.sleep(0.3)
    running = [d for s, d in seen if s == "running"]
    print("states seen:", sorted({s for s, _ in seen}), "running durations:", running)
    assert len(running) >= 3
    assert all(d != "-" for d in running)
    assert float(running[-1].rstrip("s")) > float(running[0].rstrip("s"))
    assert history.get(run.id).started  # recorded from status.json
    assert run.wait(60) == "succeeded"
    assert Run.refresh(history.get(run.id)).status == "succeeded"
