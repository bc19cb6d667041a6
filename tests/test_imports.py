"""The static import scanner and module resolver on real sources and trees."""

from __future__ import annotations

import textwrap
from pathlib import Path

from conftest import write_tree

from flyte_jupyter.core.imports import (
    ImportRef,
    absolute_targets,
    find_module,
    module_name_for,
    scan_source,
)


def scan(src: str) -> list[ImportRef]:
    return scan_source(textwrap.dedent(src).lstrip("\n"))


def test_module_level_and_lazy_imports_are_told_apart():
    refs = scan(
        """
        import os, json as j
        from pkg.sub import thing

        def task():
            from lazy_mod import helper
            return helper()

        class C:
            def method(self):
                import other.deep
        """
    )
    by_module = {r.module: r for r in refs}
    assert set(by_module) == {"os", "json", "pkg.sub", "lazy_mod", "other.deep"}
    assert not by_module["os"].lazy and not by_module["pkg.sub"].lazy
    assert by_module["pkg.sub"].names == ("thing",)
    assert by_module["lazy_mod"].lazy and by_module["lazy_mod"].lineno == 5
    assert by_module["other.deep"].lazy


def test_type_checking_imports_are_skipped_and_try_imports_are_optional():
    refs = scan(
        """
        from typing import TYPE_CHECKING
        import typing
        if TYPE_CHECKING:
            import only_for_types
        if typing.TYPE_CHECKING:
            import also_for_types
        else:
            import runtime_branch
        try:
            import fast_json
        except ImportError:
            fast_json = None
        try:
            import required_mod
        except KeyError:
            pass
        """
    )
    modules = {r.module: r for r in refs}
    assert "only_for_types" not in modules and "also_for_types" not in modules
    assert "runtime_branch" in modules
    assert modules["fast_json"].optional
    assert not modules["required_mod"].optional


def test_importlib_literal_and_dynamic_names():
    refs = scan(
        """
        import importlib
        from importlib import import_module
        a = importlib.import_module("plugins.alpha")
        b = import_module(".beta", "plugins")
        c = __import__("gamma")
        name = "x"
        d = importlib.import_module(name)
        """
    )
    modules = [r.module for r in refs if r.lineno > 2]
    assert modules == ["plugins.alpha", "plugins.beta", "gamma", None]


def test_relative_imports_resolve_against_the_importing_package():
    ref = scan("from ..util import helper")[0]
    assert list(absolute_targets(ref, "pkg.sub.mod", False)) == [
        ("pkg.util", True),
        ("pkg.util.helper", False),
    ]
    ref = scan("from . import sibling")[0]
    assert list(absolute_targets(ref, "pkg", True)) == [("pkg", True), ("pkg.sibling", False)]
    # climbing above the top-level package resolves to nothing
    assert list(absolute_targets(scan("from ... import x")[0], "pkg.mod", False)) == []


def test_find_module_follows_python_precedence(tmp_path: Path):
    root = write_tree(
        tmp_path,
        {
            "regular/__init__.py": "",
            "regular/mod.py": "",
            "regular.py": "",  # a regular package wins over a module of the same name
            "ns/inner/leaf.py": "",  # PEP 420: no __init__ files
            "plain.py": "",
        },
    )
    loc = find_module("regular.mod", [root])
    assert loc and [p.relative_to(root).as_posix() for p in loc.files] == [
        "regular/__init__.py",
        "regular/mod.py",
    ]
    ns = find_module("ns.inner.leaf", [root])
    assert ns and [p.name for p in ns.files] == ["leaf.py"] and not ns.namespace_only
    bare = find_module("ns", [root])
    assert bare and bare.namespace_only
    assert find_module("plain.sub", [root]) is None  # a module has no submodules
    assert find_module("missing", [root]) is None


def test_module_name_for_prefers_the_deepest_root(tmp_path: Path):
    src = tmp_path / "src"
    file = src / "pkg" / "mod.py"
    assert module_name_for(file, [tmp_path, src]) == ("pkg.mod", False)
    assert module_name_for(src / "pkg" / "__init__.py", [tmp_path, src]) == ("pkg", True)
    assert module_name_for(Path("/elsewhere/x.py"), [tmp_path]) is None
