"""Fast tests of the pure core: the settings declaration and resolver (config.py), the
notebook recorder's pure functions, export's cell translation, and troubleshooting hints.
No kernel, no server, no subprocess: real files in tmp_path only."""

from __future__ import annotations

from pathlib import Path

import pytest

from flyte_jupyter.core import config
from flyte_jupyter.core.errors import UsageError
from flyte_jupyter.core.export import _translate
from flyte_jupyter.core.notebook import NotebookState, assigned_names, free_names
from flyte_jupyter.core.submit import RunSpec
from flyte_jupyter.core.troubleshoot import missing_module_hint

NO_ENV: dict[str, str] = {}


def project(tmp_path: Path, pyproject: str = "", local: str = "") -> Path:
    root = tmp_path / "proj"
    (root / "nb").mkdir(parents=True)
    (root / "pyproject.toml").write_text(pyproject or "[project]\nname = 'p'\n")
    if local:
        (root / ".flyte-jupyter.toml").write_text(local)
    return root


# --- precedence -------------------------------------------------------------------------


def test_precedence_option_session_project_environment_default(tmp_path):
    root = project(
        tmp_path,
        pyproject="[tool.flyte-jupyter]\ncopy_style = 'all'\nexecutor = 'docker'\n"
        "include = ['a/*']\nversion = 'from-pyproject'\n",
        local="include = ['data/*.json']\n",
    )
    env = {"FLYTE_JUPYTER_MAX_SIZE_MB": "5", "FLYTE_JUPYTER_COPY_STYLE": "none"}
    notebook = root / "nb" / "x.ipynb"
    settings = config.resolve(notebook, {"version": "v9"}, {"executor": "local"}, env)
    keys = ("version", "executor", "include", "copy_style", "max_size_mb", "lazy_imports")
    got = {k: (settings[k].value, settings[k].source) for k in keys}
    print(got)
    assert got == {
        "version": ("v9", "option"),
        "executor": ("local", "session"),
        "include": (["data/*.json"], "project (.flyte-jupyter.toml)"),
        "copy_style": ("all", "project (pyproject.toml)"),
        "max_size_mb": (5.0, "environment"),
        "lazy_imports": (True, "default"),
    }
    assert settings.copy_style == "all" and settings.max_size_mb == 5.0


def test_root_dir_is_detected_from_the_path_and_project_files_read_there(tmp_path):
    root = project(tmp_path, local="exclude = ['*.log']\n")
    settings = config.resolve(root / "nb", environ=NO_ENV)
    assert settings["root_dir"] == config.Setting(str(root), "detected")
    assert settings.exclude == ["*.log"]
    assert settings.root == root


def test_an_explicit_root_dir_is_where_project_files_are_read(tmp_path):
    root = project(tmp_path, local="exclude = ['*.log']\n")
    (root / "nb" / ".flyte-jupyter.toml").write_text("exclude = ['*.tmp']\n")
    inner = config.resolve(root / "nb" / "a.ipynb", {"root_dir": "."}, {}, NO_ENV)
    assert (inner.root_dir, inner.exclude) == (str(root / "nb"), ["*.tmp"])
    session = config.resolve(root / "nb", {}, {"root_dir": ".."}, NO_ENV)
    assert (session.root_dir, session.source("root_dir")) == (str(root), "session")
    assert session.exclude == ["*.log"]


def test_a_project_root_dir_is_relative_to_the_notebook_folder(tmp_path):
    root = project(tmp_path, local="root_dir = '..'\n")
    settings = config.resolve(root / "nb" / "a.ipynb", environ=NO_ENV)
    assert settings.root_dir == str(root)
    assert settings.source("root_dir") == "project (.flyte-jupyter.toml)"


def test_settings_are_frozen_and_their_lists_are_not_shared(tmp_path):
    a = config.resolve(tmp_path, environ=NO_ENV)
    with pytest.raises(AttributeError):
        a.copy_style = "all"  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.raw["copy_style"] = "all"  # type: ignore[index]
    a.include.append("x")
    assert config.resolve(tmp_path, environ=NO_ENV).include == []
    assert config.FIELDS["include"].default == []


def test_the_older_call_form_still_resolves(tmp_path):
    root = project(tmp_path, local="copy_style = 'all'\n")
    settings = config.resolve({"version": "v1"}, {}, root)
    assert settings["copy_style"] == config.Setting("all", "project (.flyte-jupyter.toml)")
    assert settings["version"].source == "option"
    assert settings["root_dir"].value is None


# --- validation at set time --------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("copy_style", "bogus", ["auto, all, none"]),
        ("max_size_mb", "-1", ["above 0"]),
        ("max_size_mb", 0, ["above 0"]),
        ("executor", "nosuch", ["docker", "local"]),
        ("retries", "-1", ["at least 0"]),
        ("lazy_imports", "maybe", ["bool"]),
        ("nosuch", "1", ["copy_style", "max_size_mb"]),
    ],
)
def test_bad_values_are_refused_naming_what_is_allowed(key, value, words):
    with pytest.raises(UsageError) as info:
        config.coerce(key, value)
    message = str(info.value)
    print(f"{key}={value!r}: {message}")
    assert "\n" not in message
    for word in words:
        assert word in message


