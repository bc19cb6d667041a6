"""Trust at run time: run data is only unpickled by the process that asked for it, a run cannot
change what later runs of the same bundle execute, extraction is bounded, and cancel only stops
our own processes."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import time
from functools import partial
from pathlib import Path

import cli_process
import pytest
from conftest import process_alive, write_tree
from kernel import extension_kernel

from flyte_jupyter.core import history
from flyte_jupyter.core.bundle import Bundle, build_bundle
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.submit import submit
from flyte_jupyter.runtime import extract
from flyte_jupyter.runtime.extract import (
    BundleVerificationError,
    changes,
    extract_verified,
    fetch_bundle,
    recorded_snapshot,
)

DIGEST = "sha256:" + "0" * 64


def bomb_project(root: Path, markers: Path) -> Path:
    """A project whose result, when unpickled, imports the project (leaving imported-<pid>)
    and calls a project function (leaving `unpickled`)."""
    markers.mkdir(parents=True, exist_ok=True)
    return write_tree(
        root,
        {
            "bomb_job.py": f"""
                import os
                from pathlib import Path

                MARKERS = Path({str(markers)!r})
                (MARKERS / f"imported-{{os.getpid()}}").touch()

                def detonate(path):
                    Path(path).touch()
                    return "boom"

                class Bomb:
                    def __reduce__(self):
                        return (detonate, (str(MARKERS / "unpickled"),))

                def make():
                    return Bomb()
                """,
        },
    )


def submit_bomb(tmp_path: Path) -> tuple[str, Path]:
    markers = tmp_path / "markers"
    root = bomb_project(tmp_path / "project", markers)
    run = submit(build_bundle(select_files(root, entries=[root / "bomb_job.py"])), "bomb_job:make")
    assert run.wait(60) == "succeeded"
    return run.id, markers


cli = partial(cli_process.cli, timeout=60)


def test_runs_show_reads_the_runtime_summary_and_never_unpickles(tmp_path):
    run_id, markers = submit_bomb(tmp_path)
    shown = cli("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    outcome = json.loads(shown.stdout)["outcome"]
    assert outcome["type"] == "Bomb" and outcome["module"] == "bomb_job"
    assert outcome["repr"].startswith("<bomb_job.Bomb object at")
    assert outcome["output_bytes"] > 0
    created = sorted(p.name for p in markers.iterdir() if p.name != f"imported-{run_pid(run_id)}")
    print("files created by unpickling in `runs show`:", len(created))
    assert created == []
    # the process that asked for the value does unpickle it: the bomb is real
    asked = subprocess.run(
        [sys.executable, "-c", f"from flyte_jupyter.core.submit import Run; "
         f"print(Run.from_history({run_id!r}).result())"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert asked.stdout.strip() == "boom", asked.stderr
    assert (markers / "unpickled").exists()


def test_a_run_without_a_summary_is_shown_without_unpickling(tmp_path):
    run_id, markers = submit_bomb(tmp_path)
    run_dir = Path(json.loads(history.get(run_id).spec)["run_dir"].removeprefix("file://"))
    (run_dir / "outputs.json").unlink()  # as an older runtime left it
    shown = cli("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "no summary recorded" in json.loads(shown.stdout)["outcome"]["note"]
    assert not (markers / "unpickled").exists()


def run_pid(run_id: str) -> int | None:
    """The pid the run's own process recorded (its import of the project leaves a marker)."""
    run_dir = Path(json.loads(history.get(run_id).spec)["run_dir"].removeprefix("file://"))
    return json.loads((run_dir / "status.json").read_text())["pid"]


