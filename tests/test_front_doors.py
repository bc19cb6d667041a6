"""Every front door sees the same settings and speaks the same options: the CLI (a real
subprocess), the magics (a real ipykernel) and the server (a real Jupyter server)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_process import cli
from conftest import write_tree
from kernel import Kernel

pytest_plugins = ["pytest_jupyter.jupyter_server"]

NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "c1",
            "metadata": {},
            "outputs": [],
            "source": "import helper\nprint(helper.X)",
        }
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"flyte_jupyter.server": True}}}


@pytest.fixture
def project(jp_root_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose include lives in .flyte-jupyter.toml (as the sidebar writes it) and
    whose exclude comes from the environment."""
    monkeypatch.setenv("FLYTE_JUPYTER_EXCLUDE", "data/skip.json")
    return write_tree(
        jp_root_dir / "project",
        {
            "pyproject.toml": "[project]\nname = 'p'\n\n[tool.flyte-jupyter]\ninclude = ['x/*']\n",
            ".flyte-jupyter.toml": "include = ['data/*.json']\n",
            "helper.py": "X = 1\n",
            "app.py": "import helper\n\ndef main():\n    return helper.X\n",
            "data/x.json": "{}\n",
            "data/skip.json": "{}\n",
            "data/other.csv": "1\n",
            "nb/analysis.ipynb": json.dumps(NOTEBOOK),
        },
    )


def bundle_files(*args: str, cwd: Path) -> list[str]:
    result = cli("bundle", *args, "--dry-run", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return [f["path"] for f in json.loads(result.stdout)["files"]]


def context_files(directory: Path) -> list[str]:
    """The files an exported image ships, from its build context."""
    app = directory / "root" / "app"
    return sorted(p.relative_to(app).as_posix() for p in app.rglob("*") if p.is_file())


@pytest.fixture
def kernel(project: Path):
    k = Kernel(project / "nb")
    k.ok("%load_ext flyte_jupyter")
    k.ok("import sys; sys.path.insert(0, '..')")
    yield k
    k.manager.shutdown_kernel(now=True)


async def test_one_project_setting_is_seen_by_every_front_door(jp_fetch, project, kernel):
    wanted = ["data/x.json", "helper.py"]
    # CLI: a .py entry, a root given as --root-dir, a notebook
    app = bundle_files("app.py", cwd=project)
    root = bundle_files("--root-dir", ".", "--entry", "app.py", cwd=project)
    notebook = bundle_files("nb/analysis.ipynb", cwd=project)
    # server preview
    response = await jp_fetch(
        "flyte-jupyter", "api", "preview", params={"path": "project/nb/analysis.ipynb"}
    )
    preview = [f["path"] for f in json.loads(response.body)["files"]]
    # CLI export and %flyte_export: the image ships the same files
    assert (
        cli("export", "nb/analysis.ipynb", "--context-only", "ctx-cli", cwd=project).returncode == 0
    )
    kernel.ok("%flyte_export analysis.ipynb --context-only ../ctx-magic")
    # the magic's preview
    shown = kernel.ok("%%flyte_bundle\nhelper.X").displays[0]["text/plain"]
    print("cli .py:", app, "\ncli notebook:", notebook, "\nserver preview:", preview)
    for files in (app, root):
        assert [f for f in files if f in [*wanted, "data/skip.json"]] == wanted
    assert notebook == preview == context_files(project / "ctx-cli")
    assert notebook == context_files(project / "ctx-magic")
    assert set(wanted) <= set(notebook) and "data/skip.json" not in notebook
    assert "x.json" in shown and "skip.json" not in shown  # a tree: data/ then its files
    # where each value came from, as the session sees it
    table = kernel.ok("%flyte_config").displays[0]["text/plain"]
    assert re.search(r"include\s+\['data/\*\.json'\]\s+project \(\.flyte-jupyter\.toml\)", table)
    assert re.search(r"exclude\s+\['data/skip\.json'\]\s+environment", table)


async def test_the_server_sends_the_declared_fields(jp_fetch, project):
    response = await jp_fetch(
        "flyte-jupyter", "api", "settings", params={"path": "project/nb/analysis.ipynb"}
    )
    doc = json.loads(response.body)
    style = doc["fields"]["copy_style"]
    assert (style["choices"], style["default"], style["widget"]) == (
        ["auto", "all", "none"], "auto", "select"
    )  # fmt: skip
    assert doc["fields"]["max_size_mb"]["magic"] == "--max-size"
    assert doc["settings"]["include"] == {
        "value": ["data/*.json"], "source": "project (.flyte-jupyter.toml)"
    }  # fmt: skip


def test_magic_help_and_set_time_checks(project, kernel):
    for magic in ("%%flyte_run --help\npass", "%flyte_run --help", "%flyte_bundle --help"):
        text = kernel.ok(magic).stdout
        assert "--copy-style auto|all|none" in text and "--max-size MB" in text, text
        assert "--dry-run" in text and "--task-timeout" in text
    assert "--context-only" in kernel.ok("%flyte_export --help").stdout
    assert "limit" in kernel.ok("%flyte_runs --help").stdout
    bad = kernel.execute("%flyte_config copy_style=bogus")
    assert bad.stderr.strip() == (
        "UsageError: `copy_style` 'bogus' is not allowed: use one of auto, all, none"
    )
    bad = kernel.execute("%%flyte_run --max-size -1\nhelper.X")
    assert bad.stderr.strip() == "UsageError: --max-size must be above 0, not -1.0"
    assert (
        kernel.ok("%flyte_config copy_style=all").stdout.strip() == "copy_style = 'all' (session)"
    )
    assert kernel.ok("%flyte_config copy_style=").stdout.strip() == "copy_style = 'auto' (default)"
    table = kernel.ok("%flyte_config").displays[0]["text/plain"]
    store = next(line for line in table.splitlines() if line.startswith("store "))
    print(store)
    assert "None" not in store and "file://" in store and store.rstrip().endswith("default")


def test_too_large_names_the_flag_of_the_door(project, kernel):
    reply = kernel.execute("%%flyte_run --max-size 0.00001\nhelper.X")
    text = "\n".join(reply.error["traceback"])  # what the notebook shows
    assert "over the" in text and "(--max-size)" in text and "max_size_mb" not in text
    result = cli("bundle", "app.py", "--max-size", "0.00001", cwd=project)
    assert result.returncode == 1 and "(--max-size)" in result.stderr
    print(result.stderr.strip())


def test_cli_bad_values_name_the_allowed_ones(project):
    cases = {
        (
            "--copy-style",
            "bogus",
        ): "--copy-style 'bogus' is not allowed: use one of auto, all, none",
        ("--max-size", "-1"): "--max-size must be above 0, not -1.0",
    }
    for (flag, value), message in cases.items():
        result = cli("bundle", "app.py", flag, value, cwd=project)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.strip() == f"flyte-jupyter bundle: error: {message}"
    result = cli("run", "app.py:main", "--executor", "nosuch", cwd=project)
    assert result.returncode == 2 and "use one of" in result.stderr and "local" in result.stderr


def test_the_widgets_panel_offers_the_declared_values(kernel):
    shown = kernel.ok(
        "panel = %flyte_panel\nform = panel.children[0].children\n"
        "print(list(form[0].options), list(form[3].options))"
    ).stdout.strip()
    from flyte_jupyter.core.config import FIELDS

    expected = f"{list(FIELDS['copy_style'].allowed())} {list(FIELDS['executor'].allowed())}"
    print(shown)
    assert shown == expected and "'flyte'" in shown  # every registered executor, not two
