"""The runtime on hostile and concurrent input: safe extraction, digest verification,
extract-once caching and per-run working directories."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import write_tree

from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.runtime.execute import EnvironmentMismatch, check_environment, linked_workdir
from flyte_jupyter.runtime.extract import BundleVerificationError, fetch_bundle

DIGEST = "sha256:" + "0" * 64


def evil_archive(path: Path, *members: tarfile.TarInfo, data: bytes = b"x = 1\n") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            payload = io.BytesIO(data) if member.isreg() else None
            if member.isreg():
                member.size = len(data)
            tar.addfile(member, payload)
    return path


def info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = link
    member.mode = 0o644
    return member


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([info("../escape.py")], "leaves the bundle directory"),
        ([info("ok.py"), info("pkg/../../escape.py")], "leaves the bundle directory"),
        ([info("/tmp/escape.py")], "absolute path"),
        ([info("link.py", tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
        ([info("ok.py"), info("hard.py", tarfile.LNKTYPE, "ok.py")], "is a link"),
        ([info("dev", tarfile.CHRTYPE)], "special file"),
        ([info("fifo", tarfile.FIFOTYPE)], "special file"),
        ([info("dup.py"), info("dup.py")], "repeats an entry"),
    ],
)
def test_unsafe_archives_are_refused_and_write_nothing_outside(tmp_path, members, message):
    outside = tmp_path / "escape.py"
    archive = evil_archive(tmp_path / "evil.tar.gz", *members)
    cache = tmp_path / "cache"
    with pytest.raises(BundleVerificationError, match=message):
        fetch_bundle(archive.as_uri(), DIGEST, cache)
    assert not outside.exists()
    assert not Path("/tmp/escape.py").exists()
    leftovers = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_tampered_bundle_never_runs(tmp_path, tree):
    root = tree({"app.py": "open('ran.marker', 'w').write('x')\ndef main():\n    return 1\n"})
    built = build_bundle(select_files(root, entries=[root / "app.py"]))
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(built.archive) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read().replace(b"return 1", b"return 2")
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable, "-I", "-m", "flyte_jupyter.runtime",
            "--bundle", tampered.as_uri(), "--digest", built.digest, "--entry", "app:main",
            "--outputs", (run_dir / "outputs.pkl").as_uri(), "--run-dir", run_dir.as_uri(),
        ],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    error = json.loads((run_dir / "error.json").read_text())
    assert error["type"] == "BundleVerificationError"
    assert f"expected {built.digest}" in error["message"]
    assert "modified or corrupted in storage" in error["message"]
    assert not list(tmp_path.rglob("ran.marker"))
    assert not (run_dir / "outputs.pkl").exists()
    assert '"phase": "failed"' in (run_dir / "status.json").read_text()


def test_malformed_digest_is_refused(tmp_path):
    with pytest.raises(BundleVerificationError, match="malformed digest"):
        fetch_bundle("file:///nowhere", "md5:abc", tmp_path)


def _runtime(archive: Path, digest: str, run_dir: Path, entry: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "FLYTE_JUPYTER_VERBOSE": "1"}  # says when it downloads a bundle
    return subprocess.Popen(
        [
            sys.executable, "-I", "-m", "flyte_jupyter.runtime",
            "--bundle", archive.as_uri(), "--digest", digest, "--entry", entry,
            "--outputs", (run_dir / "outputs.pkl").as_uri(), "--run-dir", run_dir.as_uri(),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
    )  # fmt: skip


def test_twenty_concurrent_runs_of_one_digest_extract_once(tmp_path, tree):
    files = {f"pkg/mod_{i}.py": f"VALUE = {i}\n" * 200 for i in range(40)}
    root = tree({**files, "pkg/__init__.py": "", "app.py": "def main():\n    return 'ok'\n"})
    built = build_bundle(select_files(root, copy_style="all"))
    procs = [
        _runtime(built.archive, built.digest, tmp_path / f"run{i}", "app:main", tmp_path)
        for i in range(20)
    ]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    fetches = sum("fetching bundle" in err for _, err in results)
    assert fetches == 1
    outputs = {pickle.loads((tmp_path / f"run{i}/outputs.pkl").read_bytes()) for i in range(20)}
    assert outputs == {"ok"}


def test_crashed_extraction_is_cleaned_up_and_redone(tmp_path, tree):
    root = tree({"app.py": "def main():\n    return 5\n"})
    built = build_bundle(select_files(root, entries=[root / "app.py"]))
    cache = tmp_path / "cache"
    half = cache / built.hex  # an extraction that died before its completion marker
    write_tree(half, {"app.py": "def main():\n    return 'stale'\n"})
    (cache / f".{built.hex}.tmp-crashed").mkdir()
    (cache / f".{built.hex}.download-crashed").write_bytes(b"partial")
    extracted = fetch_bundle(built.archive.as_uri(), built.digest, cache)
    assert (extracted / "app.py").read_text() == "def main():\n    return 5\n"
    names = sorted(p.name for p in cache.iterdir())
    assert names == [built.hex, f"{built.hex}.files", f"{built.hex}.lock"]


def test_each_run_gets_its_own_working_copy(tmp_path, tree):
    root = tree(
        {
            "app.py": """
                from pathlib import Path

                def main():
                    data = Path("data/values.txt")
                    before = data.read_text()
                    data.write_text("overwritten by a run")
                    Path("data/new.txt").write_text("new")
                    return before
                """,
            "data/values.txt": "original",
        }
    )
    built = build_bundle(select_files(root, entries=[root / "app.py"], include=["data/*"]))
    for i in range(2):
        proc = _runtime(built.archive, built.digest, tmp_path / f"r{i}", "app:main", tmp_path)
        assert proc.wait(60) == 0, proc.stderr.read()
        assert pickle.loads((tmp_path / f"r{i}/outputs.pkl").read_bytes()) == "original"
    cached = Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "bundles" / built.hex
    assert not cached.exists()  # each run changed it: discarded, so the next run fetched it again


def test_a_run_starts_in_the_clients_folder_of_the_shipped_tree(tmp_path, tree):
    """`flyte-jupyter run` from a subfolder of root_dir: the run's working directory is that
    folder of the shipped tree, so `../..` reaches root_dir's files as it does here."""
    from cli_process import cli

    root = tree(
        {
            "pyproject.toml": "[project]\nname = 'p'\n",
            "app.py": """
                import os
                from pathlib import Path

                def main():
                    return os.path.basename(os.getcwd()), Path("../../conf.txt").read_text()
                """,
            "conf.txt": "from root_dir",
            "sub/deeper/notes.md": "not shipped",
        }
    )
    done = cli("run", "../../app.py:main", "--include", "conf.txt", cwd=root / "sub" / "deeper")
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["deeper", "from root_dir"]