def test_cell_run_summary_lists_assigned_names_and_the_cells_value(tmp_path):
    with extension_kernel(tmp_path) as kernel:
        reply = kernel.ok("%%flyte_run\nprices = [1.5, 2.5]\nlabel = 'x' * 5000\nsum(prices)")
        assert reply.result == "4.0"
    shown = cli("runs", "show", history.recent()[0].id)
    assert shown.returncode == 0, shown.stderr
    outcome = json.loads(shown.stdout)["outcome"]
    assert (outcome["type"], outcome["repr"]) == ("float", "4.0")
    assert outcome["assigned"] == ["label", "prices"]
    assert outcome["values"]["prices"]["repr"] == "[1.5, 2.5]"
    assert outcome["values"]["label"]["type"] == "str"
    assert len(outcome["values"]["label"]["repr"].encode()) <= 1024  # bounded
    assert outcome["values"]["label"]["size"] > 5000  # the pickled size is the real one


# --- the shared extraction: what runs is what was verified ---------------------------------


def runtime(archive: Path, digest: str, run_dir: Path, entry: str) -> subprocess.CompletedProcess:
    """The runtime as an executor starts it."""
    return subprocess.run(
        [
            sys.executable, "-I", "-m", "flyte_jupyter.runtime",
            "--bundle", archive.as_uri(), "--digest", digest, "--entry", entry,
            "--outputs", (run_dir / "outputs.pkl").as_uri(), "--run-dir", run_dir.as_uri(),
        ],
        capture_output=True, text=True, cwd=run_dir.parent, timeout=120,
    )  # fmt: skip


def output(run_dir: Path):
    return pickle.loads((run_dir / "outputs.pkl").read_bytes())


def test_a_run_that_rewrites_its_module_does_not_change_the_next_run(tmp_path, tree):
    root = tree(
        {
            "mod.py": "VALUE = 1\n",
            "app.py": """
                import os
                import shutil
                from pathlib import Path

                import mod

                def tamper():
                    source = Path(mod.__file__)
                    before = source.stat()
                    source.write_text("VALUE = 2\\n")  # same size, written in place
                    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime back
                    shutil.rmtree(source.parent / "__pycache__")  # so the source is recompiled
                    return mod.VALUE

                def read():
                    return mod.VALUE
                """,
        }
    )
    built = build_bundle(select_files(root, entries=[root / "app.py"]))
    first = runtime(built.archive, built.digest, tmp_path / "run1", "app:tamper")
    assert first.returncode == 0, first.stderr
    assert "this run changed its code directory (__pycache__" in first.stderr
    second = runtime(built.archive, built.digest, tmp_path / "run2", "app:read")
    assert second.returncode == 0, second.stderr
    print("value seen by the run after the tampering run:", output(tmp_path / "run2"))
    assert output(tmp_path / "run2") == 1


def test_a_tree_changed_between_runs_is_fetched_again_with_one_note(tmp_path, tree):
    app = "import mod\n\ndef read():\n    return mod.VALUE\n"
    root = tree({"mod.py": "VALUE = 1\n", "app.py": app})
    built = build_bundle(select_files(root, entries=[root / "app.py"]))
    assert runtime(built.archive, built.digest, tmp_path / "run1", "app:read").returncode == 0
    extracted = Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "bundles" / built.hex
    (extracted / "mod.py").write_text("VALUE = 666\n")  # changed by something outside any run
    (extracted / "__pycache__").rename(extracted / "elsewhere")
    second = runtime(built.archive, built.digest, tmp_path / "run2", "app:read")
    assert second.returncode == 0, second.stderr
    assert output(tmp_path / "run2") == 1
    notes = [line for line in second.stderr.splitlines() if "flyte-jupyter: note" in line]
    assert len(notes) == 1 and "changed since it was verified (__pycache__" in notes[0], notes
    assert (extracted / "mod.py").read_text() == "VALUE = 1\n"


