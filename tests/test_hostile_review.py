"""Issue 9 reviewed as an attacker would (R9): hostile archives, run files the runtime never
wrote (status.json, error.json, outputs.json forged by a run's own code), and request bodies
and settings values the REST API must refuse with a 400. Real parts: tar files on disk, runs
in real runtime processes, the `flyte-jupyter` CLI in subprocesses and a real Jupyter server."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import tarfile
from functools import partial
from pathlib import Path

import cli_process
import pytest
import tornado.httpclient
from conftest import write_tree

from flyte_jupyter.core import history
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.submit import submit
from flyte_jupyter.runtime.extract import BundleVerificationError, extract_verified

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"flyte_jupyter.server": True}}}


cli = partial(cli_process.cli, timeout=60)


# --- hostile archives (item 3): nothing is written outside, every trick is refused --------


def _member(name: str, data: bytes | None = b"x", kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


HOSTILE_ARCHIVES = {
    "a/../../x": [_member("a/../../x")],
    "./a/./../../x": [_member("./a/./../../x")],
    "GNU long name climbing out": [_member("a/" * 60 + "../" * 70 + "x")],
    "pax path override": [_member("safe.py")],  # its pax header renames it, see below
    "hard link to a member": [_member("a.py"), _member("b.py", None, tarfile.LNKTYPE, "a.py")],
    "hard link out": [_member("b.py", None, tarfile.LNKTYPE, "/etc/passwd")],
    "symlink out": [_member("b.py", None, tarfile.SYMTYPE, "/etc/passwd")],
    "member twice, other content": [_member("m.py", b"A=1"), _member("m.py", b"A=2")],
    "member twice after normalization": [_member("p/m.py", b"A=1"), _member("p//./m.py", b"2")],
    "a file, then a file below it": [_member("p", b"A=1"), _member("p/m.py", b"A=2")],
    "backslashes": [_member("..\\..\\x")],
    "device": [_member("dev", None, tarfile.CHRTYPE)],
}


def _archive(path: Path, members: list, pax_path: str | None = None) -> Path:
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if pax_path else tarfile.GNU_FORMAT
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
        for info, data in members:
            if pax_path:
                info.pax_headers = {"path": pax_path}
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(buf.getvalue())
    return path


def test_hostile_archive_members_are_refused_and_write_nothing_outside(tmp_path):
    refused = 0
    for label, members in HOSTILE_ARCHIVES.items():
        case = tmp_path / f"case{refused}"
        dest = case / "deep" / "dest"
        dest.mkdir(parents=True)
        pax = "../../paxevil" if label == "pax path override" else None
        archive = _archive(case / "bundle.tar.gz", members, pax)
        with pytest.raises(BundleVerificationError):
            extract_verified(archive, dest)
        refused += 1
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and "dest" not in p.parts]
    outside = [p for p in outside if p.name != "bundle.tar.gz"]
    print(f"hostile archives refused: {refused} of {len(HOSTILE_ARCHIVES)}")
    print("files written outside the extraction:", len(outside))
    assert refused == len(HOSTILE_ARCHIVES) and outside == []


@pytest.mark.parametrize("damage", ["empty", "truncated", "not gzip"])
def test_empty_or_truncated_bundles_are_one_clear_refusal(tmp_path, damage):
    good = _archive(tmp_path / "good.tar.gz", [_member(f"f{i}.py", b"x" * 5000) for i in range(9)])
    data = good.read_bytes()
    data = {"empty": b"", "truncated": data[: len(data) // 2], "not gzip": b"hello" * 9}[damage]
    (tmp_path / "d").mkdir()
    (tmp_path / "bad.tar.gz").write_bytes(data)
    with pytest.raises(BundleVerificationError, match="is not a readable bundle"):
        extract_verified(tmp_path / "bad.tar.gz", tmp_path / "d")


# --- run files the runtime never wrote (items 1, 13, 15) -----------------------------------
# A run's own code knows its run directory and can write to it, and so can anyone with access
# to the store: status.json, error.json and outputs.json are read as untrusted input.

FORGER = """
import json
import os
import sys

from flyte_jupyter.runtime import blobs


def forge(files):
    run_dir = sys.argv[sys.argv.index("--run-dir") + 1]
    for name, data in files.items():
        blobs.write_bytes(blobs.join(run_dir, name), data)
    os._exit(0)  # the runtime never writes its own status
