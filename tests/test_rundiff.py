"""`flyte-jupyter runs diff A B`: why did my version change? Real runs (CLI subprocesses and a
real kernel), real stores, real archives; nothing is unpickled."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_process import cli
from kernel import Kernel, Reply, extension_kernel

from flyte_jupyter.core import history
from flyte_jupyter.core.rundiff import diff_runs, render
from flyte_jupyter.core.submit import Run

SHOP = {
    "pyproject.toml": "[project]\nname='shop'\n",
    "app.py": """
        from shop.pricing import total


        def main(region="eu"):
            return total([1, 2, 3], region)
        """,
    "shop/__init__.py": "",
    "shop/pricing.py": "def total(prices, region):\n    return sum(prices)\n",
    "shop/rates.py": "RATE = 1\n",
}


def run_id(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stderr.split("run ", 1)[1].split()[0]


def test_diff_names_changed_files_inputs_and_settings(tree):
    shop = tree(SHOP)
    a = run_id(cli("run", "app.py:main", cwd=shop))
    (shop / "shop/pricing.py").write_text(
        "from shop.rates import RATE\n\ndef total(prices, region):\n    return sum(prices) * RATE\n"
    )
    b = run_id(cli("run", "app.py:main", "--arg", "region=us", "--env", "MODE=x", cwd=shop))
    done = cli("runs", "diff", a, b, cwd=shop)
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    lines = done.stdout.splitlines()
    assert lines[0] == f"runs {a} -> {b}"
    assert "files: 2 files differ" in lines
    assert any(line.startswith("  ~ shop/pricing.py (") for line in lines)
    assert any(line.startswith("  + shop/rates.py (") for line in lines)
    assert "inputs: 1 input differs (compared by pickled bytes)" in lines
    assert "setting env_names: [] -> ['MODE']" in lines
    doc = json.loads(cli("runs", "diff", a[:18], b, "--json", cwd=shop).stdout)
    assert [f["name"] for f in doc["files"]] == ["shop/pricing.py", "shop/rates.py"]
    assert doc["files"][1]["before"] is None and doc["digest_a"] != doc["digest_b"]
    same = render(diff_runs(a, a))
    assert "bundle: same" in same and "nothing else differs" in same


def test_the_same_code_run_twice_differs_only_in_what_changed(tree):
    shop = tree(SHOP)
    a = run_id(cli("run", "app.py:main", cwd=shop))
    b = run_id(cli("run", "app.py:main", "--arg", "region=us", cwd=shop))
    diff = diff_runs(a, b)
    print(render(diff))
    assert diff.same_code and diff.files == [] and diff.settings == []
    assert [c.name for c in diff.inputs] == ["inputs.pkl"]
    assert diff.short() == "1 input (inputs.pkl)"


def test_diff_never_unpickles_inputs_and_reports_a_changed_archive(tree, tmp_path, isolated_cache):
    """A hostile inputs.pkl (it would run a command when unpickled) is only hashed; an archive
    changed after the run is reported, not trusted."""
    shop = tree(SHOP)
    a = run_id(cli("run", "app.py:main", cwd=shop))
    b = run_id(cli("run", "app.py:main", cwd=shop))
    marker = tmp_path / "unpickled"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run_b = Run.from_history(b)
    run_b.store.put_bytes(run_b.spec.inputs_url, pickle.dumps({"args": [Hostile()]}))
    archive = next((isolated_cache / "archives").glob("*.tar.gz"))
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:  # same name, other content
        info = tarfile.TarInfo("app.py")
        data = b"def main():\n    return 'swapped'\n"
        info.size = len(data)
        import io

        tar.addfile(info, io.BytesIO(data))
    done = cli("runs", "diff", a, b, cwd=shop)
    print(done.stdout)
    print(f"files created by unpickling: {int(marker.exists())}")
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert "inputs: 1 input differs" in done.stdout
    assert f"warning: the bundle of run {a} does not match its digest" in done.stdout


def test_a_bundle_gone_from_the_store_and_cache_is_a_warning(tree, isolated_cache):
    shop = tree(SHOP)
    a = run_id(cli("run", "app.py:main", cwd=shop))
    (shop / "shop/pricing.py").write_text("def total(prices, region):\n    return 0\n")
    b = run_id(cli("run", "app.py:main", cwd=shop))
    run_a = Run.from_history(a)
    for archive in (isolated_cache / "archives").glob("*.tar.gz"):
        archive.unlink()
    run_a.store.remove(run_a.spec.bundle_url)
    done = cli("runs", "diff", a, b, cwd=shop)
    assert done.returncode == 0, done.stderr
    assert f"warning: the bundle of run {a} is gone from" in done.stdout
    # run b's bundle came back from the store, listed in full as added
    assert "  + shop/pricing.py (" in done.stdout


# --- cell runs in a real kernel ---------------------------------------------------------------


@pytest.fixture
def kernel(tree) -> Iterator[Kernel]:
    project = tree(SHOP, name="nb")
    with extension_kernel(project) as k:
        yield k


def test_cell_runs_diff_by_definition_and_input_name(kernel: Kernel):
    kernel.ok("from shop.pricing import total\n\ndef double(x):\n    return x * 2\n")
    kernel.ok("prices = list(range(3))\nlabel = 'eu'")  # a value, not a literal: data
    cell = "%%flyte_run\nresult = [double(p) for p in prices], label\nresult"
    kernel.ok(cell)
    kernel.ok("def double(x):\n    return x * 3\n")
    kernel.ok("prices = list(range(4))")
    kernel.ok(cell)
    b, a = (r.id for r in history.recent(2))
    diff = diff_runs(a, b)
    print(render(diff))
    assert diff.definitions == {"changed": ["double"]}
    assert [c.name for c in diff.inputs] == ["prices"]
    assert diff.files == []
    kernel.ok(cell.replace("label", "label.upper()"))
    c = history.recent(1)[0].id
    again = diff_runs(b, c)
    print(render(again))
    assert again.definitions == {"changed": ["the cell's own code"]} and again.inputs == []


def in_cell(kernel: Kernel, cell_id: str) -> None:
    """Send executions as JupyterLab does: with the cell's id in the request's metadata."""
    msg = kernel.client.session.msg

    def with_cell_id(msg_type, content=None, parent=None, header=None, metadata=None):
        return msg(msg_type, content, parent, header, {**(metadata or {}), "cellId": cell_id})

    kernel.client.session.msg = with_cell_id


def status_lines(reply: Reply) -> list[str]:
    """The lines of the cell's status display (text form)."""
    return [line for d in reply.displays for line in d.get("text/plain", "").splitlines()]