def test_writes_to_the_code_directory_never_persist_and_relative_paths_work(tmp_path, tree):
    root = tree(
        {
            "app.py": """
                from pathlib import Path

                def write():
                    before = Path("data/values.txt").read_text()  # relative to the bundle root
                    Path("data/values.txt").write_text("overwritten by a run")
                    Path("data/new.txt").write_text("new")
                    (Path(__file__).parent / "beside_code.txt").write_text("x")
                    Path("scratch.txt").write_text("private to this run")
                    return before

                def look():
                    here = sorted(p.name for p in Path(".").iterdir())
                    return Path("data/values.txt").read_text(), here, Path(__file__).parent.name
                """,
            "data/values.txt": "original",
        }
    )
    built = build_bundle(select_files(root, entries=[root / "app.py"], include=["data/*"]))
    first = runtime(built.archive, built.digest, tmp_path / "run1", "app:write")
    assert first.returncode == 0, first.stderr
    assert output(tmp_path / "run1") == "original"
    second = runtime(built.archive, built.digest, tmp_path / "run2", "app:look")
    assert second.returncode == 0, second.stderr
    values, listing, code_dir = output(tmp_path / "run2")
    print("second run sees:", values, listing)
    assert values == "original"
    assert listing == ["app.py", "data"]  # no new.txt, beside_code.txt or scratch.txt
    assert code_dir == built.hex  # the code runs from the shared extraction, not a copy
    cache = Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "bundles" / built.hex
    assert sorted(p.name for p in (cache / "data").iterdir()) == ["values.txt"]


NESTED = {
    "app.py": "import pkg.mod\n\ndef read():\n    return pkg.mod.VALUE\n",
    "pkg/__init__.py": "",
    "pkg/mod.py": "VALUE = 1\n",
    "pkg/sub/deep.py": "DEEP = 1\n",
    "data/values.txt": "original",
}


def nested_bundle(tree) -> Bundle:
    root = tree(NESTED)
    return build_bundle(select_files(root, entries=[root / "app.py"], include=["data/*", "pkg/**"]))


def settle(tree: Path) -> None:
    """Snapshot the extraction again a moment after its folders last changed, as the snapshot
    of all but the last few folders compiled is: their unchanged stat then stands for their
    listing, the path a check takes for nearly every folder."""
    time.sleep(0.05)
    extract._write_snapshot(tree)
    recorded = recorded_snapshot(tree)
    assert all(recorded.settled(folder) for folder in recorded.folders if folder)


def rewrite_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def add_keeping_folder_mtime(folder: Path) -> None:
    before = folder.stat()
    (folder / "evil.py").write_text("VALUE = 666\n")
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))


def swap_folder_for_a_copy(folder: Path) -> None:
    copy = folder.with_name("copy")
    shutil.copytree(folder, copy, copy_function=shutil.copy2)  # same names, sizes, mtimes
    shutil.rmtree(folder)
    copy.rename(folder)


def replace_by_rename(path: Path) -> None:
    other = path.with_name("other")
    other.write_bytes(path.read_bytes())
    os.replace(other, path)


def swap_for_a_link(path: Path, to: str) -> None:
    path.rename(path.with_name(path.name + ".away"))
    path.symlink_to(to)


def swap_top_for_a_link(tree: Path) -> None:
    away = tree.with_name("elsewhere")
    shutil.copytree(tree, away, symlinks=True, copy_function=shutil.copy2)
    shutil.rmtree(tree)
    tree.symlink_to(away)


def pyc(tree: Path) -> Path:
    return next((tree / "pkg" / "__pycache__").glob("mod.*.pyc"))


