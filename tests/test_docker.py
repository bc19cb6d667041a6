"""Images and the Docker executor on a real Docker engine (started by .ci/run through
scripts/docker-engine.sh). Skipped, with the reason, only where no engine answers."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from conftest import write_tree
from nbformat.v4 import new_code_cell, new_notebook

from flyte_jupyter.core import history
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.errors import RemoteError, UsageError
from flyte_jupyter.core.export import export_notebook
from flyte_jupyter.core.image import Image, build_image
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.submit import submit

BASE = "python:3.11-slim-bookworm"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers here ({exc}); scripts/docker-engine.sh starts one")
    try:
        client.images.get(BASE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"base image {BASE} is missing; scripts/docker-engine.sh makes it locally")
    return client


APP = {
    "app.py": """
        import os
        import sys
        import time

        from dep import helper


        def main(n=1):
            print("stdout line", n)
            print("stderr line", file=sys.stderr)
            return helper() * n


        def where():
            return os.path.exists("/.dockerenv")


        def boom():
            raise RuntimeError("inside the container")


        def slow():
            time.sleep(120)
        """,
    "dep.py": "def helper():\n    return 21\n",
}


@pytest.fixture(scope="module")
def baked(engine, tmp_path_factory) -> tuple[str, Path]:
    """An image with the app's code baked in (Flyte's container-based path)."""
    project = write_tree(tmp_path_factory.mktemp("baked") / "project", APP)
    image = Image.from_debian_base(python_version="3.11").with_source_folder(
        project, copy_contents_only=True
    )
    # content-hash tags: any change to the code or the runtime gives a new image
    tag = build_image(image, client=engine)
    assert tag.startswith("flyte-jupyter:") and len(tag.split(":")[1]) == 16
    again: list[str] = []
    assert build_image(image, log=again.append, client=engine) == tag
    assert again == [f"image {tag} exists: not rebuilt"]  # Flyte's container caching
    assert build_image(image, version="v1.0.0", client=engine) == "flyte-jupyter:v1.0.0"
    return tag, project


def bundle_of(root: Path):
    return build_bundle(select_files(root, entries=[root / "app.py"]))


def test_bundle_runs_in_a_container_with_logs_and_result(baked, tree):
    tag, _ = baked
    root = tree({**APP, "dep.py": "def helper():\n    return 2\n"})  # differs from baked code
    run = submit(bundle_of(root), "app:main", kwargs={"n": 5}, executor="docker", image=tag)
    lines = [(line.stream, line.text) for line in run.logs()]
    assert run.result(timeout=120) == 10  # the bundle's code, not the image's
    assert ("stdout", "stdout line 5\n") in lines and ("stderr", "stderr line\n") in lines
    assert submit(bundle_of(root), "app:where", executor="docker", image=tag).result(120) is True
    assert history.get(run.id).status == "succeeded"


def test_remote_exception_from_a_container(baked, tree):
    tag, _ = baked
    root = tree(APP)
    run = submit(bundle_of(root), "app:boom", executor="docker", image=tag)
    with pytest.raises(RemoteError) as err:
        run.result(timeout=120)
    assert err.value.remote_type == "RuntimeError"
    assert 'File "app.py", line 19, in boom' in err.value.remote_traceback


def test_cancel_stops_and_removes_the_container(baked, tree, engine, monkeypatch):
    monkeypatch.setenv("FLYTE_JUPYTER_WARM_WORKERS", "0")  # the cold path: a container per run
    tag, _ = baked
    root = tree(APP)
    run = submit(bundle_of(root), "app:slow", executor="docker", image=tag)
    label = f"flyte-jupyter.run-id={run.id}"
    deadline = time.monotonic() + 60
    while run.status() != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    container = engine.containers.list(filters={"label": label})[0]
    assert container.labels["flyte-jupyter.digest"] == run.spec.digest
    run.cancel()
    assert run.status() == "cancelled"
    assert engine.containers.list(all=True, filters={"label": label}) == []


def test_copy_style_none_runs_the_code_baked_into_the_image(baked):
    tag, project = baked
    bundle = build_bundle(select_files(project, copy_style="none", version="v1.0.0"))
    run = submit(
        bundle, "app:main", kwargs={"n": 2}, executor="docker", image=tag, version="v1.0.0"
    )
    assert run.result(timeout=120) == 42
    assert run.spec.digest is None and history.get(run.id).version == "v1.0.0"


def test_preflight_names_missing_packages(baked, tree):
    tag, _ = baked
    root = tree({"app.py": "import pathspec\n\ndef main():\n    return 1\n"})
    with pytest.raises(UsageError) as err:
        submit(bundle_of(root), "app:main", executor="docker", image=tag)
    assert "lacks packages the shipped code imports: pathspec" in str(err.value)
    assert ".with_pip_packages('pathspec==" in str(err.value)


def test_exported_notebook_runs_as_a_job(engine, tmp_path):
    root = write_tree(
        tmp_path / "analysis",
        {
            "pyproject.toml": "[project]\nname='analysis'\n",
            "metrics/__init__.py": "def mean(xs):\n    return sum(xs) / len(xs)\n",
            "data/values.json": "[2, 4, 9]\n",
        },
    )
    book = new_notebook(
        cells=[
            new_code_cell("%load_ext flyte_jupyter"),
            new_code_cell("import json\nfrom metrics import mean"),
            new_code_cell("values = json.load(open('../data/values.json'))"),  # as in Jupyter
            new_code_cell("%%flyte_run\naverage = mean(values)\nprint('average', average)"),
        ]
    )
    (root / "notebooks").mkdir()  # a notebook in a subfolder: the job starts there too
    nbformat.write(book, root / "notebooks" / "analysis.ipynb")
    result = export_notebook(root / "notebooks" / "analysis.ipynb", include=["data/*.json"])
    assert result.tag.startswith("flyte-jupyter-analysis:")  # a content-hash tag
    out = tmp_path / "out"
    out.mkdir()
    mount = ["-v", f"{out}:/outputs", "-e", "FLYTE_JUPYTER_OUTPUT_DIR=/outputs"]
    ran = subprocess.run(
        ["docker", "run", "--rm", *mount, result.tag], capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert "average 5.0" in ran.stdout
    assert json.loads((out / "results.json").read_text()) == {"average": 5.0, "values": [2, 4, 9]}
    code = "import metrics; print(metrics.mean([1, 3]))"
    probe = subprocess.run(
        ["docker", "run", "--rm", result.tag, "python", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.stdout.strip() == "2.0"  # the seed's "test containers locally"
