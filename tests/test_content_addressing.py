"""A notebook cell's bundle depends on content only: re-running a cell, running unrelated cells
or re-running its definitions in another order ships the same digest (and uploads nothing);
tracebacks still name the cells as the notebook numbers them now. Real kernels throughout."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_tree
from kernel import Kernel, Reply, extension_kernel

from flyte_jupyter.core import history
from flyte_jupyter.core.notebook import NotebookState, slice_cell

PROJECT = {
    "pyproject.toml": "[project]\nname='ca-project'\n",
    "shop/__init__.py": "",
    "shop/pricing.py": "def with_tax(x):\n    return round(x * 1.2, 2)\n",
    "shop/discounts.py": "def best(prices):\n    return 0.5\n",
    "shop/basket.py": "class Basket:\n    def __init__(self, items):\n        self.items = items\n"
    "    def total(self):\n        return sum(self.items)\n",
    "data/prices.csv": "1,2,3\n",
}
HELPER = "def helper(x):\n    return with_tax(x) * RATE\n"
IMPORTS = "from shop.pricing import with_tax\nRATE = 2\n"
DOUBLE = "def double(values):\n    return [helper(v) for v in values]\n"
RUN = "%%flyte_run\ntotal = round(sum(double(prices)), 2)\ntotal"


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    with extension_kernel(write_tree(tmp_path / "nb", PROJECT)) as k:
        yield k


def shipped(kernel: Kernel, cell: str) -> tuple[str, str, Reply]:
    """Run a %%flyte_run cell: the digest it shipped and what its status line says was
    uploaded ("uploaded N B" or "bundle already in the store")."""
    reply = kernel.execute(cell)
    statuses = [
        d["text/plain"]
        for d in reply.displays
        if d.get("text/plain", "").startswith("flyte-jupyter run ")
    ]
    assert statuses, (reply.displays, reply.stderr, reply.error_text)
    facts = statuses[0].splitlines()[0].split(" · ")
    upload = next(f for f in facts if f.startswith("uploaded ") or f.endswith("in the store"))
    return history.recent()[0].digest, upload, reply


def plain(traceback: list[str]) -> str:
    """An IPython traceback as text, without its colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(traceback))


def bundles_in_store(cache: Path) -> int:
    return len(list((cache / "store" / "bundles").glob("*.tar.gz")))


def test_reruns_unrelated_cells_and_reordered_definitions_ship_the_same_bundle(
    kernel: Kernel, isolated_cache: Path
):
    kernel.ok(IMPORTS)
    kernel.ok(HELPER)
    kernel.ok(DOUBLE)
    kernel.ok("prices = [float(p) for p in range(1, 4)]")
    first, upload, reply = shipped(kernel, RUN)
    assert reply.result == "14.4" and upload.startswith("uploaded "), reply
    print("first run:", first, upload)

    again, upload, _ = shipped(kernel, RUN)
    print("same cell again:", again, upload, "bundles in store:", bundles_in_store(isolated_cache))
    assert again == first and upload == "bundle already in the store"

    kernel.ok("import json\nnote = json.dumps({'a': 1})\ndef unrelated():\n    return note\n")
    between, upload, _ = shipped(kernel, RUN)
    print("after an unrelated cell:", between, upload)
    assert between == first and upload == "bundle already in the store"

    kernel.ok(DOUBLE)  # the definition cells again, in another order (new execution counts)
    kernel.ok(HELPER)
    kernel.ok(IMPORTS)
    reordered, upload, reply = shipped(kernel, RUN)
    print("definitions re-run in another order:", reordered, upload)
    assert reordered == first and upload == "bundle already in the store"
    assert reply.result == "14.4"
    print("bundles in store after 4 runs:", bundles_in_store(isolated_cache))
    assert bundles_in_store(isolated_cache) == 1

    kernel.ok(HELPER.replace("* RATE", "* RATE + 1"))  # a function the cell needs changed
    changed, upload, reply = shipped(kernel, RUN)
    print("needed function changed:", changed, upload)
    assert changed != first and upload.startswith("uploaded ") and reply.result == "17.4"
    assert bundles_in_store(isolated_cache) == 2