TAMPERINGS = {
    "source rewritten, same size, mtime restored": (
        lambda t: rewrite_keeping_size_and_mtime(t / "pkg/mod.py"), "pkg/mod.py"),
    "bytecode rewritten, same size, mtime restored": (
        lambda t: rewrite_keeping_size_and_mtime(pyc(t)), "pkg/__pycache__/"),
    "file added, folder mtime restored": (
        lambda t: add_keeping_folder_mtime(t / "pkg/sub"), "pkg/sub/evil.py"),
    "file added at the top": (lambda t: (t / "evil.py").write_text(""), "evil.py"),
    "folder added": (lambda t: (t / "pkg/new").mkdir(), "pkg/new"),
    "file removed": (lambda t: (t / "data/values.txt").unlink(), "data/values.txt"),
    "folder removed": (lambda t: shutil.rmtree(t / "pkg/sub"), "pkg/sub"),
    "file replaced by a rename": (lambda t: replace_by_rename(t / "pkg/mod.py"), "pkg/mod.py"),
    "folder replaced by a copy": (lambda t: swap_folder_for_a_copy(t / "pkg/sub"), "pkg/sub"),
    "file mode changed": (lambda t: (t / "pkg/mod.py").chmod(0o777), "pkg/mod.py"),
    "mtime set past what 64 bits of nanoseconds hold": (
        lambda t: os.utime(t / "pkg/mod.py", (1e11, 1e11)), "pkg/mod.py"),
    "folder mode changed": (lambda t: (t / "data").chmod(0o700), "data"),
    "folder made unreadable": (lambda t: (t / "pkg/sub").chmod(0), "pkg/sub"),
    "file swapped for a link": (
        lambda t: swap_for_a_link(t / "pkg/mod.py", "../app.py"), "pkg/mod.py"),
    "folder swapped for a link": (lambda t: swap_for_a_link(t / "data", "pkg"), "data"),
    "file hard-linked from outside": (
        lambda t: os.link(t / "pkg/mod.py", t.parent / "outside"), "pkg/mod.py"),
    "top swapped for a link to a copy": (swap_top_for_a_link, "(tree replaced)"),
    "top removed": (shutil.rmtree, "(tree removed)"),
}  # fmt: skip


def test_every_kind_of_change_to_a_settled_extraction_is_caught_and_undone(tree):
    built = nested_bundle(tree)
    url = built.archive.as_uri()
    missed = []
    for kind, (tamper, expected) in TAMPERINGS.items():
        extracted = fetch_bundle(url, built.digest)
        settle(extracted)
        assert changes(extracted) == []
        tamper(extracted)
        found = changes(extracted)
        if not any(path.startswith(expected) for path in found):
            missed.append(f"{kind}: {found}")
        again = fetch_bundle(url, built.digest)  # discarded and fetched again
        assert changes(again) == [], kind
        assert (again / "pkg/mod.py").read_text() == "VALUE = 1\n", kind
        assert not (again / "pkg/sub/evil.py").exists() and not (again / "evil.py").exists()
        (again.parent / "outside").unlink(missing_ok=True)
    print(f"kinds of change tried: {len(TAMPERINGS)}; missed: {len(missed)} {missed}")
    assert missed == []


AUDITED = """
import json, sys
from collections import Counter
from pathlib import Path
seen = Counter()
tree, counts, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]

def hook(event, args):
    path = str(args[0]) if args else ""
    if event == "open" and path == tree + ".files":
        seen["snapshot reads"] += 1
    elif event in ("os.listdir", "os.scandir") and (
        path.isdigit() or path == tree or path.startswith(tree + "/")  # by descriptor or path
    ):
        seen["folders listed"] += 1

sys.addaudithook(hook)
try:
    if argv:  # a whole run, as an executor starts it
        import runpy
        sys.argv = ["flyte_jupyter.runtime", *argv]
        runpy.run_module("flyte_jupyter.runtime", run_name="__main__", alter_sys=True)
    else:  # one check
        from flyte_jupyter.runtime.extract import changes
        assert changes(Path(tree)) == []
finally:
    counts.write_text(json.dumps(seen))
"""


