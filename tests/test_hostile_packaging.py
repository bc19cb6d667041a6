"""Hostile packaging inputs, as an attacker or a careless user would make them: secrets hidden
behind symlinks or unusual names, tokens in notebook outputs, crafted file names and image
values meant to inject code. Everything runs for real (CLI subprocesses, real archives, a real
interpreter importing the generated job); each test prints the count it checks."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from cli_process import cli
from conftest import write_tree

from flyte_jupyter.core.errors import UsageError
from flyte_jupyter.core.image import Image, render


def bundle_cli(root: Path, out: Path, *options: str) -> tuple[dict, bytes]:
    """`flyte-jupyter bundle ROOT --json -o OUT`: the JSON report and the archive, unzipped."""
    done = cli("bundle", str(root), "--json", "-o", str(out), *options)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), gzip.decompress(out.read_bytes())


def count_found(tokens: list[str], data: bytes) -> int:
    return sum(data.count(t.encode()) for t in tokens)


# --- secrets --------------------------------------------------------------------------------

NEW_SECRETS = {
    "keys/id_ed25519": "TOKEN-ED25519",
    "keys/id_ecdsa": "TOKEN-ECDSA",
    "keys/id_dsa": "TOKEN-DSA",
    ".git-credentials": "TOKEN-GITCRED",
    ".pypirc": "TOKEN-PYPIRC",
    "web/.npmrc": "TOKEN-NPMRC",
    ".docker/config.json": "TOKEN-DOCKER",
    "deploy/.kube/config": "TOKEN-KUBE",
    ".streamlit/secrets.toml": "TOKEN-STREAMLIT",
    "gcp/service-account-prod.json": "TOKEN-SA",
    "my_service_account.json": "TOKEN-SA2",
    "site/.htpasswd": "TOKEN-HTPASSWD",
    "token.json": "TOKEN-OAUTH",
}


def test_newly_guarded_secret_names_never_ship(tree, tmp_path):
    root = tree(
        {
            "app.py": "",
            **NEW_SECRETS,
            "keys/id_ed25519.pub": "ssh-ed25519 PUBLIC",
            "id_utils.py": "X = 1\n",
            ".docker/daemon.json": "{}",
            "kube/config": "not under .kube",
        }
    )
    report, data = bundle_cli(root, tmp_path / "b.tar.gz", "--copy-style", "all")
    shipped = {f["path"] for f in report["files"]}
    assert sorted(report["excluded_secrets"]) == sorted(NEW_SECRETS)
    assert {"keys/id_ed25519.pub", "id_utils.py", ".docker/daemon.json", "kube/config"} <= shipped
    found = count_found(list(NEW_SECRETS.values()), data)
    print(f"secrets found in archive: {found}")
    assert found == 0
    assert b"ssh-ed25519 PUBLIC" in data  # the search sees what does ship


def test_a_link_to_a_secret_does_not_ship_its_bytes(tree, tmp_path):
    root = tree(
        {
            "app.py": "",
            ".env": "API_TOKEN=sk-live-ENV",
            ".ssh/id_rsa": "-----BEGIN KEY----- sk-live-SSH",
            ".aws/credentials": "sk-live-AWS",
            ".docker/config.json": '{"auths": "sk-live-DOCKER"}',
            "real.txt": "harmless",
        }
    )
    (root / "innocuous.txt").symlink_to(".env")
    (root / "docs").mkdir()
    (root / "docs/readme.md").symlink_to("../.ssh/id_rsa")
    (root / "notes.cfg").symlink_to(root / ".aws/credentials")
    (root / "settings.json").symlink_to(".docker/config.json")
    (root / "fine.txt").symlink_to("real.txt")
    os.link(root / ".env", root / "copy.txt")  # a hard link: the same bytes, no link to follow
    report, data = bundle_cli(root, tmp_path / "b.tar.gz", "--copy-style", "all")
    shipped = {f["path"] for f in report["files"]}
    links = {"innocuous.txt", "docs/readme.md", "notes.cfg", "settings.json", "copy.txt"}
    assert links <= set(report["excluded_secrets"])
    assert not links & shipped
    assert "fine.txt" in shipped  # links to ordinary files still ship
    found = count_found(["sk-live-ENV", "sk-live-SSH", "sk-live-AWS", "sk-live-DOCKER"], data)
    print(f"secrets found in archive: {found}")
    assert found == 0
    assert any("left out innocuous.txt" in w and ".env*" in w for w in report["warnings"])


def test_a_secret_named_in_include_ships_with_a_loud_warning(tree, tmp_path):
    root = tree({"app.py": "", "id_rsa": "PRIVATE-KEY-BYTES", "keys/id_rsa": "OTHER-KEY"})
    done = cli("bundle", str(root), "--copy-style", "all", "--include", "id_rsa")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "SHIPPING A SECRET" in line]
    print(f"loud warnings: {len(lines)}")
    assert len(lines) == 1 and "id_rsa looks like a secret ('id_rsa*')" in lines[0]
    report, data = bundle_cli(
        root, tmp_path / "b.tar.gz", "--copy-style", "all", "--include", "id_rsa"
    )
    assert "id_rsa" in {f["path"] for f in report["files"]}
    assert report["excluded_secrets"] == ["keys/id_rsa"]  # the glob match is not named exactly
    assert count_found(["OTHER-KEY"], data) == 0 and count_found(["PRIVATE-KEY-BYTES"], data) == 1


# --- notebook outputs -----------------------------------------------------------------------


def _notebook(path: Path, output_text: str, count: int) -> Path:
    book = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(load_token())", execution_count=count)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output_text)]
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    book.cells = [nbformat.v4.new_markdown_cell("# Report"), cell]
    nbformat.write(book, path)
    return path


def test_notebooks_ship_without_outputs_unless_asked(tree, tmp_path):
    root = tree({"app.py": ""})
    _notebook(root / "report.ipynb", "ghp_OUTPUTTOKEN1234567890\n", count=7)
    report, data = bundle_cli(root, tmp_path / "a.tar.gz", "--copy-style", "all")
    found = count_found(["ghp_OUTPUTTOKEN1234567890"], data)
    print(f"secrets found in archive: {found}")
    assert found == 0
    assert b"print(load_token())" in data  # the code still ships
    entry = next(f for f in report["files"] if f["path"] == "report.ipynb")
    assert entry["reason"] == "all (outputs stripped)"

    # The stripped bytes are what is hashed: a re-run with other outputs ships the same bundle.
    book = nbformat.read(root / "report.ipynb", as_version=4)
    book.cells[1].outputs[0].text = "a different output\n"
    book.cells[1].execution_count = 42
    nbformat.write(book, root / "report.ipynb")
    again, _ = bundle_cli(root, tmp_path / "b.tar.gz", "--copy-style", "all")
    assert again["digest"] == report["digest"]

    kept, kept_data = bundle_cli(
        root, tmp_path / "c.tar.gz", "--copy-style", "all", "--keep-notebook-outputs"
    )
    assert kept["digest"] != report["digest"]
    assert count_found(["a different output"], kept_data) == 1


def test_notebook_included_by_pattern_is_stripped_too(tree):
    from flyte_jupyter.core.selection import select_files

    root = tree({"app.py": "import json\n"})
    (root / "nb").mkdir()
    _notebook(root / "nb/explore.ipynb", "password=hunter2\n", count=3)
    (root / "nb/broken.ipynb").write_text("not json at all: password=hunter2")
    sel = select_files(root, entries=[root / "app.py"], include=["nb/*.ipynb"])
    explore = next(f for f in sel.files if f.path == "nb/explore.ipynb")
    stripped = nbformat.reads(Path(explore.source).read_text(), as_version=4)
    code = stripped.cells[1]
    assert code.outputs == [] and code.execution_count is None and "execution" not in code.metadata
    assert any("nb/broken.ipynb is not a notebook" in w for w in sel.warnings)


# --- injection in generated text -----------------------------------------------------------

CRAFTED_NAMES = [
    "x'); __import__('os').system('touch PWNED'); ('.ipynb",
    'x"""; __import__("os").system("touch PWNED"); """.ipynb',
    "x\n__import__('os').system('touch PWNED')\n.ipynb",
    "x\\\n__import__('os').system('touch PWNED') #.ipynb",
]


@pytest.mark.parametrize("name", CRAFTED_NAMES)
def test_crafted_notebook_name_runs_nothing_in_the_exported_job(tmp_path, name):
    root = write_tree(tmp_path / "project", {"pyproject.toml": "[project]\nname = 'p'\n"})
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell("VALUE = 41 + 1", execution_count=1)]
    nbformat.write(book, root / name)
    out = tmp_path / "context"
    done = cli("export", str(root / name), "--context-only", str(out))
    assert done.returncode == 0, done.stderr
    jobs = list((out / "root/app/_flyte_notebook").glob("*_job.py"))
    assert len(jobs) == 1
    # Import the module (as the image would start to) in a fresh interpreter, in a scratch
    # directory where an injected `touch PWNED` would land.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('job', {str(jobs[0])!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.VALUE, module.__doc__)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=scratch, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    injected = len(list(scratch.iterdir())) + len(list(root.glob("PWNED")))
    print(f"commands injected: {injected}")
    assert injected == 0
    assert run.stdout.startswith("42 Generated by flyte-jupyter from x")


@pytest.mark.parametrize(
    ("build", "bad"),
    [
        (lambda i: i.with_env_vars({"MODE": "prod\nRUN touch /pwned"}), "prod\\nRUN touch"),
        (lambda i: i.with_env_vars({"MODE\nRUN x": "1"}), "MODE\\nRUN x"),
        (lambda i: i.with_pip_packages("--index-url=http://evil"), "--index-url=http://evil"),
        (lambda i: i.with_pip_packages("numpy\n--extra-index-url http://e"), "numpy\\n--extra"),
        (lambda i: i.with_apt_packages("curl; rm -rf /"), "curl; rm -rf /"),
        (lambda i: i.with_apt_packages("curl\nRUN x"), "curl\\nRUN x"),
        (lambda i: Image.from_base("python:3.11\nRUN x"), "python:3.11\\nRUN x"),
        (lambda i: render(Image(base="python:3.11 AS x\nRUN y")), "python:3.11 AS x"),
        (lambda i: i.with_workdir('/app"; touch /pwned; "'), '/app"; touch'),
        (lambda i: i.with_commands("echo ok\nRUN touch /pwned"), "echo ok\\nRUN"),
        (lambda i: i.with_files({"../../outside.txt": __file__}), "../../outside.txt"),
    ],
)
def test_image_values_that_would_inject_are_refused_naming_them(build, bad):
    with pytest.raises(UsageError) as err:
        build(Image.from_base("python:3.11-slim"))
    message = str(err.value)
    print(f"refused: {message}")
    assert message.startswith("refusing ") and bad in message and "\n" not in message


def test_safe_image_values_render_quoted():
    image = (
        Image.from_base("ghcr.io/org/base:1.2@sha256:" + "a" * 64)
        .with_env_vars({"GREETING": 'say "hi" \\ to $USER', "HOME_BIN": "$HOME/bin"})
        .with_apt_packages("libssl3", "curl=7.88.1-10+deb12u5")
        .with_pip_packages("numpy>=2", "pkg[extra]==1.0", "tool @ https://example.com/t.whl")
    )
    context = render(image)
    env_line = next(line for line in context.dockerfile.splitlines() if line.startswith("ENV "))
    assert 'GREETING="say \\"hi\\" \\\\ to $USER"' in env_line
    assert "HOME_BIN=$HOME/bin" in env_line
    assert context.files["build/requirements.txt"].decode().splitlines() == [
        "numpy>=2",
        "pkg[extra]==1.0",
        "tool @ https://example.com/t.whl",
    ]
    assert len([line for line in context.dockerfile.splitlines() if line.startswith("RUN")]) == 2


# --- private local state --------------------------------------------------------------------


def test_history_logs_caches_and_default_store_are_private(tree, tmp_path):
    root = tree({"app.py": "def main(n):\n    print('secret-ish output')\n    return n * 2\n"})
    cache = tmp_path / "fresh" / "cache"  # created by the run
    data = tmp_path / "data"  # made by an older version or by hand: loose modes to tighten
    data.mkdir(mode=0o755)
    (data / "runs.sqlite3").touch(mode=0o644)
    os.chmod(data, 0o755)
    os.chmod(data / "runs.sqlite3", 0o644)
    env = {**os.environ, "FLYTE_JUPYTER_CACHE_DIR": str(cache), "FLYTE_JUPYTER_DATA_DIR": str(data)}
    done = subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", "run", f"{root / 'app.py'}:main", "--arg", "n=21"],
        capture_output=True,
        text=True,
        env=env,
        umask=0o022,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("42")

    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    run_logs = list((cache / "local-runs").iterdir())
    assert len(run_logs) == 1
    store = cache / "store"
    store_files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".tar.gz") for p in store_files) and len(store_files) >= 3
    dirs = [data, cache, cache / "archives", cache / "local-runs", run_logs[0], store]
    files = [
        *(p for p in data.iterdir() if p.name.startswith("runs.sqlite3")),
        *(p for p in cache.iterdir() if p.name.startswith("index.sqlite3")),
        *(cache / "archives").glob("*.tar.gz"),
        run_logs[0] / "stdout.txt",
        run_logs[0] / "stderr.txt",
        *store_files,
    ]
    assert len(files) >= len(store_files) + 5
    loose = [f"{p} {oct(mode(p))}" for p in dirs if mode(p) != 0o700]
    loose += [f"{p} {oct(mode(p))}" for p in files if mode(p) != 0o600]
    print(f"checked {len(dirs)} dirs and {len(files)} files; not private: {len(loose)}")
    assert loose == []
    assert "secret-ish output" in (run_logs[0] / "stdout.txt").read_text()
