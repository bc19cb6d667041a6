"""`flyte-jupyter bundle` as a user runs it: a real subprocess on a real tree."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from cli_process import cli

SHOP = {
    "pyproject.toml": "[project]\nname='shop'\n",
    "app.py": "from shop import pricing\n",
    "shop/__init__.py": "",
    "shop/pricing.py": "def f():\n    from shop import rates\n",
    "shop/rates.py": "R = 1\n",
    "data/prices.json": "[1, 2]\n",
    ".env": "TOKEN=x\n",
}


@pytest.fixture
def shop(tree) -> Path:
    return tree(SHOP)


def test_json_output(shop):
    result = cli("bundle", str(shop / "app.py"), "--include", "data/*.json", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["copy_style"] == "auto"
    assert doc["root_dir"] == str(shop.resolve())
    assert doc["digest"].startswith("sha256:") and len(doc["digest"]) == 71
    files = {f["path"]: f for f in doc["files"]}
    assert set(files) == {
        "app.py",
        "shop/__init__.py",
        "shop/pricing.py",
        "shop/rates.py",
        "data/prices.json",
    }
    assert files["shop/rates.py"]["reason"] == "lazy import in shop/pricing.py:2"
    assert files["data/prices.json"]["reason"] == "include pattern 'data/*.json'"
    assert files["app.py"]["mode"] == "0644" and len(files["app.py"]["sha256"]) == 64
    assert doc["total_bytes"] == sum(f["size"] for f in doc["files"])
    with tarfile.open(doc["archive"]) as tar:
        assert sorted(tar.getnames()) == sorted(files)
    assert doc["excluded_secrets"] == []


def test_all_style_text_tree_reports_secrets(shop, tmp_path):
    out = tmp_path / "code.tar.gz"
    result = cli("bundle", str(shop), "--copy-style", "all", "--output", str(out))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "├── app.py" in text and "│   └── prices.json" in text
    assert "left out .env: it looks like a secret" in text
    assert f"archive: {out}" in text
    assert out.is_file()


def test_dry_run_and_json_digest_agree(shop):
    dry = json.loads(cli("bundle", str(shop), "--copy-style", "all", "--dry-run", "--json").stdout)
    real = json.loads(cli("bundle", str(shop), "--copy-style", "all", "--json").stdout)
    assert dry["archive"] is None and real["archive"]
    assert dry["digest"] == real["digest"]


def test_entry_flag_and_root_detection_from_cwd(shop):
    result = cli("bundle", "--entry", "app.py", "--json", cwd=shop)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["root_dir"] == str(shop.resolve())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bundle", "/no/such/dir"], "/no/such/dir does not exist"),
        (
            ["bundle", "{root}", "--copy-style", "everything"],
            "--copy-style 'everything' is not allowed: use one of auto, all, none",
        ),
        (["bundle", "{root}", "--copy-style", "none"], "pass an explicit version"),
        (["bundle", "{root}/shop", "--entry", "{root}/app.py"], "is outside root_dir"),
        (["bundle", "{root}"], "name at least one entry file"),
        (["bundle", "--max-size", "lots"], "--max-size must be a float, not 'lots'"),
        (["bundle", "--max-size", "-1"], "--max-size must be above 0, not -1.0"),
        (["bundle", "--root-dir", "{root}", "--copy-style", "none"], "pass an explicit version"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(shop, args, message):
    result = cli(*[a.format(root=shop) for a in args])
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_too_large_bundle_fails_with_exit_1_and_the_fix(shop):
    (shop / "data" / "blob.bin").write_bytes(b"\0" * 2_000_000)
    result = cli("bundle", str(shop), "--copy-style", "all", "--max-size", "1")
    assert result.returncode == 1
    assert "data/blob.bin (1.9 MB)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_big_bundle_is_listed_by_top_level_folder_unless_asked(tree):
    files = {f"pkg_{i % 3}/m{i}.py": f"X = {i}\n" for i in range(240)}
    root = tree({**files, "pyproject.toml": "[project]\nname='big'\n", "run.py": "print(1)\n"})
    short = cli("bundle", str(root), "--copy-style", "all", "--dry-run")
    assert short.returncode == 0, short.stderr
    lines = short.stdout.splitlines()
    print("\n".join(lines))
    assert len(lines) < 12
    assert [ln.split()[0] for ln in lines[1:6]] == [
        "pkg_0/",
        "pkg_1/",
        "pkg_2/",
        "pyproject.toml",
        "run.py",
    ]
    assert lines[1].split()[-2:] == ["80", "files"]
    assert "--all-files lists each one" in short.stdout
    full = cli("bundle", str(root), "--copy-style", "all", "--dry-run", "--all-files")
    assert full.returncode == 0, full.stderr
    assert "m239.py" in full.stdout and len(full.stdout.splitlines()) > 240
    assert short.stdout.splitlines()[-1] == full.stdout.splitlines()[-1]  # same digest line


def _printed(parser_for: str | None, argv: list[str]) -> tuple[object, str, str]:
    """Exit status, stdout and stderr of parsing `argv` with `_build_parser(parser_for)`."""
    from flyte_jupyter.cli import _build_parser

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            _build_parser(parser_for).parse_args(argv)
            code: object = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


COMMAND_LINES = [
    ["--help"],
    ["frobnicate"],
    ["bundle", "--help"],
    ["bundle", "--bogus"],
    ["bundle", "--copy-style"],
    ["run", "--help"],
    ["run"],
    ["runs", "--help"],
    ["runs", "--limit", "0"],
    *(["runs", sub, "--help"] for sub in ("show", "logs", "cancel", "code", "prune", "diff")),
    ["runs", "nope"],
    ["export", "--help"],
    ["workers", "--help"],
    ["workers", "nope"],
]


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=" ".join)
def test_a_command_line_reads_the_same_with_only_its_command_built(argv):
    """The CLI builds the options of the command on the line only; help and errors must be
    what the parser with every command prints."""
    from flyte_jupyter.cli import _COMMANDS

    full = _printed(None, argv)
    only = _printed(argv[0] if argv[0] in _COMMANDS else None, argv)  # as main() does
    assert only == full
    assert full[1] or full[2]  # something was printed: the comparison compared something


def test_whole_process_help_is_the_full_parsers_help():
    for argv in (["--help"], ["bundle", "--help"], ["runs", "prune", "--help"]):
        result = cli(*argv)
        assert result.returncode == 0, result.stderr
        assert result.stdout == _printed(None, argv)[1]


def test_an_error_of_a_runs_subcommand_names_it(tmp_path):
    """`runs show`, `runs prune`...: the error line names the subcommand that was run."""
    env = {"FLYTE_JUPYTER_DATA_DIR": str(tmp_path / "data")}
    done = cli("runs", "show", "nosuch", env=env)
    print(done.stderr)
    assert done.returncode == 2
    assert done.stderr.startswith("flyte-jupyter runs show: error: no run 'nosuch'")