def test_values_are_coerced_from_strings():
    assert config.coerce("max_size_mb", "2.5") == 2.5
    assert config.coerce("lazy_imports", "off") is False
    assert config.coerce("include", "a/*, b/*") == ["a/*", "b/*"]
    assert config.coerce("env", '{"A": "1"}') == {"A": "1"}
    assert config.coerce("copy_style", "loaded_modules") == "auto"


def test_a_bad_project_file_value_names_the_file(tmp_path):
    root = project(tmp_path, local="copy_style = 'bogus'\n")
    with pytest.raises(UsageError, match=r"\.flyte-jupyter\.toml: copy_style 'bogus'"):
        config.resolve(root, environ=NO_ENV)


def test_a_bad_environment_value_names_the_variable(tmp_path):
    env = {"FLYTE_JUPYTER_MAX_SIZE_MB": "-3"}
    with pytest.raises(UsageError, match="FLYTE_JUPYTER_MAX_SIZE_MB: max_size_mb must be"):
        config.resolve(tmp_path, environ=env)


# --- one declaration, every front door ----------------------------------------------------


def test_each_field_declares_its_flags_and_widget():
    flags = {k: (f.cli_flag, f.magic_flag, f.widget_kind) for k, f in config.FIELDS.items()}
    assert flags["max_size_mb"] == ("--max-size", "--max-size", "number")
    assert flags["lazy_imports"] == ("--no-lazy-imports", "--no-lazy-imports", "checkbox")
    assert flags["copy_style"] == ("--copy-style", "--copy-style", "select")
    assert flags["timeout"][0] == "--task-timeout"  # --timeout is the wait of `run`
    doc = config.FIELDS["copy_style"].to_json()
    assert doc["choices"] == ["auto", "all", "none"] and doc["default"] == "auto"
    assert "local" in config.FIELDS["executor"].to_json()["choices"]
    assert len({f.cli_flag for f in config.FIELDS.values()}) == len(config.FIELDS)


def test_messages_name_the_flag_of_the_front_door():
    text = "raise the limit (`max_size_mb`)"
    assert config.front_door_message(text, "cli") == "raise the limit (--max-size)"
    assert config.front_door_message(text, "magic") == "raise the limit (--max-size)"
    assert config.front_door_message(text, "server") == text


# --- notebook.py, export translation, troubleshoot ------------------------------------------


def test_free_and_assigned_names():
    assert free_names("y = x + 1\nprint(y, z)") == (["x", "print", "z"], [])
    rebinding = "df = df.dropna()\nn += 1\nfor i in range(n): pass\ny = [v for v in vs]"
    assert free_names(rebinding) == (["range", "vs"], ["df", "n"])
    assert assigned_names("import os\ndef f(): pass\na, b = 1, 2") == ["a", "b"]


def test_the_recorder_keeps_the_latest_definition_and_forgets_data():
    state = NotebookState()
    state.record_cell("def f():\n    return 1\n", "In[1]")
    state.record_cell("def f():\n    return 2\n", "In[2]")
    assert [d.cell for d in state.providers("f")] == ["In[2]"]
    state.record_cell("f = len('abc')\n", "In[3]")  # now data computed by the kernel
    assert state.providers("f") == []
    state.record_cell("get_ipython().run_line_magic('pip', 'install -q requests')\n", "In[4]")
    assert state.requirements == ["requests"]


def test_export_translates_magics_into_plain_python():
    requirements: list[str] = []
    text = _translate("%pip install rich==13.0\n%time x = 1\n!ls\n%matplotlib inline", requirements)
    print(text)
    assert requirements == ["rich==13.0"]
    assert "x = 1" in text and "# " not in text.splitlines()[1]
    assert "subprocess.run('ls', shell=True, check=True)" in text
    assert "# (magic removed) %matplotlib inline" in text


def test_missing_module_hint_for_copy_style_none():
    spec = RunSpec.__new__(RunSpec)
    object.__setattr__(spec, "root_dir", None)
    object.__setattr__(spec, "copy_style", "none")
    object.__setattr__(spec, "executor", "docker")
    assert "must be in the image" in missing_module_hint("pandas", spec)


# --- one error family -----------------------------------------------------------------------


def test_every_error_is_one_family_and_old_import_paths_still_work():
    from flyte_jupyter.core import errors, image, notebook, storage

    assert storage.StorageError is errors.StorageError
    assert storage.StoreConfigError is errors.StoreConfigError
    assert image.ImageError is errors.ImageError
    assert notebook.NotebookError is errors.NotebookError
    assert issubclass(errors.NotebookError, errors.UsageError)
    assert issubclass(errors.StoreConfigError, errors.UsageError | errors.StorageError)
    family = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    outside = [c.__name__ for c in family if not issubclass(c, errors.FlyteJupyterError)]
    print(f"error classes: {len(family)}, outside the family: {len(outside)}")
    assert outside == []


def test_settings_pickle_and_copy(tmp_path):
    import copy
    import pickle

    root = project(tmp_path, local="include = ['data/*']\n")
    settings = config.resolve(root, environ=NO_ENV)
    for clone in (pickle.loads(pickle.dumps(settings)), copy.deepcopy(settings)):
        assert clone == settings and clone["include"] == settings["include"]