@pytest.mark.parametrize("sub", ["../escape", "/etc", "a/../../b", "a/.."])
def test_a_working_directory_that_leaves_the_shipped_tree_is_refused(tmp_path, tree, sub):
    """spec.json names the run's folder; a tampered one never makes or enters a folder outside
    the run's private working directory."""
    root = tree({"app.py": ""})
    before = set(tmp_path.rglob("*"))
    here = os.getcwd()
    try:
        with pytest.raises(ValueError, match="is not a folder under root_dir"):
            linked_workdir(root, sub)
    finally:
        os.chdir(here)
    made = set(tmp_path.rglob("*")) - before
    print(f"{sub!r}: paths made: {len(made)}")
    assert made == set() and os.getcwd() == here


def test_environment_mismatch_is_one_clear_error():
    check_environment({"python": ".".join(map(str, sys.version_info[:3])), "distributions": {}})
    with pytest.raises(EnvironmentMismatch) as err:
        check_environment(
            {"python": "3.99.1", "distributions": {"surely-not-installed-dist": "1.2.3"}}
        )
    message = str(err.value)
    assert "runs Python" in message and "client runs Python 3.99.1" in message
    assert "not installed here: surely-not-installed-dist==1.2.3" in message
    assert ".with_pip_packages('surely-not-installed-dist==1.2.3')" in message
