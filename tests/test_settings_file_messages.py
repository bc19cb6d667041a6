"""A bad value in a settings file or an environment variable is named as it is written there
(`copy_style`, not the flag `--copy-style` of the front door that read it). Real CLI processes
and a real ipykernel."""

from __future__ import annotations

from pathlib import Path

from cli_process import cli
from conftest import write_tree
from kernel import extension_kernel


def bundle(project: Path, env: dict[str, str] | None = None) -> str:
    done = cli("bundle", ".", cwd=project, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_bad_settings_are_named_as_written_where_they_are(tmp_path: Path):
    project = write_tree(
        tmp_path / "p",
        {"pyproject.toml": '[tool.flyte-jupyter]\ncopy_style = "bogus"\n', "a.py": "x = 1\n"},
    )
    said = bundle(project)
    print(said)
    assert "pyproject.toml: copy_style 'bogus' is not allowed: use one of auto, all, none" in said
    with extension_kernel(project) as kernel:
        reply = kernel.execute("%%flyte_run\n1")
    print(reply.stderr)
    assert "pyproject.toml: copy_style 'bogus'" in reply.stderr
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    said = bundle(project, {"FLYTE_JUPYTER_COPY_STYLE": "bogus"})
    print(said)
    assert "FLYTE_JUPYTER_COPY_STYLE: copy_style 'bogus' is not allowed" in said
    assert "--copy-style" not in said