"""

FORGED = {
    "bad timestamp, bad exit code": {
        "status.json": '{"phase": "succeeded", "phases": [{"phase": "succeeded", "at": "soon"}],'
        ' "exit_code": "zero"}',
        "outputs.json": '{"size": "big", "value": ["not", "a", "dict"], "values": [1, "a"]}',
    },
    "a JSON string": {"status.json": '"finished, trust me"'},
    "not JSON": {"status.json": b"\xff not json"},
    "odd field types": {
        "status.json": '{"phase": ["succeeded"], "phases": "abc", "exit_code": [1]}',
    },
    "unknown phase, odd error": {
        "status.json": '{"phase": "failed", "phases": [{"phase": 7, "at": 7}, "x"]}',
        "error.json": '{"type": 5, "message": ["m"], "traceback": null, "missing_module": 3}',
    },
    "deeply nested": {"status.json": "[" * 100_000 + "]" * 100_000},
}


def forged_runs(tmp_path: Path) -> dict[str, str]:
    """label -> id of a run whose process wrote FORGED[label] into its run directory and
    ended without the runtime writing anything more; each waited for by its submitter."""
    root = write_tree(tmp_path / "forger", {"forger.py": FORGER})
    bundle = build_bundle(select_files(root, entries=[root / "forger.py"]))
    ids = {}
    for label, files in FORGED.items():
        files = {k: v if isinstance(v, bytes) else v.encode() for k, v in files.items()}
        run = submit(bundle, "forger:forge", args=(files,))
        status = run.wait(60)  # the submitter reads the forged files first
        assert status in ("succeeded", "failed"), (label, status)
        ids[label] = run.id
    return ids


def test_forged_run_files_are_shown_without_a_traceback(tmp_path):
    ids = forged_runs(tmp_path)
    listing = cli("runs", "--limit", "50")
    print("`runs` exit code with forged run files:", listing.returncode)
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    assert all(run_id in listing.stdout for run_id in ids.values())
    tracebacks = 0
    for label, run_id in ids.items():
        for command in (["runs", "show", run_id], ["runs", "logs", run_id]):
            done = cli(*command)
            if "Traceback" in done.stderr or done.returncode not in (0, 1):
                tracebacks += 1
                print(label, command[1], done.returncode, done.stderr[-300:])
        record = history.get(run_id)
        assert record.status in ("succeeded", "failed", "cancelled"), (label, record.status)
        assert record.exit_code is None or isinstance(record.exit_code, int), label
    print("tracebacks from `runs show/logs` on forged run files:", tracebacks)
    assert tracebacks == 0


async def test_forged_run_files_through_the_rest_api(jp_fetch, tmp_path):
    ids = forged_runs(tmp_path)
    response = await jp_fetch("flyte-jupyter", "api", "runs", params={"limit": "50"})
    listed = {r["id"]: r for r in json.loads(response.body)["runs"]}
    assert set(ids.values()) <= set(listed)
    failures = 0
    for label, run_id in ids.items():
        try:
            detail = json.loads((await jp_fetch("flyte-jupyter", "api", "runs", run_id)).body)
        except tornado.httpclient.HTTPClientError as err:
            failures += 1
            print(label, err.code, err.response.body[:300])
            continue
        assert detail["status"] in ("succeeded", "failed", "cancelled"), (label, detail)
        assert all(isinstance(p.get("at"), str) for p in detail["phases"]), (label, detail)
    print("REST run details failing on forged run files:", failures)
    assert failures == 0


# --- request bodies and settings values the REST API must refuse (items 7, 8) -------------

NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {},
         "outputs": [], "source": "x = 1"},
    ],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
}  # fmt: skip


async def put_settings(jp_fetch, body: str) -> tuple[int, dict]:
    try:
        response = await jp_fetch(
            "flyte-jupyter", "api", "settings", method="PUT", body=body,
            params={"path": "p/a.ipynb"},
        )  # fmt: skip
    except tornado.httpclient.HTTPClientError as err:
        return err.code, json.loads(err.response.body)
    return response.code, json.loads(response.body)


async def test_a_deeply_nested_body_is_a_400(jp_fetch, jp_root_dir):
    write_tree(jp_root_dir / "p", {"pyproject.toml": "", "a.ipynb": json.dumps(NOTEBOOK)})
    depth = 100_000  # 200 KB: under the body cap, far over the JSON parser's recursion limit
    code, doc = await put_settings(jp_fetch, '{"settings": ' + "[" * depth + "]" * depth + "}")
    print("deeply nested body:", code, doc)
    assert code == 400 and "nested" in doc["message"]


BAD_SETTINGS = [
    '{"include": [["data/*"]]}',
    '{"include": [{"a": 1}]}',
    '{"exclude": [5]}',
    '{"include": ' + "[" * 400 + "]" * 400 + "}",
    '{"max_size_mb": NaN}',
    '{"max_size_mb": Infinity}',
    '{"timeout": Infinity}',
]


async def test_settings_of_the_wrong_shape_are_refused_and_not_written(jp_fetch, jp_root_dir):
    project = write_tree(jp_root_dir / "p", {"pyproject.toml": "", "a.ipynb": json.dumps(NOTEBOOK)})
    saved = 0
    for values in BAD_SETTINGS:
        code, doc = await put_settings(jp_fetch, '{"settings": ' + values + "}")
        if code != 400 or (project / ".flyte-jupyter.toml").exists():
            saved += 1
            print("accepted:", values[:40], code, doc)
            (project / ".flyte-jupyter.toml").unlink(missing_ok=True)
    print(f"settings of the wrong shape saved: {saved} of {len(BAD_SETTINGS)}")
    assert saved == 0
    preview = await jp_fetch("flyte-jupyter", "api", "preview", params={"path": "p/a.ipynb"})
    assert json.loads(preview.body)["digest"].startswith("sha256:")


# --- a process an earlier run left behind (item 2) -----------------------------------------

LINGERING = {
    "helper.py": 'def f():\n    return "verified"\n',
    "app.py": """
        import subprocess
        import sys
        import time
        from pathlib import Path

        REWRITE = '''
        import pathlib, sys, time
        go, done, helper = map(pathlib.Path, sys.argv[1:])
        for _ in range(600):
            if go.exists():
                break
            time.sleep(0.05)
        helper.write_text("def f():\\\\n    return 'rewritten'\\\\n")
        done.touch()
        '''

        def plant(markers):
            helper = Path(__file__).resolve().parent / "helper.py"
            go, done = Path(markers) / "go", Path(markers) / "done"
            subprocess.Popen(
                [sys.executable, "-c", REWRITE, str(go), str(done), str(helper)],
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # outlives this run
            return "planted"

        def victim(markers):
            (Path(markers) / "go").touch()  # after this run's start-up check
            for _ in range(600):
                if (Path(markers) / "done").exists():
                    break
                time.sleep(0.05)
            import helper  # a lazy import, after the rewrite

            return helper.f()
        """,
}


def runtime(built, run_dir: Path, entry: str, *args: object) -> subprocess.CompletedProcess:
    """The runtime as an executor starts it, with pickled positional arguments."""
    run_dir.mkdir()
    (run_dir / "inputs.pkl").write_bytes(pickle.dumps({"args": args, "kwargs": {}}))
    return subprocess.run(
        [
            sys.executable, "-I", "-m", "flyte_jupyter.runtime", "--entry", entry,
            "--bundle", built.archive.as_uri(), "--digest", built.digest,
            "--inputs", (run_dir / "inputs.pkl").as_uri(),
            "--outputs", (run_dir / "outputs.pkl").as_uri(), "--run-dir", run_dir.as_uri(),
        ],
        capture_output=True, text=True, cwd=run_dir, timeout=120,
    )  # fmt: skip


def output(run_dir: Path) -> object:
    return pickle.loads((run_dir / "outputs.pkl").read_bytes())


def test_a_process_left_behind_by_a_run_cannot_change_what_a_later_run_imports(tmp_path, tree):
    root = tree(LINGERING)
    built = build_bundle(select_files(root, entries=[root / "app.py"], copy_style="all"))
    markers = tmp_path / "markers"
    markers.mkdir()
    runs = [
        (runtime(built, tmp_path / f"run{n}", f"app:{entry}", str(markers)), tmp_path / f"run{n}")
        for n, entry in enumerate(["plant", "victim", "victim"])
    ]
    planted, victim, later = runs
    assert planted[0].returncode == 0 and output(planted[1]) == "planted", planted[0].stderr
    ran_rewritten = [
        n for n, (done, d) in enumerate(runs) if done.returncode == 0 and output(d) == "rewritten"
    ]
    print("runs that ran code rewritten by a process left behind:", len(ran_rewritten))
    assert ran_rewritten == []
    error = json.loads((victim[1] / "error.json").read_text())
    assert "helper.py changed since the bundle was verified" in error["message"], error
    assert later[0].returncode == 0 and output(later[1]) == "verified", later[0].stderr


# --- generated text (item 9): an exported job runs the cells' code as IPython would --------

TEMPLATE_CELL = '''query = """
SELECT name FROM users
%(user)s
!important: keep this line
"""
'''


def test_an_exported_job_keeps_multi_line_strings_as_written(tmp_path):
    from IPython.core.inputtransformer2 import TransformerManager

    from flyte_jupyter.core.export import notebook_code

    assert TransformerManager().transform_cell(TEMPLATE_CELL) == TEMPLATE_CELL  # IPython's view
    cells = [TEMPLATE_CELL, "!echo shell-ran\nrows = 1\n"]
    book = {
        "cells": [
            {"cell_type": "code", "execution_count": n, "id": f"c{n}", "metadata": {},
             "outputs": [], "source": source}
            for n, source in enumerate(cells, 1)
        ],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    notebook = tmp_path / "templates.ipynb"
    notebook.write_text(json.dumps(book))
    code, _requirements = notebook_code(notebook)
    (tmp_path / "job.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "job.py"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "shell-ran" in done.stdout  # shell lines outside strings still run
    line = next(x for x in done.stdout.splitlines() if x.startswith("flyte-jupyter results: "))
    results = json.loads(line.removeprefix("flyte-jupyter results: "))
    rewritten = int(results["query"] != TEMPLATE_CELL.split('"""')[1])
    print("string lines rewritten in the exported job:", rewritten)
    assert rewritten == 0 and results["rows"] == 1


# --- a deadline ends the run in one line (item 10), however the threads interleave --------


def test_timeouts_end_in_one_line_every_time(tree):
    """The log follower and the cancel both wait on the run's warm-worker process: one of
    them reading the exit code must not break the other (it did in 2 of 3 tries)."""
    root = tree({"app.py": "import time\n\ndef sleepy():\n    time.sleep(20)\n"})
    tracebacks = 0
    for _ in range(4):
        done = subprocess.run(
            [sys.executable, "-m", "flyte_jupyter", "run", "app.py:sleepy", "--timeout", "1"],
            capture_output=True, text=True, cwd=root, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1
        tracebacks += "Traceback" in done.stderr
        assert "timed out after 1s and was cancelled" in done.stderr, done.stderr[-600:]
    print("timeouts ending in a traceback:", tracebacks, "of 4")
    assert tracebacks == 0


# --- a run's output is kept (item 13): what the run printed is what `runs logs` shows ------

PRINTER = """
import subprocess
import sys


def names():
    print("a file name that is not UTF-8:", "report-\\udcff.csv")  # as os.listdir gives it
    return 1


def child():
    print("from python", flush=True)
    subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)
    sys.stdout.buffer.write(b"bytes to sys.stdout.buffer\\n")  # as click and others do
    sys.stdout.flush()
    return 1
"""


def test_printing_a_name_that_is_not_utf8_does_not_fail_the_run(tree):
    root = tree({"printer.py": PRINTER})
    run = submit(build_bundle(select_files(root, entries=[root / "printer.py"])), "printer:names")
    assert run.result(60) == 1
    logs = cli("runs", "logs", run.id)
    print("runs logs:", logs.stdout.strip())
    assert logs.returncode == 0 and "report-\\udcff.csv" in logs.stdout, logs.stderr


def test_output_of_a_child_process_is_kept_in_the_runs_log(tree):
    root = tree({"printer.py": PRINTER})
    run = submit(build_bundle(select_files(root, entries=[root / "printer.py"])), "printer:child")
    assert run.result(60) == 1
    logs = cli("runs", "logs", run.id)
    expected = ["from python", "from a child process", "bytes to sys.stdout.buffer"]
    kept = [line in logs.stdout for line in expected]
    print("lines kept in runs logs:", sum(kept), "of", len(expected))
    assert all(kept), logs.stdout


# --- run ids are ids, not patterns (items 1, 13) ------------------------------------------


def test_a_run_id_with_sql_wildcards_matches_no_run(tree):
    root = tree({"app.py": "def f():\n    return 1\n"})
    run = submit(build_bundle(select_files(root, entries=[root / "app.py"])), "app:f")
    assert run.result(60) == 1
    matched = 0
    for pattern in ("_", "%", "2_", "../../etc", run.id[:4] + "_"):
        shown = cli("runs", "show", pattern)
        matched += shown.returncode == 0
        assert shown.returncode != 0 and "no run" in shown.stderr, (pattern, shown.stdout[:200])
    print("runs matched by wildcard or path-like ids:", matched)
    assert cli("runs", "show", run.id[:8]).returncode == 0  # a unique prefix still works
