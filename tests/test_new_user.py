"""What a new user met on a first trial, each as a test: real venvs, real CLI subprocesses,
real notebooks and a real kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=120,
    )


def one_line(stderr: str) -> str:
    """Bad input: one line on stderr, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


# --- --image python=/path/to/venv -------------------------------------------------------------


def test_an_ordinary_venv_is_another_environment(tree, tmp_path):
    """`python -m venv` (symlinks, not --copies): the venv's python resolves to ours, but its
    site-packages lack flyte_jupyter and the project's packages."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    assert (env / "bin" / "python").is_symlink()
    assert os.path.realpath(env / "bin" / "python") == os.path.realpath(sys.executable)
    app = tree(
        {
            "pyproject.toml": "[project]\nname='shop'\n",
            "app.py": "import pathspec\n\ndef main():\n    return pathspec.__name__\n",
            "plain.py": "import sys\n\ndef main():\n    return sys.prefix\n",
        }
    )
    done = cli("run", "app.py:main", "--image", f"python={env}", cwd=app)
    print(done.stderr)
    assert done.returncode == 1
    assert "EnvironmentMismatch" in done.stderr and "not installed here: pathspec==" in done.stderr
    assert "No module named 'flyte_jupyter'" not in done.stderr
    done = cli("run", "plain.py:main", "--image", f"python={env}", cwd=app)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'"{env}"'
