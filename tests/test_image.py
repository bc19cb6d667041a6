"""Image specs rendered to Dockerfiles and contexts, and notebooks translated to jobs: no
engine needed for any of this."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import nbformat
import pytest
from conftest import write_tree
from nbformat.v4 import new_code_cell, new_notebook

from flyte_jupyter.core.config import resolve_image
from flyte_jupyter.core.errors import UsageError
from flyte_jupyter.core.export import export_notebook, notebook_code
from flyte_jupyter.core.image import Image, ImageError, check_source_layout, render

PROJECT = {
    "my_project/app.py": "from dep import helper\n",
    "my_project/dep.py": "def helper():\n    return 2\n",
    "my_project/run.sh": "#!/bin/sh\necho hi\n",
    "my_project/.env": "SECRET=1\n",
    "my_project/.dockerignore": "*.log\n",
    "my_project/debug.log": "noise\n",
    "my_project/requirements.txt": "# pinned\nrequests==2.32.3\n",
}


@pytest.fixture
def workspace(tree) -> Path:
    root = tree(PROJECT, name="workspace")
    (root / "my_project/run.sh").chmod(0o755)
    return root


def test_dockerfile_layers_in_cache_friendly_order(workspace: Path):
    project = workspace / "my_project"
    image = (
        Image.from_debian_base(python_version="3.11")
        .with_env_vars({"MODE": "prod"})
        .with_apt_packages("git", "curl")
        .with_pip_packages("numpy==2.1.0")
        .with_requirements(project / "requirements.txt")
        .with_commands("echo built")
        .with_source_folder(project, copy_contents_only=True)
        .with_source_file(project / "run.sh", "/usr/local/bin/run.sh")
        .with_entrypoint("python", "app.py")
    )
    context = render(image)
    assert context.dockerfile.splitlines() == [
        "FROM python:3.11-slim-bookworm",
        'ENV MODE="prod" PATH=/opt/venv/bin:$PATH VIRTUAL_ENV="/opt/venv" '
        'PYTHONDONTWRITEBYTECODE="1"',
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
        "--no-install-recommends curl git && rm -rf /var/lib/apt/lists/*",
        "COPY build/ /tmp/flyte-jupyter-build/",
        'RUN python3 -m venv /opt/venv && /opt/venv/bin/python -c "import site, pathlib; '
        "pathlib.Path(site.getsitepackages()[0], 'flyte_jupyter_paths.pth')"
        ".write_text('\\n'.join(['/opt/flyte-jupyter', '/app']) + '\\n')\" && "
        "/opt/venv/bin/pip install --no-cache-dir -r /tmp/flyte-jupyter-build/requirements.txt"
        " && rm -rf /tmp/flyte-jupyter-build",
        "RUN echo built",
        "COPY root/ /",
        "WORKDIR /app",
        'CMD ["python", "app.py"]',
    ]
    assert context.files["build/requirements.txt"] == b"numpy==2.1.0\nrequests==2.32.3\n"
    code = sorted(p for p in context.files if p.startswith("root/app/"))
    assert code == [
        "root/app/.dockerignore",
        "root/app/app.py",
        "root/app/dep.py",
        "root/app/requirements.txt",
        "root/app/run.sh",
    ]  # .env is a secret, debug.log is dockerignored
    assert context.modes["root/app/run.sh"] == 0o755
    assert "root/usr/local/bin/run.sh" in context.files
    assert "root/opt/flyte-jupyter/flyte_jupyter/runtime/execute.py" in context.files


def test_copy_contents_only_layouts_and_the_root_dir_rule(workspace: Path):
    project = workspace / "my_project"
    contents = render(
        Image.from_base("python:3.11").with_source_folder(project, copy_contents_only=True)
    )
    folder = render(Image.from_base("python:3.11").with_source_folder(project, dst="/srv"))
    assert "root/app/app.py" in contents.files
    assert "root/srv/my_project/app.py" in folder.files
    check_source_layout(Image().with_source_folder(project, copy_contents_only=True), project)
    check_source_layout(Image().with_source_folder(project), workspace)
    with pytest.raises(ImageError) as err:
        check_source_layout(Image().with_source_folder(project), project)
    message = str(err.value)
    assert "puts app.py at /app/my_project/app.py" in message
    assert f"Set root_dir to {workspace}" in message and "copy_contents_only=True" in message


def test_context_is_deterministic_and_follows_the_files(workspace: Path, tmp_path: Path):
    project = workspace / "my_project"
    image = Image.from_debian_base(python_version="3.11").with_source_folder(
        project, copy_contents_only=True
    )
    first = render(image)
    assert render(image).tar() == first.tar()
    copy = write_tree(
        tmp_path / "elsewhere" / "my_project", {k.split("/", 1)[1]: v for k, v in PROJECT.items()}
    )
    (copy / "run.sh").chmod(0o755)
    moved = Image.from_debian_base(python_version="3.11").with_source_folder(
        copy, copy_contents_only=True
    )
    assert render(moved).digest == first.digest  # the same files elsewhere: the same image
    (project / "dep.py").write_text("def helper():\n    return 3\n")
    assert render(image).digest != first.digest
    with tarfile.open(fileobj=io.BytesIO(first.tar())) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {(m.uid, m.gid, m.uname) for m in members} == {(0, 0, "")}


def test_reference_names_resolve_at_run_time():
    ref = Image.from_ref_name("analytics")
    with pytest.raises(ImageError, match="cannot have layers added"):
        ref.with_pip_packages("pandas")
    with pytest.raises(ImageError, match="built elsewhere"):
        render(ref)
    images = {"analytics": "registry.example/analytics:2.1", "base": "python:3.11"}
    assert resolve_image("analytics", images) == "registry.example/analytics:2.1"
    assert resolve_image("registry.example/other:1", images) == "registry.example/other:1"
    with pytest.raises(
        UsageError, match="'reports' is not mapped: known references are analytics, base"
    ):
        resolve_image("reports", images)


def test_ca_certificates_and_air_gapped_builds_render(tmp_path: Path):
    cert = tmp_path / "proxy.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n...\n")
    image = Image.from_base("python:3.11").with_pip_packages("attrs==24.2.0")
    context = render(image, extra_ca_certs=[cert], wheels={"attrs-24.2.0-py3-none-any.whl": b"whl"})
    text = context.dockerfile
    assert "COPY certs/ /usr/local/share/ca-certificates/" in text
    assert "PIP_CERT=" in text and "REQUESTS_CA_BUNDLE=" in text
    assert "pip install --no-index --find-links /tmp/flyte-jupyter-build/wheels" in text
    assert context.files["build/wheels/attrs-24.2.0-py3-none-any.whl"] == b"whl"


def test_notebook_becomes_a_job_module(tmp_path: Path):
    book = new_notebook(
        cells=[
            new_code_cell("%load_ext flyte_jupyter\n%pip install pandas==2.2.3 -q"),
            new_code_cell("!pip install 'scipy>=1.13'"),
            new_code_cell("%%flyte_run --copy-style all\nx = 1\ny = x + 1"),
            new_code_cell("files = !ls\n!echo hello\n%matplotlib inline\n%time z = y * 2"),
            new_code_cell("%%bash\necho from bash"),
            new_code_cell("%%html\n<b>hi</b>"),
            new_code_cell("%flyte_run --detach total(z)"),
        ]
    )
    path = tmp_path / "job.ipynb"
    nbformat.write(book, path)
    code, requirements = notebook_code(path)
    assert requirements == ["pandas==2.2.3", "scipy>=1.13"]  # as pip reads the quoted word
    assert "x = 1\ny = x + 1" in code and "%%flyte_run" not in code.replace("# (", "")
    assert "files = subprocess.run('ls', shell=True" in code
    assert "subprocess.run('echo hello', shell=True, check=True)" in code
    assert "subprocess.run('echo from bash', shell=True, check=True)" in code
    assert "# (cell magic removed) %%html" in code
    assert "\ntotal(z)\n" in code
    compile(code, str(path), "exec")  # valid Python


def test_export_context_only_needs_no_engine(tmp_path: Path):
    root = write_tree(
        tmp_path / "proj",
        {
            "pyproject.toml": "[project]\nname='p'\n",
            "lib/__init__.py": "def f():\n    return 7\n",
            "data/x.csv": "1\n",
        },
    )
    book = new_notebook(cells=[new_code_cell("from lib import f\nresult = f()")])
    nbformat.write(book, root / "analysis.ipynb")
    out = tmp_path / "context"
    result = export_notebook(root / "analysis.ipynb", context_only=out, include=["data/*.csv"])
    assert result.tag is None
    assert (
        (out / "Dockerfile")
        .read_text()
        .endswith('CMD ["python", "/app/_flyte_notebook/analysis_job.py"]\n')
    )
    assert (out / "root/app/lib/__init__.py").is_file() and (out / "root/app/data/x.csv").is_file()
    job = (out / "root/app/_flyte_notebook/analysis_job.py").read_text()
    assert "from lib import f" in job and "write_results(globals())" in job
    with pytest.raises(UsageError, match="is not empty"):
        export_notebook(root / "analysis.ipynb", context_only=out)
    with pytest.raises(UsageError, match="is not a notebook file"):
        export_notebook(root / "pyproject.toml", context_only=tmp_path / "other")
    (root / "broken.ipynb").write_text("{not json")
    with pytest.raises(UsageError, match="cannot read notebook"):
        export_notebook(root / "broken.ipynb", context_only=tmp_path / "other")