def audited(tree: Path, counts: Path, *run_args: str) -> dict[str, int]:
    """What a check (or a whole run) of the extraction `tree` read and listed, counted by an
    audit hook in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", AUDITED, str(tree), str(counts), *run_args],
        capture_output=True, text=True, cwd=counts.parent, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(counts.read_text())


def test_a_check_lists_only_the_top_folder_and_a_run_reads_the_snapshot_once(tmp_path, tree):
    built = nested_bundle(tree)
    extracted = fetch_bundle(built.archive.as_uri(), built.digest)
    settle(extracted)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    check = audited(extracted, tmp_path / "check.json")
    run = audited(
        extracted, tmp_path / "run.json",
        "--bundle", built.archive.as_uri(), "--digest", built.digest, "--entry", "app:read",
        "--outputs", (run_dir / "outputs.pkl").as_uri(), "--run-dir", run_dir.as_uri(),
    )  # fmt: skip
    assert output(run_dir) == 1
    folders = len(recorded_snapshot(extracted).folders)
    print(f"one check of {folders} folders: {check}; one run: {run}")
    assert check == {"snapshot reads": 1, "folders listed": 1}  # the top only
    # the pre-run check, the import checks and the post-run check share one read
    assert run["snapshot reads"] == 1


def extracted_at(tree: Path) -> int:
    """When the file app.py of an extraction was written (inode numbers are reused at once)."""
    return (tree / "app.py").stat().st_ctime_ns


def test_a_snapshot_written_by_an_earlier_version_is_still_used(tree):
    built = nested_bundle(tree)
    extracted = fetch_bundle(built.archive.as_uri(), built.digest)
    paths = {}  # the JSON {path: [mode, size, mtime_ns, ctime_ns, inode]} earlier versions wrote
    for folder, dirs, files in os.walk(extracted):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            rel = os.path.relpath(os.path.join(folder, name), extracted).replace(os.sep, "/")
            paths[rel] = [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    snapshot = extracted.with_name(extracted.name + ".files")
    snapshot.write_text(json.dumps(paths, sort_keys=True, separators=(",", ":")))
    when = extracted_at(extracted)
    assert changes(extracted) == []
    assert fetch_bundle(built.archive.as_uri(), built.digest) == extracted
    assert extracted_at(extracted) == when  # used as it is, not extracted again
    rewrite_keeping_size_and_mtime(extracted / "pkg/sub/deep.py")
    (extracted / "data/new.txt").write_text("")
    print("changes against the earlier snapshot:", changes(extracted))
    assert changes(extracted) == ["data", "data/new.txt", "pkg/sub/deep.py"]


def test_an_unreadable_snapshot_means_the_bundle_is_extracted_again(tree):
    built = nested_bundle(tree)
    extracted = fetch_bundle(built.archive.as_uri(), built.digest)
    when = extracted_at(extracted)
    snapshot = extracted.with_name(extracted.name + ".files")
    for garbage in (b"", b"\x00\xff", snapshot.read_bytes()[:-7], b'{"app.py": 5}'):
        snapshot.write_bytes(garbage)
        assert changes(extracted) == ["(no snapshot)"]
        again = fetch_bundle(built.archive.as_uri(), built.digest)
        assert changes(again) == [] and extracted_at(again) != when
        when = extracted_at(again)


# --- extraction limits ------------------------------------------------------------------------


def bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def gzip_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A tar.gz written header by header, so a member can declare a size it does not have."""
    with gzip.open(path, "wb") as out:
        for info, data in members:
            out.write(info.tobuf(format=tarfile.GNU_FORMAT))
            out.write(data)
            out.write(b"\0" * (-len(data) % 512))
        out.write(b"\0" * 1024)
    return path


def regular(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info


def test_a_member_declaring_20_gib_is_refused_before_a_byte_is_written(tmp_path):
    archive = gzip_tar(tmp_path / "bomb.tar.gz", [(regular("big.bin", 20 << 30), b"x" * 4096)])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleVerificationError, match="declares 21474836480 bytes, more than"):
        extract_verified(archive, dest)
    written = bytes_under(dest)
    print("bytes written by bomb:", written)
    assert written == 0


def test_a_long_name_header_declaring_20_gib_is_refused_without_reading_it(tmp_path):
    longname = tarfile.TarInfo("././@LongLink")
    longname.type, longname.size = tarfile.GNUTYPE_LONGNAME, 20 << 30
    archive = gzip_tar(tmp_path / "bomb.tar.gz", [(longname, b"a" * 600)])
    with pytest.raises(BundleVerificationError, match="header entry declares 21474836480 bytes"):
        fetch_bundle(archive.as_uri(), DIGEST, tmp_path / "cache")


