"""Import discipline: the CLI, `%load_ext flyte_jupyter` and the server extension import only
what starting them needs. nbformat (-> jsonschema, ~1-3 s), docker, the fsspec cloud backends,
flyte and ipywidgets are imported by the commands that use them, never at startup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from kernel import Kernel

HEAVY = (
    "nbformat",
    "jsonschema",
    "docker",
    "fsspec",
    "s3fs",
    "gcsfs",
    "botocore",
    "boto3",
    "aiobotocore",
    "flyte",
    "flyteidl2",
    "ipywidgets",
)
CLI_HEAVY = (*HEAVY, "IPython", "cloudpickle")


def _report(heavy: tuple[str, ...]) -> str:
    """Code printing, as JSON, which of `heavy` are loaded (top-level names)."""
    return (
        "import json, sys\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))\n"
    )


def _heavy_after(code: str, tmp_path: Path) -> list[str]:
    """The heavy top-level modules loaded after running `code` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", code + "\n" + _report(CLI_HEAVY)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_import_loads_no_heavy_module(tmp_path):
    loaded = _heavy_after("import flyte_jupyter.cli", tmp_path)
    print("heavy modules after `import flyte_jupyter.cli`:", loaded)
    assert loaded == []


CLI_LAZY = (
    "concurrent.futures",
    "logging",
    "sqlite3",
    "tarfile",
    "hashlib",
    "tomllib",
    "dataclasses",
    "inspect",
    "ast",
    "platform",
)
"""Standard modules the CLI's start-up need not pay for (each 1-6 ms): the command that uses
one imports it."""


def test_cli_import_leaves_the_standard_modules_commands_use_to_them(tmp_path):
    added = _added_modules("import flyte_jupyter.cli", tmp_path, {})
    print("lazy modules imported by `import flyte_jupyter.cli`:", sorted(added & set(CLI_LAZY)))
    assert added & set(CLI_LAZY) == set()


def test_importing_the_bundle_builder_leaves_cache_pool_and_paths_to_their_use(tmp_path):
    """What a build may need (the hash cache's SQLite, a pool, where installed code lives)
    loads when it is needed: a bundle answered from its last build's record needs none."""
    lazy = {*WARM_BUNDLE_LAZY, "sqlite3"}
    added = _added_modules("import flyte_jupyter.core.bundle", tmp_path, {})
    print("lazy modules imported by `import flyte_jupyter.core.bundle`:", sorted(added & lazy))
    assert added & lazy == set()


def test_cli_help_loads_no_heavy_module(tmp_path):
    code = (
        "from flyte_jupyter.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    loaded = _heavy_after(code, tmp_path)
    print("heavy modules after `flyte-jupyter --help`:", loaded)
    assert loaded == []


def test_load_ext_in_a_real_kernel_loads_no_heavy_module(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'imports'\n")
    kernel = Kernel(tmp_path, env={"FLYTE_JUPYTER_DATA_DIR": str(tmp_path / "data")})
    try:
        before = kernel.execute(_report(HEAVY))
        loaded = kernel.execute("%load_ext flyte_jupyter")
        assert loaded.error is None, loaded.error_text
        after = kernel.execute(_report(HEAVY))
        magics = kernel.execute("%lsmagic")
    finally:
        kernel.shutdown()
    print("heavy modules in the kernel before/after %load_ext:", before.stdout, after.stdout)
    assert json.loads(after.stdout) == json.loads(before.stdout) == []
    assert "flyte_run" in (magics.result or "")


def test_server_extension_load_adds_no_heavy_module(tmp_path):
    """A real ServerApp (no HTTP server) loads the extension; jupyter_server itself imports
    nbformat, so what is checked is what loading our extension adds."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from jupyter_server.serverapp import ServerApp
        heavy = {HEAVY!r}
        app = ServerApp(jpserver_extensions={{"flyte_jupyter.server": False}})
        app.initialize(argv=["--ServerApp.root_dir={tmp_path}"], new_httpserver=False)
        before = {{m.split('.')[0] for m in sys.modules}}
        from flyte_jupyter.server import _load_jupyter_server_extension
        _load_jupyter_server_extension(app)
        added = {{m.split('.')[0] for m in sys.modules}} - before
        from tornado.httputil import HTTPHeaders, HTTPServerRequest
        request = HTTPServerRequest(
            "GET", "/flyte-jupyter/api/runs", headers=HTTPHeaders({{"Host": "localhost"}})
        )
        handler = app.web_app.find_handler(request).handler_class.__name__
        print(json.dumps([sorted(added & set(heavy)), handler]))
        """
    )
    env_dirs = {
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jdata"),
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **env_dirs},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    added, handler = json.loads(done.stdout.strip().splitlines()[-1])
    print("heavy modules the server extension adds:", added, "; /runs served by", handler)
    assert added == []
    assert handler == "RunsHandler"


def _added_modules(code: str, cwd: Path, env: dict[str, str]) -> set[str]:
    """Modules (full names) that running `code` in a fresh interpreter adds to those the
    interpreter's start-up (site, .pth files) already loaded."""
    wrapped = (
        "import json, sys\n_before = set(sys.modules)\n"
        + code
        + "\nprint(json.dumps(sorted(set(sys.modules) - _before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapped],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


WARM_BUNDLE_LAZY = (
    "concurrent.futures",
    "logging",
    "multiprocessing",
    "platform",
    "sysconfig",
    "tomllib",
    "sqlite3",
    "tarfile",
    "dataclasses",
    "hashlib",
)
"""Thread pools (and the logging they import) serve files that must be read: an unchanged
tree reads none. Where installed code lives (sysconfig) matters to imports followed from an
entry, the Python version (platform) to a warning, tomllib to a project with settings files:
a copy-style-all tree without them needs none. The hash cache (sqlite3) and the tar writer
serve a build the tree's record cannot answer; no class on that path is a dataclass. Nor
does an unchanged tree hash anything (hashlib loads OpenSSL)."""


def test_a_warm_bundle_of_an_unchanged_tree_imports_no_pool_and_no_logging(tmp_path, tree):
    root = tree({f"pkg/m{i}.py": f"X = {i}\n" for i in range(50)})
    for path in [root, *root.rglob("*")]:  # older than the caches' 2 s racy window
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    env = {"FLYTE_JUPYTER_CACHE_DIR": str(tmp_path / "cache")}
    code = (
        "from flyte_jupyter.cli import main\n"
        f"assert main(['bundle', {str(root)!r}, '--copy-style', 'all']) == 0\n"
    )
    cold = _added_modules(code, tmp_path, env)
    warm = _added_modules(code, tmp_path, env)
    print("cold build imports of", WARM_BUNDLE_LAZY, ":", sorted(cold & set(WARM_BUNDLE_LAZY)))
    print("warm build imports of", WARM_BUNDLE_LAZY, ":", sorted(warm & set(WARM_BUNDLE_LAZY)))
    assert {"sqlite3", "tarfile"} <= cold  # the cold build did build (50 small files: no pool)
    assert warm & set(WARM_BUNDLE_LAZY) == set()