def test_a_restarted_kernel_running_the_notebook_again_ships_the_same_bundle(
    tmp_path: Path, isolated_cache: Path
):
    """Restart and run all, with an extra cell at the top (every execution count shifts): the
    same digest, nothing uploaded. Flyte makes each such re-run a new version."""
    project = write_tree(tmp_path / "nb", PROJECT)
    digests, uploads = [], []
    for extra in ([], ["print('setup')"]):
        k = Kernel(project)
        try:
            for cell in ["%load_ext flyte_jupyter", *extra, IMPORTS, HELPER, DOUBLE]:
                k.ok(cell)
            k.ok("prices = [1.0, 2.0, 3.0]")
            digest, upload, reply = shipped(k, RUN)
            assert reply.result == "14.4", reply.error_text
        finally:
            k.shutdown()
        digests.append(digest)
        uploads.append(upload)
    print("first kernel:", digests[0], uploads[0])
    print("restarted kernel, counts shifted:", digests[1], uploads[1])
    assert digests[0] == digests[1] and uploads[1] == "bundle already in the store"
    assert bundles_in_store(isolated_cache) == 1


def test_importing_another_local_module_elsewhere_keeps_the_bundle(
    kernel: Kernel, isolated_cache: Path
):
    """Only the local modules a cell's code imports, or its input values refer to, ship: a cell
    that imports some other local module does not change this cell's bundle."""
    kernel.ok("from shop.basket import Basket\nbasket = Basket([1, 2])")
    cell = "%%flyte_run\nbasket.total()"  # Basket travels by reference: shop/basket.py ships
    first, upload, reply = shipped(kernel, cell)
    assert reply.result == "3", reply.error_text
    kernel.ok("import shop.discounts\nshop.discounts.best([1])")  # unrelated local import
    again, upload, reply = shipped(kernel, cell)
    print("before/after an unrelated local import:", first, again, upload)
    assert again == first and upload == "bundle already in the store" and reply.result == "3"
    files = kernel.ok(
        "doc = get_ipython()._flyte_session.preview_cell('basket.total()')\n"
        "print(sorted(f['path'] for f in doc['files']))"
    ).stdout
    print("shipped:", files.strip())
    assert "shop/basket.py" in files and "shop/__init__.py" in files
    assert "shop/discounts.py" not in files
    assert bundles_in_store(isolated_cache) == 1


def test_traceback_names_the_current_cells_after_a_definition_is_re_executed(kernel: Kernel):
    check = "def check(x):\n    if x < 0:\n        raise ValueError(f'negative: {x}')\n    return x"
    raising = "%%flyte_run\ny = 1\ncheck(-y)"
    kernel.ok(check)  # In[2]
    first, _, reply = shipped(kernel, raising)  # In[3]
    text = plain(reply.error["traceback"])
    assert "Cell In[2], line 3, in check" in text and "Cell In[3], line 3" in text, text
    kernel.ok(check)  # In[4]: same text, new execution count
    again, upload, reply = shipped(kernel, raising)  # In[5]
    text = plain(reply.error["traceback"])
    print("failing cell digests:", first, again, upload)
    print(text)
    assert again == first and upload == "bundle already in the store"
    assert "Cell In[4], line 3, in check" in text and "Cell In[5], line 3" in text
    assert "In[2]" not in text and "In[3]" not in text
    assert "_flyte_notebook" not in text and "<notebook cell>" not in text

    detached = kernel.ok("run = %flyte_run --detach check(-2)\nprint(run.id)").stdout.strip()
    kernel.ok("# again\n" + check)  # In[7]: check now starts on line 2 of a newer cell
    text = plain(kernel.execute(f"%flyte_result {detached}").error["traceback"])
    print(text)
    assert "negative: -2" in text and "Cell In[7], line 4, in check" in text, text
    assert "Cell In[6], line 1" in text