def test_real_bytes_beyond_the_limit_are_never_written(tmp_path, monkeypatch):
    limit = 10_000_000
    monkeypatch.setenv("FLYTE_JUPYTER_MAX_EXTRACT_BYTES", str(limit))
    zeros = b"\0" * 6_000_000  # 6 MB that compress to a few KB, twice
    members = [(regular("a.bin", len(zeros)), zeros), (regular("b.bin", len(zeros)), zeros)]
    archive = gzip_tar(tmp_path / "zeros.tar.gz", members)
    print("compressed bomb bytes:", archive.stat().st_size)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleVerificationError, match=r"b\.bin' declares 6000000 bytes"):
        extract_verified(archive, dest)  # no clean-up, so what it wrote can be counted
    written = bytes_under(dest)
    print("bytes written by bomb:", written)
    assert written == 6_000_000  # a.bin fit the budget; b.bin did not start
    cache = tmp_path / "cache"
    with pytest.raises(BundleVerificationError, match="extraction limit"):
        fetch_bundle(archive.as_uri(), DIGEST, cache)
    assert not [p for p in cache.iterdir() if not p.name.endswith(".lock")]  # staging removed


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYTE_JUPYTER_MAX_EXTRACT_MEMBERS", "100")
    archive = gzip_tar(tmp_path / "many.tar.gz", [(regular(f"f{i}", 1), b"x") for i in range(150)])
    cache = tmp_path / "cache"
    with pytest.raises(BundleVerificationError, match="more than 100 entries"):
        fetch_bundle(archive.as_uri(), DIGEST, cache)
    files = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    print("files left by the member bomb:", len(files))
    assert files == []


def test_a_bad_limit_setting_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYTE_JUPYTER_MAX_EXTRACT_BYTES", "1GB")
    archive = gzip_tar(tmp_path / "ok.tar.gz", [(regular("a.py", 2), b"x\n")])
    with pytest.raises(BundleVerificationError, match="FLYTE_JUPYTER_MAX_EXTRACT_BYTES='1GB'"):
        fetch_bundle(archive.as_uri(), DIGEST, tmp_path / "cache")


