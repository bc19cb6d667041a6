"""Files this Python cannot parse (3.12 syntax under 3.11) still have their imports followed,
by a token-level scan, in a real project tree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import write_tree

import flyte_jupyter
from flyte_jupyter.core.imports import scan, scan_tokens
from flyte_jupyter.core.selection import select_files

NEWER = '''\
"""Models written for Python 3.12: `type` aliases and PEP 695 generics."""
from shop.pricing import with_tax
import shop.units as units, json

type Price = float


class Basket[T]:
    def total(self) -> Price:
        from helpers.lazy import discount
        return discount(with_tax(units.ONE))


def first[T](items: list[T]) -> T:
    try:
        import optional_fast_path
    except ImportError:
        pass
    return items[0]
'''


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="needs a Python that cannot parse 3.12")
def test_a_file_with_newer_syntax_ships_and_its_imports_are_followed(tmp_path: Path):
    root = write_tree(
        tmp_path / "proj",
        {
            "pyproject.toml": "[project]\nname='p'\n",
            "app.py": "from models import Basket\n\ndef main():\n    return Basket()\n",
            "models.py": NEWER,
            "shop/__init__.py": "",
            "shop/pricing.py": "def with_tax(x):\n    return x * 1.2\n",
            "shop/units.py": "ONE = 1\n",
            "helpers/__init__.py": "",
            "helpers/lazy.py": "def discount(x):\n    return x\n",
            "unrelated.py": "",
        },
    )
    selection = select_files(root, entries=[root / "app.py"])
    reasons = {f.path: f.reason for f in selection.files}
    print("\n".join(f"{p}: {r}" for p, r in sorted(reasons.items())))
    print("warnings:", selection.warnings)
    assert reasons == {
        "app.py": "entry",
        "models.py": "import in app.py:1",
        "shop/__init__.py": "import in models.py:2",
        "shop/pricing.py": "import in models.py:2",
        "shop/units.py": "import in models.py:3",
        "helpers/__init__.py": "lazy import in models.py:10",
        "helpers/lazy.py": "lazy import in models.py:10",
    }
    [warning] = selection.warnings  # the guarded optional_fast_path is not reported missing
    assert warning.startswith("could not parse models.py (line 5")
    assert "it ships, and its 5 imports were found by a token scan" in warning
    without_lazy = select_files(root, entries=[root / "app.py"], lazy_imports=False)
    assert "helpers/lazy.py" not in {f.path for f in without_lazy.files}


def test_the_token_scan_finds_every_import_statement_ast_finds_in_this_package():
    """Over a real tree (this package), each `import`/`from` statement ast reports is found
    by the token scan too, at the same line with the same names."""
    package = Path(flyte_jupyter.__file__).parent
    files = sorted(package.rglob("*.py"))
    checked = missed = 0
    for path in files:
        source = path.read_bytes()
        lines = source.decode().splitlines()
        by_tokens = {(r.lineno, r.module, r.names) for r in scan_tokens(source)}
        for ref in scan(source, str(path))[0]:
            if not lines[ref.lineno - 1].lstrip().startswith(("import ", "from ")):
                continue  # importlib.import_module("...") calls: not statements
            checked += 1
            missed += (ref.lineno, ref.module, ref.names) not in by_tokens
    print(f"files {len(files)}, import statements checked {checked}, missed by tokens {missed}")
    assert checked > 300 and missed == 0


def test_the_token_scan_keeps_what_it_found_before_unreadable_text():
    source = b"import first\nfrom . import sibling\nx = '''never closed\nimport after\n"
    refs = scan_tokens(source)
    print(refs)
    assert [(r.module, r.names) for r in refs] == [("first", ()), (".", ("sibling",))]