def test_sidebar_preview_digest_is_the_digest_the_run_ships(kernel: Kernel):
    kernel.ok(IMPORTS)
    kernel.ok(HELPER)
    kernel.ok("prices = [1.0, 2.0]")
    kernel.ok(
        "session = get_ipython()._flyte_session\n"
        "sent = []\n"
        "class Comm:\n"
        "    def send(self, data):\n"
        "        sent.append(data)\n"
        "def preview(cell):\n"
        "    session.open_comm(Comm(), {'content': {'data': {'preview': cell}}})\n"
        "    assert sent[-1]['ok'], sent[-1]\n"
        "    return sent[-1]['preview']"
    )
    cells = [
        "%%flyte_run\nsum(helper(p) for p in prices)",
        "%%flyte_run --include 'data/*.csv'\nlen(open('data/prices.csv').read()) + helper(1)",
        "%flyte_run --copy-style all helper(3)",
    ]
    for cell in cells:
        doc = kernel.ok(f"doc = preview({cell!r})\nprint(doc['digest'], len(doc['files']))")
        previewed, files = doc.stdout.split()
        ran, upload, reply = shipped(kernel, cell)
        print(f"preview {previewed} ({files} files), run {ran} ({upload}): {cell.split()[:2]}")
        assert reply.error is None, reply.error_text
        assert previewed == ran
    assert "data/prices.csv" in kernel.ok("print(preview(" + repr(cells[1]) + "))").stdout


def test_generated_module_is_the_same_text_whatever_order_definitions_ran_in():
    """Every execution order of the same definitions gives one module text, and it imports:
    a base class comes before its subclass and a decorator before its use even when the
    names sort the other way."""
    cells = [
        "import math\nfrom collections import OrderedDict as OD\n",
        "class Base:\n    unit = 1\n",
        "def zdeco(f):\n    return f\n",
        "@zdeco\ndef area(r: float, k: Base = None) -> float:\n"
        "    return math.pi * r * r * Alpha().unit * len(OD())\n",
        "class Alpha(Base):\n    def f(self):\n        return area(1)\n",
        "RATE = 3\n",
    ]
    texts = set()
    orders = list(itertools.permutations(range(len(cells))))
    for order in orders:
        state = NotebookState()
        for count, i in enumerate(order, start=1):
            state.record_cell(cells[i], f"In[{count}]")
        cell = slice_cell(state, "y = area(RATE)\ny", f"In[{len(cells) + 1}]", {"RATE": 3})
        texts.add(cell.module_text)
        assert not re.search(r"In\[\d+\]", cell.module_text)
    print(f"execution orders: {len(orders)}, distinct module texts: {len(texts)}")
    assert len(texts) == 1
    namespace: dict = {}
    exec(compile(texts.pop(), "generated", "exec"), namespace)
    assert namespace["area"](1) == 0  # len(OD()) is 0: it ran, with every name defined


def test_only_what_runs_at_definition_time_orders_the_module():
    """A lambda in a class body refers to a later class only when called; the subclass still
    comes after its base whatever the execution order (and both names sort the other way)."""
    cells = ["class Zed:\n    make = lambda self: Yak()\n", "class Yak(Zed):\n    pass\n"]
    texts = set()
    for order in (cells, cells[::-1]):
        state = NotebookState()
        for count, text in enumerate(order, start=1):
            state.record_cell(text, f"In[{count}]")
        texts.add(slice_cell(state, "Yak().make()", "In[3]", {}).module_text)
    print(f"distinct module texts for 2 orders: {len(texts)}")
    assert len(texts) == 1
    namespace: dict = {}
    exec(compile(texts.pop(), "generated", "exec"), namespace)
    assert type(namespace["Yak"]().make()).__name__ == "Yak"
