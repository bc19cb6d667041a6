"""The `flyte-jupyter` command as a user runs it: a whole process, this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m flyte_jupyter ARGS` with this environment (plus `env`), capturing text."""
    return subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