def test_a_cell_says_what_changed_since_its_last_run(kernel: Kernel):
    kernel.ok("from shop.pricing import total\nprices = list(range(3))")
    cell = "%%flyte_run\nresult = total(prices, 'eu')\nresult"
    first = kernel.ok(cell)
    assert "changed since the last run" not in first.stderr + str(first.displays)
    again = kernel.ok(cell)
    assert "changed since the last run" not in str(again.displays)  # same code, same inputs
    pricing = Path(kernel.ok("import shop.pricing\nprint(shop.pricing.__file__)").stdout.strip())
    pricing.write_text("def total(prices, region):\n    return sum(prices) + 1\n")
    changed = kernel.ok(cell)
    (previous, latest) = (r.id for r in reversed(history.recent(2)))
    assert "changed since" not in changed.stderr  # in the status display, not a red band
    line = next(x for x in status_lines(changed) if x.startswith("changed since"))
    print(line)
    assert line == (
        f"changed since the last run of this cell ({previous}): 1 file (shop/pricing.py); "
        f"flyte-jupyter runs diff {previous} {latest} shows more"
    )
    # JupyterLab names the cell: an edited cell is still the same cell
    in_cell(kernel, "cell-7")
    kernel.ok(cell)
    kernel.ok("prices = list(range(5))")
    edited = kernel.ok(cell.replace("'eu'", "'us'"))
    line = next(x for x in status_lines(edited) if x.startswith("changed since"))
    print(line)
    assert ": 1 definition (the cell's own code), 1 input (prices); " in line


def test_diff_of_runs_in_s3_reads_bundles_and_inputs_from_the_store(
    tree, s3_server, isolated_cache
):
    """Another machine's runs: no local archives, everything read from a real S3 (moto)."""
    import uuid

    import servers

    from flyte_jupyter.runtime import blobs

    bucket = f"b{uuid.uuid4().hex[:12]}"
    options = {**servers.s3_options(s3_server.url), "key": "testing", "secret": "testing"}
    fs, _ = blobs.filesystem(f"s3://{bucket}", options)
    fs.mkdir(bucket)
    flags = [
        "--store",
        f"s3://{bucket}/p",
        *(f"--storage-option={k}={v}" for k, v in options.items()),
    ]
    shop = tree(SHOP)
    a = run_id(cli("run", "app.py:main", *flags, cwd=shop))
    (shop / "shop/pricing.py").write_text("def total(prices, region):\n    return max(prices)\n")
    b = run_id(cli("run", "app.py:main", *flags, cwd=shop))
    for archive in (isolated_cache / "archives").glob("*.tar.gz"):
        archive.unlink()
    done = cli("runs", "diff", a, b, "--json", cwd=shop)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    print(f"files: {doc['files']}, warnings: {doc['warnings']}")
    assert [f["name"] for f in doc["files"]] == ["shop/pricing.py"]
    assert doc["warnings"] == [] and doc["inputs"] == []