def test_stale_leftovers_of_other_digests_are_removed_unless_locked_or_recent(tmp_path, tree):
    cache = tmp_path / "cache"
    old = time.time() - 11 * 60
    killed, busy, recent = ("1" * 64, "2" * 64, "3" * 64)
    leftovers = {
        "killed staging": cache / f".{killed}.tmp-abc",
        "killed download": cache / f".{killed}.download-abc",
        "locked staging": cache / f".{busy}.tmp-def",
        "recent staging": cache / f".{recent}.tmp-ghi",
    }
    for label, path in leftovers.items():
        if "staging" in label:
            write_tree(path, {"pkg/big.bin": b"\0" * 1000})
        else:
            write_tree(cache, {path.name: b"partial"})
        if label != "recent staging":
            os.utime(path, (old, old))
    root = tree({"app.py": "def main():\n    return 1\n"})
    built = build_bundle(select_files(root, entries=[root / "app.py"]))
    with open(cache / f"{busy}.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # an extraction of that digest is going on
        fetch_bundle(built.archive.as_uri(), built.digest, cache)
    gone = sorted(label for label, path in leftovers.items() if not path.exists())
    print("stale leftovers removed:", gone)
    assert gone == ["killed download", "killed staging"]


# --- cancel signals only our own processes ----------------------------------------------------


@pytest.fixture
def sleeper():
    """An unrelated live process of the same user, leading its own process group (what a
    reused pid of a run's process group leader could be)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def finished_run(tree) -> str:
    root = tree({"app.py": "def main():\n    return 1\n"})
    run = submit(build_bundle(select_files(root, entries=[root / "app.py"])), "app:main")
    assert run.wait(60) == "succeeded"
    return run.id


def test_cancel_never_signals_a_process_that_reused_the_runs_pid(tree, sleeper):
    run_id = finished_run(tree)
    identity = history.get(run_id).pid_start
    assert identity and identity.count(":") == 1  # boot id and start time, recorded at launch
    history.update(run_id, status="running", pid=sleeper.pid, pid_start=identity)
    cancelled = cli("runs", "cancel", run_id)
    time.sleep(0.2)
    killed = int(sleeper.poll() is not None)
    print("unrelated processes killed:", killed)
    assert killed == 0
    assert cancelled.returncode == 0, cancelled.stderr
    assert history.get(run_id).status == "succeeded"  # treated as ended, as its status.json says


def test_status_of_a_run_whose_pid_was_reused_is_its_end(tree, sleeper):
    run_id = finished_run(tree)
    history.update(run_id, status="running", pid=sleeper.pid)  # identity of the real run kept
    listing = cli("runs")
    assert listing.returncode == 0, listing.stderr
    assert history.get(run_id).status == "succeeded" and sleeper.poll() is None


def test_a_row_without_a_recorded_identity_is_not_signalled(tree, sleeper):
    run_id = finished_run(tree)
    history.update(run_id, status="running", pid=sleeper.pid, pid_start=None)  # an older row
    cancelled = cli("runs", "cancel", run_id)
    assert cancelled.returncode != 0 and sleeper.poll() is None
    assert "without its identity, so it is not signalled" in cancelled.stderr
    assert cancelled.stderr.count("\n") == 1, cancelled.stderr


def test_cancel_from_another_process_stops_a_real_run(tree):
    root = tree({"app.py": "import time\n\ndef main():\n    time.sleep(60)\n"})
    run = submit(build_bundle(select_files(root, entries=[root / "app.py"])), "app:main")
    pid = history.get(run.id).pid
    cancelled = cli("runs", "cancel", run.id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"run {run.id}: cancelled"
    assert run.wait(10) in ("cancelled", "failed") and not process_alive(pid)


def test_a_history_from_an_older_version_gains_the_identity_column():
    import sqlite3

    path = history.history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:  # the schema before process identities were recorded
        db.execute(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, entry TEXT, digest TEXT, "
            "version TEXT, image TEXT, executor TEXT, store TEXT, status TEXT, created TEXT, "
            "started TEXT, finished TEXT, exit_code INTEGER, error TEXT, pid INTEGER, spec TEXT)"
        )
        db.execute(
            "INSERT INTO runs (id, entry, version, executor, store, status, created, pid) "
            "VALUES ('old-run', 'app:main', 'v', 'local', 'file:///s', 'running', '2026', 1)"
        )
    db.close()
    record = history.get("old-run")
    assert (record.pid, record.pid_start) == (1, None)


WRITER = """
import os, sys, time
target, folders = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while not os.path.isdir(target) and time.monotonic() < deadline:
    pass
for i in range(folders):
    try:
        with open(os.path.join(target, f"pkg{i}", "evil.py"), "w") as f:
            f.write("VALUE = 666\\n")
    except OSError:
        pass
"""


def test_writes_under_the_digest_name_while_it_is_extracted_are_never_recorded(tmp_path, tree):
    folders = 60
    files = {f"pkg{i}/mod{j}.py": f"VALUE = {j}\n" for i in range(folders) for j in range(20)}
    root = tree({"app.py": "", **files})
    built = build_bundle(select_files(root, entries=[root / "app.py"], include=["pkg*/*"]))
    target = Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "bundles" / built.hex
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(folders)])
    try:
        extracted = fetch_bundle(built.archive.as_uri(), built.digest)
    finally:
        writer.wait(60)
    written = sorted(p.relative_to(extracted).as_posix() for p in extracted.glob("pkg*/evil.py"))
    found = changes(extracted)
    recorded = [path for path in written if path not in found]
    print(f"files a process wrote while the bundle was extracted: {len(written)}; "
          f"recorded as verified: {len(recorded)}")  # fmt: skip
    assert written and recorded == []
    assert (fetch_bundle(built.archive.as_uri(), built.digest) / "pkg0/mod1.py").exists()
    assert list(extracted.glob("pkg*/evil.py")) == []
