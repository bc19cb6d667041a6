"""Installing from the sdist needs no Node: the sdist carries the prebuilt JupyterLab extension
(flyte_jupyter/labextension is gitignored, so pyproject.toml lists it as sdist artifacts), and
a wheel built from the unpacked sdist with no npm on PATH ships it as the lab extension."""

from __future__ import annotations

import os
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILT = REPO / "flyte_jupyter" / "labextension"


def test_sdist_carries_the_prebuilt_extension_and_builds_a_wheel_without_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    build = pytest.importorskip("hatchling.build")
    assert (BUILT / "package.json").is_file(), "build the extension first: npm run build"
    monkeypatch.chdir(REPO)
    sdist = tmp_path / build.build_sdist(str(tmp_path))
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")
    top = names[0].split("/")[0]
    extension = [n for n in names if n.startswith(f"{top}/flyte_jupyter/labextension/")]
    scripts = [n for n in extension if n.endswith(".js") and "/static/" in n]
    print("sdist members:", len(names), "prebuilt extension files:", len(extension))
    assert f"{top}/flyte_jupyter/labextension/package.json" in names
    assert len(scripts) == len(list((BUILT / "static").glob("*.js"))) > 0
    assert not [n for n in names if "/node_modules/" in n]
    assert f"{top}/src/index.ts" in names and f"{top}/schema/sidebar.json" in names  # source
    assert not [n for n in names if n.startswith(f"{top}/lib/")]  # tsc output stays out

    monkeypatch.chdir(tmp_path / "unpacked" / top)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no node, no npm
    wheel = tmp_path / build.build_wheel(str(tmp_path / "dist"))
    with zipfile.ZipFile(tmp_path / "dist" / wheel.name) as zf:
        shipped = [n for n in zf.namelist() if "share/jupyter/labextensions/flyte-jupyter/" in n]
    print("wheel lab extension files:", len(shipped))
    assert any(n.endswith("labextensions/flyte-jupyter/package.json") for n in shipped)
    assert any(n.endswith("labextensions/flyte-jupyter/install.json") for n in shipped)
    assert len([n for n in shipped if n.endswith(".js") and "/static/" in n]) == len(scripts)
