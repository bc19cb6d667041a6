"""The sidebar's Apply edits .flyte-jupyter.toml key by key: comments, order and other keys
stay; an emptied value removes its line; a broken file is refused, not overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from flyte_jupyter.core.errors import UsageError
from flyte_jupyter.core.settings_file import update_project


def test_changes_only_the_given_keys_and_keeps_comments(tmp_path: Path):
    file = tmp_path / ".flyte-jupyter.toml"
    file.write_text(
        "# team settings: keep this comment\n"
        'executor = "local"  # where runs go\n'
        "include = [\n"
        '  "data/*.csv",\n'
        "]\n"
        "\n"
        "# the store\n"
        'store = "s3://bucket/runs"\n'
    )
    update_project(tmp_path, {"copy_style": "all", "include": ["a/*.json"]})
    text = file.read_text()
    print(text)
    assert text.startswith("# team settings: keep this comment\n")
    assert 'executor = "local"  # where runs go\n' in text
    assert "# the store\n" in text
    doc = tomllib.loads(text)
    assert doc == {
        "executor": "local",
        "include": ["a/*.json"],
        "store": "s3://bucket/runs",
        "copy_style": "all",
    }
    assert text.index("include") < text.index("# the store")  # replaced where it was


def test_empty_value_removes_the_key_and_new_file_gets_a_header(tmp_path: Path):
    update_project(tmp_path, {"copy_style": "all", "version": "v1"})
    file = tmp_path / ".flyte-jupyter.toml"
    assert file.read_text().startswith("# flyte-jupyter settings")
    update_project(tmp_path, {"version": ""})
    assert tomllib.loads(file.read_text()) == {"copy_style": "all"}


def test_broken_or_unknown_is_refused_and_the_file_kept(tmp_path: Path):
    file = tmp_path / ".flyte-jupyter.toml"
    file.write_text('copy_style = "auto"\nbroken = [\n')
    with pytest.raises(UsageError, match="not valid TOML"):
        update_project(tmp_path, {"copy_style": "all"})
    assert file.read_text() == 'copy_style = "auto"\nbroken = [\n'
    with pytest.raises(UsageError, match="unknown setting"):
        update_project(tmp_path, {"nope": 1})
