"""The run detail's "changed since the last run" of a notebook cell (the sidebar's line): real
runs of the same cell in a real Jupyter server, compared by hashes, never unpickled."""

from __future__ import annotations

import json

import pytest
from conftest import write_tree

from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.submit import Run, submit

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"flyte_jupyter.server": True}}}


async def detail(jp_fetch, run_id: str) -> dict:
    return json.loads((await jp_fetch("flyte-jupyter", "api", "runs", run_id)).body)


def run_cell(project, cell: str, cell_id: str | None) -> Run:
    bundle = build_bundle(select_files(project, entries=[project / "job.py"]))
    run = submit(bundle, "job:main", cell=cell, cell_id=cell_id)
    run.wait(60)
    return run


async def test_run_detail_says_what_changed_since_the_cells_previous_run(
    jp_fetch, jp_root_dir, isolated_cache
):
    project = write_tree(
        jp_root_dir / "project",
        {
            "pyproject.toml": "[project]\nname='p'\n",
            "job.py": "from shop.pricing import total\n\ndef main():\n    return total([1, 2])\n",
            "shop/__init__.py": "",
            "shop/pricing.py": "def total(xs):\n    return sum(xs)\n",
        },
    )
    first = run_cell(project, "In[1]", "c1")
    other = run_cell(project, "In[2]", "c2")  # another cell in between: not compared with
    (project / "shop/pricing.py").write_text("def total(xs):\n    return 2 * sum(xs)\n")
    second = run_cell(project, "In[3]", "c1")  # the same cell (same id), run again

    assert (await detail(jp_fetch, first.id))["changed"] is None  # the cell's first run
    assert (await detail(jp_fetch, other.id))["changed"] is None
    shown = await detail(jp_fetch, second.id)
    print("changed:", shown["changed"], "since", shown["changed_since"])
    assert shown["changed"] == "1 file (shop/pricing.py)"
    assert shown["changed_since"] == first.id
    assert shown["status"] == "succeeded"  # the rest of the detail is still there

    same = run_cell(project, "In[4]", "c1")  # nothing changed since `second`
    assert (await detail(jp_fetch, same.id))["changed"] is None

    # no cell id (a terminal kernel): the cell's label is the key
    (project / "shop/pricing.py").write_text("def total(xs):\n    return 3 * sum(xs)\n")
    labelled = run_cell(project, "In[4]", None)
    assert (await detail(jp_fetch, labelled.id))["changed"] is None  # In[4] above had an id
    again = run_cell(project, "In[4]", None)
    (project / "shop/pricing.py").write_text("def total(xs):\n    return 4 * sum(xs)\n")
    later = run_cell(project, "In[4]", None)
    assert (await detail(jp_fetch, later.id))["changed"] == "1 file (shop/pricing.py)"
    assert (await detail(jp_fetch, later.id))["changed_since"] == again.id

    # the earlier bundle gone from the cache and the store: null, and no error
    for archive in (isolated_cache / "archives").glob("*.tar.gz"):
        archive.unlink()
    first.store.remove(first.spec.bundle_url)
    gone = await detail(jp_fetch, second.id)
    print("changed with the earlier bundle gone:", gone["changed"])
    assert gone["changed"] is None and gone["status"] == "succeeded"
